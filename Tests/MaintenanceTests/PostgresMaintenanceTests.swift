import Foundation
import TestSupport
import Testing

@testable import EventLog

/// `LogMaintenance` (and so eventlog-maint) on a log in PostgreSQL, against a real server (`EVENTLOG_TEST_POSTGRES`).
@Suite("Maintenance on PostgreSQL", .enabled(if: TestPostgres.isAvailable), .serialized)
struct PostgresMaintenanceTests {
    /// Direct SQL on the database, as another client would run it.
    @discardableResult
    private func sql<T>(_ url: String, _ body: (PGConnection) throws -> T) throws -> T {
        let connection = try PGConnection(url: url)
        defer { connection.close() }
        return try body(connection)
    }

    private func storedIDs(_ url: String) throws -> [Int64] {
        try sql(url) { connection in
            let result = try connection.query("SELECT id FROM eventlog.events ORDER BY id")
            return (0..<result.rowCount).map { result.int64($0, 0) }
        }
    }

    /// The varied log of the export tests, with ids 1...2 (removed by retention) made a void, as a restore makes.
    private func makeVariedSQLiteLog(_ path: String) async throws {
        try await makeVariedLog(path).close()
        try withConnection(path) { try $0.run("INSERT INTO voids (after, through) VALUES (0, 2)") }
    }

