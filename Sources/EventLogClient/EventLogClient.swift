import NIOCore
import NIOHTTP1
import NIOPosix

/// A client for an eventlog server: publish, read history, and subscribe with automatic resume.
///
/// The client is a value: copies share their keep-alive connections. It speaks plain HTTP/1.1 (put a
/// TLS-terminating proxy in front of a remote server).
///
/// ```swift
/// let client = EventLogClient(baseURL: "http://127.0.0.1:8080")
/// let result = try await client.publish(NewEvent(topic: "orders/1", type: "created", data: .json(#"{"n":1}"#)))
/// for try await element in client.subscribe(topics: ["orders/*"], from: .earliest) {
///     if case .event(let event) = element { print(event.id, event.data?.text ?? "") }
/// }
/// ```
///
/// Events, publish answers, history pages and topics are the wire layer's types (``Event``, ``NewEvent``,
/// ``PublishAnswer``, ``HistoryPage``, ``TopicSummary``), decoded from the server's JSON without a detour through
/// floating point: JSON data comes back exactly as the server sent it.
///
/// ```swift
/// ```
public struct EventLogClient: Sendable {
    /// The base URL the client was created with.
    public let baseURL: String
    /// The client's configuration.
    public let configuration: Configuration
    /// The event loops the client's connections run on.
    public let eventLoopGroup: any EventLoopGroup

    let address: Result<ServerAddress, EventLogClientError>
    let pool: HTTPConnectionPool?

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - baseURL: The server, e.g. `http://127.0.0.1:8080` (plain HTTP; a path prefix is allowed). An invalid URL
    ///     makes every call fail with ``EventLogClientError/Code/invalidURL``.
    ///   - eventLoopGroup: The event loops for the connections.
    ///   - configuration: Timeouts, limits and the reconnect policy.
    public init(
        baseURL: String,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        configuration: Configuration = .init()
    ) {
        self.baseURL = baseURL
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        do throws(EventLogClientError) {
            let address = try ServerAddress(parsing: baseURL)
            self.address = .success(address)
            self.pool = HTTPConnectionPool(
                baseURL: baseURL,
                address: address,
                group: eventLoopGroup,
                configuration: configuration
            )
        } catch {
            self.address = .failure(error)
            self.pool = nil
        }
    }

    /// Publishes one event (`POST /v1/events`, JSON) and returns where it landed, once the server committed it.
    ///
    /// With an ``NewEvent/idempotencyKey`` the key goes in the `Idempotency-Key` header; a retry with the same
    /// key returns the original event with ``PublishResult/replayed`` set.
    ///
    /// With an expected last id (`expectedLastID`, or else the event's ``NewEvent/expectedLastID``) the append is
    /// conditional (optimistic concurrency): the server appends only if the topic's newest id is that one (`0`: the
    /// topic has no event yet); it goes in the `Expected-Last-Id` header. Otherwise nothing is appended and the
    /// call throws `409 expected_last_id_mismatch` with the topic's newest id in
    /// ``EventLogClientError/lastID`` (``EventLogClientError/expectedLastIDMismatch``). A retry with the event's
    /// idempotency key returns the original append even when the topic moved on since.
    ///
    /// - Parameters:
    ///   - event: The event.
    ///   - expectedLastID: The id the topic's newest event must have, overriding the event's own; `nil` keeps the
    ///     event's.
    /// - Throws: ``EventLogClientError``; the server's refusals are ``EventLogClientError/Code/http`` errors with
    ///   its status and code (`409 idempotency_conflict`, `409 expected_last_id_mismatch`, `400 invalid_topic`,
    ///   ...).
    public func publish(_ event: NewEvent, expectedLastID: Int64? = nil) async throws -> PublishResult {
        var event = event
        if let expectedLastID {
            event.expectedLastID = expectedLastID
        }
        var headers = try self.headers(contentType: "application/json")
        if let idempotencyKey = event.idempotencyKey {
            headers.add(name: "Idempotency-Key", value: idempotencyKey)
        }
        if let expected = event.expectedLastID {
            // The body carries it too (`expectedLastId`, the same value): the server takes either.
            headers.add(name: "Expected-Last-Id", value: String(expected))
        }
        let response = try await self.execute(
            method: .POST,
            path: "/v1/events",
            headers: headers,
            body: PublishRequest.encode(event, includeIdempotencyKey: false),
            isReplayable: event.idempotencyKey != nil
        )
        guard response.status == 200 || response.status == 201 else {
            throw Self.httpError(response)
        }
        let body = Array(response.body.readableBytesView)
        let replayed = Self.isReplayed(response)
        return try WireDecoding.decode { () throws(WireDecodingError) in
            try PublishAnswer.decode(body, replayed: replayed)
        }
    }

