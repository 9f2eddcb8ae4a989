import ArgumentParser
import NIOCore

/// Options of the `conditional` benchmark.
struct ConditionalOptions: ParsableArguments {
    @Option(
        name: .customLong("conditional-publishers"),
        help: "Concurrent single-event publishers, each on a topic of its own, each waiting for its answer.")
    var publishers = 50

    @Option(
        name: .customLong("conditional-rounds"),
        help: "Rounds of (plain, conditional), one after the other; each variant's rate is over all its rounds.")
    var rounds = 2

    @Option(name: .customLong("conditional-event-bytes"), help: "Bytes of data per event.")
    var eventBytes = 100

    func validate() throws {
        guard publishers > 0, rounds > 0, eventBytes >= 0 else {
            throw ValidationError("--conditional-publishers and --conditional-rounds must be positive")
        }
    }
}

/// Publish throughput with and without conditional appends: the single-publish shape (N keep-alive
/// connections, each waiting for its answer), each publisher on a topic of its own. Plain: `POST /v1/events`.
/// Conditional: the same with `Expected-Last-Id:` the id of the publisher's previous append (0 for the
/// first), so every append is expected to pass (201); a 409 is counted (and the chain goes on from its
/// `lastId`). Both variants build each request from the previous answer, so the client does the same work.
/// Redis: `XADD` on a stream per publisher, against a Lua script (`EVALSHA`) that reads the stream's last id
/// with `XREVRANGE ... COUNT 1` and only then runs `XADD` (the usual way to get a conditional append).
enum ConditionalPhase {
    /// The Lua script of the Redis side: XADD only if the stream's last id is ARGV[1] ("0-0": empty).
    static let script = """
        local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
        local id = '0-0'
        if last[1] then id = last[1][1] end
        if id ~= ARGV[1] then return redis.error_reply('MISMATCH ' .. id) end
        return redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
        """

    struct Variant: Sendable {
        var requests = 0
        var seconds = 0.0
        var conflicts = 0
        var latencies: [UInt64] = []

        mutating func add(_ result: ChainedResult) {
            requests += result.appended
            seconds += result.seconds
            conflicts += result.conflicts
            latencies += result.latencies
        }

        var rate: Double? { seconds > 0 ? Double(requests) / seconds : nil }
        var p99: Double? { Latencies(latencies).milliseconds(0.99) }
    }

    struct Side: Sendable {
        var plain = Variant()
        var conditional = Variant()
    }

