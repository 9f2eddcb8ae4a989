import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1

/// One HTTP/1.1 connection: reads requests one after another and answers them; an SSE request
/// turns the connection into a stream until either side ends it.
///
/// What to do next is decided by ``HTTPConnectionStateMachine``; this type feeds it what happens on
/// the channel and performs the actions it returns.
struct HTTPConnection {
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    typealias StateMachine = HTTPConnectionStateMachine<ContinuousClock>
    typealias Inbound = NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator
    let server: EventLogServer
    let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    private var cors: CORS {
        CORS(allowedOrigins: server.configuration.corsOrigins, credentials: server.auth.isEnabled)
    }

    func run() async throws {
        let underlying = channel.channel
        server.connections.register(underlying)
        defer { server.connections.unregister(underlying) }
        // Shared with the request timer, which runs on the event loop.
        let machine = Locked(
            StateMachine(
                requestTimeout: server.configuration.requestTimeout,
                maxBodyBytes: server.configuration.maxBodyBytes,
                clock: ContinuousClock()
            )
        )
        try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var timer: Scheduled<Void>?
            // The machine cancels the timer on every way out it sees; this also covers an error thrown
            // while writing (a client gone before its `100 Continue`).
            defer { timer?.cancel() }
            var head: HTTPRequestHead?
            var chunk: ByteBuffer?
            var body = underlying.allocator.buffer(capacity: 0)
            var actions = machine.withLock { $0.connectionOpened() }
            while true {
                while !actions.isEmpty {
                    switch actions.removeFirst() {
                    case .startTimer(let deadline):
                        timer = scheduleTimeout(at: deadline, machine: machine)
                    case .cancelTimer:
                        timer?.cancel()
                        timer = nil
                    case .markBusy:
                        server.connections.setIdle(underlying, false)
                    case .markIdle:
                        server.connections.setIdle(underlying, true)
                    case .sendContinue:
                        guard let head else { break }
                        try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .continue)))
                    case .acceptBody:
                        guard var part = chunk.take() else { break }
                        body.writeBuffer(&part)
                    case .refuseBody(let limit):
                        guard let head else { break }
                        try await refuseBody(head: head, outbound: outbound, limit: limit)
                        await drain(&iterator, limit: limit)
                    case .refuseConnect:
                        // NIO encodes CONNECT answers without a body, whatever we send: answer 405 with none.
                        guard let head else { break }
                        let refusal = Response(status: .methodNotAllowed, headers: [("Allow", "GET, POST")], body: "")
                        try await write(refusal, for: head, keepAlive: false, outbound: outbound)
                    case .respond(let keepAlive):
                        guard let head else { break }
                        let request = Request(head: head, body: body)
                        body = underlying.allocator.buffer(capacity: 0)
                        let reusable = try await respond(to: request, keepAlive: keepAlive, outbound: outbound)
                        actions += machine.withLock { machine in
                            (server.isShuttingDown ? machine.shutdownBegan() : [])
                                + machine.responseWritten(reusable: reusable)
                        }
                    case .close:
                        return
                    }
                }
                let part: HTTPServerRequestPart?
                do {
                    part = try await iterator.next()
                } catch {
                    // Bytes NIO's decoder could not parse: its error handler has answered 400.
                    if machine.withLock({ $0.inboundClosed() }).contains(.cancelTimer) {
                        timer?.cancel()
                    }
                    throw error
                }
                switch part {
                case .none:
                    actions = machine.withLock { $0.inboundClosed() }
                    // However the machine got to closing (the timer may have closed the channel), the
                    // stream has ended: nothing more can arrive.
                    if !actions.contains(.close) { actions.append(.close) }
                case .head(let received):
                    head = received
                    body.clear()
                    actions = machine.withLock { $0.headReceived(received) }
                case .body(let received):
                    chunk = received
                    actions = machine.withLock { $0.bodyReceived(byteCount: received.readableBytes) }
                case .end:
                    actions = machine.withLock { $0.bodyEnded() }
                }
            }
        }
    }

    /// Closes the connection at `deadline` if the machine says the request timeout has passed then.
    private func scheduleTimeout(at deadline: ContinuousClock.Instant, machine: Locked<StateMachine>) -> Scheduled<Void>
    {
        server.connections.scheduleClose(channel.channel, in: ContinuousClock.now.duration(to: deadline)) {
            machine.withLock { $0.timerFired() }.contains(.close)
        }
    }

    /// Reads and drops what is left of a refused body for a moment, so the client reads the error
    /// instead of a connection reset. Bounded in bytes and time; nothing is kept.
    private func drain(_ iterator: inout Inbound, limit: Int) async {
        let deadline = server.connections.scheduleClose(channel.channel, in: .seconds(2))
        defer { deadline.cancel() }
        var dropped = 0
        while dropped < 4 * limit, let part = try? await iterator.next() {
            switch part {
            case .body(let chunk): dropped += chunk.readableBytes
            case .end: return
            case .head: return
            }
        }
    }

    private func refuseBody(head: HTTPRequestHead, outbound: Outbound, limit: Int) async throws {
        let error = APIError(code: .bodyTooLarge, message: "the request body is over the limit of \(limit) bytes")
        try await write(Response(error), for: head, keepAlive: false, outbound: outbound)
    }

    /// Answers one request. Returns whether the connection may carry another.
    private func respond(to request: Request, keepAlive: Bool, outbound: Outbound) async throws -> Bool {
        let head = request.head
        server.logger.debug(
            "request", metadata: ["method": "\(head.method.rawValue)", "target": "\(Access.redacted(head.uri))"])
        let response: Response
        do {
            let route = try Router(server: server).route(request)
            let access = Access(server: server)
            switch route {
            case .respond(let result):
                response = result
            case .health:
                response = await HistoryEndpoint(server: server).health()
            case .publish:
                let caller = try await access.principal(head, query: request.query)
                response = try await PublishEndpoint(server: server).handle(request, caller: caller)
            case .history:
                let caller = try await access.principal(head, query: request.query)
                response = try await HistoryEndpoint(server: server).history(request, caller: caller)
            case .topics:
                let caller = try await access.principal(head, query: request.query)
                response = try await HistoryEndpoint(server: server).topics(caller: caller)
            case .metrics:
                let caller = try await access.principal(head, query: request.query)
                if let failure = caller.authorizeAdmin("/metrics") {
                    throw access.refuse(failure, head, principal: caller)
                }
                response = Response(
                    status: .ok,
                    headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                    body: server.metrics.render(head: server.log.head, earliest: server.log.earliest)
                )
            case .webSocketPath:
                // An upgrade whose credential does not authenticate arrives here as a plain request: answer 401.
                _ = try await access.principal(head, query: request.query)
                throw APIError(
                    code: .upgradeRequired,
                    message: "/v1/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                    headers: [("Upgrade", "websocket")]
                )
            case .subscribe(let subscription):
                let caller = try await access.principal(head, query: request.query)
                if let failure = caller.authorizeSubscribe(subscription.selectors) {
                    throw access.refuse(failure, head, principal: caller)
                }
                try await SSEStream(server: server, channel: channel.channel)
                    .run(subscription, head: head, corsHeaders: cors.headers(for: head), until: caller.expiresAt)
                return false
            }
        } catch let error as APIError {
            response = Response(error)
        } catch let error as EventLogError {
            response = Response(APIError(error))
        }
        try await write(response, for: head, keepAlive: keepAlive, outbound: outbound)
        return keepAlive
    }

    private func write(
        _ response: Response, for head: HTTPRequestHead, keepAlive: Bool, outbound: Outbound
    )
        async throws
    {
        var headers = HTTPHeaders(response.headers)
        headers.add(contentsOf: cors.headers(for: head))
        let body = ByteBuffer(string: response.body)
        headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        headers.replaceOrAdd(name: "Connection", value: keepAlive && !server.isShuttingDown ? "keep-alive" : "close")
        server.metrics.responded(status: Int(response.status.code))
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        if head.method == .HEAD || body.readableBytes == 0 {
            try await outbound.write(contentsOf: [.head(responseHead), .end(nil)])
        } else {
            try await outbound.write(contentsOf: [.head(responseHead), .body(.byteBuffer(body)), .end(nil)])
        }
    }
}
