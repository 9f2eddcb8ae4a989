import NIOCore

/// A Redis Streams subscriber: `XREAD` in a loop on one connection, in callbacks on its event loop.
///
/// Blocking (`BLOCK 0`) it is a live subscriber, the peer of an SSE stream. Non-blocking it pages through
/// the backlog and stops at the first empty answer, which is when it has caught up.
final class RedisStreamReader: @unchecked Sendable {
    /// What the reader has seen so far.
    struct Snapshot: Sendable {
        var delivered = 0
        var latencies: [UInt64] = []
        /// The number before `-` of every entry id read.
        var ids: [Int64] = []
        var caughtUpAt: UInt64?
        /// The highest acknowledged publish when the final (empty) read was sent.
        var headWhenCaughtUp: Int64 = 0
        var lastDeliveryAt: UInt64 = 0
        var failure: String?
    }

    let connection: RESPConnection
    /// Succeeds with the time of the first empty read (non-blocking readers only).
    let caughtUp: EventLoopPromise<UInt64>
    private let keys: [String]
    private var positions: [String]
    private let keyBytes: [[UInt8]]
    private let block: Bool
    private let count: Int
    private let recordLatency: Bool
    private let recordIDs: Bool
    private let acknowledgedHead: SharedMaximum?
    private var state = Snapshot()

    /// Reads `keys` after `positions` (entry ids), `count` entries per stream and call.
    init(
        connection: RESPConnection, keys: [String], after positions: [String], block: Bool, count: Int,
        recordLatency: Bool = false, recordIDs: Bool = false, acknowledgedHead: SharedMaximum? = nil
    ) {
        self.connection = connection
        self.keys = keys
        self.positions = positions
        keyBytes = keys.map { Array($0.utf8) }
        self.block = block
        self.count = count
        self.recordLatency = recordLatency
        self.recordIDs = recordIDs
        self.acknowledgedHead = acknowledgedHead
        caughtUp = connection.eventLoop.makePromise(of: UInt64.self)
    }

    var eventLoop: any EventLoop { connection.eventLoop }

    /// What it has seen so far. Call on the event loop.
    var snapshot: Snapshot { state }

    /// Forgets the counts and latencies so far. Call on the event loop.
    func resetCounts() {
        state.delivered = 0
        state.latencies.removeAll(keepingCapacity: true)
    }

    func start() {
        eventLoop.execute { self.read() }
    }

    /// `XREAD COUNT n [BLOCK 0] STREAMS keys...` encoded once; each read appends the positions.
    private lazy var commandPrefix: ByteBuffer = {
        var arguments = ["XREAD", "COUNT", String(count)]
        if block { arguments += ["BLOCK", "0"] }
        arguments.append("STREAMS")
        arguments += keys
        var buffer = ByteBuffer()
        buffer.writeString("*\(arguments.count + keys.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.utf8.count)\r\n\(argument)\r\n")
        }
        return buffer
    }()

    private func read() {
        var command = commandPrefix
        for position in positions { command.writeString("$\(position.utf8.count)\r\n\(position)\r\n") }
        let head = acknowledgedHead?.current ?? 0
        connection.exchange(LoadRequest(bytes: command, respMode: .raw)) { reply in
            guard case .resp(let replies) = reply, replies.errors == 0, let raw = replies.raw.first else {
                self.state.failure = reply.summary
                self.caughtUp.fail(BenchError("XREAD failed: \(reply.summary)"))
                return
            }
            let now = monotonicNanos()
            var entries = 0
            raw.withUnsafeReadableBytes { bytes in
                RESP.scanEntries(bytes, fromXRead: true) { stream, id, stamp in
                    entries += 1
                    if let index = self.streamIndex(stream) {
                        self.positions[index] = String(decoding: id, as: UTF8.self)
                    }
                    if self.recordIDs {
                        let end = id.firstIndex(of: UInt8(ascii: "-")) ?? id.count
                        self.state.ids.append(Bytes.decimal(id, from: 0, to: end) ?? -1)
                    }
                    if self.recordLatency, let stamp, now > stamp { self.state.latencies.append(now - stamp) }
                }
            }
            if entries == 0, !self.block {
                self.state.caughtUpAt = now
                self.state.headWhenCaughtUp = head
                self.caughtUp.succeed(now)
                return
            }
            self.state.delivered += entries
            if entries > 0 { self.state.lastDeliveryAt = now }
            self.read()
        }
    }

    private func streamIndex(_ name: UnsafeRawBufferPointer) -> Int? {
        if keyBytes.count == 1 { return 0 }
        return keyBytes.firstIndex { $0.elementsEqual(name) }
    }
}

/// Handlers grouped by the event loop they live on, so one hop per loop reads them all.
struct LoopGroups<Handler: Sendable>: Sendable {
    private(set) var groups: [(loop: any EventLoop, members: [Handler])]

    init(loops: [any EventLoop]) {
        groups = loops.map { ($0, []) }
    }

    /// Adds a handler that lives on loop number `loop`.
    mutating func add(_ handler: Handler, loop: Int) {
        groups[loop % groups.count].members.append(handler)
    }

    var count: Int { groups.reduce(0) { $0 + $1.members.count } }

    /// Runs `body` on each loop with that loop's handlers, and returns the results.
    func collect<T: Sendable>(_ body: @escaping @Sendable ([Handler]) -> T) async throws -> [T] {
        var results: [T] = []
        for group in groups {
            let members = group.members
            results.append(try await onLoop(group.loop) { body(members) })
        }
        return results
    }

    /// Polls `body` until it is true or `seconds` passed; returns whether it became true.
    func waitUntil(seconds: Double, _ body: @escaping @Sendable ([Handler]) -> Bool) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
        while clock.now < deadline {
            if try await collect(body).allSatisfy({ $0 }) { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}
