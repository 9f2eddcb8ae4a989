import Foundation
import Synchronization
import Testing

@testable import EventLog

@Suite("Appending")
struct AppendTests {
    @Test("ids are unique, gapless and strictly increasing in commit order under 50 concurrent appenders")
    func concurrentAppendersGetCommitOrderedIDs() async throws {
        let tasks = 50
        let appendsPerTask = 40
        let total = Int64(tasks * appendsPerTask)
        try await withTemporaryLog { log, directory in
            // A reader follows the log while it is written: it must never see an id before every
            // smaller one is visible, i.e. every page it reads continues the previous one exactly.
            let observer = Task { () -> [Int64] in
                var seen: [Int64] = []
                var position: Int64 = 0
                while position < total {
                    let page = try await log.read(after: position, selectors: .all, limit: 100)
                    for event in page.events {
                        #expect(event.id == position + 1, "a reader saw id \(event.id) right after \(position)")
                        seen.append(event.id)
                        position = event.id
                    }
                    if page.events.isEmpty { try await log.waitForCommit(after: position, selectors: .all) }
                }
                return seen
            }

            let results = try await withThrowingTaskGroup(of: (task: Int, ids: [Int64]).self) { group in
                for task in 0..<tasks {
                    group.addTask {
                        var ids: [Int64] = []
                        for call in 0..<appendsPerTask {
                            let result = try await log.append(
                                NewEvent(topic: "writers/\(task)", type: "call", data: .text("\(task):\(call)"))
                            )
                            #expect(result.replayed == false)
                            #expect(result.event.topic == "writers/\(task)")
                            ids.append(result.event.id)
                        }
                        return (task, ids)
                    }
                }
                var all: [Int: [Int64]] = [:]
                for try await result in group { all[result.task] = result.ids }
                return all
            }

            let allIDs = results.values.flatMap { $0 }
            #expect(allIDs.count == Int(total))
            #expect(Set(allIDs).count == Int(total))
            #expect(allIDs.sorted() == Array(1...total))
            for (task, ids) in results {
                #expect(ids == ids.sorted(), "task \(task) got ids out of its call order: \(ids)")
                #expect(Set(ids).count == appendsPerTask)
            }
            #expect(log.head == total)

            // Whatever was appended is what is read back, at the id the append returned.
            var expected: [Int64: String] = [:]
            for (task, ids) in results {
                for (call, id) in ids.enumerated() { expected[id] = "\(task):\(call)" }
            }
            let events = try await log.readAll()
            #expect(events.map(\.id) == Array(1...total))
            for event in events {
                let payload = expected[event.id] ?? "?"
                #expect(event.data == .text(payload))
                #expect(event.topic == "writers/" + payload.prefix { $0 != ":" })
                #expect(event.type == "call")
                #expect(event.key == nil)
            }
            #expect(zip(events, events.dropFirst()).allSatisfy { $0.time <= $1.time })

            let observed = try #require(try await withTimeout(.seconds(30)) { try await observer.value })
            #expect(observed == Array(1...total))

            // A second instance reads the same thing from the file alone.
            let reopened = try await EventLog.open(path: directory.path("events.db"))
            let fromDisk = try await reopened.readAll(limit: 333)
            await reopened.close()
            #expect(fromDisk == events)
        }
    }

    @Test("ids are never reused after every row is deleted and the log is reopened")
    func idsAreNeverReused() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let log = try await EventLog.open(path: path)
            var lastID: Int64 = 0
            for index in 0..<5 {
                lastID = try await log.append(NewEvent(topic: "orders/\(index)", data: .text("x"))).event.id
            }
            #expect(lastID == 5)
            await log.close()

            // Another process empties the table behind the log's back.
            try sqlite3(path, "DELETE FROM events;")
            #expect(try sqlite3(path, "SELECT count(*) FROM events;") == "0\n")

