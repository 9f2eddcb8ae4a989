import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1

/// One HTTP/1.1 connection, as a channel handler on its event loop: reads requests one after another and
/// answers them; an SSE request turns the connection into a stream until either side ends it.
///
/// What to do next is decided by ``HTTPConnectionStateMachine``; this handler feeds it what happens on the
/// channel and performs the actions it returns. A publish is decoded here, on the loop, and handed to the
/// writer with a completion that answers back on the loop. Routes that await something else (a history read,
/// a token to verify) run as a Swift task whose answer is written on the loop.
///
/// Requests are answered one at a time, in order. A client that sends its next request before the answer to
/// the current one (HTTP pipelining) has its parts held here until the answer is written, and the connection
/// stops reading meanwhile. A client that waits for each answer costs nothing for this: its reads are never
/// paused, so the socket's registration never changes between requests.
final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    typealias StateMachine = HTTPConnectionStateMachine<ContinuousClock>

    private let server: EventLogServer
    private let eventLoop: any EventLoop
    private let cors: CORS
    // Loop-bound state (the class is `@unchecked Sendable` for the completions that hop back to the loop).
    private var machine: StateMachine
    private var context: ChannelHandlerContext?
    private var head: HTTPRequestHead?
    private var chunk: ByteBuffer?
    private var body = ByteBuffer()
    private var timer: Scheduled<Void>?
    /// The deadline the machine last set; `nil` while no request timeout runs (an answer is being made).
    private var timerDeadline: ContinuousClock.Instant?
    /// After a refused body: bytes still to drop, and the actions to run when the drain is over.
    private var drain: (left: Int, then: [StateMachine.Action], deadline: Scheduled<Void>)?
    private var closed = false
    /// From a complete request until its answer is written: parts of a next (pipelined) request wait in
    /// `deferred`, and reading stops (`readPaused`) until they have been handled.
    private var answering = false
    private var deferred: [HTTPServerRequestPart] = []
    private var readPaused = false
    /// The SSE stream this connection has become, if it has.
    private var stream: Subscriber?

    init(server: EventLogServer, eventLoop: any EventLoop) {
        self.server = server
        self.eventLoop = eventLoop
        self.cors = CORS(allowedOrigins: server.configuration.corsOrigins, credentials: server.auth.isEnabled)
        self.machine = StateMachine(
            requestTimeout: server.configuration.requestTimeout,
            maxBodyBytes: server.configuration.maxBodyBytes,
            clock: ContinuousClock()
        )
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        server.connections.register(context.channel)
        perform(machine.connectionOpened())
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionEnded(context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.inboundClosed())
        connectionEnded(context.channel)
        context.fireChannelInactive()
    }

    private func connectionEnded(_ channel: any Channel) {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        drain?.deadline.cancel()
        drain = nil
        server.connections.unregister(channel)
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Bytes NIO's decoder could not parse: its error handler has answered 400.
        perform(machine.inboundClosed())
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { stream?.writable() }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if answering || !deferred.isEmpty {
            deferred.append(part)
            return
        }
        receive(part)
    }

    /// Reading goes on unless parts of a pipelined request are waiting for the current answer.
    func read(context: ChannelHandlerContext) {
        if deferred.isEmpty {
            context.read()
        } else {
            readPaused = true
        }
    }

    private func receive(_ part: HTTPServerRequestPart) {
        if drain != nil {
            continueDrain(part)
            return
        }
        switch part {
        case .head(let received):
            head = received
            body.clear()
            perform(machine.headReceived(received))
        case .body(let received):
            chunk = received
            perform(machine.bodyReceived(byteCount: received.readableBytes))
        case .end:
            perform(machine.bodyEnded())
        }
    }

    // MARK: Actions

    private func perform(_ actions: [StateMachine.Action]) {
        var actions = actions[...]
        while let action = actions.popFirst() {
            switch action {
            case .startTimer(let deadline):
                // One armed timer at a time: a keep-alive connection moves its deadline on every request, and
                // the timer, when it fires early, re-arms itself for the current one (no task per request).
                timerDeadline = deadline
                if timer == nil { timer = scheduleTimeout(at: deadline) }
            case .cancelTimer:
                timerDeadline = nil
            case .markBusy:
                if let channel = context?.channel { server.connections.setIdle(channel, false) }
            case .markIdle:
                if let channel = context?.channel { server.connections.setIdle(channel, true) }
            case .sendContinue:
                guard let head, let context else { break }
                context.writeAndFlush(
                    wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            case .acceptBody:
                guard var part = chunk.take() else { break }
                body.writeBuffer(&part)
            case .refuseBody(let limit):
                guard let head else { break }
                let error = APIError(
                    code: .bodyTooLarge, message: "the request body is over the limit of \(limit) bytes")
                write(Response(error), for: head, keepAlive: false)
                startDrain(limit: limit, then: Array(actions))
                return
            case .refuseConnect:
                // NIO encodes CONNECT answers without a body, whatever we send: answer 405 with none.
                guard let head else { break }
                write(
                    Response(status: .methodNotAllowed, headers: [("Allow", "GET, POST")], body: ""), for: head,
                    keepAlive: false)
            case .respond(let keepAlive):
                guard let head else { break }
                answering = true
                let request = Request(head: head, body: body)
                body = ByteBuffer()
                respond(to: request, keepAlive: keepAlive)
            case .close:
                context?.close(promise: nil)
            }
        }
    }

    /// Closes the connection at `deadline` if the machine says the request timeout has passed then; if a later
    /// deadline has replaced it meanwhile, arms the timer again for that one.
    private func scheduleTimeout(at deadline: ContinuousClock.Instant) -> Scheduled<Void>? {
        guard let channel = context?.channel else { return nil }
        return server.connections.scheduleClose(channel, in: ContinuousClock.now.duration(to: deadline)) {
            // On the channel's loop.
            self.timer = nil
            if self.machine.timerFired().contains(.close) { return true }
            if !self.closed, let next = self.timerDeadline { self.timer = self.scheduleTimeout(at: next) }
            return false
        }
    }

    /// Reads and drops what is left of a refused body for a moment, so the client reads the error instead of a
    /// connection reset. Bounded in bytes and time; nothing is kept.
    private func startDrain(limit: Int, then actions: [StateMachine.Action]) {
        guard let context else { return }
        let deadline = context.eventLoop.scheduleTask(in: .seconds(2)) { self.endDrain() }
        drain = (4 * limit, actions, deadline)
    }

    private func continueDrain(_ part: HTTPServerRequestPart) {
        guard var current = drain else { return }
        switch part {
        case .body(let chunk):
            current.left -= chunk.readableBytes
            drain = current
            if current.left <= 0 { endDrain() }
        case .end, .head:
            endDrain()
        }
    }

    private func endDrain() {
        guard let current = drain else { return }
        drain = nil
        current.deadline.cancel()
        perform(current.then)
    }

    // MARK: Answering

    /// Answers one request: at once, or when its endpoint completes.
    private func respond(to request: Request, keepAlive: Bool) {
        let head = request.head
        server.logger.debug(
            "request", metadata: ["method": "\(head.method.rawValue)", "target": "\(Access.redacted(head.uri))"])
        let route: Router.Route
        do {
            route = try Router(server: server).route(request)
        } catch {
            return answer(.failure(APIError(any: error)), for: head, keepAlive: keepAlive)
        }
        let server = self.server
        let access = Access(server: server)
        switch route {
        case .respond(let result):
            answer(.success(result), for: head, keepAlive: keepAlive)
        case .publish:
            if !server.auth.isEnabled {
                publish(request, caller: .open, keepAlive: keepAlive)
                return
            }
            run(for: head) {
                try await access.principal(head, query: request.query)
            }.whenComplete { result in
                switch result {
                case .success(let caller): self.publish(request, caller: caller, keepAlive: keepAlive)
                case .failure(let error): self.answer(.failure(APIError(any: error)), for: head, keepAlive: keepAlive)
                }
            }
        case .health:
            complete(run(for: head) { await HistoryEndpoint(server: server).health() }, head, keepAlive)
        case .history:
            complete(
                run(for: head) {
                    let caller = try await access.principal(head, query: request.query)
                    return try await HistoryEndpoint(server: server).history(request, caller: caller)
                }, head, keepAlive)
        case .topics:
            complete(
                run(for: head) {
                    let caller = try await access.principal(head, query: request.query)
                    return try await HistoryEndpoint(server: server).topics(caller: caller)
                }, head, keepAlive)
        case .metrics:
            complete(
                run(for: head) {
                    let caller = try await access.principal(head, query: request.query)
                    if let failure = caller.authorizeAdmin("/metrics") {
                        throw access.refuse(failure, head, principal: caller)
                    }
                    return Response(
                        status: .ok,
                        headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                        body: server.metrics.render(head: server.log.head, earliest: server.log.earliest)
                    )
                }, head, keepAlive)
        case .webSocketPath:
            complete(
                run(for: head) {
                    // An upgrade whose credential does not authenticate arrives here as a plain request: answer 401.
                    _ = try await access.principal(head, query: request.query)
                    throw APIError(
                        code: .upgradeRequired,
                        message: "/v1/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                        headers: [("Upgrade", "websocket")]
                    )
                }, head, keepAlive)
        case .subscribe(let subscription):
            if !server.auth.isEnabled {
                stream(subscription, head: head, caller: .open, keepAlive: keepAlive)
                return
            }
            run(for: head) { () async throws -> Principal in
                let caller = try await access.principal(head, query: request.query)
                if let failure = caller.authorizeSubscribe(subscription.selectors) {
                    throw access.refuse(failure, head, principal: caller)
                }
                return caller
            }.whenComplete { result in
                switch result {
                case .success(let caller):
                    self.stream(subscription, head: head, caller: caller, keepAlive: keepAlive)
                case .failure(let error):
                    self.answer(.failure(APIError(any: error)), for: head, keepAlive: keepAlive)
                }
            }
        }
    }

    /// Runs `body` as a Swift task; its result comes back on the channel's loop.
    private func run<T: Sendable>(
        for head: HTTPRequestHead, _ body: @escaping @Sendable () async throws -> T
    ) -> EventLoopFuture<T> {
        eventLoop.makeFutureWithTask(body)
    }

    private func complete(_ future: EventLoopFuture<Response>, _ head: HTTPRequestHead, _ keepAlive: Bool) {
        future.whenComplete { result in
            self.answer(result.mapError(APIError.init(any:)), for: head, keepAlive: keepAlive)
        }
    }

    private func publish(_ request: Request, caller: Principal, keepAlive: Bool) {
        PublishEndpoint(server: server).handle(request, caller: caller, on: eventLoop) { result in
            self.answer(result, for: request.head, keepAlive: keepAlive)
        }
    }

    private func stream(
        _ subscription: SSEStream.Subscription, head: HTTPRequestHead, caller: Principal, keepAlive: Bool
    ) {
        guard let channel = context?.channel else { return }
        // The connection answers no more requests (`Connection: close`): NIO's protocol-error handler and the
        // parse error gate have nothing left to do, and an idle stream's memory counts.
        let pipeline = channel.pipeline.syncOperations
        if let handler = try? pipeline.handler(type: ParserErrorGate.self) {
            pipeline.removeHandler(handler, promise: nil)
        }
        if let handler = try? pipeline.handler(type: HTTPServerProtocolErrorHandler.self) {
            pipeline.removeHandler(handler, promise: nil)
        }
        let subscriber = SSEStream(server: server, channel: channel)
            .start(subscription, head: head, corsHeaders: cors.headers(for: head), until: caller.expiresAt)
        // What the request left behind is not needed while the stream lasts (an idle stream's memory counts).
        timer?.cancel()
        timer = nil
        self.head = nil
        body = ByteBuffer()
        stream = subscriber
        subscriber.finished.whenComplete { _ in
            self.stream = nil
            self.responseWritten(reusable: false)
        }
    }

    /// Writes an endpoint's answer (or its error), then lets the machine decide what comes next.
    private func answer(_ result: Result<Response, APIError>, for head: HTTPRequestHead, keepAlive: Bool) {
        let response: Response
        switch result {
        case .success(let found): response = found
        case .failure(let error): response = Response(error)
        }
        write(response, for: head, keepAlive: keepAlive)
        answering = false
        responseWritten(reusable: keepAlive)
        while !answering, !closed, !deferred.isEmpty {
            receive(deferred.removeFirst())
        }
        if deferred.isEmpty, readPaused, let context {
            readPaused = false
            context.read()
        }
    }

    private func responseWritten(reusable: Bool) {
        let actions =
            (server.isShuttingDown ? machine.shutdownBegan() : []) + machine.responseWritten(reusable: reusable)
        perform(actions)
    }

    private func write(_ response: Response, for head: HTTPRequestHead, keepAlive: Bool) {
        guard let context else { return }
        // Responses never name Content-Length or Connection themselves: both are added here.
        var headers = HTTPHeaders()
        headers.reserveCapacity(response.headers.count + 6)
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if cors.isEnabled { headers.add(contentsOf: cors.headers(for: head)) }
        let body = context.channel.allocator.buffer(string: response.body)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: keepAlive && !server.isShuttingDown ? "keep-alive" : "close")
        server.metrics.responded(status: Int(response.status.code))
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if head.method != .HEAD && body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

extension Principal {
    /// The caller when auth is off: everyone may do everything.
    static let open = Principal(kind: .open, name: "open", grants: .everything)
}
