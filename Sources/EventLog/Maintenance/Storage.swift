import Foundation

/// How hard ``LogMaintenance/checkpoint(_:)`` tries (https://sqlite.org/pragma.html#pragma_wal_checkpoint).
public enum CheckpointMode: String, Sendable, CaseIterable {
    /// Copies what it can without waiting for anyone.
    case passive
    /// Waits for the writer, then copies everything readers allow.
    case full
    /// As `full`, then waits for readers so the next writer starts the WAL from the beginning.
    case restart
    /// As `restart`, then truncates the WAL file to zero bytes. The default.
    case truncate
}

/// What a checkpoint did.
public struct CheckpointReport: Sendable, Hashable {
    /// True when a reader or writer kept the checkpoint from finishing (it copied what it could).
    public var busy: Bool
    /// Frames in the WAL.
    public var walFrames: Int64
    /// Frames copied into the database file.
    public var checkpointedFrames: Int64
    /// The size of the `-wal` file before.
    public var walBytesBefore: Int64
    /// The size of the `-wal` file after.
    public var walBytesAfter: Int64
}

/// What a vacuum did.
public struct VacuumReport: Sendable, Hashable {
    /// The file that was written: the log itself, or the `VACUUM INTO` target.
    public var path: String
    /// The size of the database file before.
    public var bytesBefore: Int64
    /// The size after (the target's size for `VACUUM INTO`).
    public var bytesAfter: Int64
    /// Free pages before.
    public var freePagesBefore: Int64
    /// Free pages after.
    public var freePagesAfter: Int64
}

/// A log's numbers, from ``LogMaintenance/stats(perTopic:)``.
public struct LogStats: Sendable, Hashable {
    /// The epoch.
    public var epoch: String
    /// `PRAGMA user_version`.
    public var schemaVersion: Int64
    /// Events retained.
    public var eventCount: Int64
    /// `meta.earliest`.
    public var earliest: Int64
    /// The largest id ever committed.
    public var head: Int64
    /// The smallest and largest id present.
    public var ids: ClosedRange<Int64>?
    /// The oldest and newest commit time present, in milliseconds (they follow ids unless the clock stepped).
    public var times: ClosedRange<Int64>?
    /// Distinct topics.
    public var topicCount: Int64
    /// The database file in bytes.
    public var fileBytes: Int64
    /// The `-wal` file in bytes.
    public var walBytes: Int64
    /// The page size in bytes.
    public var pageSize: Int64
    /// Pages in the database file.
    public var pageCount: Int64
    /// Free pages: reused by new rows; a vacuum gives them back to the file system.
    public var freePages: Int64
    /// `none`, `full` or `incremental` (https://sqlite.org/pragma.html#pragma_auto_vacuum).
    public var autoVacuum: String
    /// Each topic with its count and last id, when asked for.
    public var topics: [TopicSummary]?
    /// PostgreSQL only: each table of the schema `eventlog` with its size, indexes and TOAST included
    /// (`pg_total_relation_size`); ``fileBytes`` is their sum, and the SQLite page and WAL numbers are 0.
    public var tables: [TableSize]? = nil
    /// PostgreSQL only: events published with `eventlog.publish` that no eventlogd has moved into the log yet.
    public var outboxBacklog: Int64? = nil
}

/// A table and its size on disk.
public struct TableSize: Sendable, Hashable {
    /// The table's name.
    public var name: String
    /// Its size in bytes.
    public var bytes: Int64
}

enum StorageStatistics {
    static func fileSize(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    static func stats(_ connection: Connection, perTopic: Bool) throws -> LogStats {
        try connection.transaction(write: false) {
            let (count, minID, maxID) = try connection.rows("SELECT count(*), min(id), max(id) FROM events") {
                ($0.int64(0), $0.isNull(1) ? nil : $0.int64(1), $0.isNull(2) ? nil : $0.int64(2))
            }[0]
            var times: ClosedRange<Int64>?
            if let minID, let maxID {
                let oldest = try connection.scalarInt("SELECT time FROM events WHERE id = ?", [.int(minID)]) ?? 0
                let newest = try connection.scalarInt("SELECT time FROM events WHERE id = ?", [.int(maxID)]) ?? 0
                times = min(oldest, newest)...max(oldest, newest)
            }
            let topicCount =
                try connection.scalarInt("SELECT count(*) FROM (SELECT DISTINCT topic FROM events)") ?? 0
            let topics: [TopicSummary]? =
                perTopic
                ? try connection.rows("SELECT topic, count(*), max(id) FROM events GROUP BY topic ORDER BY topic") {
                    TopicSummary(topic: $0.text(0) ?? "", count: $0.int64(1), lastID: $0.int64(2))
                } : nil
            let autoVacuum = try connection.scalarInt("PRAGMA auto_vacuum") ?? 0
            return LogStats(
                epoch: try connection.metaValue("epoch") ?? "",
                schemaVersion: try connection.scalarInt("PRAGMA user_version") ?? 0,
                eventCount: count,
                earliest: try SQLiteEventStore.readEarliest(connection),
                head: try SQLiteEventStore.readHead(connection),
                ids: minID.flatMap { low in maxID.map { low...$0 } },
                times: times,
                topicCount: topicCount,
                fileBytes: fileSize(connection.path),
                walBytes: fileSize(connection.path + "-wal"),
                pageSize: try connection.scalarInt("PRAGMA page_size") ?? 0,
                pageCount: try connection.scalarInt("PRAGMA page_count") ?? 0,
                freePages: try connection.scalarInt("PRAGMA freelist_count") ?? 0,
                autoVacuum: ["none", "full", "incremental"][Int(min(max(autoVacuum, 0), 2))],
                topics: topics
            )
        }
    }
}
