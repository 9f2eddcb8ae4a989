import Foundation

/// Which events retention removes: those older than ``maxAge``, those beyond the newest ``maxEvents``,
/// and those beyond the newest ``maxBytes``, among the events ``selectors`` selects. An event goes when any
/// limit says so; a limit that is `nil` does not apply.
public struct RetentionPolicy: Sendable, Hashable {
    /// Remove events older than this (commit time). Removal stops at the first selected event that is
    /// younger, so an event stamped older after a clock step back waits for the younger one before it.
    public var maxAge: Duration?
    /// Keep at most this many of the newest selected events.
    public var maxEvents: Int?
    /// Keep the newest selected events whose approximate sizes add up to at most this many bytes.
    /// The size of an event is the UTF-8 bytes of its topic (twice: row and index), type, key, data and
    /// idempotency key, plus 32 bytes.
    public var maxBytes: Int64?
    /// The events the limits apply to; the others are left alone. Default: every event.
    public var selectors: SelectorSet

    /// Creates a policy. With no limit it removes nothing.
    public init(maxAge: Duration? = nil, maxEvents: Int? = nil, maxBytes: Int64? = nil, selectors: SelectorSet = .all) {
        self.maxAge = maxAge
        self.maxEvents = maxEvents
        self.maxBytes = maxBytes
        self.selectors = selectors
    }

    /// True when no limit is set.
    public var isEmpty: Bool { maxAge == nil && maxEvents == nil && maxBytes == nil }

    /// Throws ``MaintenanceError/Code/invalidArgument`` for a negative limit.
    public func validate() throws(MaintenanceError) {
        if let maxAge, maxAge < .zero {
            throw MaintenanceError(.invalidArgument, "the maximum age must not be negative")
        }
        if let maxEvents, maxEvents < 0 {
            throw MaintenanceError(.invalidArgument, "the maximum number of events must not be negative")
        }
        if let maxBytes, maxBytes < 0 {
            throw MaintenanceError(.invalidArgument, "the maximum size must not be negative")
        }
    }
}

/// What a retention run removed (or, for a dry run, would remove).
public struct RetentionReport: Sendable, Hashable {
    /// True when nothing was deleted: the numbers say what a real run would have removed.
    public var dryRun: Bool
    /// Events removed.
    public var removedEvents: Int64 = 0
    /// Their approximate size in bytes (see ``RetentionPolicy/maxBytes``). The file shrinks only after a
    /// vacuum; until then SQLite reuses the freed pages.
    public var removedBytes: Int64 = 0
    /// The smallest and the largest id removed.
    public var removedIDs: ClosedRange<Int64>?
    /// The smallest retained id before the run.
    public var earliestBefore: Int64 = 1
    /// The smallest retained id after the run (for a dry run, what it would be).
    public var earliestAfter: Int64 = 1
    /// The head when the run started; newer events were not looked at.
    public var head: Int64 = 0
    /// Write transactions used (0 for a dry run).
    public var transactions = 0

    init(dryRun: Bool) { self.dryRun = dryRun }

    mutating func record(first: Int64, last: Int64, count: Int64, bytes: Int64) {
        removedEvents += count
        removedBytes += bytes
        removedIDs = (removedIDs?.lowerBound ?? first)...last
    }
}

/// One retention run, cut into steps that each fit in one short transaction. The same steps run on the
/// maintenance tool's own connection (``LogMaintenance``) and on the server's writer (``EventLog/retain``).
///
/// Every limit selects a prefix of the selected events in id order (the oldest ones), so a step reads the
/// next selected events after ``cursor``, finds how far that prefix reaches among them, and deletes the
/// selected events in `(cursor, last]` with one statement. The same transaction raises the removal watermarks
/// of the topics it deleted from (and of the prefixes above them), so no reader ever sees the rows gone
/// without the `gap` they mean for subscribers of those topics, and no other subscriber gets one.
struct RetentionRun: Sendable {
    let policy: RetentionPolicy
    let dryRun: Bool
    let batching: MaintenanceBatching
    private let filter: SelectorFilter
    private(set) var report: RetentionReport
    /// Every selected event with an id at or below this goes (from maxEvents and maxBytes).
    private var cutoffID: Int64 = 0
    /// Selected events with an older commit time go, up to the first younger one (from maxAge).
    private var ageCutoffTime: Int64?
    private var cursor: Int64 = 0
    /// The cursor's first value, so that progress counts ids from 1.
    private var base: Int64 = 0
    /// A guess of the last id removed, for progress only.
    private var progressEnd: Int64 = 0
    private(set) var finished = false

    init(policy: RetentionPolicy, dryRun: Bool, batching: MaintenanceBatching) {
        self.policy = policy
        self.dryRun = dryRun
        self.batching = batching
        self.filter = SelectorFilter(policy.selectors)
        self.report = RetentionReport(dryRun: dryRun)
    }