    /// Publishes events in one all-or-nothing transaction (`POST /v1/events`, NDJSON) and returns their results in
    /// order. An empty batch returns `[]` without a request.
    ///
    /// Each event's ``NewEvent/idempotencyKey`` and ``NewEvent/expectedLastID`` travel on its own line. When a
    /// line's condition fails the whole batch is refused: `409 expected_last_id_mismatch` with the line in
    /// ``EventLogClientError/index`` and its topic's newest id in ``EventLogClientError/lastID``.
    /// - Throws: ``EventLogClientError``; ``EventLogClientError/index`` names the line the server refused.
    public func publish(batch: [NewEvent]) async throws -> [PublishResult] {
        guard !batch.isEmpty else {
            return []
        }
        var body = ""
        for event in batch {
            body += PublishRequest.encode(event, includeIdempotencyKey: true)
            body += "\n"
        }
        let response = try await self.execute(
            method: .POST,
            path: "/v1/events",
            headers: try self.headers(contentType: "application/x-ndjson"),
            body: body,
            isReplayable: batch.allSatisfy { $0.idempotencyKey != nil }
        )
        guard response.status == 200 || response.status == 201 else {
            throw Self.httpError(response)
        }
        let answer = Array(response.body.readableBytesView)
        let replayed = Self.isReplayed(response)
        let results = try WireDecoding.decode { () throws(WireDecodingError) in
            try PublishAnswer.decodeBatch(answer, replayed: replayed)
        }
        guard results.count == batch.count else {
            throw EventLogClientError(
                .protocolViolation,
                message: "the server answered \(results.count) results for \(batch.count) events"
            )
        }
        return results
    }

    /// Reads one page of history (`GET /v1/events`, JSON): the events after `after` that match `topics`.
    ///
    /// - Parameters:
    ///   - topics: Topics or selectors (`orders/*`, `*`); an empty array means every topic.
    ///   - after: The position to read after; `0` reads from the start of the retained log.
    ///   - limit: The most events to return, `1...1000`.
    public func history(topics: [String], after: Int64 = 0, limit: Int = 100) async throws -> HistoryPage {
        try await self.history(topics: topics, from: .after(after), limit: limit)
    }

    /// Reads one page of history (`GET /v1/events`, JSON) from `start`: after an id, the snapshot (the newest event
    /// of each key), from a time, or the last few events.
    ///
    /// A snapshot is read in pages: ask again with ``HistoryStart/snapshot(after:)`` of the page's
    /// ``HistoryPage/next`` until a page has fewer than `limit` events; then every key's newest event (as of that
    /// page) was returned, and ``HistoryStart/after(_:)`` of its `next` reads what came since. The other starts
    /// continue with ``HistoryStart/after(_:)`` of `next`.
    ///
    /// - Parameters:
    ///   - topics: Topics or selectors (`orders/*`, `*`); an empty array means every topic.
    ///   - start: Where the page starts.
    ///   - limit: The most events to return, `1...1000` (a rewind returns its count).
    public func history(topics: [String], from start: HistoryStart, limit: Int = 100) async throws -> HistoryPage {
        var headers = try self.headers()
        headers.add(name: "Accept", value: "application/json")
        let query = topics.map { ("topic", $0) } + start.queryItems + [("limit", String(limit))]
        let response = try await self.execute(method: .GET, path: "/v1/events", query: query, headers: headers)
        guard response.status == 200 else {
            throw Self.httpError(response)
        }
        let body = Array(response.body.readableBytesView)
        return try WireDecoding.decode { () throws(WireDecodingError) in try HistoryPage(decoding: body) }
    }

    /// Lists the topics with their event counts and last ids (`GET /v1/topics`).
    public func topics() async throws -> [TopicSummary] {
        var headers = try self.headers()
        headers.add(name: "Accept", value: "application/json")
        let response = try await self.execute(method: .GET, path: "/v1/topics", headers: headers)
        guard response.status == 200 else {
            throw Self.httpError(response)
        }
        let body = Array(response.body.readableBytesView)
        return try WireDecoding.decode { () throws(WireDecodingError) in try TopicSummary.decodeList(body) }
    }

