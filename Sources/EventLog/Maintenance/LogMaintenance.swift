import CSQLite
import Foundation
import Logging

/// Maintenance of one event log file from outside the server: retention, compaction, checkpoint, vacuum,
/// verify, backup and restore, export and import, statistics.
///
/// It opens its own connection, so it runs beside a running `eventlogd`: reads happen in WAL snapshots that
/// never block the server, and writes take SQLite's writer lock one short transaction at a time, waiting for
/// it up to the busy timeout (https://sqlite.org/wal.html#concurrency), polling for it often (``BusyPoller``)
/// because a busy server frees it only briefly between group commits. Between two write transactions it
/// pauses twice as long as it held the lock, so the server's group commits, which wait for the same lock in
/// SQLite's default busy handler, find it free soon.
///
/// A `postgres://` or `postgresql://` URL instead of a path names a log in PostgreSQL: retention and compaction
/// then run through ``EventLog/retain(_:dryRun:batching:progress:)`` and ``EventLog/compact(_:dryRun:batching:progress:)``
/// as on a node, and verify, stats, export and import on a connection of their own (``PostgresLogMaintenance``).
/// Checkpoint, vacuum, backup and restore are operations on a SQLite file and refuse a PostgreSQL log, saying
/// what to use instead (``SQLiteFileOperation``).
///
/// Every call blocks the calling thread; do not call it from the Swift cooperative pool. Not Sendable: one
/// thread uses an instance.
public final class LogMaintenance {
    /// How to open the log.
    public struct Options: Sendable {
        /// Read only: for verify, stats, export and backup, which then cannot change the file at all.
        public var readOnly = false
        /// How long a write waits for another connection's lock. Default 5 s.
        public var busyTimeout: Duration = .seconds(5)
        /// How retention and compaction cut their work into transactions.
        public var batching = MaintenanceBatching()

        /// The defaults.
        public init() {}
    }

    /// The database file, or the PostgreSQL URL.
    public let path: String
    /// The options it was opened with.
    public let options: Options
    /// Receives progress reports of long operations.
    public var progress: MaintenanceProgressHandler?
    private let store: Store

    private enum Store {
        case sqlite(Connection)
        case postgres(PGConnection)
    }

    /// Opens the log at `path`, which must exist and be an event log at this build's schema version; or connects
    /// to the PostgreSQL database at the URL `path`, which must hold an event log at this build's schema version.
    public init(path: String, options: Options = Options()) throws {
        self.path = path
        self.options = options
        if EventLog.isPostgresURL(path) {
            let connection = try PGConnection(url: path)
            try PostgresLogMaintenance.checkSchema(connection)
            if options.readOnly { try connection.execute("SET default_transaction_read_only = on") }
            store = .postgres(connection)
            return
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw MaintenanceError(.notFound, "no such file: \(path)")
        }
        let connection = try Connection(
            path: path,
            mode: options.readOnly ? .readOnly : .readWrite,
            busyTimeoutMilliseconds: Int32(clamping: options.busyTimeout.wholeMilliseconds)
        )
        store = .sqlite(connection)
        try Self.checkSchema(connection, forWriting: !options.readOnly)
        if !options.readOnly {
            // A lost maintenance commit after a power cut is harmless: the deletes and the earliest update go
            // together in one transaction and are simply done again next time. So this connection does not
            // pay an fsync per batch (https://sqlite.org/pragma.html#pragma_synchronous); the server's own
            // FULL commits sync the WAL, ours included, anyway.
            try connection.execute("PRAGMA synchronous=NORMAL")
            connection.pollWhenBusy(timeout: options.busyTimeout)
        }
    }

    deinit {
        close()
    }

    /// Closes the connection. Further calls fail.
    public func close() {
        switch store {
        case .sqlite(let connection): connection.close()
        case .postgres(let connection): connection.close()
        }
    }

    /// The SQLite connection, for an operation on the file; refuses a PostgreSQL log.
    private func file(_ operation: SQLiteFileOperation) throws -> Connection {
        switch store {
        case .sqlite(let connection): return connection
        case .postgres: throw operation.refusal(path)
        }
    }

