/// The data of an event, as the server stores it.
///
/// A JSON string in a publish body is stored as text; any other JSON value is stored as JSON in
/// canonical form. `nil` (no data, or JSON `null`) is a tombstone for the event's key.
public enum EventPayload: Sendable, Hashable {
    /// Text: a JSON string value, delivered as the string itself.
    case text(String)
    /// The raw JSON text of a non-string JSON value (object, array, number, `true`, `false`).
    case json(String)

    /// The payload as one string: the text itself, or the JSON text.
    public var stringValue: String {
        switch self {
        case .text(let text): return text
        case .json(let json): return json
        }
    }
}

/// An event to publish.
public struct OutgoingEvent: Sendable, Hashable {
    /// The topic, e.g. `orders/1234`.
    public var topic: String
    /// The event type (the SSE event name); the server uses `message` when it is `nil`.
    public var type: String?
    /// The compaction key; `nil` means the topic itself is the key.
    public var key: String?
    /// The data; `nil` publishes a tombstone for the key.
    public var data: EventPayload?
    /// When set, a retry with the same key and topic returns the original event instead of appending again.
    public var idempotencyKey: String?

    /// Creates an event to publish.
    public init(
        topic: String,
        type: String? = nil,
        key: String? = nil,
        data: EventPayload? = nil,
        idempotencyKey: String? = nil
    ) {
        self.topic = topic
        self.type = type
        self.key = key
        self.data = data
        self.idempotencyKey = idempotencyKey
    }
}

/// The server's answer to a publish: where the event landed.
public struct PublishResult: Sendable, Hashable {
    /// The event's id (its position in the log).
    public var id: Int64
    /// The topic it was published to.
    public var topic: String
    /// The server's commit time, RFC 3339 with milliseconds.
    public var time: String
    /// `true` when an idempotency key named an event that already existed, so nothing was appended.
    public var replayed: Bool

    /// Creates a publish result.
    public init(id: Int64, topic: String, time: String, replayed: Bool) {
        self.id = id
        self.topic = topic
        self.time = time
        self.replayed = replayed
    }
}

/// An event read from the log, by a subscription or a history page.
public struct ReceivedEvent: Sendable, Hashable {
    /// The event's id: strictly increasing in commit order, global across topics.
    public var id: Int64
    /// The topic the event was published to.
    public var topic: String
    /// The event type (`message` unless the publisher chose one).
    public var type: String
    /// The compaction key, when the publisher set one.
    public var key: String?
    /// The server's commit time, RFC 3339 with milliseconds.
    public var time: String
    /// The data; `nil` is a tombstone.
    public var data: EventPayload?
    /// The signed position right after this event (WebSocket subscriptions only).
    public var resumeToken: String?

    /// Creates a received event.
    public init(
        id: Int64,
        topic: String,
        type: String,
        key: String? = nil,
        time: String,
        data: EventPayload?,
        resumeToken: String? = nil
    ) {
        self.id = id
        self.topic = topic
        self.type = type
        self.key = key
        self.time = time
        self.data = data
        self.resumeToken = resumeToken
    }
}

/// One page of history.
public struct HistoryPage: Sendable, Hashable {
    /// The events after the requested position, in id order.
    public var events: [ReceivedEvent]
    /// The position to pass as `after` for the next page.
    public var next: Int64
    /// The largest id committed when the page was read.
    public var head: Int64
    /// The smallest id still retained when the page was read.
    public var earliest: Int64

    /// Creates a history page.
    public init(events: [ReceivedEvent], next: Int64, head: Int64, earliest: Int64) {
        self.events = events
        self.next = next
        self.head = head
        self.earliest = earliest
    }
}

/// A topic known to the server.
public struct TopicInfo: Sendable, Hashable {
    /// The topic name.
    public var topic: String
    /// How many events the topic holds.
    public var count: Int64
    /// The id of the topic's newest event.
    public var lastId: Int64

    /// Creates a topic description.
    public init(topic: String, count: Int64, lastId: Int64) {
        self.topic = topic
        self.count = count
        self.lastId = lastId
    }
}

/// Where a subscription starts.
public enum StartPosition: Sendable, Hashable {
    /// Only events published after the subscription opens.
    case live
    /// All retained history, then the live tail.
    case earliest
    /// Events with an id greater than this one.
    case after(Int64)
    /// The position named by a resume token from an earlier WebSocket subscription (WebSocket only).
    case resumeToken(String)
}

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
    /// An event.
    case event(ReceivedEvent)
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