    /// Subscribes to `topics`: an asynchronous sequence that replays from `from`, then follows the live tail.
    ///
    /// Each iterator opens its own connection. When the connection drops, the iterator yields
    /// ``SubscriptionElement/reconnecting(attempt:reason:)``, waits (exponential backoff with jitter; for SSE based
    /// on the server's `retry:`), and resumes after the last delivered event, so the consumer sees every event once
    /// and in order. Errors that would repeat (a `400`, a rejected resume token) end the sequence with an
    /// ``EventLogClientError``. Reading is driven by the consumer: at most
    /// ``Configuration/subscriptionBufferSize`` elements are read ahead. Cancelling the consuming task or dropping
    /// the iterator closes the connection.
    ///
    /// Starts: ``StartPosition/live`` (the default), ``StartPosition/earliest``, ``StartPosition/after(_:)``,
    /// ``StartPosition/snapshot`` (the newest event of each key in id order, then `caughtUp`, then live: the state
    /// of every key and its changes), ``StartPosition/since(_:)`` (Unix milliseconds) and
    /// ``StartPosition/rewind(_:)`` (the last N events, `1...1_000_000`). Before its first event a reconnect
    /// resumes where the server resolved the start (a snapshot asks for the snapshot again, or after its
    /// `caughtUp` resumes after the head it reached); after an event it resumes after that event. A snapshot cut
    /// off before its `caughtUp` so continues with every event after the last one delivered (older versions of
    /// the remaining keys included), in id order: applying events in order still ends at every key's newest.
    ///
    /// - Parameters:
    ///   - topics: Topics or selectors (`orders/*`, `*`).
    ///   - from: Where to start. ``StartPosition/resumeToken(_:)`` needs the WebSocket transport.
    ///   - transport: Server-Sent Events or WebSocket.
    public func subscribe(topics: [String], from: StartPosition = .live, transport: Transport = .sse) -> Subscription {
        Subscription(client: self, topics: topics, start: from, transport: transport)
    }

    /// Sends any request to the server and returns its answer whatever the status: for health checks, metrics, and
    /// tests of the server's error handling.
    ///
    /// - Parameters:
    ///   - method: The HTTP method, e.g. `GET`.
    ///   - path: The path and query after the base URL, e.g. `/healthz`.
    ///   - headers: Request headers; `Host`, `User-Agent` and `Content-Length` are added, and `Authorization` with
    ///     the configured token unless these headers hold one.
    ///   - body: The request body.
    public func send(
        method: String,
        path: String,
        headers: [(name: String, value: String)] = [],
        body: [UInt8] = []
    ) async throws -> RawResponse {
        var requestHeaders = try self.headers()
        for (name, value) in headers {
            requestHeaders.replaceOrAdd(name: name, value: value)
        }
        let httpMethod = HTTPMethod(rawValue: method)
        let response = try await self.execute(
            method: httpMethod,
            path: path,
            headers: requestHeaders,
            body: ByteBuffer(bytes: body),
            isReplayable: [.GET, .HEAD, .OPTIONS, .TRACE].contains(httpMethod),
            rawPath: true
        )
        return RawResponse(
            status: response.status,
            headers: response.head.headers.map { (name: $0.name, value: $0.value) },
            body: Array(response.body.readableBytesView)
        )
    }

    /// Closes the idle keep-alive connections. The client stays usable; later requests open new connections.
    ///
    /// Call it before shutting down an event loop group of your own that the client uses.
    public func closeIdleConnections() {
        self.pool?.closeIdleConnections()
    }
}

/// An answer to ``EventLogClient/send(method:path:headers:body:)``.
public struct RawResponse: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The response headers, in order.
    public var headers: [(name: String, value: String)]
    /// The body.
    public var body: [UInt8]

    /// The body as UTF-8 text.
    public var text: String {
        String(decoding: self.body, as: UTF8.self)
    }

    /// The values of the header `name` (case-insensitive).
    public func headers(named name: String) -> [String] {
        self.headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }
}

extension EventLogClient {
    /// The server address, or the base URL's parse error.
    func resolvedAddress() throws(EventLogClientError) -> ServerAddress {
        try self.address.get()
    }

