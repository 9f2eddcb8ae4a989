/// Prepared statements of one ``Connection``, keyed by their SQL.
///
/// The cache must be cleared before the connection closes: an unfinalized statement makes
/// `sqlite3_close` fail (https://sqlite.org/c3ref/close.html).
struct StatementCache {
    private var statements: [String: Statement] = [:]

    func statement(for sql: String) -> Statement? {
        statements[sql]
    }

    mutating func insert(_ statement: Statement) {
        statements[statement.sql] = statement
    }

    /// Finalizes every statement (each finalizes in its deinit).
    mutating func clear() {
        statements.removeAll()
    }
}

@available(*, unavailable)
extension StatementCache: Sendable {}
