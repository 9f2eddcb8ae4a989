extension Connection {
    /// Runs `body` in one transaction and commits it, or rolls it back when `body` throws.
    ///
    /// `write` starts with `BEGIN IMMEDIATE`, which takes the database's writer lock at once and waits for
    /// it up to `busy_timeout` (https://sqlite.org/lang_transaction.html#immediate): a maintenance tool
    /// beside a server queues behind the server's group commits instead of failing with `SQLITE_BUSY`
    /// halfway through. Otherwise it is a read transaction: one WAL snapshot for every statement in `body`,
    /// which never blocks the writer (https://sqlite.org/wal.html#concurrency).
    func transaction<T>(write: Bool, _ body: () throws -> T) throws -> T {
        try execute(write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            // SQLite may already have rolled back by itself (disk full, I/O error).
            if !isAutocommit { try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Runs a statement and collects every row with `row`. The statement is reset afterwards so it does
    /// not keep its read open.
    func rows<T>(_ sql: String, _ arguments: [SQLValue] = [], _ row: (Statement) throws -> T) throws -> [T] {
        let statement = try cachedStatement(sql)
        try statement.bind(arguments)
        defer { statement.reset() }
        var result: [T] = []
        while try statement.step() { result.append(try row(statement)) }
        return result
    }

    /// The value of a `meta` row, if present.
    func metaValue(_ name: String) throws -> String? {
        try scalarText("SELECT value FROM meta WHERE name = ?", [.text(name)])
    }

    /// Counts a transaction that deleted events, in `meta.removals`. A server on the same file compares it
    /// with what it saw last and stops serving deleted events from its in-memory tail.
    func countRemoval() throws {
        try run(
            """
            INSERT INTO meta (name, value) VALUES ('removals', '1')
            ON CONFLICT (name) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)
            """
        )
    }

    /// Raises the removal watermarks (the `removed` table) for events retention deleted: `deleted` maps each
    /// topic to the largest id deleted from it. The rows of the topic, of every prefix above it (`a/b/*`,
    /// `a/*`) and of `*` move up to it, so that any selector's watermark is one row. They never move back. Each
    /// row also counts the transactions that removed from it: a removal below the watermark moves only that.
    func raiseRemovalWatermarks(_ deleted: [String: Int64]) throws {
        for (selector, id) in RemovalWatermarks.rows(deleted) {
            try run(
                """
                INSERT INTO removed (selector, through, removals) VALUES (?, ?, 1)
                ON CONFLICT (selector) DO UPDATE SET through = max(through, excluded.through), removals = removals + 1
                """,
                [.text(selector), .int(id)]
            )
        }
    }
}

/// The rows of the `removed` table a retention transaction raises, in every store.
enum RemovalWatermarks {
    /// For `deleted` (each topic with the largest id deleted from it): the topic, every prefix above it (`a/b/*`,
    /// `a/*`) and `*`, each with the largest deleted id it covers.
    static func rows(_ deleted: [String: Int64]) -> [String: Int64] {
        var rows: [String: Int64] = [:]
        for (topic, id) in deleted {
            rows[topic] = max(rows[topic] ?? 0, id)
            rows["*"] = max(rows["*"] ?? 0, id)
            var prefix = Substring(topic)
            while let slash = prefix.lastIndex(of: "/") {
                prefix = prefix[..<slash]
                let selector = String(prefix) + "/*"
                rows[selector] = max(rows[selector] ?? 0, id)
            }
        }
        return rows
    }
}
