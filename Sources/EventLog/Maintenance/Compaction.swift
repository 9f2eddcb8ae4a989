import Foundation

/// Keep-latest compaction: for every key, keep its newest event and remove the older ones, as a Kafka
/// compacted topic does. A key belongs to a topic: it is the event's `key`, or the topic itself when the
/// event has none, so the same key in two topics names two things.
///
/// Compaction never changes ids or their order, and it is never a `gap` (it raises no removal watermark): a
/// subscriber at any position still gets the newest event of every key after it, so nothing it could act on
/// has gone missing. It only thins out history that a newer event of the same key supersedes (or, for an
/// expired tombstone, a deleted key). It may raise `earliest`, the smallest retained id.
public struct CompactionPolicy: Sendable, Hashable {
    /// The events compaction considers; others are left alone. Default: every event.
    public var selectors: SelectorSet
    /// An older event of a key goes only once it is at least this old, so that subscribers lagging by less
    /// still see every change. Default 0: as soon as a newer event exists.
    public var minAge: Duration
    /// A tombstone (an event with no data) that is the newest of its key removes the key entirely, itself
    /// included, once it is at least this old. `nil` keeps tombstones forever. Default 24 hours, which gives
    /// subscribers a day to see the deletion.
    public var tombstoneRetention: Duration?

    /// Creates a policy.
    public init(
        selectors: SelectorSet = .all, minAge: Duration = .zero, tombstoneRetention: Duration? = .seconds(86_400)
    ) {
        self.selectors = selectors
        self.minAge = minAge
        self.tombstoneRetention = tombstoneRetention
    }

    /// Throws ``MaintenanceError/Code/invalidArgument`` for a negative duration.
    public func validate() throws(MaintenanceError) {
        if minAge < .zero { throw MaintenanceError(.invalidArgument, "the minimum age must not be negative") }
        if let tombstoneRetention, tombstoneRetention < .zero {
            throw MaintenanceError(.invalidArgument, "the tombstone retention must not be negative")
        }
    }
}

/// What a compaction run removed (or, for a dry run, would remove).
public struct CompactionReport: Sendable, Hashable {
    /// True when nothing was deleted: the numbers say what a real run would have removed.
    public var dryRun: Bool
    /// Selected events examined.
    public var scannedEvents: Int64 = 0
    /// Distinct keys among them.
    public var keys = 0
    /// Events removed, tombstones included.
    public var removedEvents: Int64 = 0
    /// Tombstones removed (each took its key's older events with it).
    public var removedTombstones: Int64 = 0
    /// Superseded events kept because they are younger than ``CompactionPolicy/minAge``.
    public var keptYoungSuperseded: Int64 = 0
    /// Approximate bytes of the removed events (see ``RetentionPolicy/maxBytes``).
    public var removedBytes: Int64 = 0
    /// The smallest retained id before the run.
    public var earliestBefore: Int64 = 1
    /// The smallest retained id after the run (for a dry run, as before it). Compaction may raise it, but never
    /// makes a gap: it raises no removal watermark.
    public var earliest: Int64 = 1
    /// The head when the run started; newer events were not looked at.
    public var head: Int64 = 0
    /// Write transactions used (0 for a dry run).
    public var transactions = 0

    init(dryRun: Bool) { self.dryRun = dryRun }
}