    /// Works out the cut-offs from one read snapshot. Reads only, so the server runs it on a reader.
    mutating func plan(_ connection: Connection, now: Int64) throws {
        try connection.transaction(write: false) {
            report.head = try SQLiteEventStore.readHead(connection)
            report.earliestBefore = try SQLiteEventStore.readEarliest(connection)
            report.earliestAfter = report.earliestBefore
            if policy.isEmpty || policy.selectors.isEmpty {
                finished = true
                return
            }
            if let maxEvents = policy.maxEvents {
                // The (maxEvents + 1)-th newest selected event and everything selected before it go.
                let id = try connection.scalarInt(
                    "SELECT id FROM events WHERE id <= ? AND \(filter.sql) ORDER BY id DESC LIMIT 1 OFFSET ?",
                    [.int(report.head)] + filter.arguments + [.int(Int64(maxEvents))]
                )
                cutoffID = max(cutoffID, id ?? 0)
            }
            if let maxBytes = policy.maxBytes {
                let statement = try connection.cachedStatement(
                    "SELECT id, \(approximateRowBytesSQL) FROM events WHERE id <= ? AND \(filter.sql) ORDER BY id DESC"
                )
                try statement.bind([.int(report.head)] + filter.arguments)
                defer { statement.reset() }
                var total: Int64 = 0
                while try statement.step() {
                    total += statement.int64(1)
                    if total > maxBytes {
                        cutoffID = max(cutoffID, statement.int64(0))
                        break
                    }
                }
            }
            progressEnd = cutoffID
            if let maxAge = policy.maxAge {
                let cutoff = now - maxAge.wholeMilliseconds
                ageCutoffTime = cutoff
                // For the progress bar only: the last id committed before the cut-off, found by bisecting ids
                // on commit time (which follows ids unless the clock stepped back).
                progressEnd = max(
                    progressEnd, try SQLiteEventStore.lastID(before: cutoff, head: report.head, connection))
            }
            base = max(0, (try connection.scalarInt("SELECT min(id) FROM events") ?? 1) - 1)
            cursor = base
        }
    }

    /// Runs one transaction: removes the next batch. Returns true when there is nothing left to do.
    mutating func step(_ connection: Connection, progress: MaintenanceProgressHandler?) throws -> Bool {
        guard !finished else { return true }
        let deadline = ContinuousClock.now + batching.maxLockTime
        try connection.transaction(write: !dryRun) {
            let select = try connection.cachedStatement(
                """
                SELECT id, time, \(approximateRowBytesSQL) FROM events
                WHERE id > ? AND id <= ? AND \(filter.sql) ORDER BY id LIMIT ?
                """
            )
            try select.bind([.int(cursor), .int(report.head)] + filter.arguments + [.int(Int64(batching.maxRows))])
            defer { select.reset() }
            var first: Int64?
            var last: Int64?
            var count: Int64 = 0
            var bytes: Int64 = 0
            var more = false
            while try select.step() {
                let id = select.int64(0)
                let removable = id <= cutoffID || (ageCutoffTime.map { select.int64(1) < $0 } ?? false)
                guard removable else {
                    // The first event no limit removes: every later one is newer, so the run ends here.
                    ageCutoffTime = nil
                    break
                }
                first = first ?? id
                last = id
                count += 1
                bytes += select.int64(2)
                if count == batching.maxRows || ContinuousClock.now >= deadline {
                    more = true
                    break
                }
            }
            select.reset()
            guard let first, let last else {
                finished = true
                return
            }
            if !dryRun {
                var deleted: [String: Int64] = [:]
                let removed = try connection.rows(
                    "DELETE FROM events WHERE id > ? AND id <= ? AND \(filter.sql) RETURNING topic, id",
                    [.int(cursor), .int(last)] + filter.arguments
                ) { (topic: $0.text(0) ?? "", id: $0.int64(1)) }
                for row in removed { deleted[row.topic] = max(deleted[row.topic] ?? 0, row.id) }
                // Inside the write transaction nobody else can delete, so this is exact.
                guard Int64(removed.count) == count else {
                    throw EventLogError(.corrupt, "retention deleted \(removed.count) events, expected \(count)")
                }
                // A gap only for the selectors that match what went (docs/PROTOCOL.md, "Gaps").
                try connection.raiseRemovalWatermarks(deleted)
                try connection.countRemoval()
                report.earliestAfter = try SQLiteEventStore.readEarliest(connection)
                report.transactions += 1
            } else if report.earliestAfter >= first && report.earliestAfter <= last {
                // A dry run removed the smallest retained id: the smallest one it would leave.
                report.earliestAfter =
                    try connection.scalarInt(
                        "SELECT id FROM events WHERE id >= ? AND NOT (id <= ? AND \(filter.sql)) ORDER BY id LIMIT 1",
                        [.int(report.earliestAfter), .int(last)] + filter.arguments
                    ) ?? report.head + 1
            }
            report.record(first: first, last: last, count: count, bytes: bytes)
            cursor = last
            finished = !more
        }
        progress?(
            MaintenanceProgress(
                phase: "examining",
                completed: cursor - base,
                total: finished ? cursor - base : max(progressEnd, cursor) - base,
                unit: "ids",
                removedEvents: report.removedEvents,
                dryRun: dryRun
            )
        )
        return finished
    }
}
