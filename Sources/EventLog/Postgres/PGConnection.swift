import CLibPQ
import Foundation

/// A PostgreSQL failure: the server's SQLSTATE (empty when the connection itself failed) and its message.
public struct PGError: Error, CustomStringConvertible, Sendable {
    /// The five-character SQLSTATE, or "" for a failure without one (no connection, lost connection).
    public let sqlState: String
    /// libpq's or the server's message, on one line.
    public let message: String

    public var description: String { sqlState.isEmpty ? message : "\(message) (SQLSTATE \(sqlState))" }

    /// True when the database is unreachable or going away rather than refusing this statement: connection
    /// failures (class 08), shutdowns (57P01-57P03), no SQLSTATE at all.
    var isConnectionProblem: Bool {
        sqlState.isEmpty || sqlState.hasPrefix("08") || sqlState.hasPrefix("57P")
    }
}

extension EventLogError {
    /// A PostgreSQL failure as the log reports it: `storage_unavailable` (503), nothing was written.
    static func storage(_ error: PGError) -> EventLogError {
        EventLogError(.storageUnavailable, "PostgreSQL: \(error.message)")
    }
}

/// One libpq connection, used by one thread at a time (the thread of ``DatabaseThreads`` that opened it).
///
/// Statements go with ``query(_:_:)`` (parameters as text, `$1`, `$2`, ...) or ``execute(_:)`` (a script of
/// several statements, no parameters). When the connection was lost (PostgreSQL restarted, a network cut), the
/// next call reconnects first, so a thread's connection heals by itself once the server is back; the call that
/// saw it break fails with a ``PGError`` whose ``PGError/isConnectionProblem`` is true.
///
/// Public (with `init(url:)`, `execute`, `query`, `scalarInt`, `close` and ``PGResult``'s readers) only so that
/// `eventlog-bench postgres` can run application transactions that call `eventlog.publish`; not a supported API.
public final class PGConnection: ThreadConnection, @unchecked Sendable {
    // @unchecked: used only by the thread that owns it.
    private var handle: OpaquePointer?
    private let conninfo: String
    /// Where log lines name the database, without a password.
    let displayName: String

    /// Connects to `url` (`postgres://user@host:port/dbname?...`, as libpq reads it). Adds `connect_timeout=5`
    /// unless the URL sets one, so a connect to an unreachable host fails instead of hanging.
    public init(url: String) throws {
        var info = url
        if !url.contains("connect_timeout=") {
            info += (url.contains("?") ? "&" : "?") + "connect_timeout=5"
        }
        conninfo = info
        displayName = PGConnection.redacted(url)
        try connect()
    }

    deinit { close() }

    static func describe(_ error: any Error) -> String {
        (error as? PGError).map { "PostgreSQL: \($0.message)" } ?? "\(error)"
    }

    /// Closes the connection; a later call reconnects.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// The URL with any password replaced by `***`, for messages.
    static func redacted(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else {
            return url
        }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    private func connect() throws {
        close()
        let connection = PQconnectdb(conninfo)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { Self.text(PQerrorMessage($0)) } ?? "out of memory"
            if let connection { PQfinish(connection) }
            throw PGError(sqlState: "", message: "cannot connect to \(displayName): \(Self.oneLine(message))")
        }
        // libpq prints NOTICEs (`schema already exists, skipping`) on stderr by default.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        handle = connection
    }

    /// The open connection, reconnecting when it was closed or lost.
    private func open() throws -> OpaquePointer {
        if let handle, PQstatus(handle) == CONNECTION_OK { return handle }
        try connect()
        return handle!
    }

    /// True when the connection is up as far as libpq knows (it learns of a loss only when it next talks).
    var isOpen: Bool { handle.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// True when this connection broke during the call that threw `error` (PostgreSQL restarted or went away
    /// since its last use); it is closed then, so the next call reconnects. A connect that failed is not a loss.
    func shouldRetryRead(after error: any Error) -> Bool {
        guard let handle else { return false }
        let lost = PQstatus(handle) != CONNECTION_OK || (error as? PGError)?.isConnectionProblem == true
        if lost { close() }
        return lost
    }

    /// True when no transaction is open (or the connection is down).
    var isIdle: Bool { handle.map { PQtransactionStatus($0) == PQTRANS_IDLE } ?? true }

    /// Runs a script of one or more statements without parameters (the simple query protocol).
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        let connection = try open()
        return try check(PQexec(connection, sql), connection)
    }

