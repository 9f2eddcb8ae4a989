/// A SQL condition on the `topic` column of `events` that selects what a ``SelectorSet`` selects, with its
/// arguments. Maintenance scans and deletes in id order, so the condition is written to keep the query on the
/// primary key (or on `events_topic_id` for one exact topic), never to sort.
struct SelectorFilter: Sendable {
    /// The condition, to be joined with `AND`.
    let sql: String
    /// The arguments of the condition's `?` placeholders, in order.
    let arguments: [SQLValue]
    /// True when every event is selected.
    let selectsAll: Bool

    /// The condition for one selector, as a query for that selector alone uses it: an exact topic lets the
    /// planner seek `events_topic_id` at `(topic, position)`; a prefix is a topic range tested on each row
    /// of a primary-key scan (the unary + keeps the planner off `events_topic_id`, which would have to
    /// collect and sort every match after the position); `*` is no condition.
    init(_ selector: Selector) {
        switch selector {
        case .all: self.init(sql: "1", arguments: [], selectsAll: true)
        case .topic(let topic): self.init(sql: "topic = ?", arguments: [.text(topic)], selectsAll: false)
        case .prefix:
            self.init(scanning: SelectorSet([selector]), column: "topic")
        }
    }

    private init(sql: String, arguments: [SQLValue], selectsAll: Bool) {
        self.sql = sql
        self.arguments = arguments
        self.selectsAll = selectsAll
    }

    init(_ selectors: SelectorSet) {
        if selectors.selectors.contains(.all) {
            self.init(Selector.all)
            return
        }
        if selectors.selectors.count == 1 {
            // One selector: as a query for it alone (an exact topic keeps events_topic_id, in id order).
            self.init(selectors.selectors[0])
            return
        }
        guard !selectors.isEmpty else {
            self.init(sql: "0", arguments: [], selectsAll: false)
            return
        }
        // The unary + keeps the planner on the primary key: one pass in id order with the topic tested on each
        // row, as EventLog's prefix reads do, rather than an index scan that would have to be sorted by id.
        self.init(scanning: selectors, column: "topic")
    }

    /// The condition on `column` for a scan in id order that tests every row: each term behind a unary `+`,
    /// so the planner never picks an index on the topic (which would have to sort). `snapshot=latest` uses it
    /// on `latest.topic` while it walks `latest_id`.
    init(scanning selectors: SelectorSet, column: String) {
        if selectors.selectors.contains(.all) {
            self.init(sql: "1", arguments: [], selectsAll: true)
            return
        }
        guard !selectors.isEmpty else {
            self.init(sql: "0", arguments: [], selectsAll: false)
            return
        }
        var terms: [String] = []
        var arguments: [SQLValue] = []
        for selector in selectors.selectors {
            switch selector {
            case .topic(let topic):
                terms.append("+\(column) = ?")
                arguments.append(.text(topic))
            case .prefix(let prefix):
                // Every topic below `prefix/`: '0' is the byte after '/', so the range holds exactly them.
                terms.append("(+\(column) > ? AND +\(column) < ?)")
                arguments += [.text(prefix + "/"), .text(prefix + "0")]
            case .all:
                break
            }
        }
        self.init(sql: "(" + terms.joined(separator: " OR ") + ")", arguments: arguments, selectsAll: false)
    }
}

/// SQL for the approximate size of an event row: the UTF-8 bytes of its text columns plus a fixed overhead
/// for the record header, the rowid and the `events_topic_id` entry. `CAST(x AS BLOB)` makes `length` count
/// bytes rather than characters (https://sqlite.org/lang_corefunc.html#length).
let approximateRowBytesSQL = """
    (32 + 2 * length(CAST(topic AS BLOB)) + length(CAST(type AS BLOB)) + coalesce(length(CAST(key AS BLOB)), 0) \
    + coalesce(length(CAST(data AS BLOB)), 0) + coalesce(length(CAST(idempotency_key AS BLOB)), 0))
    """