    /// The headers of every request: `Host`, `User-Agent`, the configured extras, and the content type; the
    /// credential is added when the request is sent (``authorize(_:)``).
    func headers(contentType: String? = nil) throws(EventLogClientError) -> HTTPHeaders {
        let address = try self.resolvedAddress()
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: address.hostHeader)
        headers.add(name: "User-Agent", value: self.configuration.userAgent)
        for (name, value) in self.configuration.additionalHeaders {
            headers.add(name: name, value: value)
        }
        if let contentType {
            headers.add(name: "Content-Type", value: contentType)
        }
        return headers
    }

    private func execute(
        method: HTTPMethod,
        path: String,
        query: [(String, String)] = [],
        headers: HTTPHeaders,
        body: String? = nil,
        isReplayable: Bool = true
    ) async throws -> HTTPResponse {
        try await self.execute(
            method: method,
            path: path,
            query: query,
            headers: headers,
            body: body.map { ByteBuffer(string: $0) } ?? ByteBuffer(),
            isReplayable: isReplayable,
            rawPath: false
        )
    }

    private func execute(
        method: HTTPMethod,
        path: String,
        query: [(String, String)] = [],
        headers: HTTPHeaders,
        body: ByteBuffer,
        isReplayable: Bool,
        rawPath: Bool
    ) async throws -> HTTPResponse {
        let address = try self.resolvedAddress()
        guard let pool = self.pool else {
            throw EventLogClientError(.invalidURL, message: "no server address")
        }
        var headers = headers
        headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        let target = rawPath ? address.pathPrefix + path : address.target(path, query: query)
        var authorized = headers
        let sentToken = try await self.authorize(&authorized)
        let response = try await pool.execute(
            HTTPRequest(method: method, target: target, headers: authorized, body: body, isReplayable: isReplayable)
        )
        // The server refused the request before acting on it, so sending it again is safe whatever it is.
        guard sentToken, self.configuration.tokenProvider != nil, response.status == 401,
            Self.httpError(response).isTokenExpired
        else {
            return response
        }
        var renewed = headers
        try await self.authorize(&renewed)
        return try await pool.execute(
            HTTPRequest(method: method, target: target, headers: renewed, body: body, isReplayable: isReplayable)
        )
    }

    /// Adds `Authorization: Bearer <token>` with the token of ``Configuration/tokenProvider`` (called now) or
    /// ``Configuration/token``, unless `headers` already hold an `Authorization` or there is no token.
    ///
    /// - Returns: Whether a token was added.
    @discardableResult
    func authorize(_ headers: inout HTTPHeaders) async throws -> Bool {
        guard !headers.contains(name: "Authorization") else {
            return false
        }
        let token: String?
        if let provider = self.configuration.tokenProvider {
            token = try await provider()
        } else {
            token = self.configuration.token
        }
        guard let token, !token.isEmpty else {
            return false
        }
        // Visible ASCII only: a space, a control character or a line break would change the request.
        guard token.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw EventLogClientError(
                .invalidArgument,
                message: "the token holds a character an HTTP header cannot carry (only visible ASCII can)"
            )
        }
        headers.add(name: "Authorization", value: "Bearer " + token)
        return true
    }

    private static func isReplayed(_ response: HTTPResponse) -> Bool {
        response.head.headers["Idempotent-Replayed"].contains { $0.lowercased() == "true" }
    }

    /// The error for an unexpected status, with the server's `{"error":{"code","message"}}` when it sent one.
    static func httpError(_ response: HTTPResponse) -> EventLogClientError {
        self.httpError(status: response.head.status, body: response.body)
    }

    /// The error for an unexpected status, with the server's `{"error":{"code","message"}}` when it sent one.
    static func httpError(status: HTTPResponseStatus, body: ByteBuffer) -> EventLogClientError {
        let bytes = Array(body.readableBytesView)
        if let error = ErrorBody(decoding: bytes) {
            return EventLogClientError(
                .http,
                status: Int(status.code),
                serverCode: error.code,
                message: error.message,
                index: error.index,
                lastID: error.lastID
            )
        }
        var message = "HTTP \(status.code) \(status.reasonPhrase)"
        let text = Self.trimmed(String(decoding: bytes.prefix(200), as: UTF8.self))
        if !text.isEmpty {
            message += ": " + text
        }
        return EventLogClientError(.http, status: Int(status.code), message: message)
    }

    /// `text` without leading and trailing whitespace and newlines.
    private static func trimmed(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else {
            return ""
        }
        return String(scalars[first...last])
    }
}