    /// Runs one statement with text parameters (`nil` is SQL NULL) and returns its rows, in text format.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PGResult {
        let connection = try open()
        let result = Self.withValues(parameters) { count, values in
            PQexecParams(connection, sql, count, nil, values, nil, nil, 0)
        }
        return try check(result, connection)
    }

    /// Runs one statement with text parameters and then `COMMIT`, in one round trip (libpq's pipeline mode), in
    /// the transaction ``begin(_:then:)`` opened, and returns the statement's rows. When the statement fails,
    /// `COMMIT` does not run and the transaction is left for ``rollback()``. A lock the statement takes is held
    /// for no round trip at all: only while PostgreSQL runs the statement and the commit.
    @discardableResult
    func queryThenCommit(_ sql: String, _ parameters: [String?]) throws -> PGResult {
        let connection = try open()
        guard PQenterPipelineMode(connection) == 1 else { throw lostConnection(connection) }
        defer { if PQexitPipelineMode(connection) != 1 { close() } }
        let sent = Self.withValues(parameters) { count, values in
            PQsendQueryParams(connection, sql, count, nil, values, nil, nil, 0)
        }
        guard sent == 1, PQsendQueryParams(connection, "COMMIT", 0, nil, nil, nil, nil, 0) == 1,
            PQpipelineSync(connection) == 1
        else { throw lostConnection(connection) }
        // Each statement's result, then a NULL; then the sync point. The first error is the one to report.
        var failure: (any Error)?
        var rows: PGResult?
        var statements = 0
        while statements < 2 {
            guard let result = PQgetResult(connection) else {
                statements += 1
                continue
            }
            if failure == nil, PQresultStatus(result) != PGRES_PIPELINE_ABORTED {
                do {
                    let checked = try check(result, connection)
                    if statements == 0 { rows = checked }
                } catch { failure = error }
            } else {
                PQclear(result)
            }
            if PQstatus(connection) != CONNECTION_OK { throw failure ?? lostConnection(connection) }
        }
        guard let sync = PQgetResult(connection) else { throw failure ?? lostConnection(connection) }
        PQclear(sync)
        if let failure { throw failure }
        guard let rows else { throw lostConnection(connection) }
        return rows
    }

    /// The process id of the connection's backend (0 when closed): a notification names the backend that sent it.
    var backendPID: Int32 { handle.map { PQbackendPID($0) } ?? 0 }

    private func lostConnection(_ connection: OpaquePointer) -> PGError {
        PGError(sqlState: "", message: Self.oneLine(Self.text(PQerrorMessage(connection))))
    }

    /// `parameters` as C strings for libpq (`nil` is SQL NULL), alive during `body`.
    private static func withValues<T>(
        _ parameters: [String?], _ body: (Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> T
    ) -> T {
        if parameters.isEmpty { return body(0, nil) }
        var pointers: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { values in
                body(Int32(parameters.count), values)
            }
        }
    }

    /// The first column of the first row as an integer, or nil (no row, or NULL).
    public func scalarInt(_ sql: String, _ parameters: [String?] = []) throws -> Int64? {
        let result = try query(sql, parameters)
        return result.rowCount > 0 ? result.int64(0, 0) : nil
    }

    /// The first column of the first row as text, or nil (no row, or NULL).
    func scalarText(_ sql: String, _ parameters: [String?] = []) throws -> String? {
        let result = try query(sql, parameters)
        return result.rowCount > 0 ? result.text(0, 0) : nil
    }

    /// Runs `body` in a transaction (`BEGIN` plus `mode`, e.g. `ISOLATION LEVEL REPEATABLE READ READ ONLY`),
    /// committing when it returns and rolling back when it throws.
    func transaction<T>(_ mode: String = "", _ body: () throws -> T) throws -> T {
        try begin(mode)
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            rollback()
            throw error
        }
    }

    /// Begins a transaction. When the connection turns out to be dead (PostgreSQL restarted since its last use),
    /// it reconnects and begins once more: nothing had been sent in the transaction, so nothing is lost or doubled,
    /// and the first request after a restart does not fail for a connection that is already gone.
    /// With `statement` (no parameters), it runs in the same round trip and its rows are returned.
    @discardableResult
    func begin(_ mode: String = "", then statement: String? = nil) throws -> PGResult {
        let sql = (mode.isEmpty ? "BEGIN" : "BEGIN " + mode) + (statement.map { "; " + $0 } ?? "")
        do {
            return try execute(sql)
        } catch let error as PGError where error.isConnectionProblem && handle != nil {
            close()
            return try execute(sql)
        }
    }

    /// Rolls back an open transaction, if the connection still has one; never throws.
    func rollback() {
        guard let handle, PQstatus(handle) == CONNECTION_OK, PQtransactionStatus(handle) != PQTRANS_IDLE else {
            return
        }
        PQclear(PQexec(handle, "ROLLBACK"))
    }

    // MARK: Notifications

    /// The connection's socket, for `poll` while waiting for notifications; -1 when closed.
    var socket: Int32 { handle.map { PQsocket($0) } ?? -1 }

    /// Reads what the server sent and returns the notifications received, as (channel, payload, the sending
    /// backend's process id). Throws when the connection is lost.
    func notifications() throws -> [(channel: String, payload: String, sender: Int32)] {
        guard let handle, PQstatus(handle) == CONNECTION_OK else {
            throw PGError(sqlState: "", message: "the connection to \(displayName) is closed")
        }
        guard PQconsumeInput(handle) == 1, PQstatus(handle) == CONNECTION_OK else {
            throw PGError(sqlState: "", message: Self.oneLine(Self.text(PQerrorMessage(handle))))
        }
        var found: [(String, String, Int32)] = []
        while let notify = PQnotifies(handle) {
            found.append((Self.text(notify.pointee.relname), Self.text(notify.pointee.extra), notify.pointee.be_pid))
            PQfreemem(notify)
        }
        return found
    }

    // MARK: Results

    private func check(_ result: OpaquePointer?, _ connection: OpaquePointer) throws -> PGResult {
        guard let result else {
            throw PGError(sqlState: "", message: Self.oneLine(Self.text(PQerrorMessage(connection))))
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return PGResult(result)
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
            let message = Self.oneLine(Self.text(PQresultErrorMessage(result)))
            PQclear(result)
            if PQstatus(connection) != CONNECTION_OK {
                throw PGError(sqlState: state.hasPrefix("08") ? state : "", message: message)
            }
            throw PGError(sqlState: state, message: message)
        }
    }

    private static func text(_ pointer: UnsafePointer<CChar>?) -> String {
        pointer.map { String(cString: $0) } ?? ""
    }

    private static func oneLine(_ text: String) -> String {
        let trimmed = text.hasPrefix("ERROR:  ") ? String(text.dropFirst(8)) : text
        return trimmed.split(whereSeparator: { $0.isNewline || $0 == "\t" }).joined(separator: " ")
    }
}

