import Foundation
import Synchronization
import TestSupport
import Testing

@testable import EventLog

/// The PostgreSQL store against a real server (tools/test.sh starts one): several logs on one database stand for
/// several eventlogd nodes.
@Suite("PostgreSQL store", .enabled(if: TestPostgres.isAvailable), .serialized)
struct PostgresStoreTests {
    static func event(_ topic: String, _ text: String, key: String? = nil, idempotencyKey: String? = nil) -> NewEvent {
        NewEvent(topic: topic, key: key, data: .text(text), idempotencyKey: idempotencyKey)
    }

    @Test("a new database gets schema version 1 with its epoch and token key; every node shares them")
    func newDatabase() async throws {
        try await TestPostgres.withNodes(3) { nodes, url in
            let connection = try PGConnection(url: url)
            defer { connection.close() }
            let meta = try connection.query("SELECT name, length(value) FROM eventlog.meta ORDER BY name")
            #expect(meta.rowCount == 3)
            #expect(
                (0..<meta.rowCount).map { "\(meta.text($0, 0)!)=\(meta.int64($0, 1))" } == [
                    "epoch=32", "schema_version=1", "token_key=64",
                ])
            #expect(try connection.scalarText("SELECT value FROM eventlog.meta WHERE name = 'schema_version'") == "1")
            #expect(Set(nodes.map(\.epoch)).count == 1)
            #expect(Set(nodes.map(\.tokenKey)).count == 1)
            #expect(
                nodes[0].epoch == (try connection.scalarText("SELECT value FROM eventlog.meta WHERE name = 'epoch'")))
            #expect(nodes.allSatisfy { $0.head == 0 && $0.earliest == 1 })
        }
    }

    @Test("concurrent group commits from three nodes: ids 1…N, no hole, none reused, never N+1 visible before N")
    func concurrentGroupCommits() async throws {
        try await TestPostgres.withNodes(3) { nodes, url in
            let callers = 6
            let calls = 40
            // A reader on its own connection checks every snapshot it sees while the nodes commit: the ids present
            // are exactly 1…max, so no id committed before a smaller one.
            let done = Atomic<Bool>(false)
            // On a thread of its own: its blocking queries must not hold one of the cooperative pool's few threads.
            let watcher = Task {
                try await TestPostgres.onThread { () -> (snapshots: Int, violations: [String]) in
                    let connection = try PGConnection(url: url)
                    defer { connection.close() }
                    var snapshots = 0
                    var violations: [String] = []
                    while !done.load(ordering: .relaxed) {
                        let result = try connection.query("SELECT count(*), coalesce(max(id), 0) FROM eventlog.events")
                        if result.int64(0, 0) != result.int64(0, 1) {
                            violations.append("count \(result.int64(0, 0)) max \(result.int64(0, 1))")
                        }
                        snapshots += 1
                        usleep(500)
                    }
                    return (snapshots, violations)
                }
            }
            let ids = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for (index, node) in nodes.enumerated() {
                    for caller in 0..<callers {
                        group.addTask {
                            var mine: [Int64] = []
                            for call in 0..<calls {
                                let batch = (0..<(call % 3 + 1)).map {
                                    Self.event("nodes/\(index)/\(caller)", "\(call).\($0)")
                                }
                                mine += try await node.append(batch: batch).map(\.event.id)
                            }
                            return mine
                        }
                    }
                }
                var all: [[Int64]] = []
                for try await mine in group { all.append(mine) }
                return all
            }
            done.store(true, ordering: .relaxed)
            let watched = try await watcher.value
            let total = nodes.count * callers * (0..<calls).map { $0 % 3 + 1 }.reduce(0, +)
            // Each caller's ids increase (its appends commit in order), and together they are exactly 1…total.
            for mine in ids { #expect(mine == mine.sorted() && Set(mine).count == mine.count) }
            #expect(ids.flatMap { $0 }.sorted() == Array(1...Int64(total)))
            #expect(watched.violations == [])
            #expect(watched.snapshots > 0)
            // Group commit: fewer transactions than requests.
            let commits = nodes.map(\.groupCommits).reduce(0, +)
            #expect(commits > 0 && commits <= nodes.count * callers * calls)
            // Every node's history is the same: ids 1…total in order.
            for node in nodes {
                _ = try await node.refreshBounds()
                var position: Int64 = 0
                var seen: [Int64] = []
                while true {
                    let page = try await node.read(after: position, selectors: .all, limit: 500)
                    seen += page.events.map(\.id)
                    if page.events.isEmpty || page.next == position { break }
                    position = page.next
                }
                #expect(seen == Array(1...Int64(total)))
                #expect(node.head == Int64(total))
            }
        }
    }

    @Test("a commit on one node wakes the other node's waiters and lands in its tail (LISTEN/NOTIFY)")
    func crossNodeTail() async throws {
        try await TestPostgres.withNodes(2) { nodes, _ in
            let (a, b) = (nodes[0], nodes[1])
            let first = try await a.append(Self.event("orders/1", "one")).event
            // b learns of it from the notification: wait until its head moves.
            try await waitUntil { b.head == first.id }
            let waiter = Task {
                try await b.waitForCommit(after: first.id, selectors: try SelectorSet(parsing: ["orders/*"]))
            }
            try await Task.sleep(for: .milliseconds(50))
            let second = try await a.append(Self.event("orders/2", "two")).event
            try await waiter.value
            try await waitUntil { b.head == second.id }
            // Served from b's memory, not its store: the catch-up read the events into the tail.
            let page = try #require(try b.readTail(after: 0, selectors: .all, limit: 10))
            #expect(page.events.map(\.id) == [first.id, second.id])
            #expect(page.events.map(\.data) == [.text("one"), .text("two")])
        }
    }

    @Test("idempotency keys and conditional appends hold across nodes")
    func idempotencyAndConditionsAcrossNodes() async throws {
        try await TestPostgres.withNodes(3) { nodes, _ in
            let original = try await nodes[0].append(Self.event("orders/7", "paid", idempotencyKey: "k-1"))
            let retried = try await nodes[1].append(Self.event("orders/7", "paid", idempotencyKey: "k-1"))
            #expect(!original.replayed && retried.replayed)
            #expect(retried.event == original.event)
            await #expect(throws: EventLogError.self) {
                try await nodes[2].append(Self.event("orders/7", "refunded", idempotencyKey: "k-1"))
            }
            do {
                _ = try await nodes[2].append(Self.event("orders/7", "refunded", idempotencyKey: "k-1"))
            } catch let error as EventLogError {
                #expect(error.code == .idempotencyConflict)
            }
            // Two in one batch with the same key: the second is the first, replayed.
            let batch = try await nodes[1].append(batch: [
                Self.event("orders/8", "a", idempotencyKey: "k-2"), Self.event("orders/8", "a", idempotencyKey: "k-2"),
            ])
            #expect(batch.map(\.replayed) == [false, true])
            #expect(batch[0].event.id == batch[1].event.id)

            // Rounds of conditional appends from 9 callers over 3 nodes: exactly one wins each round.
            var last = try await nodes[0].append(Self.event("accounts/1", "open")).event.id
            for round in 0..<5 {
                let expected = last
                let outcomes = try await withThrowingTaskGroup(of: Result<Int64, EventLogError>.self) { group in
                    for caller in 0..<9 {
                        group.addTask {
                            var event = Self.event("accounts/1", "r\(round)c\(caller)")
                            event.expectedLastID = expected
                            do {
                                return .success(try await nodes[caller % 3].append(event).event.id)
                            } catch let error as EventLogError {
                                return .failure(error)
                            }
                        }
                    }
                    var all: [Result<Int64, EventLogError>] = []
                    for try await outcome in group { all.append(outcome) }
                    return all
                }
                let winners = outcomes.compactMap { try? $0.get() }
                #expect(winners.count == 1)
                let losers = outcomes.compactMap { outcome -> EventLogError? in
                    if case .failure(let error) = outcome { return error } else { return nil }
                }
                #expect(losers.count == 8)
                #expect(losers.allSatisfy { $0.code == .expectedLastIDMismatch && $0.lastID == winners.first })
                last = winners.first ?? last
            }
        }
    }

    @Test("a batch of 12,000 events commits whole, in one statement, with ids in order")
    func bigBatch() async throws {
        try await TestPostgres.withNodes(2) { nodes, _ in
            _ = try await nodes[1].append(Self.event("big/0", "before"))
            let results = try await nodes[0].append(
                batch: (0..<12_000).map { Self.event("big/\($0 % 7)", "e\($0)", key: "k\($0 % 100)") })
            #expect(results.map(\.event.id) == Array(2...12_001))
            try await waitUntil { nodes[1].head == 12_001 }
            let page = try await nodes[1].read(after: 5_000, selectors: .all, limit: 2)
            #expect(page.events.map(\.data) == [.text("e4999"), .text("e5000")])
            // The latest table holds the newest event of each of the 7 × 100 keys … and big/0's key-less one.
            let snapshot = try await nodes[1].readSnapshot(after: 0, selectors: .all, limit: 1_000)
            #expect(snapshot.events.count == 701)
            #expect(snapshot.events.last?.id == 12_001)
        }
    }

    @Test("a NUL in text data is refused alone; the rest of the group commits")
    func nulRefused() async throws {
        try await TestPostgres.withNodes(1) { nodes, _ in
            let log = nodes[0]
            let bad = Task { try await log.append(Self.event("orders/1", "nul\u{0}byte")) }
            let ok = try await log.append(Self.event("orders/1", "fine"))
            #expect(ok.event.data == .text("fine"))
            do {
                _ = try await bad.value
                Issue.record("the NUL event was accepted")
            } catch let error as EventLogError {
                #expect(error.code == .invalidField)
            }
            #expect(log.head == ok.event.id)
        }
    }

    @Test("eventlog.publish: committed transactions' events appear in commit order, rolled-back ones never")
    func outbox() async throws {
        try await TestPostgres.withNodes(2) { nodes, url in
            let app = try PGConnection(url: url)
            defer { app.close() }
            try app.execute("BEGIN")
            try app.query("SELECT eventlog.publish('orders/1', 'status', '1', '{\"b\": 2, \"a\": [1, 2]}', 'app-1')")
            try app.query("SELECT eventlog.publish('orders/1', NULL, '1', '\"shipped\"', NULL)")
            try app.execute("COMMIT")
            try app.execute("BEGIN")
            try app.query("SELECT eventlog.publish('orders/2', 'status', '2', '{\"never\": true}', NULL)")
            try app.execute("ROLLBACK")
            try app.execute("BEGIN")
            try app.query("SELECT eventlog.publish('orders/3', 'status', NULL, 'null', NULL)")
            try app.execute("COMMIT")
            // An invalid topic fails inside the application's transaction.
            #expect(throws: PGError.self) {
                try app.query("SELECT eventlog.publish('bad topic', NULL, NULL, NULL, NULL)")
            }
            for node in nodes { try await waitUntil { node.head == 3 } }
            let page = try await nodes[1].read(after: 0, selectors: .all, limit: 10)
            #expect(page.events.map(\.id) == [1, 2, 3])
            #expect(page.events.map(\.topic) == ["orders/1", "orders/1", "orders/3"])
            #expect(page.events.map(\.type) == ["status", "message", "status"])
            #expect(page.events.map(\.key) == ["1", "1", nil])
            #expect(page.events.map(\.data) == [.json("{\"a\":[1,2],\"b\":2}"), .text("shipped"), nil])
            #expect(try app.scalarInt("SELECT count(*) FROM eventlog.outbox") == 0)
            #expect(
                try app.scalarText("SELECT idempotency_key FROM eventlog.events WHERE id = 1") == "app-1")
        }
    }

    @Test("an outbox backlog from while no node ran moves whole, in seq order, a page per group commit")
    func outboxBacklog() async throws {
        try await TestPostgres.withDatabase { url in
            await (try await EventLog.open(path: url)).close()
            let app = try PGConnection(url: url)
            defer { app.close() }
            try app.execute(
                """
                BEGIN;
                SELECT eventlog.publish('backlog/' || (n % 3), 'n', NULL, to_jsonb(n), NULL) FROM generate_series(1, 2500) n;
                COMMIT;
                """)
            let node = try await EventLog.open(path: url)
            defer { Task { await node.close() } }
            try await waitUntil { node.head == 2500 }
            var position: Int64 = 0
            var values: [EventData?] = []
            while position < 2500 {
                let page = try await node.read(after: position, selectors: .all, limit: 1000)
                values += page.events.map(\.data)
                position = page.next
            }
            #expect(values == (1...2500).map { .json("\($0)") })
            #expect(try app.scalarInt("SELECT count(*) FROM eventlog.outbox") == 0)
            await node.close()
        }
    }

    @Test("retention raises precise watermarks, compaction none; snapshot pages, since and rewind as on SQLite")
    func maintenanceAndStarts() async throws {
        try await TestPostgres.withNodes(2) { nodes, _ in
            let (a, b) = (nodes[0], nodes[1])
            // 1 orders/1, 2 logs/1, 3 orders/2, 4 logs/1, ... 10 logs/1 (keys: orders/1 and orders/2 alternate).
            for index in 1...10 {
                let topic = index % 2 == 1 ? "orders/\((index / 2) % 2 + 1)" : "logs/1"
                _ = try await a.append(Self.event(topic, "e\(index)", key: index % 2 == 1 ? "k" : nil))
            }
            let logs = try SelectorSet(parsing: ["logs/*"])
            let orders = try SelectorSet(parsing: ["orders/*"])
            let report = try await b.retain(RetentionPolicy(maxEvents: 1, selectors: logs))
            #expect(report.removedEvents == 4)
            #expect(report.removedIDs == 2...8)
            // Node a hears of it by notification; until then its tail may still serve the removed events.
            _ = try await a.refreshBounds()
            #expect(try await a.removals(logs) == RemovalMark(through: 8, count: 1))
            #expect(try await a.removals(orders) == RemovalMark())
            let ordersPage = try await a.read(after: 1, selectors: orders, limit: 100)
            #expect(ordersPage.events.map(\.id) == [3, 5, 7, 9])
            #expect(ordersPage.removedThrough == 0)
            let logsPage = try await a.read(after: 1, selectors: logs, limit: 100)
            #expect(logsPage.events.map(\.id) == [10])
            #expect(logsPage.removedThrough == 8)
            // The snapshot: the newest event of each key (orders/1 k = 9, orders/2 k = 7, logs/1 = 10).
            let snapshot = try await a.readSnapshot(after: 0, selectors: .all, limit: 2)
            #expect(snapshot.events.map(\.id) == [7, 9])
            let rest = try await a.readSnapshot(after: snapshot.next, selectors: .all, limit: 2)
            #expect(rest.events.map(\.id) == [10])
            #expect(rest.next == 10)
            // Compaction keeps the newest per key and raises no watermark.
            let compaction = try await a.compact(CompactionPolicy(selectors: orders))
            #expect(compaction.removedEvents == 3)
            #expect(try await b.read(after: 0, selectors: orders, limit: 100).events.map(\.id) == [7, 9])
            #expect(try await a.removals(orders) == RemovalMark())
            // rewind and since.
            #expect(try await a.position(rewinding: 2, selectors: .all) == 8)
            #expect(try await a.position(rewinding: 1, selectors: orders) == 8)
            #expect(try await a.position(rewinding: 5, selectors: .all) == 0)
            let times = try await a.read(after: 0, selectors: .all, limit: 10).events
            #expect(try await a.position(since: times[0].time) == 0)
            #expect(try await a.position(since: times.last!.time + 1) == 10)
            // The other node's tail no longer serves removed events.
            try await waitUntil {
                (try? b.readTail(after: 0, selectors: .all, limit: 10))??.events.map(\.id) != [1, 2, 3]
            }
            #expect(try await b.read(after: 0, selectors: .all, limit: 100).events.map(\.id) == [7, 9, 10])
        }
    }
}

