import EventLog
import EventLogAuth
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization

/// The HTTP/1.1 + WebSocket server over an ``EventLog``.
///
/// Each connection is one child task of a discarding task group, so an error in one connection
/// never tears down the server. Shutdown is explicit: stop accepting, end the open streams, let
/// in-flight requests finish, and only then does the owner close the log.
public final class EventLogServer: Sendable {
    /// The log the server serves.
    public let log: EventLog
    /// The configuration it runs with.
    public let configuration: ServerConfiguration
    let logger: Logger
    let metrics = Metrics()
    /// Frames of recent events (SSE and WebSocket), encoded once for all subscribers.
    let frames: FrameCache
    /// The subscribers of each event loop.
    let hubs: SubscriberHubs
    let tokens: ResumeTokenCodec
    /// Who may publish and read what (everyone everything when auth is off).
    let auth: Authenticator
    private let group: any EventLoopGroup
    private let state = Mutex(RunState())
    let connections = ConnectionRegistry()

    enum UpgradeResult: Sendable {
        /// A WebSocket connection, served by its ``WebSocketSession`` on the event loop.
        case webSocket
        /// A plain HTTP connection, served by its ``HTTPConnectionHandler`` on the event loop.
        case http
    }

    private struct RunState {
        var serverChannel: (any Channel)?
        var serveTask: Task<Void, Never>?
        var shuttingDown = false
        var localPort: Int?
    }

