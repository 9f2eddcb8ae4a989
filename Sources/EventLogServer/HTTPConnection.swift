import EventLog
import NIOCore
import NIOHTTP1

/// A request with its body, once fully received.
struct Request: Sendable {
    let head: HTTPRequestHead
    let path: String
    let query: [(String, String)]
    let body: ByteBuffer

    init(head: HTTPRequestHead, body: ByteBuffer) {
        self.head = head
        self.body = body
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map(String.init) ?? "/"
        query = parts.count > 1 ? Request.parseQuery(String(parts[1])) : []
    }

    /// Every value of a query parameter, percent-decoded.
    func queryValues(_ name: String) -> [String] {
        query.filter { $0.0 == name }.map(\.1)
    }

    /// The last value of a query parameter.
    func queryValue(_ name: String) -> String? {
        query.last { $0.0 == name }?.1
    }

    static func parseQuery(_ text: String) -> [(String, String)] {
        text.split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts.first.flatMap({ percentDecode($0) }) else { return nil }
            let value = parts.count > 1 ? percentDecode(parts[1]) : ""
            guard let value else { return nil }
            return (name, value)
        }
    }

    /// `+` is a space; `%XX` a byte; the result must be UTF-8.
    static func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// An API error: the HTTP status and the JSON error body.
struct APIError: Error {
    let status: HTTPResponseStatus
    let code: String
    let message: String
    var index: Int? = nil
    var headers: [(String, String)] = []

    static func badRequest(_ code: String, _ message: String) -> APIError {
        APIError(status: .badRequest, code: code, message: message)
    }

    /// The status and wire code for an error from the log.
    init(_ error: EventLogError) {
        switch error.code {
        case .idempotencyConflict: status = .conflict
        case .eventTooLarge: status = .payloadTooLarge
        case .storageUnavailable, .closed, .corrupt: status = .serviceUnavailable
        default: status = .badRequest
        }
        code = error.code == .closed ? "shutting_down" : error.code.description
        message = error.message
        index = error.index
    }

    init(
        status: HTTPResponseStatus,
        code: String,
        message: String,
        index: Int? = nil,
        headers: [(String, String)] = []
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.headers = headers
    }
}

/// A response to send.
struct Response: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: String

    static func json(_ status: HTTPResponseStatus, _ body: String, headers: [(String, String)] = []) -> Response {
        Response(status: status, headers: [("Content-Type", "application/json")] + headers, body: body)
    }

    init(status: HTTPResponseStatus, headers: [(String, String)] = [], body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    init(_ error: APIError) {
        self = .json(
            error.status,
            Wire.errorBody(code: error.code, message: error.message, index: error.index),
            headers: error.headers
        )
    }
}