/// One compaction run in steps, each one short transaction; shared by ``LogMaintenance`` and
/// ``EventLog/compact(_:dryRun:batching:progress:)``.
///
/// Two passes in id order, both on the primary key (or `events_topic_id` for one exact topic), with no new
/// index and no sort:
/// 1. Mapping (read transactions of up to 50,000 events): a map from each key to its newest event up to the
///    head at the start. Keys are kept as 128-bit hashes (two SipHash runs with different prefixes), about
///    50 bytes of memory per distinct key; a collision, which would cost one key its history, has a
///    probability near n²/2¹²⁹.
/// 2. Removing (write transactions of ``MaintenanceBatching/maxRows`` events or ``MaintenanceBatching/maxLockTime``):
///    each event that the map says is superseded (and old enough), or that belongs to an expired tombstone,
///    goes; consecutive ones are deleted with one range statement.
///
/// Events appended after the start only make older events more superseded, so working from the snapshot is
/// safe: what is removed is never the newest event of its key at the time of removal, unless it belongs to
/// an expired tombstone, whose key is meant to vanish.
struct CompactionRun: Sendable {
    let policy: CompactionPolicy
    let dryRun: Bool
    let batching: MaintenanceBatching
    private let filter: SelectorFilter
    private let now: Int64
    private(set) var report: CompactionReport
    private var latest: [KeyHash: Latest] = [:]
    private var started = false
    private var mapped = false
    private var cursor: Int64 = 0
    /// Where both passes start: just below the smallest id, so that progress counts ids from 1.
    private var base: Int64 = 0
    private(set) var finished = false

    private struct KeyHash: Hashable, Sendable {
        let high: UInt64
        let low: UInt64
    }

    /// The newest event of a key: its id, its commit time, and whether it is a tombstone.
    private struct Latest: Sendable {
        let id: Int64
        let time: Int64
        let tombstone: Bool
    }

    /// Events per mapping transaction: a snapshot held briefly, so checkpoints are not held back for long.
    private static let mapRows = 50_000

    init(policy: CompactionPolicy, dryRun: Bool, batching: MaintenanceBatching, now: Int64) {
        self.policy = policy
        self.dryRun = dryRun
        self.batching = batching
        self.filter = SelectorFilter(policy.selectors)
        self.now = now
        self.report = CompactionReport(dryRun: dryRun)
    }

    /// Maps the next range of events. Reads only (the server runs it on a reader). Returns true when the map
    /// is complete.
    mutating func mapStep(_ connection: Connection, progress: MaintenanceProgressHandler?) throws -> Bool {
        guard !mapped else { return true }
        try connection.transaction(write: false) {
            if !started {
                started = true
                report.head = try SQLiteEventStore.readHead(connection)
                report.earliest = try SQLiteEventStore.readEarliest(connection)
                report.earliestBefore = report.earliest
                base = max(0, (try connection.scalarInt("SELECT min(id) FROM events") ?? 1) - 1)
                cursor = base
            }
            let statement = try connection.cachedStatement(
                """
                SELECT id, topic, key, time, data IS NULL FROM events
                WHERE id > ? AND id <= ? AND \(filter.sql) ORDER BY id LIMIT ?
                """
            )
            try statement.bind([.int(cursor), .int(report.head)] + filter.arguments + [.int(Int64(Self.mapRows))])
            defer { statement.reset() }
            var count = 0
            while try statement.step() {
                let id = statement.int64(0)
                latest[Self.keyHash(statement)] = Latest(
                    id: id,
                    time: statement.int64(3),
                    tombstone: statement.int64(4) != 0
                )
                cursor = id
                count += 1
            }
            report.scannedEvents += Int64(count)
            if count < Self.mapRows {
                mapped = true
                report.keys = latest.count
                cursor = base
            }
        }
        progress?(
            MaintenanceProgress(
                phase: "mapping keys",
                completed: mapped ? max(0, report.head - base) : cursor - base,
                total: max(0, report.head - base),
                unit: "ids"
            )
        )
        return mapped
    }

