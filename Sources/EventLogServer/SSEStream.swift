import EventLog
import NIOCore
import NIOHTTP1
import Synchronization

/// An SSE subscription (`GET /v1/events` with `Accept: text/event-stream`).
struct SSEStream {
    /// What the request asks for, validated before the stream opens (a bad request gets a 400).
    struct Subscription: Sendable {
        let selectors: SelectorSet
        let start: CursorStart
        let envelope: Bool

        init(_ request: Request, server: EventLogServer) throws {
            let texts = request.queryValues("topic")
            guard !texts.isEmpty else {
                throw APIError(code: .invalidParameter, message: "subscribe with at least one topic=<selector>")
            }
            selectors = try HistoryEndpoint.selectors(texts)
            start = try SSEStream.start(request)
            switch request.queryValue("envelope") {
            case nil, "0", "false": envelope = false
            case "1", "true": envelope = true
            case let other?:
                throw APIError(code: .invalidParameter, message: "envelope must be 1 or 0, not \"\(other.prefix(40))\"")
            }
        }
    }

    /// The start position: `Last-Event-ID` (a reconnect) wins; otherwise at most one of the query's
    /// `lastEventId`, `snapshot=latest`, `since` and `rewind`; otherwise the live tail.
    static func start(_ request: Request, now: Int64 = Timestamp.nowMilliseconds()) throws(APIError) -> CursorStart {
        do throws(EventLogError) {
            if let header = request.head.headers.first(name: "last-event-id"), !header.isEmpty {
                return CursorStart(try StartPosition(lastEventID: header, source: "Last-Event-ID")) ?? .live
            }
            let given = ["lastEventId", "snapshot", "since", "rewind"].filter { request.queryValue($0) != nil }
            guard given.count <= 1 else {
                throw EventLogError(
                    .invalidParameter, "give one start: \(given.joined(separator: ", ")) do not go together")
            }
            if let text = request.queryValue("lastEventId") {
                return CursorStart(try StartPosition(lastEventID: text, source: "lastEventId")) ?? .live
            }
            if let text = request.queryValue("snapshot") {
                guard text == "latest" else {
                    throw EventLogError(.invalidParameter, "snapshot must be \"latest\", not \"\(text.prefix(40))\"")
                }
                return .snapshot
            }
            if let text = request.queryValue("since") {
                return .since(try StartPosition.parseSince(text, now: now))
            }
            if let text = request.queryValue("rewind") {
                return .rewind(try StartPosition.parseRewind(text))
            }
            return .live
        } catch {
            throw APIError(error)
        }
    }

    let server: EventLogServer
    let channel: any Channel

    /// Starts the stream on the channel's event loop (call it there); its `finished` completes when it is over:
    /// the client left, the server stopped, or `until` (Unix milliseconds: when the caller's token stops being
    /// accepted) passed. In the last two cases the response ended cleanly and the client reconnects with its
    /// Last-Event-ID (and a fresh token).
    func start(
        _ subscription: Subscription, head: HTTPRequestHead, corsHeaders: [(String, String)], until: Int64? = nil
    ) -> Subscriber {
        var headers = HTTPHeaders([
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
            ("Connection", "close"),
        ])
        headers.add(contentsOf: corsHeaders)
        let responseHead = HTTPResponseHead(version: head.version, status: .ok, headers: headers)
        let configuration = server.configuration
        let now = NIODeadline.now()
        let cursor = SubscriptionCursor(
            start: subscription.start,
            pageSize: configuration.pageSize,
            keepalive: TimeAmount(configuration.keepalive),
            stallTimeout: TimeAmount(configuration.stallTimeout),
            deadline: until.map { now + .milliseconds($0 - Timestamp.nowMilliseconds()) },
            now: now
        )
        let transport = Subscriber.Transport.sse(
            envelope: subscription.envelope, retryMilliseconds: configuration.sseRetryMilliseconds)
        let metrics = server.metrics
        metrics.sseOpened()
        let subscriber = Subscriber(
            server: server, channel: channel, selectors: subscription.selectors, transport: transport, cursor: cursor)
        subscriber.finished.whenComplete { _ in metrics.sseClosed() }
        subscriber.start(responseHead: responseHead)
        return subscriber
    }
}
