import CSQLite

/// A prepared statement. Not Sendable: it belongs to its ``Connection`` and is finalized in `deinit`.
///
/// Statements are made only for the connection's cache, so they are prepared with
/// `SQLITE_PREPARE_PERSISTENT` (https://sqlite.org/c3ref/c_prepare_normalize.html). A step that fails
/// resets the statement, so it stays in the cache and is usable again.
final class Statement {
    private var handle: OpaquePointer?
    let sql: String
    private unowned let connection: Connection

    init(connection: Connection, sql: String) throws {
        self.connection = connection
        self.sql = sql
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(connection.handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else {
            throw connection.error(code: code, sql: sql)
        }
        self.handle = statement
    }

    deinit {
        sqlite3_finalize(handle)
    }

    /// Resets the statement and clears its bindings so it can run again.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// Binds `values` to parameters 1...n.
    func bind(_ values: [SQLValue]) throws {
        for (offset, value) in values.enumerated() {
            try bind(value, at: Int32(offset + 1))
        }
    }

    func bind(_ value: SQLValue, at index: Int32) throws {
        let code: Int32
        switch value {
        case .null:
            code = sqlite3_bind_null(handle, index)
        case .int(let number):
            code = sqlite3_bind_int64(handle, index, number)
        case .text(let text):
            // The byte count, not -1: text may hold NUL, which must not end it early
            // (https://sqlite.org/c3ref/bind_blob.html). withCString does not copy a native string.
            let count = Int32(text.utf8.count)
            code = text.withCString { sqlite3_bind_text(handle, index, $0, count, SQLITE_TRANSIENT) }
        }
        guard code == SQLITE_OK else { throw connection.error(code: code, sql: sql) }
    }

    /// Steps once. Returns true when a row is available, false when the statement is done.
    func step() throws -> Bool {
        let code = sqlite3_step(handle)
        switch code {
        case SQLITE_ROW:
            return true
        case SQLITE_DONE:
            return false
        default:
            let error = connection.error(code: code, sql: sql)
            sqlite3_reset(handle)
            throw error
        }
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(handle, column) == SQLITE_NULL
    }

    func int64(_ column: Int32) -> Int64 {
        sqlite3_column_int64(handle, column)
    }

    func text(_ column: Int32) -> String? {
        guard let pointer = sqlite3_column_text(handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    /// Calls `body` with the column's text as UTF-8 bytes, valid only inside `body`. Maintenance hashes
    /// millions of keys this way without making a `String` for each.
    func withUTF8<Result>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        let pointer = sqlite3_column_text(handle, column)
        let count = Int(sqlite3_column_bytes(handle, column))
        return try body(UnsafeRawBufferPointer(start: pointer, count: pointer == nil ? 0 : count))
    }
}

@available(*, unavailable)
extension Statement: Sendable {}
