/// An error from a maintenance operation that is not SQLite's own: a file that is not an event log,
/// a target that exists, a malformed export line, an argument that does not parse.
///
/// Match on ``code``; the message is one line for humans. The codes are static values over a private
/// enum, so new ones can be added without breaking callers.
public struct MaintenanceError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case notFound = "not_found"
            case notALog = "not_a_log"
            case targetExists = "target_exists"
            case targetNotEmpty = "target_not_empty"
            case invalidArgument = "invalid_argument"
            case invalidExport = "invalid_export"
            case notSupported = "not_supported"
            case busy = "busy"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The database file (or an input file) does not exist.
        public static let notFound = Code(.notFound)
        /// The file is not an event log, or has a schema version this build does not know.
        public static let notALog = Code(.notALog)
        /// The output file exists and overwriting was not asked for.
        public static let targetExists = Code(.targetExists)
        /// An import target already holds events.
        public static let targetNotEmpty = Code(.targetNotEmpty)
        /// A size, a duration or a policy is malformed.
        public static let invalidArgument = Code(.invalidArgument)
        /// A line of an export file is malformed.
        public static let invalidExport = Code(.invalidExport)
        /// The database is not set up for the operation (incremental vacuum without auto_vacuum).
        public static let notSupported = Code(.notSupported)
        /// Another connection held a lock for longer than the busy timeout.
        public static let busy = Code(.busy)

        /// The stable snake_case name, e.g. `not_a_log`.
        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A one-line explanation for humans.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The maintenance operations that work on a SQLite file only. On a log in PostgreSQL they are refused with
/// ``MaintenanceError/Code/notSupported`` and a message that says what does the job there.
public enum SQLiteFileOperation: String, Sendable, CaseIterable {
    /// `PRAGMA wal_checkpoint`.
    case checkpoint
    /// `VACUUM`, `VACUUM INTO`, incremental vacuum.
    case vacuum
    /// A copy with SQLite's online backup API.
    case backup
    /// Putting a backup file in place.
    case restore

    /// What PostgreSQL offers instead.
    public var postgresAlternative: String {
        switch self {
        case .checkpoint:
            "PostgreSQL checkpoints its own WAL (checkpoint_timeout, max_wal_size)"
        case .vacuum:
            "PostgreSQL's autovacuum reclaims the space of deleted events (or run VACUUM on the eventlog tables)"
        case .backup:
            "back up PostgreSQL with pg_dump --schema=eventlog or pg_basebackup, or copy the log with "
                + "'eventlog-maint export'"
        case .restore:
            "restore PostgreSQL with pg_restore (from pg_dump) or pg_basebackup's copy, or load an export into an "
                + "empty database with 'eventlog-maint import'"
        }
    }

    /// The error for this operation on the PostgreSQL database at `location` (shown without its password).
    public func refusal(_ location: String) -> MaintenanceError {
        MaintenanceError(
            .notSupported,
            "\(rawValue) works on SQLite files only, and \(EventLog.redactedLocation(location)) is PostgreSQL: "
                + postgresAlternative)
    }
}
