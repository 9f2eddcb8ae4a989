import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

/// One WebSocket connection on `/v1/ws`: `subscribe` and `publish` ops in, JSON messages out.
///
/// Three tasks share the connection: the reader (ops, pings, close), the subscription's cursor loop
/// (the same ``SubscriptionLoop`` as SSE) and the pinger. Writes from all of them go through one
/// outbound writer that awaits the socket (backpressure).
struct WebSocketConnection {
    typealias Outbound = NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let server: EventLogServer
    let channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>
    /// The upgrade request, with the credential the socket starts with (if any).
    let head: HTTPRequestHead

    /// Close codes (RFC 6455, section 7.4.1).
    enum CloseCode: UInt16 {
        case normal = 1000
        case goingAway = 1001
        case protocolError = 1002
        case unsupportedData = 1003
        case invalidPayload = 1007
        case policyViolation = 1008
        case messageTooLarge = 1009
        case internalError = 1011
    }

    func run() async throws {
        let underlying = channel.channel
        server.metrics.webSocketOpened()
        defer { server.metrics.webSocketClosed() }
        server.connections.register(underlying)
        server.connections.setIdle(underlying, false)
        defer { server.connections.unregister(underlying) }
        // The upgrader authenticated this credential already (a cache hit now); it can only fail here if the
        // token expired in between.
        let caller = try? await Access(server: server).principal(
            head, query: Request(head: head).query)
        try await channel.executeThenClose { inbound, outbound in
            let session = WebSocketSession(
                server: server, channel: underlying, outbound: outbound,
                caller: caller ?? Principal(kind: .anonymous, name: "anonymous", grants: .nothing))
            guard caller != nil else {
                await session.close(.policyViolation, "the token expired")
                return
            }
            session.watchExpiry()
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await session.read(inbound) }
                group.addTask { await session.ping() }
                group.addTask {
                    await server.waitForShutdown()
                    await session.close(.goingAway, "the server is shutting down")
                }
                group.addTask { await waitForClose(underlying) }
                // Whichever ends first ends the connection.
                await group.next()
                group.cancelAll()
                await session.stopSubscription(endingConnection: true)
            }
        }
    }
}

/// The state of one WebSocket connection, shared by its tasks.
final class WebSocketSession: Sendable {
    typealias Outbound = NIOAsyncChannelOutboundWriter<WebSocketFrame>
    typealias CloseCode = WebSocketConnection.CloseCode
    let server: EventLogServer
    let channel: any Channel
    let outbound: Outbound

    private struct State {
        var subscription: Task<Void, Never>?
        /// The selectors of the current subscription, rechecked when the credential changes.
        var selectors: SelectorSet?
        /// Who the socket acts for; an `auth` op replaces it.
        var caller: Principal
        /// Warns before the caller's token expires and closes the socket when it has.
        var expiry: Task<Void, Never>?
        /// The expiry the `token_expired` warning was sent for: an `auth` op with the same token (the same
        /// expiry) does not bring a second warning.
        var warnedFor: Int64?
        var errors = 0
        var lastPong = ContinuousClock.now
        var closing = false
        var publishesInFlight = 0
    }
    private let state: Mutex<State>

    /// Publishes a connection may have waiting for their commit at once; the reader pauses beyond.
    static let maxPublishesInFlight = 64

    init(server: EventLogServer, channel: any Channel, outbound: Outbound, caller: Principal) {
        self.server = server
        self.channel = channel
        self.outbound = outbound
        self.state = Mutex(State(caller: caller))
    }

    private var caller: Principal { state.withLock { $0.caller } }

    // MARK: Reading

    func read(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>) async {
        await withDiscardingTaskGroup { publishes in
            var iterator = inbound.makeAsyncIterator()
            do {
                // Unmasked frames were refused by ClientFrameRequirements before reassembly.
                while let frame = try await iterator.next() {
                    switch try await receive(frame, publishes: &publishes) {
                    case .more: continue
                    case .closedByServer: await linger(&iterator)
                    case .closedByClient: break
                    }
                    return
                }
            } catch let error as NIOWebSocketFrameAggregator.Error {
                switch error {
                case .accumulatedFrameSizeIsTooLarge, .tooManyFragments:
                    await close(.messageTooLarge, "the message is over the limit")
                default:
                    await close(.protocolError, "bad fragmentation")
                }
            } catch {
                // The decoder's own protocol errors were answered by NIO's error handler (1002/1009).
                return
            }
        }
    }

