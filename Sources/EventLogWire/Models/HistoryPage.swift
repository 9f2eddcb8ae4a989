/// A page of events after a position: the answer of `GET /v1/events` (history) and of ``EventLog``'s reads.
public struct HistoryPage: Sendable, Hashable {
    /// Matching events, ascending by id.
    public var events: [Event]
    /// The position to read after next time: the last event returned when the page is full,
    /// otherwise the head at the time of the read.
    public var next: Int64
    /// The head when the page was read.
    public var head: Int64
    /// The smallest retained id when the page was read.
    public var earliest: Int64
    /// The largest id of an event matching the page's selectors that retention removed, as far as the
    /// reader looked (0: none, or not looked at). Above the position read after, it is a `gap`.
    public var removedThrough: Int64
    /// How many retention transactions removed events matching the page's selectors (0: none, or not looked
    /// at). It moves even when a removal stays below ``removedThrough``.
    public var removals: Int64

    /// Creates a page.
    public init(
        events: [Event], next: Int64, head: Int64, earliest: Int64, removedThrough: Int64 = 0, removals: Int64 = 0
    ) {
        self.events = events
        self.next = next
        self.head = head
        self.earliest = earliest
        self.removedThrough = removedThrough
        self.removals = removals
    }
}

/// A topic's count and last id: an entry of `GET /v1/topics`.
public struct TopicSummary: Sendable, Hashable {
    /// The topic.
    public var topic: String
    /// How many retained events it has.
    public var count: Int64
    /// Its newest event's id.
    public var lastID: Int64

    /// Creates a topic summary.
    public init(topic: String, count: Int64, lastID: Int64) {
        self.topic = topic
        self.count = count
        self.lastID = lastID
    }
}