extension PostgresStoreTests {
    @Test(
        "every connection of the nodes cut (as by a PostgreSQL restart): the next read, append and cross-node delivery succeed"
    )
    func connectionsCut() async throws {
        try await TestPostgres.withNodes(2) { nodes, url in
            let (a, b) = (nodes[0], nodes[1])
            let first = try await a.append(Self.event("orders/1", "one")).event
            try await waitUntil { b.head == first.id }
            // Every reader has a connection open, then every backend of the database but ours goes away.
            #expect(try await b.read(after: 0, selectors: .all, limit: 10).events.map(\.id) == [first.id])
            let admin = try PGConnection(url: url)
            defer { admin.close() }
            // Per node: the writer, the readers (2 by default) and the listener.
            try await waitUntil {
                try admin.scalarInt(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ) == 8
            }
            let cut = try admin.scalarInt(
                """
                SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()
                """)
            #expect(cut == 8)
            // A reader's first read after the cut reconnects and runs again rather than failing (snapshot reads
            // and topics go to the store, never to the tail; more of them than a node has readers).
            for node in nodes {
                // Bounds are one plain statement (no BEGIN), as /healthz reads them.
                #expect(try await node.refreshBounds().head == first.id)
                for _ in 0..<3 {
                    #expect(try await node.readSnapshot(after: 0, selectors: .all, limit: 10).events.map(\.id) == [1])
                }
                #expect(try await node.topics().map(\.topic) == ["orders/1"])
            }
            // The writer's BEGIN reconnects likewise; the listeners reconnect by themselves and b hears of it.
            let second = try await a.append(Self.event("orders/2", "two")).event
            #expect(second.id == first.id + 1)
            try await waitUntil { b.head == second.id }
            let page = try #require(try b.readTail(after: 0, selectors: .all, limit: 10))
            #expect(page.events.map(\.id) == [first.id, second.id])
        }
    }
}

/// Polls `condition` every 10 ms for up to 10 s.
func waitUntil(_ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while try !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
