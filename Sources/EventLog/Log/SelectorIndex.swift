/// Subscribers indexed by their selectors (exact topic, prefix, `*`), so a commit finds the ones it concerns
/// without looking at the others.
///
/// A plain value: the ``CommitNotifier`` keeps one under its lock for awaiting readers, and each event loop of
/// a server keeps one for the subscribers that live on it. Ids are `Int`s: the index is used across modules,
/// where a generic one would run unspecialised (runtime metadata lookups on every insert and removal).
public struct SelectorIndex: Sendable {
    public typealias ID = Int

    private var selectorsByID: [ID: SelectorSet] = [:]
    private var exact: [String: Set<ID>] = [:]
    private var prefix: [String: Set<ID>] = [:]
    private var all: Set<ID> = []

    /// An empty index.
    public init() {}

    /// How many ids the index holds.
    public var count: Int { selectorsByID.count }

    /// True when the index holds nobody.
    public var isEmpty: Bool { selectorsByID.isEmpty }

    /// Every id in the index.
    public var ids: Dictionary<ID, SelectorSet>.Keys { selectorsByID.keys }

    /// Adds `id` with `selectors` (replacing what it had).
    public mutating func insert(_ id: ID, selectors: SelectorSet) {
        remove(id)
        selectorsByID[id] = selectors
        for selector in selectors.selectors {
            switch selector {
            case .all: all.insert(id)
            case .topic(let topic): exact[topic, default: []].insert(id)
            case .prefix(let value): prefix[value, default: []].insert(id)
            }
        }
    }

    /// Removes `id`; returns whether it was there.
    @discardableResult
    public mutating func remove(_ id: ID) -> Bool {
        guard let selectors = selectorsByID.removeValue(forKey: id) else { return false }
        for selector in selectors.selectors {
            switch selector {
            case .all: all.remove(id)
            case .topic(let topic): exact.removeEntry(id, for: topic)
            case .prefix(let value): prefix.removeEntry(id, for: value)
            }
        }
        return true
    }

    /// Removes everybody and returns them.
    public mutating func removeAll() -> [ID] {
        defer { self = SelectorIndex() }
        return Array(selectorsByID.keys)
    }

    /// Removes and returns the ids whose selectors match a topic of `events`.
    ///
    /// The buckets that matched are dropped whole; a matched id's other selectors are removed one by one, in
    /// place. (Removing each id from a bucket of 1,000 through a copied `Set` made a commit quadratic in the
    /// subscribers of its topic.)
    public mutating func removeMatching(_ events: [Event]) -> [ID] {
        guard !selectorsByID.isEmpty else { return [] }
        var found = all
        all = []
        var seenTopics: Set<String> = []
        for event in events where seenTopics.insert(event.topic).inserted {
            if let matched = exact.removeValue(forKey: event.topic) { found.formUnion(matched) }
            guard !prefix.isEmpty else { continue }
            // Every proper prefix of the topic that ends before a '/'.
            let utf8 = event.topic.utf8
            var index = utf8.startIndex
            while index != utf8.endIndex {
                if utf8[index] == UInt8(ascii: "/"),
                    let matched = prefix.removeValue(forKey: String(event.topic[..<index]))
                {
                    found.formUnion(matched)
                }
                index = utf8.index(after: index)
            }
        }
        for id in found { remove(id) }
        return Array(found)
    }
}

extension Dictionary {
    /// Removes `member` from the set at `key` in place (no copy of the set), and the key when it empties.
    fileprivate mutating func removeEntry<Member>(_ member: Member, for key: Key) where Value == Set<Member> {
        guard self[key]?.remove(member) != nil else { return }
        if self[key]?.isEmpty == true { self[key] = nil }
    }
}
