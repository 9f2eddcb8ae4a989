import Foundation

/// What ``LogMaintenance`` does on a log in PostgreSQL, on one connection of its own: verify, stats, export and
/// import. Each reads one snapshot (`REPEATABLE READ READ ONLY`) or writes in one transaction, so it runs beside
/// the eventlogd nodes (import excepted: it wants an empty log, before the nodes start).
enum PostgresLogMaintenance {
    /// The SQLite schema version whose content a PostgreSQL log holds (the latest, removed and voids tables of
    /// schema/0002_order_state.sql): what an export's header says, so the format is the same from both stores.
    static let exportSchemaVersion: Int64 = 2

    /// Refuses a database without the eventlog schema, or at a version this build does not write.
    static func checkSchema(_ connection: PGConnection) throws {
        let version = try PostgresMigrator.version(connection)
        guard version >= 1 else {
            throw MaintenanceError(
                .notALog,
                "\(connection.displayName) holds no event log (no eventlog schema); start eventlogd on it once")
        }
        guard version == PostgresSchema.latestVersion else {
            throw MaintenanceError(
                .notALog,
                "\(connection.displayName) has eventlog schema version \(version), not this build's "
                    + "\(PostgresSchema.latestVersion); open it once with this build's eventlogd to migrate it")
        }
    }

    /// The rows of `eventlog.meta`.
    static func meta(_ connection: PGConnection) throws -> [String: String] {
        let rows = try connection.query("SELECT name, value FROM eventlog.meta")
        return Dictionary(
            (0..<rows.rowCount).map { (rows.text($0, 0) ?? "", rows.text($0, 1) ?? "") },
            uniquingKeysWith: { first, _ in first })
    }

    // MARK: Export and import

    static func export(
        _ connection: PGConnection, to output: FileHandle, progress: MaintenanceProgressHandler?
    ) throws -> ExportReport {
        try connection.transaction(PostgresEventStore.snapshotTransaction) {
            let bounds = try PostgresEventStore.readBounds(connection)
            let meta = try meta(connection)
            let header = ExportHeader(
                epoch: meta["epoch"] ?? "",
                tokenKey: meta["token_key"] ?? "",
                earliest: bounds.earliest,
                head: bounds.head,
                schemaVersion: exportSchemaVersion,
                events: try connection.scalarInt("SELECT count(*) FROM eventlog.events") ?? 0,
                removedThrough: try connection.scalarInt("SELECT max(through) FROM eventlog.removed") ?? 0,
                voids: try PostgresEventStore.readVoids(connection)
            )
            var writer = ExportWriter(output: output, header: header, progress: progress)
            try connection.forEachPage(
                "SELECT \(PostgresSQL.eventColumns), idempotency_key, request_hash FROM eventlog.events ORDER BY id"
            ) { page in
                for row in 0..<page.rowCount {
                    let event = PostgresSQL.event(page, row)
                    try writer.write(
                        ExportedEvent(
                            id: event.id, time: event.time, topic: event.topic, type: event.type, key: event.key,
                            data: event.data, idempotencyKey: page.text(row, 7),
                            requestHash: page.isNull(row, 8) ? nil : page.int64(row, 8)))
                }
            }
            return try writer.finish()
        }
    }

