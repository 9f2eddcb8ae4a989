import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

/// One WebSocket connection on `/v1/ws`: `subscribe` and `publish` ops in, JSON messages out.
///
/// The reader task handles ops, pings and close; the subscription runs on the channel's event loop (a
/// ``Subscriber``, as for SSE); the pinger is a task. Every write goes straight to the channel, so the order
/// of the messages is the order of the writes on the loop.
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
        try await channel.executeThenClose { inbound, _ in
            let session = WebSocketSession(
                server: server, channel: underlying,
                caller: caller ?? Principal(kind: .anonymous, name: "anonymous", grants: .nothing))
            guard caller != nil else {
                session.close(.policyViolation, "the token expired")
                return
            }
            session.watchExpiry()
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await session.read(inbound) }
                group.addTask { await session.ping() }
                group.addTask {
                    await server.waitForShutdown()
                    session.close(.goingAway, "the server is shutting down")
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
    typealias CloseCode = WebSocketConnection.CloseCode
    let server: EventLogServer
    let channel: any Channel

    private struct State {
        /// The current subscription, on the channel's event loop.
        var subscription: Subscriber?
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
        /// The reader, waiting for a publish slot.
        var slotWaiter: CheckedContinuation<Void, Never>?
    }
    private let state: Mutex<State>

    /// Publishes a connection may have waiting for their commit at once; the reader pauses beyond.
    static let maxPublishesInFlight = 64

    init(server: EventLogServer, channel: any Channel, caller: Principal) {
        self.server = server
        self.channel = channel
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
                    close(.messageTooLarge, "the message is over the limit")
                default:
                    close(.protocolError, "bad fragmentation")
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
                close(.invalidPayload, "text frames must be valid UTF-8")
                return .closedByServer
            }
            return await handle(text, publishes: &publishes) ? .more : .closedByServer
        case .binary:
            close(.unsupportedData, "binary frames are not supported; send JSON text frames")
            return .closedByServer
        case .ping:
            await sendFrame(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
            return .more
        case .pong:
            state.withLock { $0.lastPong = .now }
            return .more
        case .connectionClose:
            // RFC 6455, section 7.4: echo a valid code; a malformed close frame is a protocol error.
            switch Self.closeFrameProblem(frame.unmaskedData) {
            case nil: close(.normal, nil)
            case .some(let problem): close(.protocolError, problem)
            }
            return .closedByClient
        default:
            close(.protocolError, "unexpected frame")
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
            close(.policyViolation, "too many bad messages")
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
            close(.policyViolation, failure.code.rawValue)
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
                self.close(.policyViolation, "the token expired")
            }
        }
        let previous = state.withLock { state -> Task<Void, Never>? in
            defer { state.expiry = watch }
            return state.expiry
        }
        previous?.cancel()
    }

    // MARK: Publishing

    /// Takes a publish slot, waiting (without polling) for one of the publishes in flight to finish when all
    /// are taken.
    private func waitForPublishSlot() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                guard state.publishesInFlight < Self.maxPublishesInFlight else {
                    state.slotWaiter = continuation
                    return false
                }
                state.publishesInFlight += 1
                return true
            }
            if admitted { continuation.resume() }
        }
    }

    /// Gives a publish slot back, to the waiting reader if there is one.
    private func releasePublishSlot() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.slotWaiter else {
                state.publishesInFlight -= 1
                return nil
            }
            // The slot passes straight to the reader: the count stays.
            state.slotWaiter = nil
            return waiter
        }
        waiter?.resume()
    }

    private func publish(_ event: NewEvent, ref: JSONFragment) async {
        defer { releasePublishSlot() }
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
        let configuration = server.configuration
        let cursor = SubscriptionCursor(
            start: start,
            resetNotice: resetNotice,
            pageSize: configuration.pageSize,
            keepalive: nil,
            stallTimeout: TimeAmount(configuration.stallTimeout),
            now: .now()
        )
        let (server, channel) = (self.server, self.channel)
        // On the loop, the old subscription stops before the new one writes anything: nothing of the old one can
        // follow the new `subscribed`.
        try? await channel.eventLoop.submit {
            let previous = self.state.withLock { $0.subscription }
            previous?.stop()
            let subscriber = Subscriber(
                server: server, channel: channel, selectors: selectors, transport: .webSocket(self), cursor: cursor)
            self.state.withLock { state in
                state.subscription = subscriber
                state.selectors = selectors
            }
            subscriber.start()
        }.get()
    }

    /// Stops the subscription (and, at the end of the connection, the expiry watch).
    func stopSubscription(endingConnection: Bool = false) async {
        let (subscription, expiry) = state.withLock { state in
            defer {
                state.selectors = nil
                state.subscription = nil
                if endingConnection { state.expiry = nil }
            }
            return (state.subscription, endingConnection ? state.expiry : nil)
        }
        expiry?.cancel()
        guard let subscription else { return }
        try? await channel.eventLoop.submit { subscription.stop() }.get()
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
                close(.policyViolation, "no pong within \(interval * 2)")
                return
            }
            var payload = channel.allocator.buffer(capacity: 8)
            payload.writeInteger(UInt64(silentFor.components.seconds))
            await sendFrame(WebSocketFrame(fin: true, opcode: .ping, data: payload))
        }
    }

    // MARK: Writing

    /// Sends one JSON text message, waiting for the socket to drain.
    func send(_ text: String) async {
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        await sendFrame(WebSocketFrame(fin: true, opcode: .text, data: buffer))
    }

    /// Writes a frame straight to the channel (in order with the subscription's writes on the loop) and waits
    /// until the socket took it; a socket that stays unwritable for the stall timeout is closed.
    func sendFrame(_ frame: WebSocketFrame) async {
        let channel = self.channel
        try? await writeWithStallTimeout(channel: channel, timeout: server.configuration.stallTimeout) {
            try await channel.writeAndFlush(frame)
        }
    }

    /// Sends a close frame (once) and closes our side of the connection.
    func close(_ code: CloseCode, _ reason: String?) {
        let first = state.withLock { state -> Bool in
            defer { state.closing = true }
            return !state.closing
        }
        guard first else { return }
        var data = channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.writeInteger(code.rawValue)
        if let reason { data.writeString(String(reason.utf8.prefix(120)) ?? "") }
        let channel = self.channel
        // Only our side: the reader may still have to drain what the client sent meanwhile (see linger).
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }
}
