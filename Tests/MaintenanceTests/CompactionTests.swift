import Foundation
import Testing

@testable import EventLog

@Suite("Compaction")
struct CompactionTests {
    @Test("keep-latest keeps every key's newest event, keys are per topic, surviving ids are unchanged")
    func keepsLatestPerKey() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(
                path,
                [
                    event("a/1", key: "k1", 1),  // 1: superseded by 3
                    event("a/1", key: "k2", 2),  // 2: superseded by 7
                    event("a/1", key: "k1", 3),
                    event("b/1", 4),  // 4: no key, the topic is the key: superseded by 5
                    event("b/1", 5),  // 5: superseded by 8, whose key is spelled like the topic
                    event("a/2", key: "k1", 6),  // the same key in another topic is another key
                    event("a/1", key: "k2", 7),
                    event("b/1", key: "b/1", 8),
                ]
            )
            let before = try withConnection(path) { connection in
                try connection.rows("SELECT id, topic, key, data FROM events WHERE id IN (3, 6, 7, 8) ORDER BY id") {
                    "\($0.int64(0)) \($0.text(1) ?? "") \($0.text(2) ?? "-") \($0.text(3) ?? "")"
                }
            }
            let report = try await maintain(path) { try $0.compact(CompactionPolicy()) }
            #expect(report.scannedEvents == 8)
            #expect(report.keys == 4)
            #expect(report.removedEvents == 4)
            #expect(report.removedTombstones == 0)
            #expect(try storedIDs(path) == [3, 6, 7, 8])
            let after = try withConnection(path) { connection in
                try connection.rows("SELECT id, topic, key, data FROM events ORDER BY id") {
                    "\($0.int64(0)) \($0.text(1) ?? "") \($0.text(2) ?? "-") \($0.text(3) ?? "")"
                }
            }
            #expect(after == before)
            // Earliest is the smallest retained id; compaction moved it, and raised no removal watermark: a replay
            // from any position sees the latest of every key after it, never a gap.
            #expect(try bounds(path) == (3, 8))
            #expect(report.earliest == 3)
            #expect(try withConnection(path) { try $0.scalarInt("SELECT count(*) FROM removed") } == 0)
        }
    }

    @Test("min-age keeps superseded events that are younger than it")
    func minAge() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...6).map { event("t/1", key: "k", $0) })
            try setTime(path, ids: 1...3, to: Timestamp.nowMilliseconds() - 7_200_000)
            let report = try await maintain(path) { try $0.compact(CompactionPolicy(minAge: .seconds(3600))) }
            #expect(report.removedEvents == 3)
            // 4 and 5 are superseded by 6 but younger than an hour: kept, and counted as such.
            #expect(report.keptYoungSuperseded == 2)
            #expect(try storedIDs(path) == [4, 5, 6])
        }
    }

    /// Key a: values then an old tombstone; b: a value then a young tombstone; c: an old tombstone then a value.
    private func makeTombstoneLog(_ path: String) async throws {
        try await makeLog(
            path,
            [
                event("t/a", 1), event("t/a", 2), tombstone("t/a"),
                event("t/b", 4), tombstone("t/b"),
                tombstone("t/c"), event("t/c", 7),
            ]
        )
        let now = Timestamp.nowMilliseconds()
        try setTime(path, ids: 1...4, to: now - 2 * day)
        try setTime(path, ids: 6...6, to: now - 2 * day)
    }

    @Test("an expired tombstone removes its key entirely; a young one stays; a superseded one goes")
    func tombstones() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeTombstoneLog(path)
            let report = try await maintain(path) {
                try $0.compact(CompactionPolicy(tombstoneRetention: .seconds(86_400)))
            }
            #expect(report.removedEvents == 5)
            #expect(report.removedTombstones == 1)
            #expect(try storedIDs(path) == [5, 7])
            #expect(try bounds(path) == (5, 7))
        }
    }

    @Test("with tombstones kept forever, the tombstone stays as its key's latest")
    func tombstonesKeptForever() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeTombstoneLog(path)
            let report = try await maintain(path) { try $0.compact(CompactionPolicy(tombstoneRetention: nil)) }
            #expect(report.removedTombstones == 0)
            #expect(try storedIDs(path) == [3, 5, 7])
        }
    }

    @Test("selectors limit compaction to their topics")
    func selectors() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...8).map { event($0 % 2 == 0 ? "orders/1" : "users/1", $0) })
            let policy = CompactionPolicy(selectors: try SelectorSet(parsing: ["orders/*"]))
            let report = try await maintain(path) { try $0.compact(policy) }
            #expect(report.scannedEvents == 4)
            #expect(report.removedEvents == 3)
            #expect(try storedIDs(path) == [1, 3, 5, 7, 8])
        }
    }

    @Test("a dry run reports what a real run removes and changes nothing")
    func dryRun() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeTombstoneLog(path)
            let dry = try await maintain(path) { try $0.compact(CompactionPolicy(), dryRun: true) }
            #expect(try storedIDs(path) == Array(1...7))
            let real = try await maintain(path, batching: countedBatching) { try $0.compact(CompactionPolicy()) }
            #expect(dry.removedEvents == real.removedEvents)
            #expect(dry.removedTombstones == real.removedTombstones)
            #expect(dry.removedBytes == real.removedBytes)
            #expect(dry.transactions == 0)
            #expect(real.transactions == 1)
        }
    }

    @Test("compaction inside the server keeps every event appended meanwhile")
    func insideTheServer() async throws {
        try await withTemporaryDirectory { directory in
            let log = try await EventLog.open(path: directory.path("events.db"))
            _ = try await log.append(batch: (0..<5000).map { event("t/\($0 % 10)", key: "k\($0 % 100)", $0) })
            let appended = Locked<[Int64]>([])
            let report = try await withThrowingTaskGroup(of: CompactionReport?.self) { group in
                group.addTask {
                    for n in 0..<200 {
                        // The same keys as the history: these become the latest, and must all survive.
                        let id = try await log.append(event("t/\(n % 10)", key: "k\(n % 100)", n)).event.id
                        appended.withLock { $0.append(id) }
                    }
                    return nil
                }
                group.addTask {
                    try await log.compact(
                        CompactionPolicy(),
                        batching: MaintenanceBatching(maxRows: 100, maxLockTime: .seconds(1))
                    )
                }
                var report: CompactionReport?
                for try await result in group { report = report ?? result }
                return try #require(report)
            }
            let live = appended.withLock { $0 }
            #expect(live.count == 200)
            let remaining = Set(try storedIDs(log.path))
            #expect(remaining.isSuperset(of: live))
            // Every key keeps exactly its newest event as of the start, unless a live append superseded it.
            let newestAtStart = Set((report.head - 99)...report.head)
            #expect(remaining.subtracting(live).isSubset(of: newestAtStart))
            #expect(report.scannedEvents == report.head)
            #expect(report.keys == 100)
            #expect(try bounds(log.path).earliest == remaining.min())
            await log.close()
        }
    }
}