/// The rows of one statement, in text format. Frees libpq's result when released.
public final class PGResult: @unchecked Sendable {
    // @unchecked: immutable once made; libpq's accessors only read it.
    private let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { PQclear(pointer) }

    /// Rows returned.
    public var rowCount: Int { Int(PQntuples(pointer)) }

    /// Rows an INSERT, UPDATE or DELETE touched.
    var affectedRows: Int64 { Int64(String(cString: PQcmdTuples(pointer))) ?? 0 }

    func isNull(_ row: Int, _ column: Int) -> Bool { PQgetisnull(pointer, Int32(row), Int32(column)) == 1 }

    /// The value as text; nil for NULL.
    public func text(_ row: Int, _ column: Int) -> String? {
        if isNull(row, column) { return nil }
        let value = PQgetvalue(pointer, Int32(row), Int32(column))!
        let length = Int(PQgetlength(pointer, Int32(row), Int32(column)))
        return value.withMemoryRebound(to: UInt8.self, capacity: length) {
            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
        }
    }

    /// The value as an integer (0 for NULL or a non-integer).
    public func int64(_ row: Int, _ column: Int) -> Int64 {
        if isNull(row, column) { return 0 }
        return strtoll(PQgetvalue(pointer, Int32(row), Int32(column)), nil, 10)
    }
}
