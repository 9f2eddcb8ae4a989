import Foundation
import Testing

@testable import EventLog

@Suite("Retention")
struct RetentionTests {
    @Test("max-age removes the old prefix, stops at the first younger event, and moves earliest past it")
    func byAge() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            let now = Timestamp.nowMilliseconds()
            try setTime(path, ids: 1...4, to: now - 40 * day)
            // A clock that stepped back: old-stamped, but after a younger event, so it waits.
            try setTime(path, ids: 7...7, to: now - 40 * day)
            let report = try await maintain(path) { try $0.retain(RetentionPolicy(maxAge: .seconds(30 * 86_400))) }
            #expect(report.removedEvents == 4)
            #expect(report.removedIDs == 1...4)
            #expect(report.earliestBefore == 1)
            #expect(report.earliestAfter == 5)
            #expect(report.head == 10)
            #expect(try storedIDs(path) == Array(5...10))
            #expect(try bounds(path) == (5, 10))
        }
    }

    @Test("max-events keeps exactly the newest N and sets earliest to the first kept id")
    func byCount() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            let report = try await maintain(path) { try $0.retain(RetentionPolicy(maxEvents: 3)) }
            #expect(report.removedEvents == 7)
            #expect(report.removedIDs == 1...7)
            #expect(report.earliestAfter == 8)
            #expect(try storedIDs(path) == [8, 9, 10])
            #expect(try bounds(path) == (8, 10))
            // Run again: nothing more to remove, earliest stays.
            let again = try await maintain(path) { try $0.retain(RetentionPolicy(maxEvents: 3)) }
            #expect(again.removedEvents == 0)
            #expect(again.earliestAfter == 8)
        }
    }

    @Test("max-bytes keeps the newest events whose approximate sizes fit")
    func byBytes() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...9).map { event("t/1", $0) })
            // 32 + 2 × 3 (topic "t/1") + 7 (type "message") + 7 (data {"n":N}) = 52 bytes per event.
            let report = try await maintain(path) { try $0.retain(RetentionPolicy(maxBytes: 3 * 52)) }
            #expect(report.removedEvents == 6)
            #expect(report.removedBytes == 6 * 52)
            #expect(try storedIDs(path) == [7, 8, 9])
            let tighter = try await maintain(path) { try $0.retain(RetentionPolicy(maxBytes: 3 * 52 - 1)) }
            #expect(tighter.removedIDs == 7...7)
            #expect(try storedIDs(path) == [8, 9])
            #expect(try bounds(path).earliest == 8)
        }
    }

    @Test("limits combine: an event goes when any limit says so")
    func limitsCombine() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            try setTime(path, ids: 1...6, to: Timestamp.nowMilliseconds() - 2 * day)
            let report = try await maintain(path) {
                try $0.retain(RetentionPolicy(maxAge: .seconds(86_400), maxEvents: 8))
            }
            #expect(report.removedIDs == 1...6)
            #expect(try storedIDs(path) == Array(7...10))
        }
    }

    @Test("per-topic retention removes only selected events and raises only their selectors' watermarks")
    func perSelector() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            // Odd ids on orders/1, even ids on users/1.
            try await makeLog(path, (1...10).map { event($0 % 2 == 1 ? "orders/1" : "users/1", $0) })
            let policy = RetentionPolicy(maxEvents: 1, selectors: try SelectorSet(parsing: ["orders/*"]))
            let report = try await maintain(path) { try $0.retain(policy) }
            #expect(report.removedEvents == 4)
            #expect(report.removedIDs == 1...7)
            // Earliest is the smallest retained id: users/1's 2 is still there.
            #expect(report.earliestAfter == 2)
            #expect(try storedIDs(path) == [2, 4, 6, 8, 9, 10])
            // orders/1, the prefixes above it and `*` know 7 went; users/* knows nothing went.
            let watermarks = try withConnection(path) { connection in
                try connection.rows("SELECT selector, through FROM removed ORDER BY selector") {
                    "\($0.text(0) ?? "") \($0.int64(1))"
                }
            }
            #expect(watermarks == ["*" + " 7", "orders/*" + " 7", "orders/1 7"])
            let verify = try await maintain(path, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
        }
    }

    @Test("several selectors: an exact topic and a prefix, other topics untouched")
    func severalSelectors() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            // a/1: 1, 4, 7; b/1: 2, 5, 8; c/1: 3, 6, 9.
            let topics = ["c/1", "a/1", "b/1"]
            try await makeLog(path, (1...9).map { event(topics[$0 % 3], $0) })
            let policy = RetentionPolicy(maxEvents: 2, selectors: try SelectorSet(parsing: ["a/1", "b/*"]))
            let report = try await maintain(path) { try $0.retain(policy) }
            #expect(report.removedEvents == 4)
            #expect(try storedIDs(path) == [3, 6, 7, 8, 9])
            #expect(try bounds(path).earliest == 3)
        }
    }

    @Test("a dry run reports exactly what a real run then removes, and changes nothing")
    func dryRun() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            let policy = RetentionPolicy(maxEvents: 4)
            let dry = try await maintain(path) { try $0.retain(policy, dryRun: true) }
            #expect(dry.dryRun)
            #expect(try storedIDs(path) == Array(1...10))
            #expect(try bounds(path) == (1, 10))
            let real = try await maintain(path, batching: countedBatching) { try $0.retain(policy) }
            #expect(dry.removedEvents == real.removedEvents)
            #expect(dry.removedBytes == real.removedBytes)
            #expect(dry.removedIDs == real.removedIDs)
            #expect(dry.earliestAfter == real.earliestAfter)
            #expect(dry.transactions == 0)
            #expect(real.transactions == 1)
        }
    }

    @Test("small batches: one transaction per batch, earliest advanced in each")
    func smallBatches() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            let progress = Locked<[MaintenanceProgress]>([])
            let report = try await onThread {
                var options = LogMaintenance.Options()
                options.batching = MaintenanceBatching(maxRows: 2, maxLockTime: .seconds(10))
                let maintenance = try LogMaintenance(path: path, options: options)
                maintenance.progress = { report in progress.withLock { $0.append(report) } }
                return try maintenance.retain(RetentionPolicy(maxEvents: 3))
            }
            #expect(report.transactions == 4)
            #expect(report.removedIDs == 1...7)
            #expect(try storedIDs(path) == [8, 9, 10])
            #expect(progress.withLock { $0.map(\.completed) } == [2, 4, 6, 7])
            #expect(progress.withLock { $0.last?.fraction } == 1)
        }
    }

    @Test("retention inside the server: appends continue, newer events survive, the log's earliest follows")
    func insideTheServer() async throws {
        try await withTemporaryDirectory { directory in
            let log = try await EventLog.open(path: directory.path("events.db"))
            _ = try await log.append(batch: (1...2000).map { event("t/1", $0) })
            let appended = Locked<[Int64]>([])
            let report = try await withThrowingTaskGroup(of: RetentionReport?.self) { group in
                group.addTask {
                    for n in 0..<200 {
                        let id = try await log.append(event("t/2", n)).event.id
                        appended.withLock { $0.append(id) }
                    }
                    return nil
                }
                group.addTask {
                    try await log.retain(
                        RetentionPolicy(maxEvents: 5),
                        batching: MaintenanceBatching(maxRows: 100, maxLockTime: .seconds(1)))
                }
                var report: RetentionReport?
                for try await result in group { report = report ?? result }
                return try #require(report)
            }
            let head = report.head
            #expect(report.removedEvents == head - 5)
            #expect(report.earliestAfter == head - 4)
            #expect(log.earliest == head - 4)
            let remaining = try storedIDs(log.path)
            #expect(remaining == Array((head - 4)...head) + appended.withLock { $0 }.filter { $0 > head }.sorted())
            #expect(appended.withLock { $0.count } == 200)
            let page = try await log.read(after: 0, selectors: .all, limit: 10_000)
            #expect(page.events.map(\.id) == remaining)
            #expect(page.earliest == head - 4)
            await log.close()
        }
    }

    @Test("negative limits are refused")
    func negativeLimits() async throws {
        #expect(throws: MaintenanceError(.invalidArgument, "the maximum number of events must not be negative")) {
            try RetentionPolicy(maxEvents: -1).validate()
        }
        #expect(throws: MaintenanceError(.invalidArgument, "the maximum size must not be negative")) {
            try RetentionPolicy(maxBytes: -1).validate()
        }
    }
}
