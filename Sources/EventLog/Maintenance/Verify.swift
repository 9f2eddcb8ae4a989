import Foundation

/// What ``LogMaintenance/verify(_:)`` checks beyond its defaults.
public struct VerifyOptions: Sendable, Hashable {
    /// How far a commit time may run backwards from an earlier id's before it is reported. Times come from
    /// the wall clock, which NTP may step back a little. Default 1 s.
    public var timeTolerance: Duration = .seconds(1)
    /// Skip `PRAGMA integrity_check`, which reads every page (`quick_check` is run instead).
    public var quick = false

    /// The defaults.
    public init() {}
}

/// The outcome of ``LogMaintenance/verify(_:)``: every problem found, and what the log looks like.
public struct VerifyReport: Sendable, Hashable {
    /// One thing that is wrong.
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// How bad it is.
        public enum Severity: String, Sendable, Hashable {
            /// The file breaks an invariant the server relies on.
            case error
            /// Legal but worth knowing: a clock that stepped back.
            case warning
        }

        /// How bad it is.
        public let severity: Severity
        /// Which check found it: `integrity`, `schema`, `meta`, `sequence`, `ids`, `latest`, `removed`, `voids`, `time`,
        /// `indexes`, `idempotency`, `topics`, `journal`; on PostgreSQL also `outbox`.
        public let check: String
        /// What is wrong, precisely, for humans.
        public let message: String

        /// `error [sequence] ...`
        public var description: String { "\(severity.rawValue) [\(check)] \(message)" }
    }

    /// Every problem, in the order found.
    public var problems: [Problem] = []
    /// The checks that ran.
    public var checks: [String] = []
    /// Events in the log.
    public var eventCount: Int64 = 0
    /// The head (`sqlite_sequence`, PostgreSQL's `eventlog.counter`), when present.
    public var head: Int64?
    /// The smallest retained id (the head + 1 when none is).
    public var earliest: Int64?
    /// `meta.epoch`, when present.
    public var epoch: String?

    /// The errors only.
    public var errors: [Problem] { problems.filter { $0.severity == .error } }
    /// The warnings only.
    public var warnings: [Problem] { problems.filter { $0.severity == .warning } }
    /// True when there is no error (warnings allowed).
    public var isOK: Bool { errors.isEmpty }

    mutating func error(_ check: String, _ message: String) {
        problems.append(Problem(severity: .error, check: check, message: message))
    }

    mutating func warning(_ check: String, _ message: String) {
        problems.append(Problem(severity: .warning, check: check, message: message))
    }
}

/// The checks of `verify`, run in one read transaction so that they all see one snapshot, even while a
/// server appends.
enum Verifier {
    /// At most this many examples are listed for one kind of problem.
    static let examples = 5

    static func verify(
        _ connection: Connection,
        options: VerifyOptions,
        progress: MaintenanceProgressHandler?
    ) throws -> VerifyReport {
        var report = VerifyReport()
        try connection.transaction(write: false) {
            progress?(MaintenanceProgress(phase: "integrity check", completed: 0, total: nil, unit: "checks"))
            checkIntegrity(connection, quick: options.quick, &report)
            guard try checkSchema(connection, &report) else { return }
            try checkMeta(connection, &report)
            try checkSequence(connection, &report)
            try checkOrderState(connection, &report)
            try checkTimes(connection, tolerance: options.timeTolerance.wholeMilliseconds, &report, progress)
            try checkIndexes(connection, &report)
            try checkTopics(connection, &report)
            report.checks.append("journal")
            if let mode = try connection.scalarText("PRAGMA journal_mode"), mode.lowercased() != "wal" {
                report.warning(
                    "journal",
                    "the journal mode is \(mode), not wal; eventlogd switches it to wal when it opens the log")
            }
        }
        return report
    }

