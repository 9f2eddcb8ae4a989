import CSQLite

/// An error reported by SQLite: the extended result code, SQLite's message, and the SQL that failed.
///
/// Callers match on ``primaryCode`` (for example `SQLITE_FULL`) or on the extended code.
/// See https://sqlite.org/rescode.html.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    /// The extended result code (https://sqlite.org/rescode.html#extrc).
    public let extendedCode: Int32
    /// SQLite's own message for the failure.
    public let message: String
    /// The statement that failed, when there was one.
    public let sql: String?

    /// The primary result code: the low 8 bits of the extended code.
    public var primaryCode: Int32 { extendedCode & 0xFF }

    init(code: Int32, message: String, sql: String? = nil) {
        self.extendedCode = code
        self.message = message
        self.sql = sql
    }

    init(code: Int32, db: OpaquePointer?, sql: String? = nil) {
        let message =
            db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(code))
        self.init(code: code, message: message, sql: sql)
    }

    /// True when the failure means the store cannot take writes now: a full disk, a read-only
    /// file or database, an I/O error, or a lock held past `busy_timeout`.
    public var isStorageUnavailable: Bool {
        switch primaryCode {
        case SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CANTOPEN, SQLITE_PERM:
            return true
        default:
            return false
        }
    }

    public var description: String {
        var text = "SQLite error \(extendedCode): \(message)"
        if let sql { text += " (\(sql))" }
        return text
    }
}