/// One HTTP/1.1 connection: reads requests one after another and answers them; an SSE request
/// turns the connection into a stream until either side ends it.
struct HTTPConnection {
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    let server: EventLogServer
    let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    func run() async throws {
        let underlying = channel.channel
        server.connections.register(underlying)
        defer { server.connections.unregister(underlying) }
        try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var timer = scheduleTimeout()
            // Also when the client hangs up or sends garbage between requests (see scheduleClose).
            defer { timer.cancel() }
            while let part = try await iterator.next() {
                guard case .head(let head) = part else { continue }
                server.connections.setIdle(underlying, false)
                // The body: refused from Content-Length before reading, or as soon as it passes the limit.
                let limit = server.configuration.maxBodyBytes
                if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                    timer.cancel()
                    try await refuseBody(head: head, outbound: outbound, limit: limit)
                    await drain(&iterator, limit: limit)
                    return
                }
                if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                    try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .continue)))
                }
                var body = underlying.allocator.buffer(capacity: 0)
                var complete = false
                while let next = try await iterator.next() {
                    if case .body(var chunk) = next {
                        if body.readableBytes + chunk.readableBytes > limit {
                            timer.cancel()
                            try await refuseBody(head: head, outbound: outbound, limit: limit)
                            await drain(&iterator, limit: limit)
                            return
                        }
                        body.writeBuffer(&chunk)
                    } else if case .end = next {
                        complete = true
                        break
                    }
                }
                timer.cancel()
                guard complete else { return }
                let request = Request(head: head, body: body)
                if head.method == .CONNECT {
                    // NIO encodes CONNECT answers without a body, whatever we send: answer 405 with none,
                    // and close, since the client may be expecting a tunnel.
                    let refusal = Response(status: .methodNotAllowed, headers: [("Allow", "GET, POST")], body: "")
                    try await write(refusal, for: head, keepAlive: false, outbound: outbound)
                    return
                }
                let keepAlive = try await respond(to: request, outbound: outbound)
                guard keepAlive, !server.isShuttingDown else { return }
                server.connections.setIdle(underlying, true)
                timer = scheduleTimeout()
            }
        }
    }

    /// Closes the connection if the next request is not complete within the request timeout.
    private func scheduleTimeout() -> Scheduled<Void> {
        server.connections.scheduleClose(channel.channel, in: server.configuration.requestTimeout)
    }

    /// Reads and drops what is left of a refused body for a moment, so the client reads the error
    /// instead of a connection reset. Bounded in bytes and time; nothing is kept.
    private func drain(
        _ iterator: inout NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator,
        limit: Int
    ) async {
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
        let error = APIError(
            status: .payloadTooLarge,
            code: "body_too_large",
            message: "the request body is over the limit of \(limit) bytes"
        )
        try await write(Response(error), for: head, keepAlive: false, outbound: outbound)
    }

    /// Answers one request. Returns whether the connection may carry another.
    private func respond(to request: Request, outbound: Outbound) async throws -> Bool {
        let head = request.head
        let keepAlive = head.isKeepAlive
        let response: Response
        do {
            switch try route(request) {
            case .respond(let result):
                response = result
            case .publish:
                response = try await PublishEndpoint(server: server).handle(request)
            case .history:
                response = try await HistoryEndpoint(server: server).history(request)
            case .topics:
                response = try await HistoryEndpoint(server: server).topics()
            case .health:
                response = await HistoryEndpoint(server: server).health()
            case .subscribe(let subscription):
                try await SSEStream(server: server, channel: channel.channel, outbound: outbound)
                    .run(subscription, head: head, corsHeaders: corsHeaders(for: head))
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

    private enum Route {
        case respond(Response)
        case publish
        case history
        case topics
        case health
        case subscribe(SSEStream.Subscription)
    }

    private func route(_ request: Request) throws -> Route {
        let method = request.head.method
        func only(_ allowed: [HTTPMethod], _ route: () throws -> Route) throws -> Route {
            if method == .OPTIONS { return .respond(preflight(allowed)) }
            guard allowed.contains(method) || (method == .HEAD && allowed.contains(.GET)) else {
                throw APIError(
                    status: .methodNotAllowed,
                    code: "method_not_allowed",
                    message: "\(method) is not allowed on \(request.path)",
                    headers: [("Allow", allowed.map(\.rawValue).joined(separator: ", "))]
                )
            }
            return try route()
        }
        switch request.path {
        case "/v1/events":
            return try only([.GET, .POST]) {
                if method == .POST { return .publish }
                let accept = request.head.headers[canonicalForm: "accept"].map { $0.lowercased() }
                if accept.contains(where: { $0.hasPrefix("text/event-stream") }) {
                    return .subscribe(try SSEStream.Subscription(request, server: server))
                }
                return .history
            }
        case "/v1/topics":
            return try only([.GET]) { .topics }
        case "/healthz":
            return try only([.GET]) { .health }
        case "/metrics":
            return try only([.GET]) {
                .respond(
                    Response(
                        status: .ok,
                        headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                        body: server.metrics.render(head: server.log.head, earliest: server.log.earliest)
                    )
                )
            }
        case "/v1/ws":
            return try only([.GET]) {
                throw APIError(
                    status: .upgradeRequired,
                    code: "upgrade_required",
                    message: "/v1/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                    headers: [("Upgrade", "websocket")]
                )
            }
        case "/":
            return try only([.GET]) {
                .respond(
                    Response(
                        status: .ok,
                        headers: [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")],
                        body: BrowserClient.page
                    )
                )
            }
        case "/v1/eventlog.js":
            return try only([.GET]) {
                .respond(
                    Response(
                        status: .ok,
                        headers: [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "no-cache")],
                        body: BrowserClient.script
                    )
                )
            }
        default:
            throw APIError(status: .notFound, code: "not_found", message: "no resource at \(request.path)")
        }
    }

    private func preflight(_ allowed: [HTTPMethod]) -> Response {
        Response(
            status: .noContent,
            headers: [
                ("Access-Control-Allow-Methods", (allowed + [.OPTIONS]).map(\.rawValue).joined(separator: ", ")),
                ("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Idempotency-Key"),
                ("Access-Control-Max-Age", "600"),
            ],
            body: ""
        )
    }

    /// CORS headers for a request's `Origin`, when that origin is allowed.
    func corsHeaders(for head: HTTPRequestHead) -> [(String, String)] {
        let allowed = server.configuration.corsOrigins
        guard !allowed.isEmpty else { return [] }
        var headers: [(String, String)] = []
        if allowed.contains("*") {
            headers.append(("Access-Control-Allow-Origin", "*"))
        } else if let origin = head.headers.first(name: "origin"), allowed.contains(origin) {
            headers.append(("Access-Control-Allow-Origin", origin))
            headers.append(("Vary", "Origin"))
        } else {
            return []
        }
        headers.append(("Access-Control-Expose-Headers", "Idempotent-Replayed"))
        return headers
    }

    private func write(
        _ response: Response, for head: HTTPRequestHead, keepAlive: Bool, outbound: Outbound
    )
        async throws
    {
        var headers = HTTPHeaders(response.headers)
        headers.add(contentsOf: corsHeaders(for: head))
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