            let reopened = try await EventLog.open(path: path)
            #expect(reopened.head == 5)
            let next = try await reopened.append(NewEvent(topic: "orders/0", data: .text("y")))
            #expect(next.event.id == 6)
            #expect(try await reopened.readAll().map(\.id) == [6])
            await reopened.close()
        }
    }

    @Test("ids are not reused when the newest rows are deleted while the log is open")
    func idsAreNotReusedAfterDeletingNewestRows() async throws {
        try await withTemporaryLog { log, directory in
            for _ in 0..<3 { _ = try await log.append(NewEvent(topic: "a", data: .text("x"))) }
            try sqlite3(directory.path("events.db"), "DELETE FROM events WHERE id >= 2;")
            let next = try await log.append(NewEvent(topic: "a", data: .text("y")))
            #expect(next.event.id == 4)
        }
    }

    @Test("a batch is committed in order with consecutive ids and one commit time")
    func batchGetsConsecutiveIDs() async throws {
        try await withTemporaryLog { log, _ in
            _ = try await log.append(NewEvent(topic: "first", data: .text("0")))
            let batch = (1...5).map { NewEvent(topic: "batch/\($0)", data: .text("\($0)")) }
            let results = try await log.append(batch: batch)
            #expect(results.map(\.event.id) == [2, 3, 4, 5, 6])
            #expect(results.map(\.replayed) == [false, false, false, false, false])
            #expect(Set(results.map(\.event.time)).count == 1)
            #expect(try await log.readAll(after: 1).map(\.topic) == batch.map(\.topic))
        }
    }

    @Test("data, epoch and token key survive close and reopen")
    func dataSurvivesReopen() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("nested/dir/events.db")
            let log = try await EventLog.open(path: path)
            let epoch = log.epoch
            let tokenKey = log.tokenKey
            #expect(epoch.count == 32)
            #expect(tokenKey.count == 32)
            let appended = try await log.append(batch: [
                NewEvent(topic: "orders/1", type: "created", key: "order-1", data: .json(#"{"a":1}"#)),
                NewEvent(topic: "orders/1", data: .text("line 1\nline 2")),
                NewEvent(topic: "orders/1", type: "deleted", key: "order-1", data: nil),
                NewEvent(topic: "users/5", data: .text("ünïcødé ✓"), idempotencyKey: "req-1"),
            ])
            let events = appended.map(\.event)
            await log.close()

            let reopened = try await EventLog.open(path: path)
            #expect(reopened.epoch == epoch)
            #expect(reopened.tokenKey == tokenKey)
            #expect(reopened.head == 4)
            #expect(reopened.earliest == 1)
            #expect(try await reopened.readAll() == events)
            // The idempotency key survived too.
            let retry = try await reopened.append(
                NewEvent(topic: "users/5", data: .text("ünïcødé ✓"), idempotencyKey: "req-1")
            )
            try #require(events.count >= 4)
            #expect(retry == AppendResult(event: events[3], replayed: true))
            #expect(try await reopened.append(NewEvent(topic: "users/5", data: nil)).event.id == 5)
            #expect(
                try await reopened.topics() == [
                    TopicSummary(topic: "orders/1", count: 3, lastID: 3),
                    TopicSummary(topic: "users/5", count: 2, lastID: 5),
                ]
            )
            await reopened.close()
        }
    }

    @Test("two logs in different files have different epochs and token keys")
    func epochsDiffer() async throws {
        try await withTemporaryDirectory { directory in
            let first = try await EventLog.open(path: directory.path("a.db"))
            let second = try await EventLog.open(path: directory.path("b.db"))
            #expect(first.epoch != second.epoch)
            #expect(first.tokenKey != second.tokenKey)
            await first.close()
            await second.close()
        }
    }

    @Test(
        "each durability mode sets PRAGMA synchronous on the writer and uses WAL",
        arguments: [
            (EventLog.Durability.full, Int64(2)), (EventLog.Durability.normal, Int64(1)),
        ])
    func durabilityModeIsApplied(durability: EventLog.Durability, synchronous: Int64) async throws {
        try await withTemporaryLog(options: .with { $0.durability = durability }) { log, directory in
            // https://sqlite.org/pragma.html#pragma_synchronous: 1 is NORMAL, 2 is FULL.
            let store = try #require(log.store as? SQLiteEventStore)
            let actual = try await store.withWriter { try $0.scalarInt("PRAGMA synchronous") }
            #expect(actual == synchronous)
            let event = try await log.append(NewEvent(topic: "a", data: .text("x")))
            #expect(event.event.id == 1)
            #expect(try await log.readAll().map(\.id) == [1])
            #expect(try sqlite3(directory.path("events.db"), "PRAGMA journal_mode;") == "wal\n")
        }
    }

    @Test("a full disk fails the append with storage_unavailable and leaves nothing half-written")
    func fullDiskFailsCleanly() async throws {
        try await withTemporaryLog(options: .with { $0.maxPageCount = 64 }) { log, directory in
            let payload = EventData.text(String(repeating: "x", count: 3000))
            var committed: [Event] = []
            var failure: EventLogError?
            for round in 0..<200 {
                do {
                    let batch = (0..<5).map { NewEvent(topic: "fill/\(round)", key: "\($0)", data: payload) }
                    committed += try await log.append(batch: batch).map(\.event)
                } catch let error as EventLogError {
                    failure = error
                    break
                }
            }
            let error = try #require(failure)
            #expect(error.code == .storageUnavailable)
            #expect(committed.count % 5 == 0)
            #expect(!committed.isEmpty)
            #expect(log.head == Int64(committed.count))
            #expect(try await log.readAll() == committed)
            let rows = try sqlite3(directory.path("events.db"), "SELECT count(*), max(id) FROM events;")
            #expect(rows == "\(committed.count)|\(committed.count)\n")
            // A small event may still fit; if it does, it takes the next id.
            if let small = try? await log.append(NewEvent(topic: "small", data: .text("s"))) {
                #expect(small.event.id == Int64(committed.count + 1))
            }
        }
    }

    @Test("appends, reads and waits after close fail with closed")
    func closedLogRefusesWork() async throws {
        try await withTemporaryDirectory { directory in
            let log = try await EventLog.open(path: directory.path("events.db"))
            _ = try await log.append(NewEvent(topic: "a", data: .text("x")))
            await log.close()
            await log.close()  // closing twice is harmless
            let appendError = await #expect(throws: EventLogError.self) {
                try await log.append(NewEvent(topic: "a", data: .text("y")))
            }
            #expect(appendError?.code == .closed)
            let readError = await #expect(throws: EventLogError.self) {
                try await log.read(after: 0, selectors: .all, limit: 10)
            }
            #expect(readError?.code == .closed)
            let waitError = await #expect(throws: EventLogError.self) {
                try await log.waitForCommit(after: 1, selectors: .all)
            }
            #expect(waitError?.code == .closed)
        }
    }

    @Test("a read-only log reads but refuses appends")
    func readOnlyLogRefusesAppends() async throws {
        try await withTemporaryLog { log, directory in
            _ = try await log.append(NewEvent(topic: "a", data: .text("x")))
            let reader = try await EventLog.open(
                path: directory.path("events.db"), options: .with { $0.readOnly = true })
            #expect(reader.epoch == log.epoch)
            #expect(try await reader.readAll().map(\.id) == [1])
            let error = await #expect(throws: EventLogError.self) {
                try await reader.append(NewEvent(topic: "a", data: .text("y")))
            }
            #expect(error?.code == .closed)
            await reader.close()
        }
    }
}
