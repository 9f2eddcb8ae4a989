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

    init(_ selectors: SelectorSet) {
        if selectors.selectors.contains(.all) {
            (sql, arguments, selectsAll) = ("1", [], true)
            return
        }
        selectsAll = false
        if selectors.selectors.count == 1, case .topic(let topic) = selectors.selectors[0] {
            // One exact topic: events_topic_id gives (topic, id) order, which is id order for that topic.
            (sql, arguments) = ("topic = ?", [.text(topic)])
            return
        }
        guard !selectors.isEmpty else {
            (sql, arguments) = ("0", [])
            return
        }
        // The unary + keeps the planner on the primary key: one pass in id order with the topic tested on each
        // row, as EventLog's prefix reads do, rather than an index scan that would have to be sorted by id.
        var terms: [String] = []
        var arguments: [SQLValue] = []
        for selector in selectors.selectors {
            switch selector {
            case .topic(let topic):
                terms.append("+topic = ?")
                arguments.append(.text(topic))
            case .prefix(let prefix):
                // Every topic below `prefix/`: '0' is the byte after '/', so the range holds exactly them.
                terms.append("(+topic > ? AND +topic < ?)")
                arguments.append(contentsOf: [.text(prefix + "/"), .text(prefix + "0")])
            case .all:
                break
            }
        }
        sql = "(" + terms.joined(separator: " OR ") + ")"
        self.arguments = arguments
    }
}

/// SQL for the approximate size of an event row: the UTF-8 bytes of its text columns plus a fixed overhead
/// for the record header, the rowid and the `events_topic_id` entry. `CAST(x AS BLOB)` makes `length` count
/// bytes rather than characters (https://sqlite.org/lang_corefunc.html#length).
let approximateRowBytesSQL = """
    (32 + 2 * length(CAST(topic AS BLOB)) + length(CAST(type AS BLOB)) + coalesce(length(CAST(key AS BLOB)), 0) \
    + coalesce(length(CAST(data AS BLOB)), 0) + coalesce(length(CAST(idempotency_key AS BLOB)), 0))
    """