    /// Creates a server; nothing is bound until ``start()``.
    public init(
        log: EventLog,
        configuration: ServerConfiguration = ServerConfiguration(),
        logger: Logger = Logger(label: "eventlogd"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        authenticator: Authenticator = Authenticator()
    ) {
        self.auth = authenticator
        self.log = log
        self.configuration = configuration
        self.logger = logger
        self.group = eventLoopGroup
        let tokens = ResumeTokenCodec(key: log.tokenKey, epoch: log.epoch)
        self.tokens = tokens
        let frames = FrameCache(tokens: tokens, head: log.head)
        self.frames = frames
        self.hubs = SubscriberHubs(
            group: eventLoopGroup, log: log, frames: frames, sweepInterval: Self.sweepInterval(configuration))
    }

    /// How often each event loop sweeps its subscribers: often enough for the shortest of the keepalive, the
    /// WebSocket ping and the stall timeout (a quarter of it), at most once a second, at least every 5 ms.
    static func sweepInterval(_ configuration: ServerConfiguration) -> TimeAmount {
        let shortest = min(configuration.keepalive, configuration.webSocketPingInterval, configuration.stallTimeout)
        let quarter = TimeAmount(shortest / 4)
        return max(.milliseconds(5), min(.seconds(1), quarter))
    }

    /// True once shutdown has begun.
    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    /// The bound port, once started.
    public var localPort: Int? { state.withLock { $0.localPort } }

    /// Binds and starts serving in the background. Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let serverChannel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.configureChild(channel)
                }
            }
        let port = serverChannel.channel.localAddress?.port ?? configuration.port
        let task = Task {
            await withDiscardingTaskGroup { group in
                do {
                    try await serverChannel.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await self.handle(connection) }
                        }
                    }
                } catch {
                    self.logger.error("accept loop failed", metadata: ["error": "\(error)"])
                }
            }
        }
        state.withLock {
            $0.serverChannel = serverChannel.channel
            $0.serveTask = task
            $0.localPort = port
        }
        logger.info(
            "listening",
            metadata: [
                "host": "\(configuration.host)", "port": "\(port)", "db": "\(log.path)", "epoch": "\(log.epoch)",
            ]
        )
        return port
    }

    /// Starts, then serves until ``shutdown()`` completes.
    public func run() async throws {
        try await start()
        await waitUntilStopped()
    }

    /// Returns when the accept loop and every connection have finished.
    public func waitUntilStopped() async {
        let task = state.withLock { $0.serveTask }
        await task?.value
        // Connections are channel handlers, not tasks: they are done when the registry is empty.
        await connections.waitUntilEmpty()
    }

    /// Graceful shutdown: stop accepting, end SSE and WebSocket streams (close 1001), let in-flight
    /// publishes commit and answer, close idle connections, and wait for every connection to finish
    /// (closing the rest by force after the grace period). The owner closes the log afterwards.
    public func shutdown() async {
        let (channel, task) = state.withLock { state -> ((any Channel)?, Task<Void, Never>?) in
            state.shuttingDown = true
            return (state.serverChannel, state.serveTask)
        }
        logger.info("shutting down")
        try? await channel?.close()
        log.endSubscriptions()
        connections.closeIdle()
        let grace = configuration.shutdownGracePeriod
        let forced = Task {
            try await Task.sleep(for: grace)
            self.connections.closeAll()
        }
        await task?.value
        await connections.waitUntilEmpty()
        forced.cancel()
        logger.info("stopped")
    }

    // MARK: Connections

    private func configureChild(_ channel: any Channel) throws -> EventLoopFuture<UpgradeResult> {
        guard !isShuttingDown, metrics.tryOpenConnection(limit: configuration.maxConnections) else {
            let status: HTTPResponseStatus = .serviceUnavailable
            let body = ErrorBody(
                isShuttingDown ? .shuttingDown : .tooManyConnections,
                message: isShuttingDown ? "the server is shutting down" : "the server has too many open connections"
            ).json
            var buffer = channel.allocator.buffer(capacity: 256)
            buffer.writeString(
                "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\ncontent-type: application/json\r\n"
                    + "content-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)"
            )
            channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
            return channel.eventLoop.makeFailedFuture(ConnectionRefused())
        }
        channel.closeFuture.whenComplete { _ in self.metrics.connectionClosed() }
        let maxFrameSize = configuration.maxWebSocketFrameBytes
        let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
            maxFrameSize: maxFrameSize,
            enableAutomaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                guard path == "/v1/ws", !self.isShuttingDown else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    if let gate = try? channel.pipeline.syncOperations.handler(type: ParserErrorGate.self) {
                        channel.pipeline.syncOperations.removeHandler(gate, promise: nil)
                    }
                    try channel.pipeline.syncOperations.addHandler(ClientFrameRequirements())
                    // Reassemble fragmented messages, bounded in size and count (1009 beyond).
                    try channel.pipeline.syncOperations.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0,
                            maxAccumulatedFrameCount: 256,
                            maxAccumulatedFrameSize: maxFrameSize
                        )
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        WebSocketSession(server: self, head: head, eventLoop: channel.eventLoop))
                    return UpgradeResult.webSocket
                }
            }
        )
        let upgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration(
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPConnectionHandler(server: self, eventLoop: channel.eventLoop))
                    return UpgradeResult.http
                }
            }
        )
        var pipelineConfiguration = NIOUpgradableHTTPServerPipelineConfiguration(
            upgradeConfiguration: upgradeConfiguration
        )
        pipelineConfiguration.decoderConfiguration.maxHeaderListSize = 32 * 1024
        // Every response header name and value is the server's own (an allowed CORS origin is echoed only when
        // it equals a configured one), so NIO's per-response check of each header byte is left out.
        pipelineConfiguration.enableResponseHeaderValidation = false
        // `HTTPConnectionHandler` holds a pipelined request itself; NIO's pipelining handler would pause and
        // resume reading around every request (two epoll changes each), pipelined or not.
        pipelineConfiguration.enablePipelining = false
        let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
            configuration: pipelineConfiguration
        )
        let upgradeHandler = try channel.pipeline.syncOperations.handler(
            type: NIOTypedHTTPServerUpgradeHandler<UpgradeResult>.self
        )
        // Without NIO's pipelining handler, a parse error right after a request waits here for its answer.
        let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        try channel.pipeline.syncOperations.addHandler(ParserErrorGate(), position: .after(decoder))
        // A credential given at the upgrade must authenticate; if it does not, the request goes on as plain HTTP
        // and is answered 401. No credential: an anonymous socket, which may send an `auth` op.
        var authorize: (@Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<Bool>)?
        if auth.isEnabled {
            authorize = { head, eventLoop in
                eventLoop.makeFutureWithTask { () async -> Bool in
                    let query = Request(head: head).query
                    let caller = try? await Access(server: self).principal(head, query: query, log: false)
                    return caller != nil
                }
            }
        }
        try channel.pipeline.syncOperations.addHandler(
            UpgradeRequestFilter(authorize: authorize), position: .before(upgradeHandler))
        // Until the first request head arrives the connection is idle; a client that never sends one
        // is closed after the request timeout (slow-loris defence).
        let scheduled = connections.scheduleClose(channel, in: configuration.requestTimeout)
        result.whenComplete { _ in scheduled.cancel() }
        // A first request that cannot be parsed fails the negotiation: NIO's error handler has answered
        // 400 (or 431); nobody else owns the connection, so close it here.
        result.whenFailure { _ in channel.close(promise: nil) }
        return result
    }

    private func handle(_ upgrade: EventLoopFuture<UpgradeResult>) async {
        do {
            switch try await upgrade.get() {
            case .http:
                return
            case .webSocket:
                return
            }
        } catch is ConnectionRefused {
            return
        } catch {
            logger.debug("connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    struct ConnectionRefused: Error {}
}

/// Open connections and whether each is between requests, so shutdown can close the idle ones at
/// once and the busy ones when their response is done.
final class ConnectionRegistry: Sendable {
    private struct Entry {
        let channel: any Channel
        var idle: Bool
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    private let emptyWaiters = Mutex<[CheckedContinuation<Void, Never>]>([])
    private let pending = Atomic<Int>(0)

    /// Closes scheduled by ``scheduleClose(_:in:)`` that have neither run nor been cancelled.
    var pendingCloses: Int { pending.load(ordering: .relaxed) }

    /// Closes `channel` after `delay` (if `shouldClose` still agrees then) unless the returned task is
    /// cancelled first. Every path that ends the connection must cancel it: until it runs, the task
    /// holds the channel with its pipeline, handlers and buffers, long after the client has gone.
    func scheduleClose(
        _ channel: any Channel,
        in delay: Duration,
        if shouldClose: @escaping @Sendable () -> Bool = { true }
    ) -> Scheduled<Void> {
        pending.add(1, ordering: .relaxed)
        let scheduled = channel.eventLoop.scheduleTask(in: TimeAmount(delay)) {
            if shouldClose() { channel.close(promise: nil) }
        }
        scheduled.futureResult.whenComplete { _ in self.pending.subtract(1, ordering: .relaxed) }
        return scheduled
    }

    func register(_ channel: any Channel) {
        entries.withLock { $0[ObjectIdentifier(channel)] = Entry(channel: channel, idle: true) }
    }

    func unregister(_ channel: any Channel) {
        let empty = entries.withLock { entries -> Bool in
            entries.removeValue(forKey: ObjectIdentifier(channel))
            return entries.isEmpty
        }
        guard empty else { return }
        let waiters = emptyWaiters.withLock { waiters in
            defer { waiters.removeAll() }
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no connection is registered (HTTP connections are channel handlers, not tasks: shutdown
    /// waits for them here).
    func waitUntilEmpty() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let emptyNow = emptyWaiters.withLock { waiters -> Bool in
                // Checked under the waiters' lock, so an unregister in between cannot be missed.
                if entries.withLock({ $0.isEmpty }) { return true }
                waiters.append(continuation)
                return false
            }
            if emptyNow { continuation.resume() }
        }
    }

    func setIdle(_ channel: any Channel, _ idle: Bool) {
        entries.withLock { $0[ObjectIdentifier(channel)]?.idle = idle }
    }

    func closeIdle() {
        let idle = entries.withLock { $0.values.filter(\.idle).map(\.channel) }
        for channel in idle { channel.close(promise: nil) }
    }

    func closeAll() {
        let all = entries.withLock { $0.values.map(\.channel) }
        for channel in all { channel.close(promise: nil) }
    }
}
