import Dispatch
import Testing

@testable import EventLog

/// The outcome of one request of a group: its results, or the error it failed with.
typealias RequestOutcome = Result<[AppendResult], EventLogError>

/// Appends `requests` (each one `append(batch:)` call) in this order as one group commit.
///
/// A task holds the writer thread until every request is queued behind it, so the writer drains them
/// together. Returns each request's outcome and what the writer's statistics counted for the group.
func appendInOneGroup(
    _ log: EventLog,
    _ requests: [[NewEvent]]
) async throws -> (outcomes: [RequestOutcome], statistics: SQLiteWriter.Statistics) {
    let store = try #require(log.store as? SQLiteEventStore)
    let before = try #require(store.writerStatistics)
    let entered = DispatchSemaphore(value: 0)
    let gate = DispatchSemaphore(value: 0)
    let held = Task {
        try await store.withWriter { _ in
            entered.signal()
            gate.wait()
        }
    }
    try #require(try await eventually { entered.wait(timeout: .now()) == .success })
    #expect(store.queuedWriterJobs == 0)
    var tasks: [Task<RequestOutcome, Never>] = []
    for (index, events) in requests.enumerated() {
        tasks.append(
            Task {
                do {
                    return .success(try await log.append(batch: events))
                } catch let error as EventLogError {
                    return .failure(error)
                } catch {
                    return .failure(EventLogError(.corrupt, "unexpected \(error)"))
                }
            }
        )
        // One at a time, so the queue order is the order of `requests`.
        let queued = try await eventually { store.queuedWriterJobs == index + 1 }
        if !queued { gate.signal() }
        try #require(queued)
    }
    gate.signal()
    try await held.value
    var outcomes: [RequestOutcome] = []
    for task in tasks { outcomes.append(await task.value) }
    let after = try #require(store.writerStatistics)
    return (
        outcomes,
        SQLiteWriter.Statistics(
            groupCommits: after.groupCommits - before.groupCommits,
            savepointRetries: after.savepointRetries - before.savepointRetries,
            savepoints: after.savepoints - before.savepoints
        )
    )
}

extension RequestOutcome {
    /// The ids appended or replayed, or nil when the request failed.
    var ids: [Int64]? { try? get().map(\.event.id) }
    /// Which results were replays, or nil when the request failed.
    var replayed: [Bool]? { try? get().map(\.replayed) }
    /// The error, or nil when the request succeeded.
    var error: EventLogError? {
        guard case .failure(let error) = self else { return nil }
        return error
    }
}

