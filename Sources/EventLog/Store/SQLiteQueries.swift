/// The reads of a ``SQLiteEventStore``, each on a reader thread, and the SQL they share with the writer
/// and maintenance: the event columns, row decoding and the bounds.
extension SQLiteEventStore {
    func read(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void
    ) {
        readers.read(completion) { connection in
            try Self.readPage(connection, after: position, selectors: selectors, limit: limit)
        }
    }

    func readSnapshot(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void
    ) {
        readers.read(completion) { connection in
            try Self.readSnapshotPage(connection, after: position, selectors: selectors, limit: limit)
        }
    }

    func removals(_ selectors: SelectorSet) async throws -> RemovalMark {
        try await withReader { connection in try Self.readRemovalMark(connection, selectors: selectors) }
    }

    func position(since time: Int64) async throws -> Int64 {
        try await withReader { connection in
            try connection.transaction(write: false) {
                try Self.lastID(before: time, head: try Self.readHead(connection), connection)
            }
        }
    }

    func position(rewinding count: Int, selectors: SelectorSet) async throws -> Int64 {
        try await withReader { connection in
            try Self.rewindPosition(connection, count: count, selectors: selectors)
        }
    }

    func latest(_ count: Int, selectors: SelectorSet) async throws -> [Event] {
        try await withReader { connection in
            var found: [Event] = []
            for selector in selectors.selectors {
                let filter = SelectorFilter(selector)
                let statement = try connection.cachedStatement(
                    "SELECT \(Self.eventColumns) FROM events WHERE \(filter.sql) ORDER BY id DESC LIMIT ?")
                try statement.bind(filter.arguments + [.int(Int64(count))])
                while try statement.step() { found.append(Self.event(from: statement)) }
            }
            found.sort { $0.id < $1.id }
            return Array(found.suffix(count))
        }
    }

    func topics() async throws -> [TopicSummary] {
        try await withReader { connection in
            let statement = try connection.cachedStatement(
                "SELECT topic, count(*), max(id) FROM events GROUP BY topic ORDER BY topic"
            )
            var result: [TopicSummary] = []
            while try statement.step() {
                result.append(
                    TopicSummary(topic: statement.text(0) ?? "", count: statement.int64(1), lastID: statement.int64(2))
                )
            }
            return result
        }
    }

    // MARK: Rows and bounds

    /// The columns ``event(from:)`` decodes, in its order.
    static let eventColumns = "id, topic, type, key, data, data_format, time"

    /// The event in the current row of a statement that selected ``eventColumns`` first.
    static func event(from statement: Statement) -> Event {
        let data: EventData?
        if statement.isNull(4) {
            data = nil
        } else {
            let text = statement.text(4) ?? ""
            data = statement.int64(5) == 1 ? .json(text) : .text(text)
        }
        return Event(
            id: statement.int64(0),
            topic: statement.text(1) ?? "",
            type: statement.text(2) ?? "message",
            key: statement.isNull(3) ? nil : statement.text(3),
            data: data,
            time: statement.int64(6)
        )
    }

    /// The largest id ever assigned: `sqlite_sequence` keeps it even after the row is deleted.
    static func readHead(_ connection: Connection) throws -> Int64 {
        try connection.scalarInt("SELECT seq FROM sqlite_sequence WHERE name = 'events'") ?? 0
    }

    /// `meta.removals`: how many maintenance transactions have deleted events (0 when none ever did).
    static func readRemovals(_ connection: Connection) throws -> Int64 {
        Int64(try connection.scalarText("SELECT value FROM meta WHERE name = 'removals'") ?? "0") ?? 0
    }

    /// The smallest retained id; head + 1 when no event is retained (1 for a new log).
    static func readEarliest(_ connection: Connection) throws -> Int64 {
        if let id = try connection.scalarInt("SELECT id FROM events ORDER BY id LIMIT 1") { return id }
        return try readHead(connection) + 1
    }

    /// What retention removed of the events matching `selectors`: the largest of the `removed` rows of the
    /// selectors themselves and of the floor `''`, and the sum of their counts. One primary-key seek per
    /// selector, whatever the number of topics: retention keeps a row for every prefix above each topic it
    /// removes from.
    static func readRemovalMark(_ connection: Connection, selectors: SelectorSet) throws -> RemovalMark {
        let statement = try connection.cachedStatement(
            "SELECT max(through), total(removals) FROM removed WHERE selector IN (?, '')")
        var mark = RemovalMark()
        for selector in selectors.selectors {
            try statement.bind([.text(selector.description)])
            defer { statement.reset() }
            if try statement.step(), !statement.isNull(0) {
                mark.through = max(mark.through, statement.int64(0))
                mark.count += statement.int64(1)
            }
        }
        return mark
    }

    /// The positions a restore or an import skipped (see `voids` in schema/0002_order_state.sql), as id ranges.
    static func readVoids(_ connection: Connection) throws -> [ClosedRange<Int64>] {
        try connection.rows("SELECT after, through FROM voids WHERE through > after ORDER BY after") {
            ($0.int64(0) + 1)...$0.int64(1)
        }
    }

