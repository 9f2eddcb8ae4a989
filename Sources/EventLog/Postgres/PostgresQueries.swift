/// The reads of a ``PostgresEventStore``, each on a reader thread in one `REPEATABLE READ` transaction, so the
/// rows, the head, earliest and the removal mark are one snapshot.
extension PostgresEventStore {
    func read(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void
    ) {
        readers.read(completion) { connection in
            try Self.readPage(connection, after: position, selectors: selectors, limit: limit, snapshot: false)
        }
    }

    func readSnapshot(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void
    ) {
        readers.read(completion) { connection in
            try Self.readPage(connection, after: position, selectors: selectors, limit: limit, snapshot: true)
        }
    }

    static let snapshotTransaction = "ISOLATION LEVEL REPEATABLE READ READ ONLY"

    /// A history page (`snapshot` false: events after `position`, one query per selector merged by id) or a page
    /// of `snapshot=latest` (the `latest` table in id order, every selector tested on each row).
    private static func readPage(
        _ connection: PGConnection, after position: Int64, selectors: SelectorSet, limit: Int, snapshot: Bool
    ) throws -> HistoryPage {
        try connection.transaction(snapshotTransaction) {
            let bounds = try readBounds(connection)
            var merged: [Event] = []
            if snapshot {
                let condition = PostgresSQL.condition(selectors, column: "l.topic", first: 3)
                let columns = PostgresSQL.eventColumns.split(separator: ", ").map { "e." + $0 }.joined(separator: ", ")
                merged = PostgresSQL.events(
                    try connection.query(
                        """
                        SELECT \(columns) FROM eventlog.latest l JOIN eventlog.events e ON e.id = l.id
                        WHERE l.id > $1 AND \(condition.sql) ORDER BY l.id LIMIT $2
                        """,
                        [String(position), String(limit)] + condition.parameters))
            } else {
                for selector in selectors.selectors {
                    let condition = PostgresSQL.condition(SelectorSet([selector]), first: 3)
                    merged += PostgresSQL.events(
                        try connection.query(
                            """
                            SELECT \(PostgresSQL.eventColumns) FROM eventlog.events
                            WHERE id > $1 AND \(condition.sql) ORDER BY id LIMIT $2
                            """,
                            [String(position), String(limit)] + condition.parameters))
                }
                if selectors.selectors.count > 1 { merged.sort { $0.id < $1.id } }
                if merged.count > limit { merged.removeSubrange(limit...) }
            }
            let next = merged.count == limit ? merged[limit - 1].id : max(position, bounds.head)
            if snapshot {
                return HistoryPage(events: merged, next: next, head: bounds.head, earliest: bounds.earliest)
            }
            let removed = try readRemovalMark(connection, selectors: selectors)
            return HistoryPage(
                events: merged, next: next, head: bounds.head, earliest: bounds.earliest,
                removedThrough: removed.through, removals: removed.count)
        }
    }

    /// What retention removed of the events matching `selectors`: as in SQLite, the largest watermark of the
    /// selectors' rows and the floor `''`, and for each selector the count of its row plus the floor's.
    static func readRemovalMark(_ connection: PGConnection, selectors: SelectorSet) throws -> RemovalMark {
        let names = selectors.selectors.map(\.description)
        let result = try connection.query(
            "SELECT selector, through, removals FROM eventlog.removed WHERE selector = ANY($1::text[]) OR selector = ''",
            [PostgresSQL.array(names)])
        var mark = RemovalMark()
        var floorCount: Int64 = 0
        for row in 0..<result.rowCount {
            mark.through = max(mark.through, result.int64(row, 1))
            if result.text(row, 0) == "" {
                floorCount = result.int64(row, 2)
            } else {
                mark.count += result.int64(row, 2)
            }
        }
        mark.count += floorCount * Int64(names.count)
        return mark
    }

    func removals(_ selectors: SelectorSet) async throws -> RemovalMark {
        try await withReader { connection in try Self.readRemovalMark(connection, selectors: selectors) }
    }

    func position(since time: Int64) async throws -> Int64 {
        try await withReader { connection in
            try connection.transaction(Self.snapshotTransaction) {
                try StorePositions.lastID(before: time, head: try Self.readBounds(connection).head) { middle in
                    let result = try connection.query(
                        "SELECT id, time FROM eventlog.events WHERE id >= $1 ORDER BY id LIMIT 1", [String(middle)])
                    return result.rowCount == 0 ? nil : (result.int64(0, 0), result.int64(0, 1))
                }
            }
        }
    }

    func position(rewinding count: Int, selectors: SelectorSet) async throws -> Int64 {
        try await withReader { connection in
            try connection.transaction(Self.snapshotTransaction) {
                try StorePositions.rewind(
                    count: count, selectors: selectors,
                    nthNewest: { selector, n in
                        let condition = PostgresSQL.condition(SelectorSet([selector]), first: 2)
                        return try connection.scalarInt(
                            "SELECT id FROM eventlog.events WHERE \(condition.sql) ORDER BY id DESC LIMIT 1 OFFSET $1",
                            [String(n - 1)] + condition.parameters)
                    },
                    newest: { selector, count in
                        let condition = PostgresSQL.condition(SelectorSet([selector]), first: 2)
                        let result = try connection.query(
                            "SELECT id FROM eventlog.events WHERE \(condition.sql) ORDER BY id DESC LIMIT $1",
                            [String(count)] + condition.parameters)
                        return (0..<result.rowCount).map { result.int64($0, 0) }
                    })
            }
        }
    }

    func latest(_ count: Int, selectors: SelectorSet) async throws -> [Event] {
        try await withReader { connection in
            try connection.transaction(Self.snapshotTransaction) {
                var found: [Event] = []
                for selector in selectors.selectors {
                    let condition = PostgresSQL.condition(SelectorSet([selector]), first: 2)
                    found += PostgresSQL.events(
                        try connection.query(
                            """
                            SELECT \(PostgresSQL.eventColumns) FROM eventlog.events WHERE \(condition.sql)
                            ORDER BY id DESC LIMIT $1
                            """,
                            [String(count)] + condition.parameters))
                }
                found.sort { $0.id < $1.id }
                return Array(found.suffix(count))
            }
        }
    }

    func topics() async throws -> [TopicSummary] {
        try await withReader { connection in
            let result = try connection.query(
                "SELECT topic, count(*), max(id) FROM eventlog.events GROUP BY topic ORDER BY topic")
            return (0..<result.rowCount).map {
                TopicSummary(topic: result.text($0, 0) ?? "", count: result.int64($0, 1), lastID: result.int64($0, 2))
            }
        }
    }
}
