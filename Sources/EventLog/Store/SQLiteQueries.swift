/// The reads of a ``SQLiteEventStore``, each on a reader thread, and the SQL they share with the writer
/// and maintenance: the event columns, row decoding and the bounds.
extension SQLiteEventStore {
    func read(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void
    ) {
        let accepted = readers.submit(
            ConnectionJob { connection in
                completion(
                    Result { () throws(EventLogError) -> HistoryPage in
                        do {
                            return try Self.readPage(connection, after: position, selectors: selectors, limit: limit)
                        } catch let error as EventLogError {
                            throw error
                        } catch let error as SQLiteError {
                            throw EventLogError(.storageUnavailable, "the store cannot read: \(error.message)")
                        } catch {
                            throw EventLogError(.storageUnavailable, "the store cannot read: \(error)")
                        }
                    })
            })
        if !accepted { completion(.failure(.closed)) }
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

    /// `meta.earliest`: every id below it has been deleted.
    static func readEarliest(_ connection: Connection) throws -> Int64 {
        Int64(try connection.scalarText("SELECT value FROM meta WHERE name = 'earliest'") ?? "1") ?? 1
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
        return HistoryPage(events: merged, next: next, head: head, earliest: earliest)
    }
}