    /// The largest id whose commit time is below `time` (0 when none): the position a start `since` that time
    /// reads after. Bisects ids on commit time, which the writer never lets go back (``SQLiteWriter``); one
    /// primary-key seek per step, whatever was deleted.
    static func lastID(before time: Int64, head: Int64, _ connection: Connection) throws -> Int64 {
        try StorePositions.lastID(before: time, head: head) { middle in
            try connection.rows("SELECT id, time FROM events WHERE id >= ? ORDER BY id LIMIT 1", [.int(middle)]) {
                ($0.int64(0), $0.int64(1))
            }.first
        }
    }

    /// The position before the `count`-th newest event matching `selectors` (0 when fewer match): a start that
    /// replays exactly the last `count`. One selector is one seek with `OFFSET`; several merge their newest ids.
    static func rewindPosition(_ connection: Connection, count: Int, selectors: SelectorSet) throws -> Int64 {
        try connection.transaction(write: false) {
            try StorePositions.rewind(
                count: count, selectors: selectors,
                nthNewest: { selector, n in
                    let filter = SelectorFilter(selector)
                    return try connection.scalarInt(
                        "SELECT id FROM events WHERE \(filter.sql) ORDER BY id DESC LIMIT 1 OFFSET ?",
                        filter.arguments + [.int(Int64(n - 1))])
                },
                newest: { selector, count in
                    let filter = SelectorFilter(selector)
                    return try connection.rows(
                        "SELECT id FROM events WHERE \(filter.sql) ORDER BY id DESC LIMIT ?",
                        filter.arguments + [.int(Int64(count))]
                    ) { $0.int64(0) }
                })
        }
    }

    /// Head, earliest and removals in one read transaction (or in the caller's, when one is open), so the
    /// three are one snapshot.
    static func readBounds(_ connection: Connection) throws -> StoreBounds {
        let ownTransaction = connection.isAutocommit
        if ownTransaction { try connection.execute("BEGIN") }
        defer { if ownTransaction { try? connection.execute("COMMIT") } }
        return StoreBounds(
            earliest: try readEarliest(connection),
            head: try readHead(connection),
            removals: try readRemovals(connection)
        )
    }

    private static func readPage(
        _ connection: Connection,
        after position: Int64,
        selectors: SelectorSet,
        limit: Int
    ) throws -> HistoryPage {
        try connection.execute("BEGIN")
        defer { try? connection.execute("COMMIT") }
        let head = try readHead(connection)
        let earliest = try readEarliest(connection)
        var merged: [Event] = []
        for selector in selectors.selectors {
            // One query per selector (SelectorFilter says how each uses the indexes), merged by id below.
            let filter = SelectorFilter(selector)
            let statement = try connection.cachedStatement(
                "SELECT \(eventColumns) FROM events WHERE id > ? AND \(filter.sql) ORDER BY id LIMIT ?"
            )
            try statement.bind([.int(position)] + filter.arguments + [.int(Int64(limit))])
            while try statement.step() {
                merged.append(event(from: statement))
            }
        }
        // The selectors of a SelectorSet match disjoint topics, so the merge has no duplicates. Each
        // query returned at most `limit` rows, so the first `limit` of the merge are exactly the
        // first `limit` matches; a full page continues after its last event, as the tail's does.
        if selectors.selectors.count > 1 { merged.sort { $0.id < $1.id } }
        if merged.count > limit { merged.removeSubrange(limit...) }
        let next = merged.count == limit ? merged[limit - 1].id : max(position, head)
        let removed = try readRemovalMark(connection, selectors: selectors)
        return HistoryPage(
            events: merged, next: next, head: head, earliest: earliest, removedThrough: removed.through,
            removals: removed.count)
    }

    /// A page of `snapshot=latest`: the newest event of each (topic, key) matching `selectors` whose id is above
    /// `position`, in id order, from the `latest` table (through `latest_id`, so a page costs its own rows plus
    /// the keys of other topics it steps over, never a sort). A key updated after the cursor passed it comes
    /// again with its newer id, so once a page is not full, the cursor has sent the newest event of every key as
    /// of that page's head.
    private static func readSnapshotPage(
        _ connection: Connection,
        after position: Int64,
        selectors: SelectorSet,
        limit: Int
    ) throws -> HistoryPage {
        try connection.execute("BEGIN")
        defer { try? connection.execute("COMMIT") }
        let head = try readHead(connection)
        let earliest = try readEarliest(connection)
        // Every selector tested on each row of the `latest_id` scan, never an index on the topic that would sort.
        let filter = SelectorFilter(scanning: selectors, column: "l.topic")
        let statement = try connection.cachedStatement(
            """
            SELECT \(snapshotColumns) FROM latest l JOIN events e ON e.id = l.id
            WHERE l.id > ? AND \(filter.sql) ORDER BY l.id LIMIT ?
            """
        )
        try statement.bind([.int(position)] + filter.arguments + [.int(Int64(limit))])
        defer { statement.reset() }
        var events: [Event] = []
        while try statement.step() { events.append(event(from: statement)) }
        let next = events.count == limit ? events[limit - 1].id : max(position, head)
        return HistoryPage(events: events, next: next, head: head, earliest: earliest)
    }

    private static let snapshotColumns = eventColumns.split(separator: ", ").map { "e." + $0 }.joined(separator: ", ")
}