    static func run(_ env: BenchEnvironment, _ options: ConditionalOptions) async throws -> [ResultRow] {
        let seconds = env.duration
        let rounds = env.quick ? 1 : options.rounds
        let warmUp = env.quick ? 0.5 : 1.0
        let payload = String(repeating: "x", count: options.eventBytes)
        let publishers = options.publishers
        env.say(
            "## conditional: \(publishers) single-event publishers, a topic each, plain then with Expected-Last-Id, "
                + "\(rounds) round(s) of \(seconds) s per variant")

        let eventlog = try await env.withEventLog { server -> Side in
            let connections = try await env.client.httpConnections(port: server.port, count: publishers)
            defer { connections.forEach { $0.close() } }
            // Every run on fresh topics, so a conditional chain starts at 0.
            func measure(_ name: String, conditional: Bool, seconds: Double) async throws -> ChainedResult {
                let result = try await runChained(connections: connections, first: "0", seconds: seconds) {
                    index, last in
                    HTTPLoadConnection.request(
                        "POST", "/v1/events", contentType: "application/json",
                        body: "{\"topic\":\"\(name)/\(index)\",\"data\":\"\(payload)\"}",
                        headers: conditional ? "Expected-Last-Id: \(last)\r\n" : "")
                } judge: { reply in
                    guard case .http(let status, let body) = reply else { return .failed(reply.summary) }
                    switch status {
                    case 201:
                        guard let id = number(after: "{\"id\":", in: body) else { return .failed(reply.summary) }
                        return .appended(id)
                    case 409:
                        guard let id = number(after: "\"lastId\":", in: body) else { return .failed(reply.summary) }
                        return .conflict(id)
                    default: return .failed(reply.summary)
                    }
                }
                try check(env, result, "eventlog \(conditional ? "conditional" : "plain")")
                return result
            }
            return try await runRounds(
                env, count: rounds, seconds: seconds, warmUp: warmUp, pid: server.pid, serverName: "eventlogd",
                labels: ("eventlog plain", "eventlog Expected-Last-Id"), measure: measure)
        }

        let redis = try await env.withRedis { server -> Side in
            let loaded = try await env.redisCommand(port: server.port, ["SCRIPT", "LOAD", script])
            guard let sha = loaded.text, sha.count == 40 else { throw BenchError("SCRIPT LOAD: \(loaded)") }
            let connections = try await env.client.redisConnections(port: server.port, count: publishers)
            defer { connections.forEach { $0.close() } }
            func measure(_ name: String, conditional: Bool, seconds: Double) async throws -> ChainedResult {
                let result = try await runChained(connections: connections, first: "0-0", seconds: seconds) {
                    index, last in
                    conditional
                        ? RESP.command(["EVALSHA", sha, "1", "\(name):\(index)", last, payload], mode: .values)
                        : RESP.command(["XADD", "\(name):\(index)", "*", "d", payload], mode: .values)
                } judge: { reply in
                    guard case .resp(let replies) = reply else { return .failed(reply.summary) }
                    if let error = replies.firstError {
                        return error.hasPrefix("MISMATCH ") ? .conflict(String(error.dropFirst(9))) : .failed(error)
                    }
                    guard let id = replies.values.first?.text else { return .failed(reply.summary) }
                    return .appended(id)
                }
                try check(env, result, "Redis \(conditional ? "conditional" : "plain")")
                return result
            }
            return try await runRounds(
                env, count: rounds, seconds: seconds, warmUp: warmUp, pid: server.pid, serverName: "redis",
                labels: ("Redis XADD", "Redis EVALSHA check+XADD"), measure: measure)
        }

        let name = "conditional"
        let ratio = { (side: Side) -> Double? in
            side.conditional.rate.flatMap { c in side.plain.rate.map { c / $0 } }
        }
        let conflicts =
            "409s: \(eventlog.conditional.conflicts) of \(Report.number(Double(eventlog.conditional.requests)))"
        return [
            ResultRow(
                benchmark: name, metric: "single events, \(publishers) publishers, a topic each, plain",
                unit: "events/s", eventlog: eventlog.plain.rate, redis: redis?.plain.rate, better: .higher,
                note: "Redis: XADD on a stream each; \(rounds) round(s) alternating with the next row"),
            ResultRow(
                benchmark: name, metric: "the same with Expected-Last-Id (the publisher's previous id)",
                unit: "events/s", eventlog: eventlog.conditional.rate, redis: redis?.conditional.rate, better: .higher,
                note: "all 201, \(conflicts); Redis: EVALSHA of XREVRANGE COUNT 1 + compare + XADD"),
            ResultRow(
                benchmark: name, metric: "publish p99, plain", unit: "ms", eventlog: eventlog.plain.p99,
                redis: redis?.plain.p99, better: .lower),
            ResultRow(
                benchmark: name, metric: "publish p99, with Expected-Last-Id", unit: "ms",
                eventlog: eventlog.conditional.p99, redis: redis?.conditional.p99, better: .lower),
            ResultRow(
                benchmark: name, metric: "conditional / plain publish rate", unit: "×", eventlog: ratio(eventlog),
                redis: redis.flatMap(ratio), better: .higher, note: "same server, same run, rounds alternating"),
            ResultRow(
                benchmark: name, metric: "conditional publishes refused (409 expected_last_id_mismatch)",
                unit: "refused", eventlog: Double(eventlog.conditional.conflicts),
                redis: redis.map { Double($0.conditional.conflicts) }, better: .lower, target: .atMost(0),
                note: "each publisher owns its topic: every condition holds", isCount: true),
        ]
    }

