import ArgumentParser
import EventLog
import EventLogCommandLine
import Foundation

/// `eventlog-maint`: maintenance of an event log file, beside a running `eventlogd` or with it stopped.
@main
struct EventLogMaint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eventlog-maint",
        abstract: "Maintain an eventlog database: retention, compaction, checkpoint, vacuum, verify, backup, export.",
        discussion: """
            Every subcommand takes --db PATH. retain, compact, checkpoint, verify, backup, export, stats and \
            vacuum --into / --incremental are safe while eventlogd runs on the same file: they read from WAL \
            snapshots and write in short transactions under SQLite's writer lock. vacuum (in place), \
            vacuum --enable-incremental, restore and import need the server stopped. See docs/OPERATIONS.md.

            --db postgres://user@host:port/dbname selects a log in PostgreSQL: retain, compact, verify, stats, \
            export and import work there (import before the nodes start); checkpoint, vacuum, backup and restore \
            are SQLite file operations and are refused (use pg_dump, pg_basebackup, autovacuum).

            Exit status: 0 success; 1 a runtime problem (one line on stderr), or verify found an error; \
            2 a usage error (bad flag, size or duration).

            \(OptionEnvironment.ruleDescription)
            """,
        version: CommandLineTool.version,
        subcommands: [
            Retain.self, Compact.self, Checkpoint.self, Vacuum.self, Verify.self, Backup.self, Restore.self,
            Export.self, Import.self, Stats.self,
        ]
    )

    /// Runs with the exit statuses every eventlog tool shares; `--db` also reads its variable.
    static func main() async {
        await CommandLineTool.main(Self.self, environment: .options(["db"]), describe: describe)
    }

    /// One line for any error: no stack trace, no Foundation error dictionary.
    static func describe(_ error: Error) -> String {
        let text: String
        switch error {
        case let error as MaintenanceError: text = error.message
        case let error as EventLogError: text = error.message
        case let error as SQLiteError: text = "SQLite: \(error.message)"
        case let error as PGError: text = "PostgreSQL: \(error.message)"
        case let error as CocoaError:
            let path = (error.userInfo[NSFilePathErrorKey] as? String).map { " (\($0))" } ?? ""
            text = (error.underlying.map { String(describing: $0) } ?? error.localizedDescription) + path
        default: text = String(describing: error)
        }
        return text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

extension CocoaError {
    fileprivate var underlying: Error? { userInfo[NSUnderlyingErrorKey] as? Error }
}

// MARK: Shared options

/// `--db` and what every subcommand shares.
struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("db"),
        help: "The database file, or a postgres:// URL (the same option as eventlogd's).")
    var databasePath: String

    @Option(
        name: .customLong("busy-timeout"),
        help: "How long a write waits for the server's lock, e.g. 5s, 500ms. Default 5s.",
        transform: parseDuration
    )
    var busyTimeout: Duration?

    @Flag(help: "Print no progress on stderr.")
    var quiet = false

    func validate() throws {
        if databasePath.isEmpty { throw ValidationError("--db must not be empty") }
    }

    /// Opens the log; `readOnly` for operations that never write.
    func open(readOnly: Bool, batching: MaintenanceBatching = MaintenanceBatching()) throws -> LogMaintenance {
        var options = LogMaintenance.Options()
        options.readOnly = readOnly
        options.busyTimeout = busyTimeout ?? .seconds(5)
        options.batching = batching
        let maintenance = try LogMaintenance(path: databasePath, options: options)
        maintenance.progress = progressReporter?.handler
        return maintenance
    }

    /// Refuses a PostgreSQL URL for an operation on a SQLite file, before connecting to it.
    func requireFile(_ operation: SQLiteFileOperation) throws {
        if EventLog.isPostgresURL(databasePath) { throw operation.refusal(databasePath) }
    }

    /// The progress output on stderr, or nil with `--quiet`.
    var progressReporter: ProgressReporter? { quiet ? nil : ProgressReporter.shared }
}

/// How retention and compaction cut their work into transactions.
struct BatchingOptions: ParsableArguments {
    @Option(name: .customLong("batch-rows"), help: "Events examined per transaction.")
    var batchRows: Int = MaintenanceBatching().maxRows

    @Option(
        name: .customLong("batch-time"),
        help: "How long one transaction examines events before it deletes what it picked and commits. Default 10ms.",
        transform: parseDuration
    )
    var batchTime: Duration = MaintenanceBatching().maxLockTime

    func validate() throws {
        if batchRows < 1 { throw ValidationError("--batch-rows must be at least 1") }
        if batchTime <= .zero { throw ValidationError("--batch-time must be positive") }
    }

    var batching: MaintenanceBatching { MaintenanceBatching(maxRows: batchRows, maxLockTime: batchTime) }
}

/// `--topic` selectors.
struct SelectorOptions: ParsableArguments {
    @Option(
        name: .customLong("topic"),
        help: "A topic selector to limit the operation to (orders/1, orders/*, *); repeatable. Default: every topic."
    )
    var topics: [String] = []

    func validate() throws {
        _ = try selectors()
    }

    func selectors() throws -> SelectorSet {
        guard !topics.isEmpty else { return .all }
        do {
            return try SelectorSet(parsing: topics)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

func parseDuration(_ text: String) throws -> Duration {
    try MaintenanceText.parseDuration(text)
}

func parseSize(_ text: String) throws -> Int64 {
    try MaintenanceText.parseSize(text)
}

/// `1,234,567`: counts in summaries.
func grouped(_ number: Int64) -> String {
    let digits = String(number.magnitude)
    var result = ""
    for (index, character) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { result += "," }
        result.append(character)
    }
    return number < 0 ? "-" + result : result
}