    private static func checkIntegrity(_ connection: Connection, quick: Bool, _ report: inout VerifyReport) {
        report.checks.append("integrity")
        // https://sqlite.org/pragma.html#pragma_integrity_check: pages, records, and that every index holds
        // exactly the rows of its table (quick_check skips the index comparison).
        let pragma = quick ? "PRAGMA quick_check(100)" : "PRAGMA integrity_check(100)"
        do {
            let lines = try connection.rows(pragma) { $0.text(0) ?? "" }
            if lines != ["ok"] {
                for line in lines { report.error("integrity", line) }
            }
        } catch {
            report.error("integrity", "\(pragma) failed: \(error)")
        }
    }

    /// Returns false when the file is not an event log at all, so the other checks make no sense.
    private static func checkSchema(_ connection: Connection, _ report: inout VerifyReport) throws -> Bool {
        report.checks.append("schema")
        let version = try connection.scalarInt("PRAGMA user_version") ?? 0
        let tables = Set(
            try connection.rows("SELECT name FROM sqlite_schema WHERE type = 'table'") { $0.text(0) ?? "" })
        for table in ["events", "meta"] where !tables.contains(table) {
            report.error("schema", "the \(table) table is missing (user_version \(version)): not an event log")
        }
        if !tables.contains("events") || !tables.contains("meta") { return false }
        if version < 1 || version > Migrator.latestVersion {
            report.error(
                "schema", "user_version is \(version); this build knows schema versions 1...\(Migrator.latestVersion)")
        }
        let indexes = Set(
            try connection.rows("SELECT name FROM sqlite_schema WHERE type = 'index'") { $0.text(0) ?? "" })
        for index in ["events_topic_id", "events_topic_idempotency_key"] where !indexes.contains(index) {
            report.error("schema", "the index \(index) is missing")
        }
        if version >= 2 {
            for table in ["latest", "removed", "voids"] where !tables.contains(table) {
                report.error("schema", "the \(table) table of schema version 2 is missing")
            }
            if !indexes.contains("latest_id") { report.error("schema", "the index latest_id is missing") }
        }
        return true
    }

    private static func checkMeta(_ connection: Connection, _ report: inout VerifyReport) throws {
        let rows = try connection.rows("SELECT name, value FROM meta") { ($0.text(0) ?? "", $0.text(1) ?? "") }
        let version = try connection.scalarInt("PRAGMA user_version") ?? 0
        checkMeta(
            Dictionary(rows, uniquingKeysWith: { first, _ in first }), version: (version, "PRAGMA user_version"),
            &report)
    }

    private static func checkSequence(_ connection: Connection, _ report: inout VerifyReport) throws {
        report.checks.append("sequence")
        let (count, minID, maxID) = try connection.rows("SELECT count(*), min(id), max(id) FROM events") {
            ($0.int64(0), $0.isNull(1) ? nil : $0.int64(1), $0.isNull(2) ? nil : $0.int64(2))
        }[0]
        let sequence = try connection.scalarInt("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        if sequence == nil && count > 0 {
            report.error("sequence", "sqlite_sequence has no row for events, but the table holds \(count) events")
        }
        // AUTOINCREMENT keeps seq >= every id it handed out, so a larger id was written around it.
        let head = sequence ?? 0
        try checkIDs(
            count: count, ids: (minID, maxID), head: head, headSource: "sqlite_sequence.seq for events",
            below: { try connection.scalarInt("SELECT count(*) FROM events WHERE id < 1") ?? 0 },
            above: { try connection.scalarInt("SELECT count(*) FROM events WHERE id > ?", [.int(head)]) ?? 0 },
            &report)
    }

