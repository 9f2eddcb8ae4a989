/// An event's payload.
public enum EventData: Hashable, Sendable {
    /// UTF-8 text, delivered as is.
    case text(String)
    /// A JSON value, kept as its JSON text. The server stores it in canonical form (sorted keys),
    /// so a retried request with reordered keys is still the same request.
    case json(String)

    /// The text that goes into an SSE `data:` field: the text itself, or the JSON text.
    public var text: String {
        switch self {
        case .text(let text), .json(let text): return text
        }
    }

    /// The size of the payload, in UTF-8 bytes.
    public var byteCount: Int { text.utf8.count }
}

/// An event to append. ``EventLog/append(_:)`` validates it and gives it an id.
public struct NewEvent: Hashable, Sendable {
    /// The topic, following the topic grammar.
    public var topic: String
    /// The SSE event name. Defaults to `message`.
    public var type: String
    /// The compaction key; `nil` means the topic is the key.
    public var key: String?
    /// The payload; `nil` is a tombstone for the key.
    public var data: EventData?
    /// Makes a retry return the original event instead of appending again (per topic).
    public var idempotencyKey: String?
    /// A condition (optimistic concurrency): append only if the topic's newest id is this one (0: the topic
    /// has no event). Otherwise the append fails with `expected_last_id_mismatch` and the current last id.
    /// Not part of the request an idempotency key names: a retry returns the original whatever it expects.
    public var expectedLastID: Int64?

    /// Creates an event to append.
    public init(
        topic: String,
        type: String = "message",
        key: String? = nil,
        data: EventData?,
        idempotencyKey: String? = nil,
        expectedLastID: Int64? = nil
    ) {
        self.topic = topic
        self.type = type
        self.key = key
        self.data = data
        self.idempotencyKey = idempotencyKey
        self.expectedLastID = expectedLastID
    }
}

/// An event in the log.
public struct Event: Hashable, Sendable {
    /// The log position: strictly increasing in commit order, never reused.
    public let id: Int64
    /// The topic.
    public let topic: String
    /// The SSE event name.
    public let type: String
    /// The compaction key, if the producer gave one.
    public let key: String?
    /// The payload; `nil` for a tombstone.
    public let data: EventData?
    /// Commit time in milliseconds since 1970-01-01T00:00:00Z.
    public let time: Int64

    /// Creates an event value (the log creates them; tests and clients may too).
    public init(id: Int64, topic: String, type: String, key: String?, data: EventData?, time: Int64) {
        self.id = id
        self.topic = topic
        self.type = type
        self.key = key
        self.data = data
        self.time = time
    }

    /// The commit time as RFC 3339 with milliseconds, in UTC: `2026-11-25T01:07:15.123Z`.
    public var timeText: String { Timestamp.rfc3339(milliseconds: time) }

    /// The key compaction uses: the event's key, or its topic when there is none.
    public var compactionKey: String { key ?? topic }

    /// Approximate memory held by the event, for bounding the in-memory tail.
    package var approximateSize: Int {
        96 + topic.utf8.count + type.utf8.count + (key?.utf8.count ?? 0) + (data?.byteCount ?? 0)
    }
}

/// The result of one append.
public struct AppendResult: Hashable, Sendable {
    /// The event in the log: the new one, or the original one for an idempotent retry.
    public let event: Event
    /// True when the idempotency key already named this event and nothing was appended.
    public let replayed: Bool

    /// Creates an append result.
    public init(event: Event, replayed: Bool) {
        self.event = event
        self.replayed = replayed
    }
}
