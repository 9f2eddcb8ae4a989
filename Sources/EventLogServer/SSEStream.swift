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
            let headerValue = request.head.headers.first(name: "last-event-id")
            let requested: StartPosition
            do {
                if let headerValue, !headerValue.isEmpty {
                    requested = try StartPosition(lastEventID: headerValue, source: "Last-Event-ID")
                } else if let queryValue = request.queryValue("lastEventId") {
                    requested = try StartPosition(lastEventID: queryValue, source: "lastEventId")
                } else {
                    requested = .live
                }
            } catch {
                throw APIError(error)
            }
            switch requested {
            case .earliest: start = .earliest
            case .after(let id): start = .after(id)
            case .live, .resumeToken: start = .live  // Last-Event-ID never names a token
            }
            switch request.queryValue("envelope") {
            case nil, "0", "false": envelope = false
            case "1", "true": envelope = true
            case let other?:
                throw APIError(code: .invalidParameter, message: "envelope must be 1 or 0, not \"\(other.prefix(40))\"")
            }
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