    /// Imports into the database at `url`, creating the eventlog schema when it has none; the log must be empty.
    /// One transaction, holding the counter row (as a group commit does), so no node appends meanwhile. The
    /// counter's head becomes the exported head, so the next publish gets the id after it.
    static func importEvents(
        from input: FileHandle, into url: String, keepEpoch: Bool, progress: MaintenanceProgressHandler?
    ) throws -> ImportReport {
        let connection = try PGConnection(url: url)
        defer { connection.close() }
        try PostgresMigrator.migrate(connection)
        return try connection.transaction {
            let head = try connection.scalarInt("SELECT head FROM eventlog.counter FOR UPDATE") ?? 0
            let count = try connection.scalarInt("SELECT count(*) FROM eventlog.events") ?? 0
            guard count == 0 && head == 0 else {
                throw MaintenanceError(
                    .targetNotEmpty,
                    "\(connection.displayName) already holds a log (\(count) events, head \(head)); "
                        + "import needs a new or empty log")
            }
            var batch = ImportBatch()
            let plan = try ExportFormat.read(from: input, keepEpoch: keepEpoch, progress: progress) { event in
                batch.events.append(event)
                if batch.events.count >= ImportBatch.size { try batch.insert(connection) }
            }
            try batch.insert(connection)
            // Commit times never go back, even for the next group after the import.
            try connection.query(
                """
                UPDATE eventlog.counter
                SET head = $1, time = greatest(time, coalesce((SELECT max(time) FROM eventlog.events), 0))
                """,
                [String(plan.head)])
            if plan.removedFloor > 0 {
                try connection.query(
                    "INSERT INTO eventlog.removed (selector, through) VALUES ('', $1)", [String(plan.removedFloor)])
            }
            for void in plan.voids {
                try connection.query(
                    """
                    INSERT INTO eventlog.voids (after, through) VALUES ($1, $2)
                    ON CONFLICT (after) DO UPDATE SET through = excluded.through
                    """,
                    [String(void.after), String(void.through)])
            }
            if let epoch = plan.epoch {
                try connection.query("UPDATE eventlog.meta SET value = $1 WHERE name = 'epoch'", [epoch])
            }
            if let tokenKey = plan.tokenKey {
                try connection.query("UPDATE eventlog.meta SET value = $1 WHERE name = 'token_key'", [tokenKey])
            }
            // Nodes already running catch up to the new head (they keep the epoch and key they read at start).
            try connection.query("SELECT pg_notify('eventlog', $1)", [String(plan.head)])
            return plan.report(
                earliest: try PostgresEventStore.readBounds(connection).earliest,
                epoch: try meta(connection)["epoch"] ?? "")
        }
    }

    /// Imported events waiting to be inserted with one statement (a round trip per event would dominate).
    private struct ImportBatch {
        static let size = 1000
        var events: [ExportedEvent] = []

        mutating func insert(_ connection: PGConnection) throws {
            guard let first = events.first, let last = events.last else { return }
            defer { events.removeAll(keepingCapacity: true) }
            do {
                try connection.query(
                    PostgresSQL.insertEvents(firstParameter: 1),
                    PostgresSQL.insertParameters(
                        events.map {
                            PostgresSQL.EventRow(
                                event: Event(
                                    id: $0.id, topic: $0.topic, type: $0.type, key: $0.key, data: $0.data, time: $0.time
                                ),
                                idempotencyKey: $0.idempotencyKey, requestHash: $0.requestHash)
                        }))
            } catch let error as PGError {
                throw MaintenanceError(
                    .invalidExport, "cannot store the events \(first.id)...\(last.id): \(error.message)")
            }
        }
    }

    // MARK: Stats

    static func stats(_ connection: PGConnection, perTopic: Bool) throws -> LogStats {
        try connection.transaction(PostgresEventStore.snapshotTransaction) {
            let bounds = try PostgresEventStore.readBounds(connection)
            let events = try connection.query("SELECT count(*), min(id), max(id) FROM eventlog.events")
            let count = events.int64(0, 0)
            var ids: ClosedRange<Int64>?
            var times: ClosedRange<Int64>?
            if count > 0 {
                ids = events.int64(0, 1)...events.int64(0, 2)
                let ends = try connection.query(
                    "SELECT min(time), max(time) FROM eventlog.events WHERE id IN ($1, $2)",
                    [String(events.int64(0, 1)), String(events.int64(0, 2))])
                times = ends.int64(0, 0)...ends.int64(0, 1)
            }
            let topics = try connection.query(
                "SELECT topic, count(*), max(id) FROM eventlog.events GROUP BY topic ORDER BY topic")
            // Each table with its indexes and TOAST (https://www.postgresql.org/docs/current/functions-admin.html).
            let sizes = try connection.query(
                """
                SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'eventlog' AND c.relkind = 'r' ORDER BY c.relname
                """)
            let tables = (0..<sizes.rowCount).map {
                TableSize(name: sizes.text($0, 0) ?? "", bytes: sizes.int64($0, 1))
            }
            let meta = try meta(connection)
            return LogStats(
                epoch: meta["epoch"] ?? "",
                schemaVersion: Int64(meta["schema_version"] ?? "") ?? 0,
                eventCount: count,
                earliest: bounds.earliest,
                head: bounds.head,
                ids: ids,
                times: times,
                topicCount: Int64(topics.rowCount),
                fileBytes: tables.reduce(0) { $0 + $1.bytes },
                walBytes: 0,
                pageSize: 0,
                pageCount: 0,
                freePages: 0,
                autoVacuum: "",
                topics: perTopic
                    ? (0..<topics.rowCount).map {
                        TopicSummary(
                            topic: topics.text($0, 0) ?? "", count: topics.int64($0, 1), lastID: topics.int64($0, 2))
                    } : nil,
                tables: tables,
                outboxBacklog: try connection.scalarInt("SELECT count(*) FROM eventlog.outbox") ?? 0
            )
        }
    }
}

