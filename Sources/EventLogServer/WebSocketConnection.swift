import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Close codes (RFC 6455, section 7.4.1).
enum WebSocketCloseCode: UInt16 {
    case normal = 1000
    case goingAway = 1001
    case protocolError = 1002
    case unsupportedData = 1003
    case invalidPayload = 1007
    case policyViolation = 1008
    case messageTooLarge = 1009
    case internalError = 1011
}

/// One WebSocket connection on `/v1/ws`, as a channel handler on its event loop: `subscribe`, `publish` and
/// `auth` ops in, JSON messages out.
///
/// Ops are handled one after another, in the order they came. A publish goes to the writer with a completion
/// that answers on the loop; an `auth` op (and the credential of the upgrade request) is verified by a short
/// task, and the ops behind it wait for it. The subscription is a ``Subscriber`` on the same loop, and every
/// write goes straight to the channel, so the messages leave in the order they are written. Pings, the pong
/// deadline and the stall timeout come from the loop's ``SubscriberHub`` sweep; the token's expiry from two
/// scheduled tasks on the loop. No Swift task is kept per connection.
final class WebSocketSession: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    typealias CloseCode = WebSocketCloseCode

    /// Publishes a connection may have waiting for their commit at once; reading pauses beyond.
    static let maxPublishesInFlight = 64

    let server: EventLogServer
    /// The upgrade request, with the credential the socket starts with (if any).
    private let upgradeHead: HTTPRequestHead
    private let hub: SubscriberHub

    // Loop-bound state.
    private var context: ChannelHandlerContext?
    /// Who the socket acts for; `nil` until the upgrade's credential is checked. An `auth` op replaces it.
    private var caller: Principal?
    private var subscription: Subscriber?
    /// The selectors of the current subscription, rechecked when the credential changes.
    private var selectors: SelectorSet?
    /// Frames that arrived while an op was being verified; handled in order once it is.
    private var queued: [WebSocketFrame] = []
    private var verifying = false
    private var errors = 0
    private var publishesInFlight = 0
    private var closing = false
    /// After our close frame: read and drop until the client's close frame, for at most a moment.
    private var lingering: Scheduled<Void>?
    private var readPending = false
    private var lastPong = NIODeadline.now()
    private var nextPing: NIODeadline
    private var unwritableSince: NIODeadline?
    /// The warning before the token expires and the close at expiry.
    private var expiryTimers: [Scheduled<Void>] = []
    /// The expiry the `token_expired` warning was sent for: an `auth` op with the same token (the same expiry)
    /// does not bring a second warning.
    private var warnedFor: Int64?

    init(server: EventLogServer, head: HTTPRequestHead, eventLoop: any EventLoop) {
        self.server = server
        self.upgradeHead = head
        self.hub = server.hubs.hub(for: eventLoop)
        self.nextPing = .now() + TimeAmount(server.configuration.webSocketPingInterval)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        server.metrics.webSocketOpened()
        server.connections.register(channel)
        server.connections.setIdle(channel, false)
        if !hub.addSocket(self) {
            close(.goingAway, "the server is shutting down")
            return
        }
        if !server.auth.isEnabled {
            caller = .open
            return
        }
        // The upgrader authenticated this credential already (a cache hit now); it can only fail here if the
        // token expired in between.
        let (server, head) = (self.server, upgradeHead)
        verifying = true
        context.eventLoop.makeFutureWithTask {
            try await Access(server: server).principal(head, query: Request(head: head).query)
        }.whenComplete { result in
            self.verifying = false
            switch result {
            case .success(let principal):
                self.caller = principal
                self.watchExpiry()
                self.handleQueued()
            case .failure:
                self.close(.policyViolation, "the token expired")
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended(context.channel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ended(context.channel)
    }

    private func ended(_ channel: any Channel) {
        guard self.context != nil else { return }
        self.context = nil
        subscription?.stop()
        subscription = nil
        selectors = nil
        for timer in expiryTimers { timer.cancel() }
        expiryTimers = []
        lingering?.cancel()
        lingering = nil
        hub.removeSocket(self)
        server.connections.unregister(channel)
        server.metrics.webSocketClosed()
    }

    // MARK: Backpressure on reading

    /// Reading pauses while an op is verified, while the publishes in flight are at their limit, and while the
    /// socket does not take our writes (a client that does not read its answers).
    private var shouldPauseReading: Bool {
        guard let context, lingering == nil else { return false }
        return verifying || publishesInFlight >= Self.maxPublishesInFlight || !context.channel.isWritable
    }

    func read(context: ChannelHandlerContext) {
        if shouldPauseReading {
            readPending = true
        } else {
            context.read()
        }
    }

    private func resumeReading() {
        guard readPending, let context, !shouldPauseReading else { return }
        readPending = false
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableSince = nil
            subscription?.writable()
            resumeReading()
        } else if unwritableSince == nil {
            unwritableSince = .now()
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if lingering != nil {
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        if verifying || !queued.isEmpty {
            queued.append(frame)
            return
        }
        receive(frame)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketFrameAggregator.Error {
            switch error {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments:
                close(.messageTooLarge, "the message is over the limit")
            default:
                close(.protocolError, "bad fragmentation")
            }
            return
        }
        // The decoder's own protocol errors were answered by NIO's error handler (1002/1009).
        context.close(promise: nil)
    }

    /// Handles the frames that waited for a verification, until the next one has to wait again.
    private func handleQueued() {
        while !verifying, lingering == nil, context != nil, !queued.isEmpty {
            receive(queued.removeFirst())
        }
        resumeReading()
    }

    private func receive(_ frame: WebSocketFrame) {
        switch frame.opcode {
        case .text:
            let data = frame.unmaskedData
            guard String(validating: data.readableBytesView, as: UTF8.self) != nil else {
                close(.invalidPayload, "text frames must be valid UTF-8")
                return
            }
            handle(Array(data.readableBytesView))
        case .binary:
            close(.unsupportedData, "binary frames are not supported; send JSON text frames")
        case .ping:
            write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
        case .pong:
            lastPong = .now()
        case .connectionClose:
            // RFC 6455, section 7.4: echo a valid code; a malformed close frame is a protocol error. The client
            // has closed its side: the connection ends once the echo is written.
            switch Self.closeFrameProblem(frame.unmaskedData) {
            case nil: close(.normal, nil, thenCloseFully: true)
            case .some(let problem): close(.protocolError, problem, thenCloseFully: true)
            }
        default:
            close(.protocolError, "unexpected frame")
        }
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

    /// Handles one text message.
    private func handle(_ bytes: [UInt8]) {
        guard let caller else { return }
        let message = ClientOp.decode(bytes)
        // The ref is echoed as it came: a string stays a string, a number a number.
        let ref: JSONFragment = message.ref.map { .raw($0.canonicalText) } ?? .omitted
        switch message.op {
        case .failure(let error):
            reject(code: error.code, message: error.message, ref: ref)
        case .success(.subscribe(let subscription)):
            if let failure = caller.authorizeSubscribe(subscription.selectors) {
                return reject(failure, ref: ref)
            }
            do {
                try subscribe(subscription)
            } catch {
                reject(code: error.code, message: error.message, ref: ref)
            }
        case .success(.publish(let event)):
            if let failure = caller.authorizePublish([event.topic], batch: false) {
                return reject(failure, ref: ref)
            }
            publish(event, ref: ref)
        case .success(.auth(let token)):
            authenticate(token, ref: ref)
        }
    }

    /// A refused right: an `error` message naming the selector.
    private func reject(_ failure: AuthFailure, ref: JSONFragment) {
        Access(server: server).logRefusal(failure, path: "/v1/ws", caller: caller)
        reject(code: failure.code, message: failure.message, ref: ref, selector: failure.selector)
    }

    /// Sends an `error` message; after too many, closes with 1008.
    private func reject(code: ErrorCode, message: String, ref: JSONFragment, selector: String? = nil) {
        errors += 1
        if errors > server.configuration.maxWebSocketErrors {
            close(.policyViolation, "too many bad messages")
            return
        }
        send(ServerMessage.webSocketError(code: code, message: message, ref: ref, selector: selector))
    }

    // MARK: Authenticating

    /// An `auth` op: the token replaces the socket's credential. A bad one ends the socket (1008); a good one is
    /// answered `authenticated`, and the current subscription is checked against the new grants. The ops after
    /// it wait until it is verified.
    private func authenticate(_ token: String, ref: JSONFragment) {
        guard let context else { return }
        verifying = true
        let auth = server.auth
        context.eventLoop.makeFutureWithTask { await auth.authenticate(token) }.whenComplete { result in
            self.verifying = false
            switch result {
            case .success(.success(let principal)):
                self.authenticated(principal, ref: ref)
                self.handleQueued()
            case .success(.failure(let failure)):
                Access(server: self.server).logRefusal(failure, path: "/v1/ws", caller: nil)
                self.send(ServerMessage.webSocketError(code: failure.code, message: failure.message, ref: ref))
                self.close(.policyViolation, failure.code.rawValue)
            case .failure:
                self.close(.internalError, "the token could not be checked")
            }
        }
    }

    private func authenticated(_ principal: Principal, ref: JSONFragment) {
        caller = principal
        watchExpiry()
        send(ServerMessage.authenticatedText(subject: principal.name, expiresAt: principal.expiresAt, ref: ref))
        if let selectors, let failure = principal.authorizeSubscribe(selectors) {
            // The new grants no longer cover the subscription: it stops, and says why.
            stopSubscription()
            send(ServerMessage.webSocketError(code: failure.code, message: failure.message, selector: failure.selector))
        }
    }

    /// Starts watching the current caller's expiry (replacing an earlier watch): a `token_expired` warning
    /// before it, at `expiresAt - min(30 s, half the time left)`, and close 1008 at it, unless an `auth` op
    /// renews the credential first.
    private func watchExpiry() {
        for timer in expiryTimers { timer.cancel() }
        expiryTimers = []
        guard let context, let expiresAt = caller?.expiresAt else { return }
        let left = expiresAt - Timestamp.nowMilliseconds()
        let warnIn = left - min(30_000, left / 2)
        let eventLoop = context.eventLoop
        expiryTimers = [
            eventLoop.scheduleTask(in: .milliseconds(max(0, warnIn))) {
                guard self.warnedFor != expiresAt else { return }
                self.warnedFor = expiresAt
                self.send(
                    ServerMessage.webSocketError(
                        code: .tokenExpired,
                        message: "the token expires at \(Timestamp.rfc3339(milliseconds: expiresAt));"
                            + " send {\"op\":\"auth\",\"token\":..} with a fresh one"))
            },
            eventLoop.scheduleTask(in: .milliseconds(max(0, left))) {
                self.close(.policyViolation, "the token expired")
            },
        ]
    }

    // MARK: Publishing

    private func publish(_ event: NewEvent, ref: JSONFragment) {
        guard let context else { return }
        if server.isShuttingDown {
            send(ServerMessage.webSocketError(code: .shuttingDown, message: "the server is shutting down", ref: ref))
            return
        }
        publishesInFlight += 1
        let started = ContinuousClock.now
        let (eventLoop, metrics) = (context.eventLoop, server.metrics)
        server.log.append(batch: [event]) { result in
            let latency = ContinuousClock.now - started
            // The answer is made on the loop: the writer's thread is shared by every publish of the server.
            eventLoop.execute {
                let answer: String
                switch result {
                case .success(let results):
                    if !results[0].replayed { metrics.appended(1, latency: latency) }
                    answer = PublishAnswer(results[0]).webSocketAck(ref: ref)
                case .failure(let error):
                    let apiError = APIError(any: error)
                    answer = ServerMessage.webSocketError(
                        code: apiError.code, message: apiError.message, ref: ref, lastID: apiError.lastID)
                }
                self.publishesInFlight -= 1
                self.send(answer)
                self.resumeReading()
            }
        }
    }

    // MARK: Subscribing

    private func subscribe(_ subscription: ClientOp.Subscription) throws(APIError) {
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
        case let position:
            start = CursorStart(position) ?? .live
        }
        guard let context else { return }
        let configuration = server.configuration
        let cursor = SubscriptionCursor(
            start: start,
            resetNotice: resetNotice,
            pageSize: configuration.pageSize,
            keepalive: nil,
            stallTimeout: TimeAmount(configuration.stallTimeout),
            now: .now()
        )
        // The old subscription stops before the new one writes anything: nothing of the old one can follow the
        // new `subscribed`.
        stopSubscription()
        let subscriber = Subscriber(
            server: server, channel: context.channel, selectors: subscription.selectors, transport: .webSocket(self),
            cursor: cursor)
        self.subscription = subscriber
        selectors = subscription.selectors
        subscriber.start()
    }

    private func stopSubscription() {
        subscription?.stop()
        subscription = nil
        selectors = nil
    }

    // MARK: Liveness (from the loop's sweep)

    /// Every ping interval: close a socket that answered no ping for two intervals, else ping it. Close a
    /// socket that has not taken our writes for the stall timeout.
    func tick(now: NIODeadline) {
        guard let context, !closing else { return }
        if let unwritableSince, now - unwritableSince >= TimeAmount(server.configuration.stallTimeout) {
            context.close(promise: nil)
            return
        }
        guard now >= nextPing else { return }
        let interval = TimeAmount(server.configuration.webSocketPingInterval)
        nextPing = now + interval
        let silentFor = now - lastPong
        if silentFor > interval * 2 {
            close(.policyViolation, "no pong within \(server.configuration.webSocketPingInterval * 2)")
            return
        }
        var payload = context.channel.allocator.buffer(capacity: 8)
        payload.writeInteger(UInt64(silentFor.nanoseconds / 1_000_000_000))
        write(WebSocketFrame(fin: true, opcode: .ping, data: payload))
    }

    /// The server is shutting down.
    func shutdown() {
        close(.goingAway, "the server is shutting down")
    }

    // MARK: Writing

    /// Sends one JSON text message.
    func send(_ text: String) {
        write(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)))
    }

    private func write(_ frame: WebSocketFrame) {
        guard let context, !closing else { return }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    /// Sends a close frame (once) and closes our side of the connection. Unless the client closed first, what
    /// it sends meanwhile is read and dropped until its own close frame, for at most a moment: closing the
    /// socket with its frames unread would make the kernel answer them with a reset, and a reset discards what
    /// the client has not read yet (the last error messages and the close frame itself).
    func close(_ code: CloseCode, _ reason: String?, thenCloseFully: Bool = false) {
        guard let context, !closing else { return }
        closing = true
        stopSubscription()
        for timer in expiryTimers { timer.cancel() }
        expiryTimers = []
        queued = []
        var data = context.channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.writeInteger(code.rawValue)
        if let reason { data.writeString(String(reason.utf8.prefix(120)) ?? "") }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in
                if thenCloseFully {
                    channel.close(promise: nil)
                } else {
                    channel.close(mode: .output, promise: nil)
                }
            }
        if !thenCloseFully {
            lingering = server.connections.scheduleClose(channel, in: .seconds(2))
            readPending = false
            context.read()
        }
    }
}
