import Foundation
import Testing

@testable import EventLog

/// Compaction of a million events while a log keeps appending, through the maintenance tool's own connection
/// and through the server's writer. Serialized, so the two do not share the two cores; the latencies are
/// printed, never asserted (the machine is shared).
@Suite("Compaction at scale", .serialized)
struct LargeCompactionTests {
    static let events = 1_000_000
    static let keys = 100_000
    static let topics = 100

    /// `events` events on `topics` topics with `keys` keys (key k<j> on topic orders/<j % topics>), each with
    /// events / keys versions, two days old. The last version of every tenth key is a tombstone. Built with one
    /// INSERT ... SELECT in one transaction.
    static func fillLargeLog(_ path: String) throws {
        let base = Timestamp.nowMilliseconds() - 2 * day
        try withConnection(path) { connection in
            try connection.transaction(write: true) {
                try connection.run(
                    """
                    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
                    INSERT INTO events (topic, type, key, data, data_format, time)
                    SELECT 'orders/' || (i % ?4), 'updated', 'k' || (i % ?3),
                        CASE WHEN i >= ?1 - ?3 AND (i % ?3) % 10 = 0 THEN NULL ELSE '{"n":' || i || '}' END,
                        CASE WHEN i >= ?1 - ?3 AND (i % ?3) % 10 = 0 THEN 0 ELSE 1 END,
                        ?2 + i / 100
                    FROM n
                    """,
                    [.int(Int64(events)), .int(base), .int(Int64(keys)), .int(Int64(topics))]
                )
            }
        }
    }

    enum Path: String, CustomStringConvertible, CaseIterable {
        case tool = "maintenance tool beside the log"
        case server = "EventLog.compact on the server's writer"
        var description: String { rawValue }
    }

    @Test(
        "compaction of 1,000,000 events with 100,000 keys while appends continue: every append survives, verify passes",
        arguments: Path.allCases
    )
    func compactWhileAppending(path compactionPath: Path) async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let (events, keys, topics) = (Self.events, Self.keys, Self.topics)
            try await makeLog(path, [])
            let clock = ContinuousClock()
            // Seconds of SQLite work: on a thread of its own, so it does not hold one of the cooperative pool's few
            // threads (as many as cores) that every other test running now needs.
            let fixtureTime = try await onThread { try clock.measure { try Self.fillLargeLog(path) } }
            print("[\(compactionPath)] fixture: \(events) events in \(fixtureTime)")

            let log = try await EventLog.open(path: path)
            let stop = Locked(false)
            let compacting = Locked(false)
            let live = Locked<[(id: Int64, topic: String, key: String, n: Int)]>([])
            let latencies = Locked<(before: [Duration], during: [Duration])>(([], []))
            let appenders = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<4 {
                        group.addTask {
                            var n = 0
                            while !stop.withLock({ $0 }) {
                                // Alternately a topic of its own, and a key whose history ends in a tombstone
                                // (every tenth key), which compaction removes up to the tombstone.
                                let j = (n * 10 + worker * 10) % keys
                                let (topic, key) =
                                    n % 2 == 0
                                    ? ("live/\(worker)", "w\(worker)-\(n % 50)") : ("orders/\(j % topics)", "k\(j)")
                                let started = clock.now
                                let id = try await log.append(event(topic, key: key, n)).event.id
                                let elapsed = clock.now - started
                                let during = compacting.withLock { $0 }
                                latencies.withLock { during ? $0.during.append(elapsed) : $0.before.append(elapsed) }
                                live.withLock { $0.append((id, topic, key, n)) }
                                n += 1
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Compaction starts once appends are landing, and they go on after it, however slow the machine.
            try await waitUntil { live.withLock { $0.count } >= 100 }
            compacting.withLock { $0 = true }
            let started = clock.now
            let policy = CompactionPolicy(minAge: .seconds(3600), tombstoneRetention: .seconds(86_400))
            let report: CompactionReport
            switch compactionPath {
            case .tool: report = try await maintain(path) { try $0.compact(policy) }
            case .server: report = try await log.compact(policy)
            }
            let compactionTime = clock.now - started
            compacting.withLock { $0 = false }
            let appendedBy = live.withLock { $0.count }
            try await waitUntil { live.withLock { $0.count } > appendedBy }
            stop.withLock { $0 = true }
            try await appenders.value
            await log.close()

            let (before, during) = latencies.withLock { $0 }
            print(
                "[\(compactionPath)] compaction: scanned \(report.scannedEvents) events, \(report.keys) keys, removed "
                    + "\(report.removedEvents) (\(report.removedTombstones) tombstones) in \(report.transactions) "
                    + "transactions, \(compactionTime)"
            )
            print("[\(compactionPath)] append latency before compaction: \(LatencySummary(before))")
            print("[\(compactionPath)] append latency during compaction: \(LatencySummary(during))")

            // Every live append survives, unchanged.
            let appended = live.withLock { $0 }
            #expect(!appended.isEmpty)
            let stored = try withConnection(path) { connection in
                try connection.rows(
                    "SELECT id, topic, key, data FROM events WHERE id > ? ORDER BY id", [.int(Int64(events))]
                ) {
                    "\($0.int64(0)) \($0.text(1) ?? "") \($0.text(2) ?? "") \($0.text(3) ?? "")"
                }
            }
            #expect(
                stored == appended.sorted { $0.id < $1.id }.map { "\($0.id) \($0.topic) \($0.key) {\"n\":\($0.n)}" })
            // Of the history, exactly the last version of each key without a tombstone is left: the live appends
            // on the other keys either superseded the tombstone or came after it, and go either way.
            let history = try storedIDs(path, where: "id <= \(events)")
            #expect(history == (0..<keys).filter { $0 % 10 != 0 }.map { Int64(events - keys + $0 + 1) })
            let liveKeysMapped = Set(appended.filter { $0.id <= report.head && $0.topic.hasPrefix("live/") }.map(\.key))
            #expect(report.keys == keys + liveKeysMapped.count)
            #expect(report.removedEvents == Int64(events - history.count))
            // Earliest is the smallest retained id; compaction raised no removal watermark (it is never a gap).
            #expect(try bounds(path).earliest == history.first)
            #expect(try withConnection(path) { try $0.scalarInt("SELECT count(*) FROM removed") } == 0)

            let verify = try await maintain(path, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [], "\(verify.problems)")
        }
    }
}
