import NIOCore
import Synchronization

/// Latency samples in nanoseconds, and their percentiles.
struct Latencies: Sendable {
    private(set) var sorted: [UInt64]

    init(_ samples: [UInt64]) {
        sorted = samples.sorted()
    }

    var count: Int { sorted.count }

    /// The sample at `fraction` (0.5 is the median), in milliseconds; nil without samples.
    func milliseconds(_ fraction: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.down)))
        return Double(sorted[index]) / 1e6
    }

    /// "p50 1.23 ms, p99 4.56 ms, max 7.89 ms".
    var summary: String {
        guard let p50 = milliseconds(0.5), let p99 = milliseconds(0.99), let max = milliseconds(1) else {
            return "no samples"
        }
        return String(format: "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)", p50, p99, max, count)
    }
}

// MARK: Closed loop

/// What a closed-loop run did: requests answered, their latencies, and the wall time.
struct ClosedLoopResult: Sendable {
    let requests: Int
    let failures: Int
    let firstFailure: String?
    let seconds: Double
    let latencies: Latencies

    /// Requests per second times `eventsPerRequest`.
    func eventsPerSecond(_ eventsPerRequest: Int) -> Double {
        Double(requests * eventsPerRequest) / seconds
    }
}

/// One caller that sends its request again as soon as the previous answer arrived, until the deadline.
/// It runs entirely in callbacks on its connection's event loop.
private final class ClosedLoopCaller: @unchecked Sendable {
    struct Result: Sendable {
        var latencies: [UInt64] = []
        var failures = 0
        var firstFailure: String?
    }

    private let connection: any LoadConnection
    private let request: LoadRequest
    private let deadline: UInt64
    private let promise: EventLoopPromise<Result>
    private var result = Result()

    init(connection: any LoadConnection, request: LoadRequest, deadline: UInt64) {
        self.connection = connection
        self.request = request
        self.deadline = deadline
        promise = connection.eventLoop.makePromise(of: Result.self)
        result.latencies.reserveCapacity(1 << 14)
    }

    var future: EventLoopFuture<Result> { promise.futureResult }

    func start() {
        connection.eventLoop.execute { self.next() }
    }

    private func next() {
        let sent = monotonicNanos()
        guard sent < deadline else {
            promise.succeed(result)
            return
        }
        connection.exchange(request) { reply in
            if reply.isSuccess {
                self.result.latencies.append(monotonicNanos() - sent)
                self.next()
            } else {
                self.result.failures += 1
                self.result.firstFailure = self.result.firstFailure ?? reply.summary
                self.promise.succeed(self.result)
            }
        }
    }
}

/// Runs one closed-loop caller per connection for `seconds`; connection `i` sends `requests[i]`.
func runClosedLoop(
    connections: [any LoadConnection], requests: [LoadRequest], seconds: Double
) async throws -> ClosedLoopResult {
    let start = monotonicNanos()
    let deadline = start + UInt64(seconds * 1e9)
    let callers = connections.indices.map {
        ClosedLoopCaller(connection: connections[$0], request: requests[$0 % requests.count], deadline: deadline)
    }
    callers.forEach { $0.start() }
    var latencies: [UInt64] = []
    var failures = 0
    var firstFailure: String?
    for caller in callers {
        let result = try await wait(caller.future, seconds: seconds + 60, "a closed-loop caller")
        latencies += result.latencies
        failures += result.failures
        firstFailure = firstFailure ?? result.firstFailure
    }
    let elapsed = Double(monotonicNanos() - start) / 1e9
    return ClosedLoopResult(
        requests: latencies.count, failures: failures, firstFailure: firstFailure, seconds: elapsed,
        latencies: Latencies(latencies))
}

// MARK: Paced publishing

/// What a paced run did.
struct PacedResult: Sendable {
    let sent: Int
    let acknowledged: Int
    let failures: Int
    let firstFailure: String?
    /// When the first request was written (monotonic nanoseconds).
    let startedAt: UInt64
    let seconds: Double
    /// Latency from writing a publish to its answer.
    let acknowledgements: Latencies
    /// The most sends that were due but had no free connection at one tick (0: the pace was kept).
    let maxBacklog: Int
}