    /// Runs one transaction of the removing pass. Returns true when the run is complete.
    mutating func removeStep(_ connection: Connection, progress: MaintenanceProgressHandler?) throws -> Bool {
        precondition(mapped, "removeStep before the key map is complete")
        guard !finished else { return true }
        let deadline = ContinuousClock.now + batching.maxLockTime
        let supersededBefore = now - policy.minAge.wholeMilliseconds
        let tombstonesBefore = policy.tombstoneRetention.map { now - $0.wholeMilliseconds }
        try connection.transaction(write: !dryRun) {
            let select = try connection.cachedStatement(
                """
                SELECT id, topic, key, time, \(approximateRowBytesSQL) FROM events
                WHERE id > ? AND id <= ? AND \(filter.sql) ORDER BY id LIMIT ?
                """
            )
            try select.bind([.int(cursor), .int(report.head)] + filter.arguments + [.int(Int64(batching.maxRows))])
            var runs: [ClosedRange<Int64>] = []
            var runStart: Int64?
            var previous: Int64 = cursor
            var examined = 0
            var removed: Int64 = 0
            var tombstones: Int64 = 0
            var young: Int64 = 0
            var bytes: Int64 = 0
            var stoppedEarly = false
            while try select.step() {
                let id = select.int64(0)
                examined += 1
                var remove = false
                if let newest = latest[Self.keyHash(select)] {
                    if newest.tombstone, let tombstonesBefore, newest.time <= tombstonesBefore {
                        // An expired tombstone takes its whole key with it, itself included.
                        remove = id <= newest.id
                        if id == newest.id { tombstones += 1 }
                    } else if id < newest.id {
                        remove = select.int64(3) <= supersededBefore
                        if !remove { young += 1 }
                    }
                }
                if remove {
                    runStart = runStart ?? id
                    removed += 1
                    bytes += select.int64(4)
                } else if let first = runStart {
                    runs.append(first...previous)
                    runStart = nil
                }
                previous = id
                if ContinuousClock.now >= deadline {
                    stoppedEarly = examined < batching.maxRows
                    break
                }
            }
            select.reset()
            if let first = runStart { runs.append(first...previous) }
            if examined == 0 {
                finished = true
                return
            }
            if !dryRun {
                for run in runs {
                    // Every selected event in the run goes, and the filter leaves the others alone.
                    try connection.run(
                        "DELETE FROM events WHERE id >= ? AND id <= ? AND \(filter.sql)",
                        [.int(run.lowerBound), .int(run.upperBound)] + filter.arguments
                    )
                }
                if !runs.isEmpty {
                    try connection.countRemoval()
                    report.earliest = try SQLiteEventStore.readEarliest(connection)
                }
                report.transactions += 1
            }
            report.removedEvents += removed
            report.removedTombstones += tombstones
            report.keptYoungSuperseded += young
            report.removedBytes += bytes
            cursor = previous
            // A short batch that was not cut by the deadline reached the end of the range.
            finished = examined < batching.maxRows && !stoppedEarly
        }
        progress?(
            MaintenanceProgress(
                phase: "examining",
                completed: finished ? max(0, report.head - base) : cursor - base,
                total: max(0, report.head - base),
                unit: "ids",
                removedEvents: report.removedEvents,
                dryRun: dryRun
            )
        )
        return finished
    }

    /// The key of the row under `statement` (columns 1: topic, 2: key), hashed from the raw bytes.
    private static func keyHash(_ statement: Statement) -> KeyHash {
        statement.withUTF8(1) { topic in
            let hashKey = { (key: UnsafeRawBufferPointer) -> KeyHash in
                var first = Hasher()
                var second = Hasher()
                first.combine(UInt8(1))
                second.combine(UInt8(2))
                // The length keeps ("ab", "c") apart from ("a", "bc").
                first.combine(topic.count)
                second.combine(topic.count)
                first.combine(bytes: topic)
                second.combine(bytes: topic)
                first.combine(bytes: key)
                second.combine(bytes: key)
                return KeyHash(
                    high: UInt64(bitPattern: Int64(first.finalize())), low: UInt64(bitPattern: Int64(second.finalize()))
                )
            }
            // No key: the topic is the key, the same as a key spelled like the topic (Event.compactionKey).
            return statement.isNull(2) ? hashKey(topic) : statement.withUTF8(2, hashKey)
        }
    }
}
