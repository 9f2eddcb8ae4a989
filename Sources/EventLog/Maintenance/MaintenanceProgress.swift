/// Where a long maintenance operation is, for a progress bar or a progress line.
public struct MaintenanceProgress: Sendable, Hashable {
    /// What is being done now, e.g. `examining` or `copying`.
    public let phase: String
    /// Units done in this phase.
    public let completed: Int64
    /// Units in this phase, when known. Retention and compaction count ids of the range they walk, so
    /// the fraction is the share of that range done.
    public let total: Int64?
    /// What the units are: `ids`, `pages`, `bytes`, `events`.
    public let unit: String
    /// Events removed so far, for the phases that remove events (retention and compaction); `nil` for the
    /// others. Separate from `completed`, which counts what was examined: most of it may stay.
    public let removedEvents: Int64?
    /// True when nothing is deleted: `removedEvents` is what a real run would have removed.
    public let dryRun: Bool

    /// Creates a progress report.
    public init(
        phase: String, completed: Int64, total: Int64?, unit: String, removedEvents: Int64? = nil,
        dryRun: Bool = false
    ) {
        self.phase = phase
        self.completed = completed
        self.total = total
        self.unit = unit
        self.removedEvents = removedEvents
        self.dryRun = dryRun
    }

    /// `completed / total` in 0...1, when the total is known.
    public var fraction: Double? {
        guard let total, total > 0 else { return nil }
        return min(1, max(0, Double(completed) / Double(total)))
    }
}

/// Receives progress reports. It may be called on a SQLite thread (the server's writer or a reader), so
/// it must be quick and must not block.
public typealias MaintenanceProgressHandler = @Sendable (MaintenanceProgress) -> Void

/// How retention and compaction cut their work into transactions.
///
/// Each transaction holds the database's writer lock, so it is kept small: appends wait behind one batch.
/// The lock is held while the batch examines its events and then while it deletes the ones it picked, so
/// the row limit bounds the wait as much as the time limit does: deleting 1,000 events with their index
/// entries held it for 5-10 ms on the test machine, deleting 200 for about 1-2 ms (docs/OPERATIONS.md).
public struct MaintenanceBatching: Sendable, Hashable {
    /// The most events one transaction examines. Default 200.
    public var maxRows = 200
    /// The time after which a transaction stops examining events and commits. Default 10 ms.
    public var maxLockTime: Duration = .milliseconds(10)

    /// The defaults.
    public init() {}

    /// Custom limits.
    public init(maxRows: Int, maxLockTime: Duration) {
        self.maxRows = max(1, maxRows)
        self.maxLockTime = maxLockTime
    }
}