/// The checks of `verify` on a log in PostgreSQL, in one snapshot: those of SQLite's ``Verifier`` that make sense
/// there (PostgreSQL checks its own pages and indexes), with the same words, and the outbox.
enum PostgresVerifier {
    static let tables = ["counter", "events", "latest", "meta", "outbox", "outbox_counter", "removed", "voids"]

    static func verify(
        _ connection: PGConnection, options: VerifyOptions, progress: MaintenanceProgressHandler?
    ) throws -> VerifyReport {
        var report = VerifyReport()
        try connection.transaction(PostgresEventStore.snapshotTransaction) {
            guard try checkSchema(connection, &report) else { return }
            Verifier.checkMeta(try PostgresLogMaintenance.meta(connection), version: nil, &report)
            try checkSequence(connection, &report)
            try checkOrderState(connection, &report)
            report.checks.append("time")
            var order = Verifier.TimeOrder(
                tolerance: options.timeTolerance.wholeMilliseconds, total: report.eventCount, progress: progress)
            try connection.forEachPage("SELECT id, time FROM eventlog.events ORDER BY id") { page in
                for row in 0..<page.rowCount { order.add(id: page.int64(row, 0), time: page.int64(row, 1)) }
            }
            order.report(&report)
            let duplicates = try connection.query(
                """
                SELECT topic, idempotency_key, count(*) FROM eventlog.events WHERE idempotency_key IS NOT NULL
                GROUP BY topic, idempotency_key HAVING count(*) > 1 LIMIT \(Verifier.examples)
                """)
            Verifier.reportDuplicateIdempotencyKeys(
                (0..<duplicates.rowCount).map {
                    "\(duplicates.text($0, 0) ?? "") \(Topic.quoted(duplicates.text($0, 1) ?? "")) ×\(duplicates.int64($0, 2))"
                }, &report)
            report.checks.append("topics")
            var grammar = Verifier.TopicGrammar()
            try connection.forEachPage("SELECT DISTINCT topic FROM eventlog.events") { page in
                for row in 0..<page.rowCount { grammar.add(page.text(row, 0) ?? "") }
            }
            grammar.report(&report)
            try checkOutbox(connection, &report)
        }
        return report
    }

    /// Returns false when the database holds no event log at all, so the other checks make no sense.
    private static func checkSchema(_ connection: PGConnection, _ report: inout VerifyReport) throws -> Bool {
        report.checks.append("schema")
        let found = try connection.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'eventlog'")
        let present = Set((0..<found.rowCount).map { found.text($0, 0) ?? "" })
        let missing = tables.filter { !present.contains($0) }
        for table in missing {
            report.error("schema", "the table eventlog.\(table) is missing")
        }
        if ["counter", "events", "meta"].contains(where: missing.contains) { return false }
        let version = try PostgresMigrator.version(connection)
        if version != PostgresSchema.latestVersion {
            report.error(
                "schema",
                "schema_version is \(version); this build knows PostgreSQL schema version \(PostgresSchema.latestVersion)"
            )
        }
        let indexes = try connection.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'eventlog'")
        let indexNames = Set((0..<indexes.rowCount).map { indexes.text($0, 0) ?? "" })
        for index in ["events_topic_id", "events_topic_idempotency_key", "latest_id"] where !indexNames.contains(index)
        {
            report.error("schema", "the index eventlog.\(index) is missing")
        }
        // The latest table is only as right as the triggers that keep it.
        let triggers = try connection.query(
            """
            SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'eventlog' AND c.relname = 'events' AND t.tgenabled <> 'D'
            """)
        let triggerNames = Set((0..<triggers.rowCount).map { triggers.text($0, 0) ?? "" })
        for trigger in ["events_latest_insert", "events_latest_delete"] where !triggerNames.contains(trigger) {
            report.error("schema", "the trigger \(trigger) on eventlog.events is missing or disabled")
        }
        return true
    }

