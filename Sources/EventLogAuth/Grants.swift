public import EventLogWire

/// What a caller may do: the topics it may publish to, the selectors it may subscribe to, and whether it
/// may read the server's metrics.
///
/// A grant is a selector in the subscription grammar (`orders/1`, `orders/*`, `*`). A request is allowed
/// only when a grant covers it completely:
/// - publishing to topic `t` needs a publish grant that matches `t`;
/// - subscribing to (or reading the history of) selector `s` needs a subscribe grant that covers every
///   topic `s` can match: `*` is covered only by `*`, `orders/*` only by `orders/*` or a wider prefix.
public struct Grants: Sendable, Hashable {
    /// Topics the caller may publish to.
    public var publish: [Selector]
    /// Selectors the caller may subscribe to and read.
    public var subscribe: [Selector]
    /// Whether the caller may read `/metrics`.
    public var admin: Bool

    public init(publish: [Selector] = [], subscribe: [Selector] = [], admin: Bool = false) {
        self.publish = publish
        self.subscribe = subscribe
        self.admin = admin
    }

    /// Every right: what every caller has on a server without auth.
    public static let everything = Grants(publish: [.all], subscribe: [.all], admin: true)

    /// No right at all.
    public static let nothing = Grants()

    /// Parses grant texts; throws `invalid_selector` naming the bad one.
    public init(publish: [String], subscribe: [String], admin: Bool = false) throws(EventLogError) {
        self.init(
            publish: try publish.map { text throws(EventLogError) in try Selector(parsing: text) },
            subscribe: try subscribe.map { text throws(EventLogError) in try Selector(parsing: text) },
            admin: admin
        )
    }

    /// Whether an event on `topic` may be published.
    public func mayPublish(_ topic: String) -> Bool {
        publish.contains { $0.matches(topic) }
    }

    /// Whether `selector` may be subscribed to: some subscribe grant covers all of it.
    public func maySubscribe(_ selector: Selector) -> Bool {
        subscribe.contains { selector.isCovered(by: $0) }
    }

    /// Whether events on `topic` may be read (a topic is listed by `/v1/topics` only then).
    public func mayRead(_ topic: String) -> Bool {
        subscribe.contains { $0.matches(topic) }
    }

    /// The first of `selectors` that may not be subscribed to, if any.
    public func firstForbidden(_ selectors: SelectorSet) -> Selector? {
        selectors.selectors.first { !maySubscribe($0) }
    }

    /// The index and topic of the first event that may not be published, if any.
    public func firstForbidden(topics: [String]) -> (index: Int, topic: String)? {
        for (index, topic) in topics.enumerated() where !mayPublish(topic) {
            return (index, topic)
        }
        return nil
    }

    /// The rights of both: what either may do.
    public func union(_ other: Grants) -> Grants {
        Grants(publish: publish + other.publish, subscribe: subscribe + other.subscribe, admin: admin || other.admin)
    }
}
