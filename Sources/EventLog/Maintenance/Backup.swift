import CSQLite
import Foundation

/// What ``LogMaintenance/backup(to:overwrite:)`` or ``LogMaintenance/restore(from:to:overwrite:progress:)``
/// copied.
public struct BackupReport: Sendable, Hashable {
    /// The file written.
    public var path: String
    /// Database pages copied.
    public var pages: Int64
    /// The size of the copy in bytes.
    public var bytes: Int64
    /// The epoch of the copy: the source's for a backup, a new one for a restore.
    public var epoch: String
    /// The head of the copy.
    public var head: Int64
    /// Events in the copy.
    public var eventCount: Int64
}

/// Page copies with SQLite's online backup API (https://sqlite.org/backup.html).
enum DatabaseCopy {
    /// Copies the whole of `source` into `destination`, `pagesPerStep` pages per call.
    ///
    /// The source is read inside one explicit read transaction held across every step. In WAL mode that is one
    /// snapshot, which a server's appends do not disturb: `sqlite3_backup_step` restarts the copy whenever
    /// it opens a new read transaction and finds the file changed, so without the held transaction a busy log
    /// could make a stepped backup start over forever. The held snapshot blocks no writer; it only keeps
    /// checkpoints from recycling the WAL past it until the copy ends.
    static func copy(
        from source: Connection,
        to destination: Connection,
        pagesPerStep: Int32 = 256,
        busyTimeout: Duration,
        progress: MaintenanceProgressHandler?
    ) throws -> Int64 {
        try source.transaction(write: false) {
            // A deferred BEGIN opens its snapshot on the first read.
            _ = try source.scalarInt("SELECT count(*) FROM sqlite_schema")
            guard let backup = sqlite3_backup_init(destination.handle, "main", source.handle, "main") else {
                throw destination.error(code: sqlite3_errcode(destination.handle), sql: "sqlite3_backup_init")
            }
            var code: Int32 = SQLITE_OK
            var busySince: ContinuousClock.Instant?
            while true {
                code = sqlite3_backup_step(backup, pagesPerStep)
                let total = Int64(sqlite3_backup_pagecount(backup))
                let remaining = Int64(sqlite3_backup_remaining(backup))
                progress?(
                    MaintenanceProgress(phase: "copying", completed: total - remaining, total: total, unit: "pages"))
                if code == SQLITE_OK {
                    busySince = nil
                    continue
                }
                if code == SQLITE_BUSY || code == SQLITE_LOCKED {
                    // Another connection holds the destination: wait for it as busy_timeout would.
                    let since = busySince ?? ContinuousClock.now
                    busySince = since
                    if ContinuousClock.now - since > busyTimeout { break }
                    Thread.sleep(forTimeInterval: 0.005)
                    continue
                }
                break
            }
            let finish = sqlite3_backup_finish(backup)
            guard code == SQLITE_DONE else {
                throw SQLiteError(
                    code: code, message: String(cString: sqlite3_errstr(code)), sql: "sqlite3_backup_step")
            }
            guard finish == SQLITE_OK else { throw destination.error(code: finish, sql: "sqlite3_backup_finish") }
            return try destination.scalarInt("PRAGMA page_count") ?? 0
        }
    }
}