/// Publishes at a fixed rate over a few connections on one event loop. Each connection carries one
/// request at a time; a tick that finds every connection busy sends the overdue events at the next one.
final class PacedPublisher: @unchecked Sendable {
    typealias MakeRequest = @Sendable (_ sequence: Int, _ sentAt: UInt64) -> LoadRequest
    typealias OnReply = @Sendable (_ sequence: Int, _ reply: LoadReply) -> Void

    private let eventLoop: any EventLoop
    private let connections: [any LoadConnection]
    private let rate: Double
    private let total: Int
    private let makeRequest: MakeRequest
    private let onReply: OnReply?
    private let promise: EventLoopPromise<PacedResult>
    private var idle: [Int]
    private var task: RepeatedTask?
    private var startedAt: UInt64 = 0
    private var sent = 0
    private var acknowledged = 0
    private var failures = 0
    private var firstFailure: String?
    private var ackLatencies: [UInt64] = []
    private var maxBacklog = 0
    private var stopped = false
    private var stoppedAt: UInt64 = 0

    /// `connections` must all live on `eventLoop`. Sends `rate` events per second for `seconds`.
    init(
        eventLoop: any EventLoop,
        connections: [any LoadConnection],
        rate: Double,
        seconds: Double,
        makeRequest: @escaping MakeRequest,
        onReply: OnReply? = nil
    ) {
        self.eventLoop = eventLoop
        self.connections = connections
        self.rate = rate
        total = Int(rate * seconds)
        self.makeRequest = makeRequest
        self.onReply = onReply
        promise = eventLoop.makePromise(of: PacedResult.self)
        idle = Array(connections.indices.reversed())
        ackLatencies.reserveCapacity(total)
    }

    /// Completes when every publish was sent and answered (or after a 10 s grace for the stragglers).
    var future: EventLoopFuture<PacedResult> { promise.futureResult }

    func start() {
        eventLoop.execute {
            self.startedAt = monotonicNanos()
            self.task = self.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(500)) { _ in
                self.tick()
            }
        }
    }

    /// Stops sending now (the run ends when the answers are in).
    func stop() {
        eventLoop.execute {
            if !self.stopped {
                self.stopped = true
                self.stoppedAt = monotonicNanos()
            }
        }
    }

    private func tick() {
        let now = monotonicNanos()
        if !stopped {
            let due = min(total, Int(Double(now - startedAt) * rate / 1e9))
            var overdue = due - sent
            while overdue > 0, let connection = idle.popLast() {
                send(on: connection)
                overdue -= 1
            }
            maxBacklog = max(maxBacklog, overdue)
            if sent >= total {
                stopped = true
                stoppedAt = now
            }
        }
        if stopped, acknowledged + failures >= sent || now - stoppedAt > 10_000_000_000 {
            task?.cancel()
            task = nil
            promise.succeed(
                PacedResult(
                    sent: sent, acknowledged: acknowledged, failures: failures, firstFailure: firstFailure,
                    startedAt: startedAt, seconds: Double(now - startedAt) / 1e9,
                    acknowledgements: Latencies(ackLatencies), maxBacklog: maxBacklog))
        }
    }

    private func send(on connection: Int) {
        let sequence = sent
        sent += 1
        let sentAt = monotonicNanos()
        connections[connection].exchange(makeRequest(sequence, sentAt)) { reply in
            if reply.isSuccess {
                self.acknowledged += 1
                self.ackLatencies.append(monotonicNanos() - sentAt)
                self.idle.append(connection)
            } else {
                self.failures += 1
                self.firstFailure = self.firstFailure ?? reply.summary
            }
            self.onReply?(sequence, reply)
        }
    }
}

/// A stamp of 20 digits: the send time in nanoseconds, fixed-width so requests keep one length.
func stamp(_ nanos: UInt64) -> String {
    let digits = String(nanos)
    return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
}

/// A counter shared across event loops (the highest id acknowledged so far, for instance).
final class SharedMaximum: Sendable {
    private let value = Atomic<Int64>(0)

    func raise(to candidate: Int64) {
        var current = value.load(ordering: .relaxed)
        while candidate > current {
            let (exchanged, original) = value.compareExchange(
                expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    var current: Int64 { value.load(ordering: .relaxed) }
}

/// A small deterministic random generator (SplitMix64), so eventlog and Redis get the same positions.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
