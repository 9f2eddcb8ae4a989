/// Which topics a subscription or a read wants: an exact topic, every topic below a prefix
/// (`orders/*` matches `orders/1` and `orders/1/items`), or every topic (`*`).
public enum Selector: Hashable, Sendable, CustomStringConvertible {
    /// Exactly this topic.
    case topic(String)
    /// Every topic that starts with `prefix + "/"`, at any depth. The prefix itself is a valid topic.
    case prefix(String)
    /// Every topic.
    case all

    /// Parses `orders/1`, `orders/*` or `*`. Throws ``EventLogError/Code/invalidSelector``.
    public init(parsing text: String) throws(EventLogError) {
        if text == "*" {
            self = .all
        } else if text.hasSuffix("/*") {
            let prefix = String(text.dropLast(2))
            guard let problem = Topic.problem(prefix) else {
                self = .prefix(prefix)
                return
            }
            throw EventLogError(.invalidSelector, "invalid selector \(Topic.quoted(text)): \(problem)")
        } else if let problem = Topic.problem(text) {
            throw EventLogError(.invalidSelector, "invalid selector \(Topic.quoted(text)): \(problem)")
        } else {
            self = .topic(text)
        }
    }

    /// True when `topic` is selected.
    public func matches(_ topic: String) -> Bool {
        switch self {
        case .all:
            return true
        case .topic(let exact):
            return topic == exact
        case .prefix(let prefix):
            let topicBytes = topic.utf8
            let prefixBytes = prefix.utf8
            guard topicBytes.count > prefixBytes.count + 1, topicBytes.starts(with: prefixBytes) else { return false }
            return topicBytes[topicBytes.index(topicBytes.startIndex, offsetBy: prefixBytes.count)] == UInt8(ascii: "/")
        }
    }

    /// Whether every topic this selector matches is also matched by `other`.
    public func isCovered(by other: Selector) -> Bool {
        switch (self, other) {
        case (_, .all):
            return true
        case (.all, _):
            return false
        case (.topic(let topic), _):
            return other.matches(topic)
        case (.prefix(let prefix), .prefix(let otherPrefix)):
            return prefix == otherPrefix || Selector.prefix(otherPrefix).matches(prefix)
        case (.prefix, .topic):
            return false
        }
    }

    /// The text form: `orders/1`, `orders/*` or `*`.
    public var description: String {
        switch self {
        case .all: return "*"
        case .topic(let topic): return topic
        case .prefix(let prefix): return prefix + "/*"
        }
    }
}

/// A set of selectors, reduced so that none covers another. An event matches the set once, however
/// many of the original selectors matched it.
public struct SelectorSet: Hashable, Sendable, CustomStringConvertible {
    /// The selectors, with those covered by another removed, in a stable order.
    public let selectors: [Selector]

    /// Reduces `selectors`. An empty list selects nothing.
    public init(_ selectors: [Selector]) {
        var kept: [Selector] = []
        for selector in selectors {
            if kept.contains(where: { selector.isCovered(by: $0) }) { continue }
            kept.removeAll { $0.isCovered(by: selector) }
            kept.append(selector)
        }
        self.selectors = kept.sorted { $0.description < $1.description }
    }

    /// Parses selector texts such as `orders/*`.
    public init(parsing texts: [String]) throws(EventLogError) {
        var parsed: [Selector] = []
        for text in texts { parsed.append(try Selector(parsing: text)) }
        self.init(parsed)
    }

    /// Every topic.
    public static let all = SelectorSet([.all])

    /// True when any selector matches `topic`.
    public func matches(_ topic: String) -> Bool {
        selectors.contains { $0.matches(topic) }
    }

    /// True when the set selects no topic at all.
    public var isEmpty: Bool { selectors.isEmpty }

    public var description: String { selectors.map(\.description).joined(separator: ",") }
}