    private static func checkSequence(_ connection: PGConnection, _ report: inout VerifyReport) throws {
        report.checks.append("sequence")
        let counter = try connection.query("SELECT head FROM eventlog.counter")
        if counter.rowCount != 1 {
            report.error("sequence", "eventlog.counter has \(counter.rowCount) rows, not 1")
        }
        let head = counter.rowCount > 0 ? counter.int64(0, 0) : 0
        let events = try connection.query("SELECT count(*), min(id), max(id) FROM eventlog.events")
        try Verifier.checkIDs(
            count: events.int64(0, 0),
            ids: (events.isNull(0, 1) ? nil : events.int64(0, 1), events.isNull(0, 2) ? nil : events.int64(0, 2)),
            head: head, headSource: "eventlog.counter.head",
            below: { try connection.scalarInt("SELECT count(*) FROM eventlog.events WHERE id < 1") ?? 0 },
            above: {
                try connection.scalarInt("SELECT count(*) FROM eventlog.events WHERE id > $1", [String(head)]) ?? 0
            },
            &report)
    }

    private static func checkOrderState(_ connection: PGConnection, _ report: inout VerifyReport) throws {
        let wrong =
            try connection.scalarInt(
                """
                SELECT count(*) FROM (
                    SELECT topic, coalesce(key, topic) AS key, max(id) AS id FROM eventlog.events GROUP BY 1, 2
                ) AS truth FULL JOIN eventlog.latest l USING (topic, key)
                WHERE truth.id IS DISTINCT FROM l.id
                """) ?? 0
        Verifier.reportLatest(wrong: wrong, &report)
        let removed = try connection.query("SELECT selector, through FROM eventlog.removed")
        Verifier.checkWatermarks(
            (0..<removed.rowCount).map { (removed.text($0, 0) ?? "", removed.int64($0, 1)) }, &report)
        try Verifier.checkVoids(try PostgresEventStore.readVoids(connection), &report) { void in
            try connection.scalarInt(
                "SELECT count(*) FROM eventlog.events WHERE id BETWEEN $1 AND $2",
                [String(void.lowerBound), String(void.upperBound)]) ?? 0
        }
    }

    /// Outbox rows come from `eventlog.publish`, which numbers them from `outbox_counter`: a row above the counter
    /// was written around it, and the next publish would collide with it.
    private static func checkOutbox(_ connection: PGConnection, _ report: inout VerifyReport) throws {
        report.checks.append("outbox")
        let outbox = try connection.query(
            "SELECT count(*), max(o.seq), (SELECT max(seq) FROM eventlog.outbox_counter) FROM eventlog.outbox o")
        let counter = outbox.int64(0, 2)
        if outbox.int64(0, 0) > 0, outbox.int64(0, 1) > counter {
            let above =
                try connection.scalarInt("SELECT count(*) FROM eventlog.outbox WHERE seq > $1", [String(counter)]) ?? 0
            report.error(
                "outbox",
                "\(above) outbox rows have a seq above eventlog.outbox_counter.seq \(counter); largest \(outbox.int64(0, 1))"
            )
        }
    }
}

extension PGConnection {
    /// Runs `sql` through a cursor in the open transaction, handing `body` one page of `pageSize` rows at a time, so
    /// a large table is never held in memory at once.
    func forEachPage(_ sql: String, pageSize: Int = 10_000, _ body: (PGResult) throws -> Void) throws {
        try execute("DECLARE eventlog_maintenance NO SCROLL CURSOR FOR " + sql)
        while true {
            let page = try execute("FETCH \(pageSize) FROM eventlog_maintenance")
            if page.rowCount == 0 { break }
            try body(page)
        }
        try execute("CLOSE eventlog_maintenance")
    }
}
