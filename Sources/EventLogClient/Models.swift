/// The server's answer to a publish: where the event landed (``PublishAnswer`` of the wire layer, the same type
/// the server encodes).
public typealias PublishResult = PublishAnswer

/// How a subscription talks to the server.
public enum Transport: Sendable, Hashable {
    /// Server-Sent Events (`GET /v1/events`, `Accept: text/event-stream`).
    case sse
    /// WebSocket (`GET /v1/ws`).
    case webSocket
}

/// What a subscription yields.
///
/// Every (re)connection starts with `opened`, and reports `caughtUp` once when the replay reached the head.
/// Events arrive exactly once and in id order, across reconnects.
public enum SubscriptionElement: Sendable, Hashable {
    /// The stream opened: the log's epoch and its retained range at that moment.
    case opened(epoch: String, earliest: Int64, head: Int64)
    /// An event, exactly as the server sent it (JSON data keeps its digits).
    ///
    /// A WebSocket subscription receives a resume token with every event; the subscription keeps the newest one
    /// to resume with after a reconnect, but does not hand it out: events are the same value whatever the
    /// transport, and a position to resume from later is the event's ``Event/id`` (``StartPosition/after(_:)``).
    case event(Event)
    /// The replay reached the head; live events follow.
    case caughtUp
    /// Events after `requested` and before `earliest` were removed by retention before this subscriber saw them.
    case gap(requested: Int64, earliest: Int64)
    /// The requested position does not exist in this log (another log, a restored backup, a new epoch);
    /// the stream continues from the live tail. The consumer should reload its state.
    case reset(requested: Int64, head: Int64, epoch: String)
    /// The connection was lost; the subscription reconnects after a backoff and resumes where it stopped.
    case reconnecting(attempt: Int, reason: String)
}

/// Where a page of history starts (``EventLogClient/history(topics:from:limit:)``).
public enum HistoryStart: Sendable, Hashable {
    /// The events after this id (`after=N`); `0` reads from the start of the retained log.
    case after(Int64)
    /// The snapshot: the newest event of each (topic, key) the selectors match, in id order (`snapshot=latest`);
    /// an event without a key counts as key == its topic. The first page is `after: 0`; the next ones continue
    /// after the previous page's ``HistoryPage/next``.
    case snapshot(after: Int64 = 0)
    /// The events committed at or after this time, Unix milliseconds (`since=<RFC 3339>`).
    case since(Int64)
    /// The last `count` matching events (`rewind=N`).
    case rewind(Int)

    /// The query parameters of this start.
    var queryItems: [(String, String)] {
        switch self {
        case .after(let id):
            return [("after", String(id))]
        case .snapshot(let after):
            return [("snapshot", "latest")] + (after > 0 ? [("after", String(after))] : [])
        case .since(let time):
            return [("since", Timestamp.rfc3339(milliseconds: time))]
        case .rewind(let count):
            return [("rewind", String(count))]
        }
    }
}