    private enum Received { case more, closedByServer, closedByClient }

    private func receive(_ frame: WebSocketFrame, publishes: inout DiscardingTaskGroup) async throws -> Received {
        switch frame.opcode {
        case .text:
            let data = frame.unmaskedData
            guard let text = data.getString(at: data.readerIndex, length: data.readableBytes),
                String(validating: data.readableBytesView, as: UTF8.self) != nil
            else {
                await close(.invalidPayload, "text frames must be valid UTF-8")
                return .closedByServer
            }
            return await handle(text, publishes: &publishes) ? .more : .closedByServer
        case .binary:
            await close(.unsupportedData, "binary frames are not supported; send JSON text frames")
            return .closedByServer
        case .ping:
            try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
            return .more
        case .pong:
            state.withLock { $0.lastPong = .now }
            return .more
        case .connectionClose:
            // RFC 6455, section 7.4: echo a valid code; a malformed close frame is a protocol error.
            switch Self.closeFrameProblem(frame.unmaskedData) {
            case nil: await close(.normal, nil)
            case .some(let problem): await close(.protocolError, problem)
            }
            return .closedByClient
        default:
            await close(.protocolError, "unexpected frame")
            return .closedByServer
        }
    }

    /// Reads and drops what the client sends after our close frame, until its own close frame or end
    /// of stream, for at most a moment. Closing the socket with its frames unread would make the
    /// kernel answer them with a reset, and a reset discards whatever the client has not read yet:
    /// the last error messages and the close frame itself.
    private func linger(_ iterator: inout NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator) async {
        let deadline = server.connections.scheduleClose(channel, in: .seconds(2))
        defer { deadline.cancel() }
        while let frame = try? await iterator.next(), frame.opcode != .connectionClose {}
    }

    /// What is wrong with a client's close frame payload, if anything: a lone byte, a code that must not
    /// be sent (below 1000, 1004-1006, 1012-2999 reserved here, 1015, 5000+) or a reason that is not UTF-8.
    static func closeFrameProblem(_ payload: ByteBuffer) -> String? {
        var payload = payload
        guard payload.readableBytes != 0 else { return nil }
        guard let code = payload.readInteger(as: UInt16.self) else { return "a close frame needs a 2-byte code" }
        let valid = (1000...1003).contains(code) || (1007...1011).contains(code) || (3000...4999).contains(code)
        guard valid else { return "close code \(code) may not be sent" }
        guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else {
            return "the close reason is not UTF-8"
        }
        return nil
    }

    /// Handles one text message. Returns false when the connection should end.
    private func handle(_ text: String, publishes: inout DiscardingTaskGroup) async -> Bool {
        let message = ClientOp.decode(Array(text.utf8))
        // The ref is echoed as it came: a string stays a string, a number a number.
        let ref: JSONFragment = message.ref.map { .raw($0.canonicalText) } ?? .omitted
        switch message.op {
        case .failure(let error):
            return await reject(code: error.code, message: error.message, ref: ref)
        case .success(.subscribe(let subscription)):
            if let failure = caller.authorizeSubscribe(subscription.selectors) {
                return await reject(failure, ref: ref)
            }
            do {
                try await subscribe(subscription)
            } catch {
                return await reject(code: error.code, message: error.message, ref: ref)
            }
            return true
        case .success(.publish(let event)):
            if let failure = caller.authorizePublish([event.topic], batch: false) {
                return await reject(failure, ref: ref)
            }
            await waitForPublishSlot()
            publishes.addTask { await self.publish(event, ref: ref) }
            return true
        case .success(.auth(let token)):
            return await authenticate(token, ref: ref)
        }
    }

    /// A refused right: an `error` message naming the selector.
    private func reject(_ failure: AuthFailure, ref: JSONFragment) async -> Bool {
        Access(server: server).logRefusal(failure, path: "/v1/ws", caller: caller)
        return await reject(code: failure.code, message: failure.message, ref: ref, selector: failure.selector)
    }

    /// Sends an `error` message; after too many, closes with 1008. Returns false when closed.
    private func reject(code: ErrorCode, message: String, ref: JSONFragment, selector: String? = nil) async -> Bool {
        let errors = state.withLock { state -> Int in
            state.errors += 1
            return state.errors
        }
        if errors > server.configuration.maxWebSocketErrors {
            await close(.policyViolation, "too many bad messages")
            return false
        }
        await send(ServerMessage.webSocketError(code: code, message: message, ref: ref, selector: selector))
        return true
    }