    /// Runs `body` on a log opened on `path` (PostgreSQL), blocking this thread until it is done and closed.
    private func onEventLog<T: Sendable>(
        readOnly: Bool, _ body: @escaping @Sendable (EventLog) async throws -> T
    ) throws -> T {
        var logOptions = EventLog.Options()
        logOptions.readOnly = readOnly
        // The tool reports the outcome itself; a node's log lines would only mix into its output.
        logOptions.logger = Logger(label: "eventlog-maint", factory: { _ in SwiftLogNoOpLogHandler() })
        let url = path
        let outcome = Locked<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let result: Result<T, any Error>
            do {
                let log = try await EventLog.open(path: url, options: logOptions)
                do {
                    result = .success(try await body(log))
                } catch {
                    result = .failure(error)
                }
                await log.close()
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    // MARK: Retention and compaction

    /// Removes the events `policy` selects, oldest first, in short transactions; each one also moves
    /// `meta.earliest` past the last id it removed. With `dryRun`, nothing changes and the report says what
    /// would have been removed.
    public func retain(_ policy: RetentionPolicy, dryRun: Bool = false) throws -> RetentionReport {
        try policy.validate()
        guard case .sqlite(let connection) = store else {
            let (batching, progress) = (options.batching, progress)
            return try onEventLog(readOnly: dryRun) { log in
                try await log.retain(policy, dryRun: dryRun, batching: batching, progress: progress)
            }
        }
        return try mappingBusy {
            var run = RetentionRun(policy: policy, dryRun: dryRun, batching: options.batching)
            try run.plan(connection, now: Timestamp.nowMilliseconds())
            while true {
                let started = ContinuousClock.now
                if try run.step(connection, progress: progress) { break }
                if !dryRun { pause(after: ContinuousClock.now - started) }
            }
            return run.report
        }
    }

    /// Keep-latest compaction (see ``CompactionPolicy``). Never changes ids and never moves `earliest`.
    public func compact(_ policy: CompactionPolicy, dryRun: Bool = false) throws -> CompactionReport {
        try policy.validate()
        guard case .sqlite(let connection) = store else {
            let (batching, progress) = (options.batching, progress)
            return try onEventLog(readOnly: dryRun) { log in
                try await log.compact(policy, dryRun: dryRun, batching: batching, progress: progress)
            }
        }
        return try mappingBusy {
            var run = CompactionRun(
                policy: policy,
                dryRun: dryRun,
                batching: options.batching,
                now: Timestamp.nowMilliseconds()
            )
            while try !run.mapStep(connection, progress: progress) {}
            while true {
                let started = ContinuousClock.now
                if try run.removeStep(connection, progress: progress) { break }
                if !dryRun { pause(after: ContinuousClock.now - started) }
            }
            return run.report
        }
    }

    /// Lets the server's group commits through: they wait for the writer lock in SQLite's busy handler, which
    /// sleeps and retries rather than queueing, so a tool that took the lock again at once could starve them.
    private func pause(after held: Duration) {
        // Twice the time held (at most 20 ms) measured best: with four callers appending during a compaction of
        // 1M events, p90 append latency was 1.2-2.6 ms in quiet runs, against ~11 ms when pausing only as long
        // as held (docs/OPERATIONS.md).
        let pause = min(max(held * 2, .milliseconds(1)), .milliseconds(20))
        Thread.sleep(forTimeInterval: pause.secondsValue)
    }

    // MARK: Checkpoint and vacuum

    /// Copies the WAL into the database file (`PRAGMA wal_checkpoint`), and with ``CheckpointMode/truncate``
    /// empties the WAL file. Online-safe: `restart` and `truncate` hold the writer lock while they wait for
    /// readers to move past the WAL, so appends may wait up to the busy timeout; then `busy` is reported
    /// and the checkpoint did what it could.
    public func checkpoint(_ mode: CheckpointMode = .truncate) throws -> CheckpointReport {
        let connection = try file(.checkpoint)
        return try mappingBusy {
            let before = StorageStatistics.fileSize(path + "-wal")
            let row =
                try connection.rows("PRAGMA wal_checkpoint(\(mode.rawValue.uppercased()))") {
                    ($0.int64(0), $0.int64(1), $0.int64(2))
                }.first ?? (0, 0, 0)
            return CheckpointReport(
                busy: row.0 != 0,
                walFrames: row.1,
                checkpointedFrames: row.2,
                walBytesBefore: before,
                walBytesAfter: StorageStatistics.fileSize(path + "-wal")
            )
        }
    }

    /// Rebuilds the file in place (`VACUUM`), giving free pages back to the file system, then truncates the
    /// WAL. NOT online-safe: it holds the writer lock for the whole rebuild, so a server's publishes wait and
    /// fail with 503 after their busy timeout, and it needs free disk space of about twice the database. Stop
    /// the server first, or use ``vacuum(into:)`` or ``incrementalVacuum(maxPages:)``.
    public func vacuum() throws -> VacuumReport {
        let connection = try file(.vacuum)
        return try mappingBusy {
            let bytesBefore = StorageStatistics.fileSize(path)
            let freeBefore = try connection.scalarInt("PRAGMA freelist_count") ?? 0
            try connection.execute("VACUUM")
            // In WAL mode the smaller file is written to the WAL; the checkpoint applies it and truncates.
            _ = try connection.rows("PRAGMA wal_checkpoint(TRUNCATE)") { $0.int64(0) }
            return VacuumReport(
                path: path,
                bytesBefore: bytesBefore,
                bytesAfter: StorageStatistics.fileSize(path),
                freePagesBefore: freeBefore,
                freePagesAfter: try connection.scalarInt("PRAGMA freelist_count") ?? 0
            )
        }
    }

    /// Writes a compacted copy of the log to `target` (`VACUUM INTO`, https://sqlite.org/lang_vacuum.html#vacuuminto)
    /// from one read snapshot. Online-safe: it only reads, so the server keeps appending. The copy has the
    /// same epoch; put it in place with ``restore(from:to:overwrite:progress:)`` while the server is stopped.
    public func vacuum(into target: String) throws -> VacuumReport {
        let connection = try file(.vacuum)
        guard !FileManager.default.fileExists(atPath: target) else {
            throw MaintenanceError(.targetExists, "\(target) exists; VACUUM INTO needs a new file")
        }
        return try mappingBusy {
            let bytesBefore = StorageStatistics.fileSize(path)
            let freeBefore = try connection.scalarInt("PRAGMA freelist_count") ?? 0
            try connection.run("VACUUM INTO ?", [.text(target)])
            return VacuumReport(
                path: target,
                bytesBefore: bytesBefore,
                bytesAfter: StorageStatistics.fileSize(target),
                freePagesBefore: freeBefore,
                freePagesAfter: 0
            )
        }
    }

    /// Gives free pages back to the file system a few hundred at a time (`PRAGMA incremental_vacuum`), each
    /// batch its own short write transaction: online-safe. It needs `auto_vacuum=INCREMENTAL`, which a log
    /// does not have until ``enableIncrementalVacuum()`` has run once (offline).
    public func incrementalVacuum(maxPages: Int? = nil) throws -> VacuumReport {
        let connection = try file(.vacuum)
        return try mappingBusy {
            guard try connection.scalarInt("PRAGMA auto_vacuum") == 2 else {
                throw MaintenanceError(
                    .notSupported,
                    "\(path) does not have auto_vacuum=incremental; enable it once with the server stopped "
                        + "(eventlog-maint vacuum --enable-incremental)"
                )
            }
            let bytesBefore = StorageStatistics.fileSize(path)
            let freeBefore = try connection.scalarInt("PRAGMA freelist_count") ?? 0
            var left = Int64(maxPages ?? Int.max)
            var free = freeBefore
            while free > 0 && left > 0 {
                let pages = min(free, left, 256)
                let started = ContinuousClock.now
                try connection.transaction(write: true) {
                    try connection.execute("PRAGMA incremental_vacuum(\(pages))")
                }
                left -= pages
                free = try connection.scalarInt("PRAGMA freelist_count") ?? 0
                progress?(
                    MaintenanceProgress(
                        phase: "freeing pages",
                        completed: freeBefore - free,
                        total: min(freeBefore, Int64(maxPages ?? Int.max)),
                        unit: "pages"
                    )
                )
                pause(after: ContinuousClock.now - started)
            }
            _ = try connection.rows("PRAGMA wal_checkpoint(TRUNCATE)") { $0.int64(0) }
            return VacuumReport(
                path: path,
                bytesBefore: bytesBefore,
                bytesAfter: StorageStatistics.fileSize(path),
                freePagesBefore: freeBefore,
                freePagesAfter: free
            )
        }
    }

    /// Switches the file to `auto_vacuum=INCREMENTAL`, which takes a full `VACUUM`: NOT online-safe (see
    /// ``vacuum()``). Afterwards ``incrementalVacuum(maxPages:)`` can run beside the server.
    public func enableIncrementalVacuum() throws -> VacuumReport {
        let connection = try file(.vacuum)
        return try mappingBusy {
            try connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            return try vacuum()
        }
    }

    // MARK: Verify, stats

    /// Checks the file: SQLite's integrity check, the schema, the meta rows, ids against the sequence and
    /// `earliest`, commit times, index counts, idempotency keys and topics. Reads one snapshot; online-safe.
    public func verify(_ options: VerifyOptions = VerifyOptions()) throws -> VerifyReport {
        switch store {
        case .sqlite(let connection):
            return try mappingBusy { try Verifier.verify(connection, options: options, progress: progress) }
        case .postgres(let connection):
            return try PostgresVerifier.verify(connection, options: options, progress: progress)
        }
    }

    /// Counts, bounds, epoch and sizes; per-topic counts with `perTopic`. Online-safe.
    public func stats(perTopic: Bool = false) throws -> LogStats {
        switch store {
        case .sqlite(let connection):
            return try mappingBusy { try StorageStatistics.stats(connection, perTopic: perTopic) }
        case .postgres(let connection): return try PostgresLogMaintenance.stats(connection, perTopic: perTopic)
        }
    }

    // MARK: Backup and restore

    /// Copies the log to `target` with SQLite's online backup API, from one read snapshot, so it works while the
    /// server appends and the copy is consistent. The copy is written beside `target` and renamed into place
    /// only when complete. It keeps the epoch: it *is* this log, as of the snapshot.
    public func backup(to target: String, overwrite: Bool = false) throws -> BackupReport {
        let connection = try file(.backup)
        if FileManager.default.fileExists(atPath: target) && !overwrite {
            throw MaintenanceError(.targetExists, "\(target) exists; pass overwrite (--force) to replace it")
        }
        let partial = target + ".partial"
        Self.removeDatabaseFiles(partial)
        return try mappingBusy {
            var report: BackupReport
            do {
                let destination = try Connection(path: partial, mode: .readWrite)
                let pages = try DatabaseCopy.copy(
                    from: connection,
                    to: destination,
                    busyTimeout: options.busyTimeout,
                    progress: progress
                )
                report = try Self.describeCopy(destination, path: target, pages: pages)
                destination.close()
            } catch {
                Self.removeDatabaseFiles(partial)
                throw error
            }
            if overwrite { Self.removeDatabaseFiles(target) }
            try FileManager.default.moveItem(atPath: partial, toPath: target)
            report.bytes = StorageStatistics.fileSize(target)
            return report
        }
    }

    /// Puts a backup (or a `VACUUM INTO` copy) in place at `path` and gives it a NEW epoch.
    ///
    /// The server must be stopped: it keeps the head, the epoch and recent events in memory. A backup is an older
    /// state of the log, so clients may hold positions past its head; the new epoch makes WebSocket resume tokens
    /// from before get `reset`, and SSE clients whose `Last-Event-ID` is past the head get `eventlog.reset`,
    /// instead of silently waiting for ids that will now name different events. The resume-token key is kept.
    public static func restore(
        from backup: String,
        to path: String,
        overwrite: Bool = false,
        progress: MaintenanceProgressHandler? = nil
    ) throws -> BackupReport {
        for location in [path, backup] where EventLog.isPostgresURL(location) {
            throw SQLiteFileOperation.restore.refusal(location)
        }
        guard FileManager.default.fileExists(atPath: backup) else {
            throw MaintenanceError(.notFound, "no such file: \(backup)")
        }
        if FileManager.default.fileExists(atPath: path) && !overwrite {
            throw MaintenanceError(.targetExists, "\(path) exists; pass overwrite (--force) to replace it")
        }
        let source = try Connection(path: backup, mode: .readOnly)
        defer { source.close() }
        try checkSchema(source, forWriting: false)
        // The ids the replaced log issued: the restored one must never hand them out again.
        let replacedIssued = FileManager.default.fileExists(atPath: path) ? Self.issuedThrough(path: path) : 0
        // Through SQLite, not a file copy: an existing log's -wal file must not be replayed onto the new content.
        let destination = try Connection(path: path, mode: .readWrite)
        defer { destination.close() }
        let pages = try DatabaseCopy.copy(from: source, to: destination, busyTimeout: .seconds(5), progress: progress)
        // A backup made by an older build gets the newest schema (the server would migrate it anyway).
        try Migrator.migrate(destination)
        try destination.transaction(write: true) {
            try destination.run(
                "UPDATE meta SET value = ? WHERE name = 'epoch'", [.text(Migrator.randomHex(bytes: 16))])
            try Self.skipIssuedIDs(destination, issued: replacedIssued)
        }
        _ = try destination.scalarText("PRAGMA journal_mode=WAL")
        _ = try destination.rows("PRAGMA wal_checkpoint(TRUNCATE)") { $0.int64(0) }
        return try describeCopy(destination, path: path, pages: pages)
    }

    // MARK: Export and import

    /// Writes every event as JSON Lines (see the format in OPERATIONS.md) from one snapshot, after a header
    /// line with the epoch, the resume-token key, earliest and head. Online-safe.
    public func export(to output: FileHandle) throws -> ExportReport {
        switch store {
        case .sqlite(let connection):
            return try mappingBusy { try ExportFormat.export(connection, to: output, progress: progress) }
        case .postgres(let connection):
            return try PostgresLogMaintenance.export(connection, to: output, progress: progress)
        }
    }

    /// Imports an export into `path`, which must be a new file or a log with no events, in one transaction; or into
    /// the PostgreSQL database at the URL `path`, which gets the eventlog schema if it has none and must hold no
    /// events (``PostgresLogMaintenance/importEvents(from:into:keepEpoch:progress:)``).
    /// Ids, times, data, keys and idempotency keys are kept; the head is the exported head, so ids are never
    /// handed out twice, and `earliest` is the exported one. The resume-token key is the export's.
    ///
    /// By default the log gets a new epoch: it is a copy that may be older than what clients saw (as a restored
    /// backup is), so resume tokens from before get `reset`. With `keepEpoch` it takes the export's epoch and is
    /// the same log to every client: use that to move or rebuild a log whose server was stopped before the export.
    public static func importEvents(
        from input: FileHandle,
        into path: String,
        keepEpoch: Bool = false,
        progress: MaintenanceProgressHandler? = nil
    ) throws -> ImportReport {
        if EventLog.isPostgresURL(path) {
            return try PostgresLogMaintenance.importEvents(
                from: input, into: path, keepEpoch: keepEpoch, progress: progress)
        }
        let existed = StorageStatistics.fileSize(path) > 0
        let connection = try Connection(path: path, mode: .readWrite)
        defer { connection.close() }
        if existed {
            try checkSchema(connection, forWriting: true)
        } else {
            guard try connection.scalarText("PRAGMA journal_mode=WAL")?.lowercased() == "wal" else {
                throw MaintenanceError(.notSupported, "cannot switch \(path) to WAL mode")
            }
            try Migrator.migrate(connection)
        }
        let report = try ExportFormat.importEvents(
            from: input, into: connection, keepEpoch: keepEpoch, progress: progress)
        _ = try connection.rows("PRAGMA wal_checkpoint(TRUNCATE)") { $0.int64(0) }
        return report
    }

    // MARK: Helpers

    /// Refuses files that are not event logs, and, for writing, logs this build would have to migrate first.
    private static func checkSchema(_ connection: Connection, forWriting: Bool) throws {
        let version = Int(try connection.scalarInt("PRAGMA user_version") ?? 0)
        let hasMeta =
            try connection.scalarInt("SELECT count(*) FROM sqlite_schema WHERE name IN ('events', 'meta')") == 2
        guard version >= 1, hasMeta else {
            throw MaintenanceError(.notALog, "\(connection.path) is not an event log (schema version \(version))")
        }
        guard version <= Migrator.latestVersion else {
            throw MaintenanceError(
                .notALog,
                "\(connection.path) has schema version \(version), newer than this build's \(Migrator.latestVersion)"
            )
        }
        if forWriting && version < Migrator.latestVersion {
            throw MaintenanceError(
                .notALog,
                "\(connection.path) has schema version \(version); "
                    + "open it once with this build's eventlogd to migrate it"
            )
        }
    }

    /// The largest id the log at `path` ever issued (its sequence, or `meta.issued` after a restore), 0 when the
    /// file is not a readable log: restore replaces it whatever it holds.
    private static func issuedThrough(path: String) -> Int64 {
        guard let connection = try? Connection(path: path, mode: .readOnly) else { return 0 }
        defer { connection.close() }
        let head = (try? SQLiteEventStore.readHead(connection)) ?? 0
        let issued = ((try? connection.metaValue("issued")) ?? nil).flatMap { Int64($0) } ?? 0
        return max(head, issued)
    }

    /// Moves the id sequence of a restored log past every id issued before, by the replaced file (`issued`) or by
    /// the backup's own log, and keeps that in `meta.issued`. The ids between the restored head and there
    /// become a void (schema/0002_order_state.sql): they named events the restore took away, so a client
    /// resuming from one gets `reset`, and no new event ever takes an id a client has seen.
    static func skipIssuedIDs(_ connection: Connection, issued replaced: Int64) throws {
        let head = try SQLiteEventStore.readHead(connection)
        let recorded = try connection.metaValue("issued").flatMap { Int64($0) } ?? 0
        let issued = max(head, recorded, replaced)
        if issued > head {
            try connection.run(
                "INSERT INTO voids (after, through) VALUES (?, ?) "
                    + "ON CONFLICT (after) DO UPDATE SET through = max(through, excluded.through)",
                [.int(head), .int(issued)])
            try connection.run("DELETE FROM sqlite_sequence WHERE name = 'events'")
            try connection.run("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", [.int(issued)])
        }
        try connection.run("INSERT OR REPLACE INTO meta (name, value) VALUES ('issued', ?)", [.text(String(issued))])
    }

    private static func describeCopy(_ connection: Connection, path: String, pages: Int64) throws -> BackupReport {
        BackupReport(
            path: path,
            pages: pages,
            bytes: StorageStatistics.fileSize(connection.path),
            epoch: try connection.metaValue("epoch") ?? "",
            head: try SQLiteEventStore.readHead(connection),
            eventCount: try connection.scalarInt("SELECT count(*) FROM events") ?? 0
        )
    }

    private static func removeDatabaseFiles(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// Turns "locked past the busy timeout" into one clear error.
    private func mappingBusy<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SQLiteError where error.primaryCode == SQLITE_BUSY || error.primaryCode == SQLITE_LOCKED {
            throw MaintenanceError(
                .busy,
                "\(path) stayed locked by another connection for longer than the busy timeout "
                    + "(\(MaintenanceText.formatDuration(options.busyTimeout))): \(error.message)"
            )
        }
    }
}

@available(*, unavailable)
extension LogMaintenance: Sendable {}