    @Test("retain on PostgreSQL deletes the oldest events through EventLog and reports as on SQLite")
    func retain() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(url, (1...10).map { event("t/\($0 % 2)", $0) })
            let dry = try await maintain(url, readOnly: true) {
                try $0.retain(RetentionPolicy(maxEvents: 4), dryRun: true)
            }
            #expect(dry.removedEvents == 6)
            #expect(dry.removedIDs == 1...6)
            #expect(dry.earliestAfter == 7)
            #expect(try storedIDs(url) == Array(1...10))
            let report = try await maintain(url, batching: MaintenanceBatching(maxRows: 4, maxLockTime: .seconds(60))) {
                try $0.retain(RetentionPolicy(maxEvents: 4))
            }
            #expect(report.removedEvents == 6)
            #expect(report.removedIDs == 1...6)
            #expect(report.transactions == 2)
            #expect(report.earliestBefore == 1)
            #expect(report.earliestAfter == 7)
            #expect(report.head == 10)
            #expect(try storedIDs(url) == [7, 8, 9, 10])
            let marks = try sql(url) { connection in
                let rows = try connection.query("SELECT selector, through FROM eventlog.removed ORDER BY selector")
                return (0..<rows.rowCount).map { "\(rows.text($0, 0)!)=\(rows.int64($0, 1))" }
            }
            #expect(marks == ["*=6", "t/*=6", "t/0=6", "t/1=5"])
        }
    }

    @Test("compact on PostgreSQL keeps the latest event of every key")
    func compact() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(
                url,
                [
                    event("k", key: "a", 1), event("k", key: "a", 2), event("k", key: "b", 3), event("k", key: "a", 4),
                    event("k", key: "b", 5), tombstone("k", key: "c"), event("other", 7),
                ])
            let report = try await maintain(url) {
                try $0.compact(CompactionPolicy(tombstoneRetention: nil))
            }
            #expect(report.scannedEvents == 7)
            #expect(report.keys == 4)
            #expect(report.removedEvents == 3)
            #expect(report.removedTombstones == 0)
            #expect(report.head == 7)
            #expect(try storedIDs(url) == [4, 5, 6, 7])
        }
    }

    @Test(
        "verify passes on a good log; a counter below the largest id, a wrong latest row, an outbox row above its counter fail with exact messages"
    )
    func verify() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(url, [event("a", key: "x", 1), event("a", key: "x", 2), event("b", 3), event("c/d", 4)])
            let good = try await maintain(url, readOnly: true) { try $0.verify() }
            #expect(good.problems == [])
            #expect(good.isOK)
            #expect(good.eventCount == 4)
            #expect(good.head == 4)
            #expect(good.earliest == 1)
            #expect(
                good.checks == [
                    "schema", "meta", "sequence", "ids", "latest", "removed", "voids", "time", "idempotency", "topics",
                    "outbox",
                ])

            try sql(url) { try $0.query("UPDATE eventlog.counter SET head = 2") }
            let behind = try await maintain(url, readOnly: true) { try $0.verify() }
            #expect(
                behind.problems.map(\.description) == [
                    "error [sequence] 2 events have ids above the head 2 (eventlog.counter.head); largest id 4"
                ])
            try sql(url) { try $0.query("UPDATE eventlog.counter SET head = 4") }

            try sql(url) { try $0.query("UPDATE eventlog.latest SET id = 99 WHERE topic = 'b'") }
            let latest = try await maintain(url, readOnly: true) { try $0.verify() }
            #expect(
                latest.problems.map(\.description) == [
                    "error [latest] 1 (topic, key) rows of the latest table do not name the newest event of their key"
                ])
            try sql(url) { try $0.query("UPDATE eventlog.latest SET id = 3 WHERE topic = 'b'") }

            try sql(url) {
                try $0.query("INSERT INTO eventlog.outbox (seq, topic, type) VALUES (7, 'x', 'message')")
            }
            let outbox = try await maintain(url, readOnly: true) { try $0.verify() }
            #expect(
                outbox.problems.map(\.description) == [
                    "error [outbox] 1 outbox rows have a seq above eventlog.outbox_counter.seq 0; largest 7"
                ])

            try sql(url) {
                try $0.execute("DELETE FROM eventlog.outbox; DELETE FROM eventlog.meta WHERE name = 'token_key'")
            }
            let meta = try await maintain(url, readOnly: true) { try $0.verify() }
            #expect(meta.problems.map(\.description) == ["error [meta] meta has no token_key row"])
        }
    }

    @Test("stats: counts, bounds, topics, the size of each table, the outbox backlog")
    func stats() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(url, [event("a", 1), event("b", 2), event("a", 3)])
            try sql(url) { try $0.query("SELECT eventlog.publish('c', NULL, NULL, '{\"n\":4}'::jsonb)") }
            let stats = try await maintain(url, readOnly: true) { try $0.stats(perTopic: true) }
            #expect(stats.eventCount == 3)
            #expect(stats.head == 3)
            #expect(stats.earliest == 1)
            #expect(stats.ids == 1...3)
            #expect(stats.topicCount == 2)
            #expect(stats.schemaVersion == 1)
            #expect(
                stats.topics == [
                    TopicSummary(topic: "a", count: 2, lastID: 3), TopicSummary(topic: "b", count: 1, lastID: 2),
                ])
            #expect(stats.outboxBacklog == 1)
            let tables = try #require(stats.tables)
            #expect(
                tables.map(\.name) == [
                    "counter", "events", "latest", "meta", "outbox", "outbox_counter", "removed", "voids",
                ])
            #expect(tables.allSatisfy { $0.bytes > 0 })
            #expect(stats.fileBytes == tables.reduce(0) { $0 + $1.bytes })
        }
    }

    @Test("export SQLite, import into PostgreSQL, export again: byte-identical; back into SQLite: the same again")
    func sqliteToPostgresAndBack() async throws {
        try await withTemporaryDirectory { directory in
            try await TestPostgres.withDatabase { url in
                let source = directory.path("source.db")
                try await makeVariedSQLiteLog(source)
                let first = directory.path("first.jsonl")
                let exported = try await export(source, to: first)
                #expect(exported.events == 4)
                #expect(exported.head == 7)

                let imported = try await importFile(first, into: url, keepEpoch: true)
                #expect(imported.events == 4)
                #expect(imported.ids == 3...6)
                #expect(imported.head == 7)
                #expect(imported.earliest == 3)
                #expect(imported.epoch == exported.epoch)
                #expect(try storedIDs(url) == [3, 4, 5, 6])

                let fromPostgres = directory.path("postgres.jsonl")
                _ = try await export(url, to: fromPostgres)
                let original = try Data(contentsOf: URL(fileURLWithPath: first))
                #expect(try Data(contentsOf: URL(fileURLWithPath: fromPostgres)) == original)
                let verified = try await maintain(url, readOnly: true) { try $0.verify() }
                #expect(verified.problems == [])

                let back = directory.path("back.db")
                _ = try await importFile(fromPostgres, into: back, keepEpoch: true)
                let again = directory.path("again.jsonl")
                _ = try await export(back, to: again)
                #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == original)

                // The nodes that start on the imported log: its epoch and key, and the next id after the head.
                let sqliteLog = try await EventLog.open(path: source)
                let log = try await EventLog.open(path: url)
                #expect(log.epoch == sqliteLog.epoch)
                #expect(log.tokenKey == sqliteLog.tokenKey)
                await sqliteLog.close()
                #expect(log.head == 7)
                #expect(log.earliest == 3)
                #expect(log.isVoid(1))
                #expect(try await log.append(event("orders/9", 9)).event.id == 8)
                // An idempotency key from the SQLite log is recognised.
                let replay = try await log.append(
                    NewEvent(topic: "orders/2", type: "deleted", data: nil, idempotencyKey: "req-2"))
                #expect(replay.event.id == 6)
                await log.close()
            }
        }
    }

    @Test("export PostgreSQL, import into SQLite, export again: byte-identical; a publish continues after the ids")
    func postgresToSQLite() async throws {
        try await withTemporaryDirectory { directory in
            try await TestPostgres.withDatabase { url in
                try await makeLog(
                    url,
                    [
                        event("a", key: "k", 1), NewEvent(topic: "b", data: .text("x\ny"), idempotencyKey: "i-1"),
                        tombstone("a", key: "k"),
                    ])
                let first = directory.path("first.jsonl")
                _ = try await export(url, to: first)
                let path = directory.path("copy.db")
                let imported = try await importFile(first, into: path, keepEpoch: true)
                #expect(imported.ids == 1...3)
                #expect(imported.head == 3)
                let again = directory.path("again.jsonl")
                _ = try await export(path, to: again)
                #expect(
                    try Data(contentsOf: URL(fileURLWithPath: again))
                        == (try Data(contentsOf: URL(fileURLWithPath: first))))

                // And into a second, new PostgreSQL database: the next publish gets the id after the last one.
                try await TestPostgres.withDatabase { second in
                    let report = try await importFile(again, into: second, keepEpoch: false)
                    #expect(report.keptEpoch == false)
                    let log = try await EventLog.open(path: second)
                    #expect(log.epoch == report.epoch)
                    #expect(try await log.append(event("c", 4)).event.id == 4)
                    await log.close()
                }
            }
        }
    }

    @Test("import into a PostgreSQL log that holds events is refused, and changes nothing")
    func importIntoNonEmpty() async throws {
        try await withTemporaryDirectory { directory in
            try await TestPostgres.withDatabase { url in
                try await makeLog(url, [event("a", 1)])
                let file = directory.path("export.jsonl")
                _ = try await export(url, to: file)
                let error = await #expect(throws: MaintenanceError.self) { try await importFile(file, into: url) }
                #expect(error?.code == .targetNotEmpty)
                #expect(
                    error?.message
                        == "\(url) already holds a log (1 events, head 1); import needs a new or empty log")
                #expect(try storedIDs(url) == [1])
            }
        }
    }

    @Test("checkpoint, vacuum and backup are refused on PostgreSQL, saying what to use instead")
    func refused() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(url, [])
            let errors = try await maintain(url) { maintenance in
                [
                    Result { _ = try maintenance.checkpoint() }, Result { _ = try maintenance.vacuum() },
                    Result { _ = try maintenance.backup(to: "/tmp/never.db") },
                ].map { result -> String in
                    guard case .failure(let error as MaintenanceError) = result, error.code == .notSupported else {
                        return "\(result)"
                    }
                    return error.message
                }
            }
            let suffix = "works on SQLite files only, and \(url) is PostgreSQL: "
            #expect(
                errors == [
                    "checkpoint " + suffix + SQLiteFileOperation.checkpoint.postgresAlternative,
                    "vacuum " + suffix + SQLiteFileOperation.vacuum.postgresAlternative,
                    "backup " + suffix + SQLiteFileOperation.backup.postgresAlternative,
                ])
        }
    }

    @Test("eventlog-maint with a PostgreSQL URL: stats, verify, retain and export print what they do on SQLite")
    func tool() async throws {
        try await TestPostgres.withDatabase { url in
            try await makeLog(url, (1...5).map { event("t", $0) })
            let stats = try await ToolTests.run(["stats", "--db", url, "--json"])
            #expect(stats.status == 0)
            #expect(stats.stdout.hasPrefix("{\"epoch\":\""))
            #expect(
                stats.stdout.contains(
                    "\"schemaVersion\":1,\"events\":5,\"earliest\":1,\"head\":5,\"topics\":1,\"storage\":\"postgresql\""
                ))
            #expect(stats.stdout.contains("\"outboxBacklog\":0,\"firstId\":1,\"lastId\":5"))

            let verify = try await ToolTests.run(["verify", "--db", url, "--quiet"])
            #expect(verify.status == 0)
            #expect(verify.stdout.hasPrefix("verify: ok (5 events, head 5, earliest 1, epoch "))

            let retain = try await ToolTests.run([
                "retain", "--db", url, "--max-events", "2", "--quiet", "--batch-time", "60s",
            ])
            #expect(retain.status == 0)
            #expect(
                retain.stdout
                    == "retention: removed 3 events, ~\(MaintenanceText.formatBytes(3 * 48)) (ids 1...3) in 1 transactions\n"
                    + "earliest: 1 -> 4 (head 5)\n")

            let export = try await ToolTests.run(["export", "--db", url, "--quiet"])
            #expect(export.status == 0)
            #expect(export.stdout.split(separator: "\n").count == 3)
            #expect(export.stderr.hasPrefix("export: 2 events, head 5, earliest 4, epoch "))
        }
    }
}