    // MARK: Authenticating

    /// An `auth` op: the token replaces the socket's credential. A bad one ends the socket (1008); a good one is
    /// answered `authenticated`, and the current subscription is checked against the new grants.
    private func authenticate(_ token: String, ref: JSONFragment) async -> Bool {
        let principal: Principal
        switch await server.auth.authenticate(token) {
        case .failure(let failure):
            Access(server: server).logRefusal(failure, path: "/v1/ws", caller: nil)
            await send(ServerMessage.webSocketError(code: failure.code, message: failure.message, ref: ref))
            await close(.policyViolation, failure.code.rawValue)
            return false
        case .success(let found):
            principal = found
        }
        let selectors = state.withLock { state -> SelectorSet? in
            state.caller = principal
            return state.selectors
        }
        watchExpiry()
        await send(ServerMessage.authenticatedText(subject: principal.name, expiresAt: principal.expiresAt, ref: ref))
        if let selectors, let failure = principal.authorizeSubscribe(selectors) {
            // The new grants no longer cover the subscription: it stops, and says why.
            await stopSubscription()
            await send(
                ServerMessage.webSocketError(code: failure.code, message: failure.message, selector: failure.selector))
        }
        return true
    }

    /// Starts watching the current caller's expiry (replacing an earlier watch): a `token_expired` warning
    /// before it, at `expiresAt - min(30 s, half the time left)`, and close 1008 at it, unless an `auth` op
    /// renews the credential first.
    func watchExpiry() {
        let caller = self.caller
        let watch: Task<Void, Never>? = caller.expiresAt.map { expiresAt in
            Task {
                let left = expiresAt - Timestamp.nowMilliseconds()
                let warnIn = left - min(30_000, left / 2)
                do {
                    try await Task.sleep(for: .milliseconds(max(0, warnIn)))
                    let warned = self.state.withLock { state -> Bool in
                        defer { state.warnedFor = expiresAt }
                        return state.warnedFor == expiresAt
                    }
                    if !warned {
                        await self.send(
                            ServerMessage.webSocketError(
                                code: .tokenExpired,
                                message: "the token expires at \(Timestamp.rfc3339(milliseconds: expiresAt));"
                                    + " send {\"op\":\"auth\",\"token\":..} with a fresh one"))
                    }
                    try await Task.sleep(for: .milliseconds(max(0, expiresAt - Timestamp.nowMilliseconds())))
                } catch {
                    return
                }
                await self.close(.policyViolation, "the token expired")
            }
        }
        let previous = state.withLock { state -> Task<Void, Never>? in
            defer { state.expiry = watch }
            return state.expiry
        }
        previous?.cancel()
    }

    // MARK: Publishing