@Suite("Group commit")
struct GroupCommitTests {
    @Test("requests that fail before they write fail alone in a group commit that uses no savepoint")
    func failuresBeforeAnyInsertNeedNoSavepoint() async throws {
        try await withTemporaryLog { log, directory in
            let original = try await log.append(NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k"))
            #expect(original.event.id == 1)
            let (outcomes, statistics) = try await appendInOneGroup(
                log,
                [
                    [NewEvent(topic: "a", data: .text("a"))],
                    // A conflict with a committed event.
                    [NewEvent(topic: "orders/1", data: .text("v2"), idempotencyKey: "k")],
                    // A replay of a committed event.
                    [NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k")],
                    [NewEvent(topic: "b", data: .text("b"))],
                    // A new key, then its replay and a conflict with it in the same group.
                    [NewEvent(topic: "orders/2", data: .text("n"), idempotencyKey: "k2")],
                    [NewEvent(topic: "orders/2", data: .text("n"), idempotencyKey: "k2")],
                    [NewEvent(topic: "orders/2", data: .text("other"), idempotencyKey: "k2")],
                    // A batch whose first event conflicts: nothing of it was inserted.
                    [
                        NewEvent(topic: "orders/1", data: .text("v3"), idempotencyKey: "k"),
                        NewEvent(topic: "c", data: .text("never")),
                    ],
                    // A batch that replays, then conflicts: still nothing of its own inserted.
                    [
                        NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k"),
                        NewEvent(topic: "orders/2", data: .text("v4"), idempotencyKey: "k2"),
                        NewEvent(topic: "c", data: .text("never")),
                    ],
                    [NewEvent(topic: "c", data: .text("c")), NewEvent(topic: "c", data: .text("d"))],
                ]
            )
            try #require(outcomes.count == 10)
            #expect(outcomes[0].ids == [2])
            #expect(outcomes[1].error?.code == .idempotencyConflict)
            #expect(outcomes[1].error?.index == nil)
            #expect(try outcomes[2].get() == [AppendResult(event: original.event, replayed: true)])
            #expect(outcomes[3].ids == [3])
            #expect(outcomes[4].ids == [4])
            #expect(outcomes[4].replayed == [false])
            #expect(outcomes[5].ids == [4])
            #expect(outcomes[5].replayed == [true])
            #expect(outcomes[6].error?.code == .idempotencyConflict)
            #expect(outcomes[7].error?.code == .idempotencyConflict)
            #expect(outcomes[7].error?.index == 0)
            #expect(outcomes[8].error?.code == .idempotencyConflict)
            #expect(outcomes[8].error?.index == 1)
            #expect(outcomes[9].ids == [5, 6])
            #expect(statistics == SQLiteWriter.Statistics(groupCommits: 1, savepointRetries: 0, savepoints: 0))

            let events = try await log.readAll()
            #expect(events.map(\.id) == [1, 2, 3, 4, 5, 6])
            #expect(events.map(\.topic) == ["orders/1", "a", "b", "orders/2", "c", "c"])
            #expect(events.map(\.data) == [.text("v1"), .text("a"), .text("b"), .text("n"), .text("c"), .text("d")])
            #expect(Set(events.dropFirst().map(\.time)).count == 1)
            #expect(log.head == 6)
            let rows = try sqlite3(
                directory.path("events.db"),
                "SELECT id, topic, idempotency_key FROM events ORDER BY id;"
            )
            #expect(rows == "1|orders/1|k\n2|a|\n3|b|\n4|orders/2|k2\n5|c|\n6|c|\n")
        }
    }

    @Test("a batch that fails after some of its events were inserted is undone alone; the group reruns with savepoints")
    func batchFailingAfterInsertsIsRolledBackAlone() async throws {
        try await withTemporaryLog { log, directory in
            let original = try await log.append(NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k"))
            #expect(original.event.id == 1)
            let (outcomes, statistics) = try await appendInOneGroup(
                log,
                [
                    [NewEvent(topic: "a", data: .text("a"))],
                    [
                        NewEvent(topic: "batch", data: .text("b0")),
                        NewEvent(topic: "orders/3", data: .text("b1"), idempotencyKey: "k3"),
                        NewEvent(topic: "orders/1", data: .text("conflict"), idempotencyKey: "k"),
                        NewEvent(topic: "batch", data: .text("b3")),
                    ],
                    [NewEvent(topic: "b", data: .text("b"))],
                    [NewEvent(topic: "d", data: .text("d0")), NewEvent(topic: "d", data: .text("d1"))],
                    [NewEvent(topic: "orders/1", data: .text("v1"), idempotencyKey: "k")],
                ]
            )
            try #require(outcomes.count == 5)
            #expect(outcomes[0].ids == [2])
            #expect(outcomes[1].error?.code == .idempotencyConflict)
            #expect(outcomes[1].error?.index == 2)
            #expect(outcomes[2].ids == [3])
            #expect(outcomes[3].ids == [4, 5])
            #expect(outcomes[3].replayed == [false, false])
            #expect(try outcomes[4].get() == [AppendResult(event: original.event, replayed: true)])
            // One commit; the first run stopped at the batch, the second ran both batches in savepoints.
            #expect(statistics == SQLiteWriter.Statistics(groupCommits: 1, savepointRetries: 1, savepoints: 2))

            let events = try await log.readAll()
            #expect(events.map(\.id) == [1, 2, 3, 4, 5])
            #expect(events.map(\.data) == [.text("v1"), .text("a"), .text("b"), .text("d0"), .text("d1")])
            #expect(try sqlite3(directory.path("events.db"), "SELECT count(*), max(id) FROM events;") == "5|5\n")
            #expect(log.head == 5)
            // The rolled-back batch left neither ids nor its idempotency key behind.
            let retried = try await log.append(NewEvent(topic: "orders/3", data: .text("b1"), idempotencyKey: "k3"))
            #expect(retried == AppendResult(event: retried.event, replayed: false))
            #expect(retried.event.id == 6)
        }
    }

    @Test("a request that fills the disk fails alone, with nothing of it written; the rest of its group commits")
    func diskFullFailsOnlyItsRequest() async throws {
        try await withTemporaryLog(options: .with { $0.maxPageCount = 64 }) { log, directory in
            let first = try await log.append(NewEvent(topic: "a", data: .text("first")))
            #expect(first.event.id == 1)
            // 64 pages of 4 KiB cannot hold this event: SQLITE_FULL in its INSERT. The INSERT fires the `latest`
            // trigger, so it has a statement journal and SQLite undoes that statement alone
            // (https://sqlite.org/lang_transaction.html#response_to_errors_within_a_transaction).
            let huge = EventData.text(String(repeating: "x", count: 400_000))
            let (outcomes, statistics) = try await appendInOneGroup(
                log,
                [
                    [NewEvent(topic: "a", data: .text("s1"))],
                    [NewEvent(topic: "big", data: huge)],
                    [NewEvent(topic: "a", data: .text("s2"))],
                ]
            )
            try #require(outcomes.count == 3)
            #expect(outcomes.map(\.error?.code) == [nil, .storageUnavailable, nil])
            #expect(outcomes.map(\.ids) == [[2], nil, [3]])
            #expect(statistics == SQLiteWriter.Statistics(groupCommits: 1, savepointRetries: 0, savepoints: 0))
            #expect(log.head == 3)
            #expect(try await log.readAll().map(\.id) == [1, 2, 3])
            #expect(
                try sqlite3(directory.path("events.db"), "SELECT count(*), max(id) FROM events WHERE topic = 'a';")
                    == "3|3\n")
            #expect(try sqlite3(directory.path("events.db"), "SELECT topic, id FROM latest;") == "a|3\n")
            #expect(try await log.append(NewEvent(topic: "a", data: .text("after"))).event.id == 4)
        }
    }

    @Test("a group of plain appends commits once with consecutive ids in queue order and no savepoint")
    func plainGroupCommitsOnce() async throws {
        try await withTemporaryLog { log, _ in
            let requests = (0..<20).map { index in
                index % 5 == 4
                    ? [
                        NewEvent(topic: "t/\(index)", data: .text("\(index)a")),
                        NewEvent(topic: "t/\(index)", data: .text("\(index)b")),
                    ]
                    : [NewEvent(topic: "t/\(index)", data: .text("\(index)"))]
            }
            let (outcomes, statistics) = try await appendInOneGroup(log, requests)
            var next: Int64 = 1
            for (index, outcome) in outcomes.enumerated() {
                let count = Int64(requests[index].count)
                #expect(outcome.ids == Array(next..<next + count))
                next += count
            }
            #expect(statistics == SQLiteWriter.Statistics(groupCommits: 1, savepointRetries: 0, savepoints: 0))
            let events = try await log.readAll()
            #expect(events.map(\.id) == Array(1...24))
            #expect(events.map(\.data) == requests.flatMap { $0.map(\.data) })
        }
    }
}