/// The refusals need no server: the tool refuses a PostgreSQL URL before it connects, and never prints a password.
@Suite("eventlog-maint refuses SQLite file operations on PostgreSQL")
struct PostgresRefusalTests {
    @Test("checkpoint, vacuum, backup and restore on a PostgreSQL URL exit 1 and say what to use instead")
    func refusals() async throws {
        let url = "postgres://maint:s3cret@127.0.0.1:1/logs"
        let shown = "postgres://maint:***@127.0.0.1:1/logs"
        let cases: [([String], SQLiteFileOperation)] = [
            (["checkpoint", "--db", url], .checkpoint),
            (["vacuum", "--db", url, "--incremental"], .vacuum),
            (["backup", "--db", url, "--to", "/tmp/never.db"], .backup),
            (["restore", "--db", url, "--from", "/tmp/never.db"], .restore),
        ]
        for (arguments, operation) in cases {
            let outcome = try await ToolTests.run(arguments)
            #expect(outcome.status == 1)
            #expect(outcome.stdout == "")
            #expect(
                outcome.stderr
                    == "eventlog-maint: \(operation.rawValue) works on SQLite files only, and \(shown) is PostgreSQL: "
                    + operation.postgresAlternative + "\n")
            #expect(!outcome.stderr.contains("s3cret"))
        }
    }

    @Test("restore refuses a PostgreSQL URL as the backup or the target")
    func restoreLibrary() throws {
        let error = #expect(throws: MaintenanceError.self) {
            try LogMaintenance.restore(from: "/tmp/never.db", to: "postgresql://u:pw@db/x")
        }
        #expect(
            error?.message
                == "restore works on SQLite files only, and postgresql://u:***@db/x is PostgreSQL: "
                + "restore PostgreSQL with pg_restore (from pg_dump) or pg_basebackup's copy, "
                + "or load an export into an empty database with 'eventlog-maint import'")
    }
}