    private func waitForPublishSlot() async {
        while true {
            let admitted = state.withLock { state -> Bool in
                guard state.publishesInFlight < Self.maxPublishesInFlight else { return false }
                state.publishesInFlight += 1
                return true
            }
            if admitted { return }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    private func publish(_ event: NewEvent, ref: JSONFragment) async {
        defer { state.withLock { $0.publishesInFlight -= 1 } }
        if server.isShuttingDown {
            await send(
                ServerMessage.webSocketError(code: .shuttingDown, message: "the server is shutting down", ref: ref))
            return
        }
        let started = ContinuousClock.now
        do {
            let result = try await server.log.append(event)
            if !result.replayed { server.metrics.appended(1, latency: ContinuousClock.now - started) }
            await send(PublishAnswer(result).webSocketAck(ref: ref))
        } catch let error as EventLogError {
            let apiError = APIError(error)
            await send(ServerMessage.webSocketError(code: apiError.code, message: apiError.message, ref: ref))
        } catch {
            await send(
                ServerMessage.webSocketError(code: .internalError, message: "\(error)", ref: ref))
        }
    }

    // MARK: Subscribing

    private func subscribe(_ subscription: ClientOp.Subscription) async throws(APIError) {
        let selectors = subscription.selectors
        let start: CursorStart
        var resetNotice: Int64?
        switch subscription.start {
        case .resumeToken(let token):
            switch server.tokens.decode(token) {
            case .success(let position):
                start = CursorStart(after: position)
            case .failure(.otherEpoch(let position)):
                // Signed by this log's key but for another epoch (a restored backup): tell the client to reset.
                resetNotice = position
                start = .live
            case .failure:
                throw APIError(
                    code: .invalidResumeToken,
                    message: "the resume token is malformed, tampered with, or from another log")
            }
        case .earliest: start = .earliest
        case .live: start = .live
        case .after(let id): start = .after(id)
        }
        let loop = SubscriptionLoop(
            log: server.log,
            selectors: selectors,
            start: start,
            pageSize: server.configuration.pageSize,
            keepalive: server.configuration.webSocketPingInterval,
            metrics: server.metrics
        )
        let sink = WebSocketSink(session: self, resetNotice: resetNotice)
        let task = Task {
            do {
                try await loop.run(sink)
            } catch let error as EventLogError where error.code == .closed {
                await self.close(.goingAway, "the server is shutting down")
            } catch {
                return
            }
        }
        let previous = state.withLock { state -> Task<Void, Never>? in
            defer {
                state.subscription = task
                state.selectors = selectors
            }
            return state.subscription
        }
        previous?.cancel()
    }

    /// Stops the subscription (and, at the end of the connection, the expiry watch).
    func stopSubscription(endingConnection: Bool = false) async {
        let (task, expiry) = state.withLock { state in
            defer {
                state.selectors = nil
                if endingConnection { state.expiry = nil }
            }
            return (state.subscription, endingConnection ? state.expiry : nil)
        }
        expiry?.cancel()
        task?.cancel()
        await task?.value
    }

    // MARK: Liveness

    func ping() async {
        let interval = server.configuration.webSocketPingInterval
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            let silentFor = ContinuousClock.now - state.withLock { $0.lastPong }
            if silentFor > interval * 2 {
                await close(.policyViolation, "no pong within \(interval * 2)")
                return
            }
            var payload = channel.allocator.buffer(capacity: 8)
            payload.writeInteger(UInt64(silentFor.components.seconds))
            try? await outbound.write(WebSocketFrame(fin: true, opcode: .ping, data: payload))
        }
    }

    // MARK: Writing

    /// Sends one JSON text message, waiting for the socket to drain.
    func send(_ text: String) async {
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        await sendFrame(WebSocketFrame(fin: true, opcode: .text, data: buffer))
    }

    func sendFrame(_ frame: WebSocketFrame) async {
        let channel = self.channel
        let outbound = self.outbound
        try? await writeWithStallTimeout(channel: channel, timeout: server.configuration.stallTimeout) {
            try await outbound.write(frame)
        }
    }

    /// Sends a close frame (once) and closes the connection.
    func close(_ code: CloseCode, _ reason: String?) async {
        let first = state.withLock { state -> Bool in
            defer { state.closing = true }
            return !state.closing
        }
        guard first else { return }
        var data = channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.writeInteger(code.rawValue)
        if let reason { data.writeString(String(reason.utf8.prefix(120)) ?? "") }
        try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        // Only our side: the reader may still have to drain what the client sent meanwhile (see linger).
        try? await channel.close(mode: .output)
    }
}

/// Writes subscription messages as WebSocket JSON frames, each event with a fresh resume token.
struct WebSocketSink: SubscriptionSink {
    let session: WebSocketSession
    let resetNotice: Int64?

    private var tokens: ResumeTokenCodec { session.server.tokens }

    func open(epoch: String, earliest: Int64, head: Int64, from: Int64) async throws {
        try await send(
            .opened(
                epoch: epoch, earliest: earliest, head: head, from: from, resumeToken: tokens.encode(position: from)))
        if let resetNotice { try await reset(requested: resetNotice, head: head, epoch: epoch) }
    }

    func gap(requested: Int64, earliest: Int64) async throws {
        try await send(.gap(requested: requested, earliest: earliest))
    }

    func reset(requested: Int64, head: Int64, epoch: String) async throws {
        try await send(.reset(requested: requested, head: head, epoch: epoch))
    }

    func deliver(_ events: [Event], position: Int64, replayed: Bool) async throws {
        for event in events {
            try await send(.event(event, resumeToken: tokens.encode(position: event.id)))
        }
        session.server.metrics.webSocketDelivered(events.count)
    }

    func caughtUp(position: Int64) async throws {
        try await send(.caughtUp(head: position, resumeToken: tokens.encode(position: position)))
    }

    private func send(_ message: ServerMessage) async throws {
        try check()
        guard let text = message.webSocketText else { return }
        await session.send(text)
    }

    func keepalive() async throws {
        try check()
    }

    /// Ends the loop when the connection is gone (writes to a closed channel are dropped silently).
    private func check() throws {
        try Task.checkCancellation()
        guard session.channel.isActive else { throw CancellationError() }
    }
}