    /// The decimal number right after `prefix` in `body`, as text.
    static func number(after prefix: String, in body: ByteBuffer) -> String? {
        body.withUnsafeReadableBytes { bytes -> String? in
            guard let start = Bytes.find(Array(prefix.utf8), in: bytes) else { return nil }
            var end = start + prefix.utf8.count
            let first = end
            while end < bytes.count, bytes[end] >= 0x30, bytes[end] <= 0x39 { end += 1 }
            guard end > first else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[first..<end]), as: UTF8.self)
        }
    }

    private static func check(_ env: BenchEnvironment, _ result: ChainedResult, _ label: String) throws {
        if result.failures > 0 {
            throw BenchError("\(label): \(result.failures) failed: \(result.firstFailure ?? "")")
        }
    }

    /// Warms up both variants, then runs `count` rounds of (plain, conditional) one after the other on one side.
    private static func runRounds(
        _ env: BenchEnvironment, count: Int, seconds: Double, warmUp: Double, pid: Int32, serverName: String,
        labels: (plain: String, conditional: String),
        measure: (String, Bool, Double) async throws -> ChainedResult
    ) async throws -> Side {
        _ = try await measure("warm-plain", false, warmUp)
        _ = try await measure("warm-cond", true, warmUp)
        var side = Side()
        for round in 0..<count {
            for conditional in [false, true] {
                let cpu = CPUUsage(serverPID: pid)
                let result = try await measure("\(conditional ? "cond" : "plain")\(round)", conditional, seconds)
                let label = conditional ? labels.conditional : labels.plain
                report(env, "\(label), round \(round + 1)", result, cpu.summary(serverName: serverName))
                if conditional { side.conditional.add(result) } else { side.plain.add(result) }
            }
        }
        return side
    }

    private static func report(_ env: BenchEnvironment, _ label: String, _ result: ChainedResult, _ cpu: String) {
        var line = "  \(label): \(Report.number(Double(result.appended) / result.seconds)) events/s "
        line += "(\(result.appended) appended, \(result.conflicts) refused (409) in "
        line += "\(String(format: "%.2f", result.seconds)) s), \(Latencies(result.latencies).summary); \(cpu)"
        env.say(line)
    }
}

// MARK: Chained closed loop

/// What a chained closed-loop run did.
struct ChainedResult: Sendable {
    var appended = 0
    var conflicts = 0
    var failures = 0
    var firstFailure: String?
    var seconds = 0.0
    var latencies: [UInt64] = []
}

/// What a caller made of an answer: appended (with the new last id), refused by its condition (with the
/// current last id), or failed.
enum ChainedOutcome {
    case appended(String)
    case conflict(String)
    case failed(String)
}

/// A closed-loop caller whose next request depends on the previous answer (the last id it saw), on its
/// connection's event loop.
private final class ChainedCaller: @unchecked Sendable {
    typealias Make = (_ index: Int, _ last: String) -> LoadRequest
    typealias Judge = (LoadReply) -> ChainedOutcome

    private let connection: any LoadConnection
    private let index: Int
    private let deadline: UInt64
    private let make: Make
    private let judge: Judge
    private let promise: EventLoopPromise<ChainedResult>
    private var last: String
    private var result = ChainedResult()

    init(
        connection: any LoadConnection, index: Int, first: String, deadline: UInt64, make: @escaping Make,
        judge: @escaping Judge
    ) {
        self.connection = connection
        self.index = index
        last = first
        self.deadline = deadline
        self.make = make
        self.judge = judge
        promise = connection.eventLoop.makePromise(of: ChainedResult.self)
        result.latencies.reserveCapacity(1 << 14)
    }

    var future: EventLoopFuture<ChainedResult> { promise.futureResult }

    func start() {
        connection.eventLoop.execute { self.next() }
    }

    private func next() {
        let sent = monotonicNanos()
        guard sent < deadline else {
            promise.succeed(result)
            return
        }
        connection.exchange(make(index, last)) { reply in
            switch self.judge(reply) {
            case .appended(let id):
                self.result.latencies.append(monotonicNanos() - sent)
                self.result.appended += 1
                self.last = id
                self.next()
            case .conflict(let id):
                self.result.conflicts += 1
                self.last = id
                self.next()
            case .failed(let reason):
                self.result.failures += 1
                self.result.firstFailure = self.result.firstFailure ?? reason
                self.promise.succeed(self.result)
            }
        }
    }
}

/// Runs one chained caller per connection for `seconds`; caller `i` sends `make(i, last)`, starting from
/// `first`.
func runChained(
    connections: [any LoadConnection], first: String, seconds: Double,
    make: @escaping (_ index: Int, _ last: String) -> LoadRequest,
    judge: @escaping (LoadReply) -> ChainedOutcome
) async throws -> ChainedResult {
    let start = monotonicNanos()
    let deadline = start + UInt64(seconds * 1e9)
    let callers = connections.indices.map {
        ChainedCaller(
            connection: connections[$0], index: $0, first: first, deadline: deadline, make: make, judge: judge)
    }
    callers.forEach { $0.start() }
    var total = ChainedResult()
    for caller in callers {
        let result = try await wait(caller.future, seconds: seconds + 60, "a chained caller")
        total.appended += result.appended
        total.conflicts += result.conflicts
        total.failures += result.failures
        total.firstFailure = total.firstFailure ?? result.firstFailure
        total.latencies += result.latencies
    }
    total.seconds = Double(monotonicNanos() - start) / 1e9
    return total
}
