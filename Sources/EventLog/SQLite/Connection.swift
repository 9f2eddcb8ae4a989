import CSQLite

/// SQLite copies bound text when given this destructor. Swift cannot import the C macro.
let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection. It is not Sendable: exactly one ``SQLiteThread`` owns and uses it.
final class Connection {
    /// How to open the file.
    enum Mode {
        case readWrite
        case readOnly
    }

    private(set) var handle: OpaquePointer?
    let path: String
    private var cache = StatementCache()
    private var busyPoller: BusyPoller?

    init(path: String, mode: Mode, busyTimeoutMilliseconds: Int32 = 5000) throws {
        self.path = path
        var db: OpaquePointer?
        let flags: Int32
        switch mode {
        case .readWrite:
            flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        case .readOnly:
            flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
        }
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let error = SQLiteError(code: code, db: db, sql: nil)
            sqlite3_close_v2(db)
            throw error
        }
        self.handle = db
        sqlite3_extended_result_codes(db, 1)
        // https://sqlite.org/c3ref/busy_timeout.html: wait for another process's lock rather than fail at once.
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
    }

    deinit {
        close()
    }

    /// Replaces `busy_timeout` with a ``BusyPoller`` that tries for the lock every 100 µs, for up to `timeout`.
    func pollWhenBusy(timeout: Duration) {
        busyPoller = BusyPoller(connection: self, timeout: timeout)
    }

    /// Finalizes every cached statement, then closes the handle.
    func close() {
        // Statements must be finalized before sqlite3_close, or it fails with SQLITE_BUSY.
        cache.clear()
        if let handle {
            sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    /// Runs one or more statements that return no rows.
    func execute(_ sql: String) throws {
        var errorMessage: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &errorMessage)
        if code != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(code))
            sqlite3_free(errorMessage)
            throw SQLiteError(code: sqlite3_extended_errcode(handle), message: message, sql: sql)
        }
    }

    /// A prepared statement for `sql`, from the cache when it was prepared before.
    ///
    /// Cached statements are prepared with `SQLITE_PREPARE_PERSISTENT`
    /// (https://sqlite.org/c3ref/c_prepare_normalize.html) and reset before they are handed out again.
    func cachedStatement(_ sql: String) throws -> Statement {
        if let statement = cache.statement(for: sql) {
            statement.reset()
            return statement
        }
        let statement = try Statement(connection: self, sql: sql)
        cache.insert(statement)
        return statement
    }

    /// The first column of the first row of `sql`, as an integer.
    func scalarInt(_ sql: String, _ arguments: [SQLValue] = []) throws -> Int64? {
        let statement = try cachedStatement(sql)
        try statement.bind(arguments)
        // Reset at once: a statement left mid-rows keeps its read open and blocks COMMIT.
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.int64(0)
    }

    /// The first column of the first row of `sql`, as text.
    func scalarText(_ sql: String, _ arguments: [SQLValue] = []) throws -> String? {
        let statement = try cachedStatement(sql)
        try statement.bind(arguments)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.text(0)
    }

    /// Runs a statement without arguments or rows (`BEGIN IMMEDIATE`, `COMMIT`, `SAVEPOINT ...`) as a
    /// cached prepared statement, so the hot path does not parse it again at every use as
    /// ``execute(_:)`` does. The statement is reset at once: a transaction statement left unreset
    /// would count as in progress.
    func runCached(_ sql: String) throws {
        let statement = try cachedStatement(sql)
        defer { statement.reset() }
        while try statement.step() {}
    }

    /// Runs a statement that returns no rows, with arguments.
    func run(_ sql: String, _ arguments: [SQLValue] = []) throws {
        let statement = try cachedStatement(sql)
        try statement.bind(arguments)
        while try statement.step() {}
    }

    /// The rowid of the last row inserted on this connection.
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// True outside an explicit transaction. SQLite may roll a transaction back by itself on
    /// some errors (SQLITE_FULL, SQLITE_IOERR, ...): https://sqlite.org/lang_transaction.html#response_to_errors_within_a_transaction
    var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }

    func error(code: Int32, sql: String?) -> SQLiteError {
        SQLiteError(code: sqlite3_extended_errcode(handle), db: handle, sql: sql)
    }
}

@available(*, unavailable)
extension Connection: Sendable {}

/// A value bound to a statement parameter.
enum SQLValue {
    case null
    case int(Int64)
    case text(String)
}
