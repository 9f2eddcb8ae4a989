import Foundation

/// Retention and compaction of a ``PostgresEventStore``: planned in one snapshot on a reader, then deleted on the
/// writer in short transactions of at most `batching.maxRows` events, each of which takes the counter row first
/// (the lock order of a group commit, so the two never deadlock), counts itself in `removals` and notifies the
/// other nodes, whose tails then stop serving the deleted rows.
extension PostgresEventStore {
    func retain(
        _ policy: RetentionPolicy,
        dryRun: Bool,
        batching: MaintenanceBatching,
        progress: MaintenanceProgressHandler?
    ) async throws -> RetentionReport {
        var report = RetentionReport(dryRun: dryRun)
        let now = Timestamp.nowMilliseconds()
        // The largest selected id to remove, and the bounds, in one snapshot.
        let (bounds, through) = try await withReader { connection in
            try connection.transaction(Self.snapshotTransaction) { () throws -> (StoreBounds, Int64) in
                let bounds = try Self.readBounds(connection)
                let condition = PostgresSQL.condition(policy.selectors, first: 2)
                var through: Int64 = 0
                if let maxEvents = policy.maxEvents {
                    through = max(
                        through,
                        try connection.scalarInt(
                            "SELECT id FROM eventlog.events WHERE \(condition.sql) ORDER BY id DESC LIMIT 1 OFFSET $1",
                            [String(maxEvents)] + condition.parameters) ?? 0)
                }
                if let maxAge = policy.maxAge {
                    let cutoff = now - maxAge.wholeMilliseconds
                    // Up to the first selected event that is young enough to stay.
                    let firstYoung = try connection.scalarInt(
                        "SELECT min(id) FROM eventlog.events WHERE \(condition.sql) AND time >= $1",
                        [String(cutoff)] + condition.parameters)
                    through = max(through, firstYoung.map { $0 - 1 } ?? bounds.head)
                }
                if let maxBytes = policy.maxBytes {
                    through = max(
                        through,
                        try connection.scalarInt(
                            """
                            SELECT id FROM (SELECT id, sum(\(PostgresSQL.rowBytes())) OVER (ORDER BY id DESC) AS total
                            FROM eventlog.events WHERE \(condition.sql)) t WHERE total > $1 ORDER BY id DESC LIMIT 1
                            """,
                            [String(maxBytes)] + condition.parameters) ?? 0)
                }
                return (bounds, min(through, bounds.head))
            }
        }
        report.head = bounds.head
        report.earliestBefore = bounds.earliest
        report.earliestAfter = bounds.earliest
        guard through > 0, !policy.isEmpty else { return report }
        let condition = PostgresSQL.condition(policy.selectors, first: 3)
        if dryRun {
            let counts = try await withReader { connection in
                try connection.query(
                    """
                    SELECT count(*), coalesce(sum(\(PostgresSQL.rowBytes())), 0), min(id), max(id)
                    FROM eventlog.events WHERE id <= $1 AND \(condition.sql) AND $2::bigint IS NOT NULL
                    """,
                    [String(through), "0"] + condition.parameters)
            }
            if counts.int64(0, 0) > 0 {
                report.record(
                    first: counts.int64(0, 2), last: counts.int64(0, 3), count: counts.int64(0, 0),
                    bytes: counts.int64(0, 1))
            }
        } else {
            while true {
                let batch = try await withWriter { connection in
                    try connection.transaction { () throws -> (count: Int64, bytes: Int64, first: Int64, last: Int64) in
                        try Self.countRemoval(connection)
                        let deleted = try connection.query(
                            """
                            WITH d AS (DELETE FROM eventlog.events WHERE id IN (
                                SELECT id FROM eventlog.events WHERE id <= $1 AND \(condition.sql) ORDER BY id LIMIT $2)
                                RETURNING topic, id, \(PostgresSQL.rowBytes()) AS bytes)
                            SELECT topic, max(id), min(id), count(*), sum(bytes) FROM d GROUP BY topic
                            """,
                            [String(through), String(batching.maxRows)] + condition.parameters)
                        guard deleted.rowCount > 0 else {
                            connection.rollback()
                            return (0, 0, 0, 0)
                        }
                        var topics: [String: Int64] = [:]
                        var total: (count: Int64, bytes: Int64, first: Int64, last: Int64) = (0, 0, .max, 0)
                        for row in 0..<deleted.rowCount {
                            topics[deleted.text(row, 0) ?? ""] = deleted.int64(row, 1)
                            total.last = max(total.last, deleted.int64(row, 1))
                            total.first = min(total.first, deleted.int64(row, 2))
                            total.count += deleted.int64(row, 3)
                            total.bytes += deleted.int64(row, 4)
                        }
                        try Self.raiseRemovalWatermarks(topics, connection)
                        return total
                    }
                }
                guard batch.count > 0 else { break }
                report.transactions += 1
                report.record(first: batch.first, last: batch.last, count: batch.count, bytes: batch.bytes)
                progress?(
                    MaintenanceProgress(
                        phase: "removing", completed: batch.last - bounds.earliest + 1,
                        total: through - bounds.earliest + 1, unit: "ids", removedEvents: report.removedEvents))
            }
        }
        report.earliestAfter = try await dryRun ? dryEarliest(after: report, bounds: bounds) : self.bounds().earliest
        return report
    }