    /// The tables of schema version 2: `latest` holds exactly the newest id of each (topic, key); the removal
    /// watermark of a prefix is at least that of every topic below it; voids lie below the head and hold no event.
    private static func checkOrderState(_ connection: Connection, _ report: inout VerifyReport) throws {
        guard try connection.scalarInt("PRAGMA user_version") ?? 0 >= 2 else { return }
        let wrong =
            try connection.scalarInt(
                """
                SELECT count(*) FROM (
                    SELECT topic, coalesce(key, topic) AS key, max(id) AS id FROM events GROUP BY 1, 2
                ) AS truth FULL JOIN latest USING (topic, key)
                WHERE truth.id IS NOT latest.id
                """) ?? 0
        reportLatest(wrong: wrong, &report)
        let rows = try connection.rows("SELECT selector, through FROM removed") { ($0.text(0) ?? "", $0.int64(1)) }
        checkWatermarks(rows, &report)
        try checkVoids(try SQLiteEventStore.readVoids(connection), &report) { void in
            try connection.scalarInt(
                "SELECT count(*) FROM events WHERE id BETWEEN ? AND ?", [.int(void.lowerBound), .int(void.upperBound)]
            ) ?? 0
        }
    }

    private static func checkTimes(
        _ connection: Connection,
        tolerance: Int64,
        _ report: inout VerifyReport,
        _ progress: MaintenanceProgressHandler?
    ) throws {
        report.checks.append("time")
        let statement = try connection.cachedStatement("SELECT id, time FROM events ORDER BY id")
        defer { statement.reset() }
        var order = TimeOrder(tolerance: tolerance, total: report.eventCount, progress: progress)
        while try statement.step() { order.add(id: statement.int64(0), time: statement.int64(1)) }
        order.report(&report)
    }

    private static func checkIndexes(_ connection: Connection, _ report: inout VerifyReport) throws {
        report.checks.append("indexes")
        // integrity_check already compares indexes with the table; counting through each one separately
        // also catches the mismatch under quick_check, and says which index disagrees. A missing index was
        // reported by the schema check.
        let indexes = Set(
            try connection.rows("SELECT name FROM sqlite_schema WHERE type = 'index'") { $0.text(0) ?? "" })
        if indexes.contains("events_topic_id") {
            let table = try connection.scalarInt("SELECT count(*) FROM events NOT INDEXED") ?? 0
            let byTopic = try connection.scalarInt("SELECT count(*) FROM events INDEXED BY events_topic_id") ?? 0
            if byTopic != table {
                report.error("indexes", "events_topic_id holds \(byTopic) entries, the events table \(table) rows")
            }
        }
        if indexes.contains("events_topic_idempotency_key") {
            let keyed =
                try connection.scalarInt("SELECT count(*) FROM events NOT INDEXED WHERE idempotency_key IS NOT NULL")
                ?? 0
            let byKey =
                try connection.scalarInt(
                    """
                    SELECT count(*) FROM events INDEXED BY events_topic_idempotency_key
                    WHERE idempotency_key IS NOT NULL
                    """
                ) ?? 0
            if byKey != keyed {
                report.error(
                    "indexes",
                    "events_topic_idempotency_key holds \(byKey) entries, "
                        + "the events table \(keyed) rows with an idempotency key"
                )
            }
        }
        let duplicates = try connection.rows(
            """
            SELECT topic, idempotency_key, count(*) FROM events NOT INDEXED WHERE idempotency_key IS NOT NULL
            GROUP BY topic, idempotency_key HAVING count(*) > 1 LIMIT \(examples)
            """
        ) { "\($0.text(0) ?? "") \(Topic.quoted($0.text(1) ?? "")) ×\($0.int64(2))" }
        reportDuplicateIdempotencyKeys(duplicates, &report)
    }

    private static func checkTopics(_ connection: Connection, _ report: inout VerifyReport) throws {
        report.checks.append("topics")
        // DISTINCT walks events_topic_id, one step per topic rather than per event.
        let statement = try connection.cachedStatement("SELECT DISTINCT topic FROM events")
        defer { statement.reset() }
        var grammar = TopicGrammar()
        while try statement.step() { grammar.add(statement.text(0) ?? "") }
        grammar.report(&report)
    }
}