    private func dryEarliest(after report: RetentionReport, bounds: StoreBounds) async throws -> Int64 {
        guard let removed = report.removedIDs, removed.lowerBound <= bounds.earliest else { return bounds.earliest }
        // The smallest id that would be left: the first event above the removed range that is not removed.
        return try await withReader { connection in
            try connection.scalarInt(
                "SELECT min(id) FROM eventlog.events WHERE id > $1", [String(removed.upperBound)]) ?? bounds.head + 1
        }
    }

    func compact(
        _ policy: CompactionPolicy,
        dryRun: Bool,
        batching: MaintenanceBatching,
        progress: MaintenanceProgressHandler?
    ) async throws -> CompactionReport {
        var report = CompactionReport(dryRun: dryRun)
        let now = Timestamp.nowMilliseconds()
        let cutoff = now - policy.minAge.wholeMilliseconds
        // No tombstone expires when they are kept forever.
        let tombstoneCutoff = policy.tombstoneRetention.map { now - $0.wholeMilliseconds } ?? Int64.min
        let condition = PostgresSQL.condition(policy.selectors, column: "e.topic", first: 5)
        // An event goes when a newer event of its key exists and it is old enough, or when its key's newest event
        // is an expired tombstone (the tombstone itself included).
        let doomed = """
            FROM eventlog.events e
            JOIN eventlog.latest l ON l.topic = e.topic AND l.key = coalesce(e.key, e.topic)
            JOIN eventlog.events t ON t.id = l.id
            WHERE e.id <= $1 AND \(condition.sql)
              AND ((e.id < l.id AND e.time <= $2) OR (t.data IS NULL AND t.time <= $3 AND l.id <= $1))
              AND $4::bigint IS NOT NULL
            """
        let parameters: @Sendable (Int64) -> [String?] = { limit in
            [nil as String?] + [String(cutoff), String(tombstoneCutoff), String(limit)] + condition.parameters
        }
        let plan = try await withReader { connection in
            try connection.transaction(Self.snapshotTransaction) { () throws -> (StoreBounds, PGResult) in
                let bounds = try Self.readBounds(connection)
                var arguments = parameters(0)
                arguments[0] = String(bounds.head)
                let counts = try connection.query(
                    """
                    SELECT
                      (SELECT count(*) FROM eventlog.events e WHERE e.id <= $1 AND \(condition.sql) AND $2::bigint IS NOT NULL
                         AND $3::bigint IS NOT NULL AND $4::bigint IS NOT NULL),
                      (SELECT count(*) FROM eventlog.latest e WHERE e.id <= $1 AND \(condition.sql)),
                      (SELECT count(*) \(doomed)),
                      (SELECT count(*) FILTER (WHERE e.id = l.id) \(doomed)),
                      (SELECT count(*) FROM eventlog.events e
                         JOIN eventlog.latest l ON l.topic = e.topic AND l.key = coalesce(e.key, e.topic)
                         JOIN eventlog.events t ON t.id = l.id
                         WHERE e.id <= $1 AND \(condition.sql) AND e.id < l.id AND e.time > $2
                           AND NOT (t.data IS NULL AND t.time <= $3)),
                      (SELECT coalesce(sum(\(PostgresSQL.rowBytes("e"))), 0) \(doomed))
                    """,
                    arguments)
                return (bounds, counts)
            }
        }
        let (bounds, counts) = plan
        report.head = bounds.head
        report.earliestBefore = bounds.earliest
        report.earliest = bounds.earliest
        report.scannedEvents = counts.int64(0, 0)
        report.keys = Int(counts.int64(0, 1))
        report.keptYoungSuperseded = counts.int64(0, 4)
        if dryRun {
            report.removedEvents = counts.int64(0, 2)
            report.removedTombstones = counts.int64(0, 3)
            report.removedBytes = counts.int64(0, 5)
            return report
        }
        while true {
            let batch = try await withWriter { connection in
                try connection.transaction {
                    () throws -> (count: Int64, tombstones: Int64, bytes: Int64, last: Int64) in
                    try Self.countRemoval(connection)
                    var arguments = parameters(Int64(batching.maxRows))
                    arguments[0] = String(bounds.head)
                    let deleted = try connection.query(
                        """
                        WITH picked AS (SELECT e.id, e.id = l.id AS tombstone \(doomed) ORDER BY e.id LIMIT $4),
                        d AS (DELETE FROM eventlog.events WHERE id IN (SELECT id FROM picked)
                              RETURNING id, \(PostgresSQL.rowBytes()) AS bytes)
                        SELECT count(*), (SELECT count(*) FROM picked WHERE tombstone), coalesce(sum(bytes), 0),
                               coalesce(max(id), 0)
                        FROM d
                        """,
                        arguments)
                    guard deleted.int64(0, 0) > 0 else {
                        connection.rollback()
                        return (0, 0, 0, 0)
                    }
                    return (deleted.int64(0, 0), deleted.int64(0, 1), deleted.int64(0, 2), deleted.int64(0, 3))
                }
            }
            guard batch.count > 0 else { break }
            report.transactions += 1
            report.removedEvents += batch.count
            report.removedTombstones += batch.tombstones
            report.removedBytes += batch.bytes
            progress?(
                MaintenanceProgress(
                    phase: "removing", completed: batch.last - bounds.earliest + 1,
                    total: bounds.head - bounds.earliest + 1, unit: "ids", removedEvents: report.removedEvents))
        }
        report.earliest = try await self.bounds().earliest
        return report
    }

    /// Counts a transaction that deletes events, taking the counter row first (as a group commit does), and
    /// notifies the other nodes when it commits.
    static func countRemoval(_ connection: PGConnection) throws {
        try connection.query(
            """
            WITH c AS (UPDATE eventlog.counter SET removals = removals + 1 RETURNING head)
            SELECT pg_notify('eventlog', (SELECT head FROM c)::text)
            """)
    }

    /// Raises the removal watermarks of the topics, their prefixes and `*`, as SQLite's retention does
    /// (`Connection.raiseRemovalWatermarks`).
    static func raiseRemovalWatermarks(_ deleted: [String: Int64], _ connection: PGConnection) throws {
        let rows = RemovalWatermarks.rows(deleted)
        let selectors = rows.keys.sorted()
        try connection.query(
            """
            INSERT INTO eventlog.removed (selector, through, removals)
            SELECT s, t, 1 FROM unnest($1::text[], $2::bigint[]) AS r(s, t)
            ON CONFLICT (selector) DO UPDATE
            SET through = greatest(eventlog.removed.through, excluded.through), removals = eventlog.removed.removals + 1
            """,
            [PostgresSQL.array(selectors), PostgresSQL.array(selectors.map { String(rows[$0]!) })])
    }
}
