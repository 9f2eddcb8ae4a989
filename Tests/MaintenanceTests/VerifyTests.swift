import Foundation
import Testing

@testable import EventLog

@Suite("Verify")
struct VerifyTests {
    /// A log with ten events on two topics, two of them with idempotency keys.
    private func makeHealthyLog(_ path: String) async throws {
        try await makeLog(
            path,
            (1...10).map {
                event($0 % 2 == 0 ? "orders/1" : "users/1", $0, idempotencyKey: $0 <= 2 ? "key-\($0)" : nil)
            }
        )
    }

    private func verify(_ path: String, _ options: VerifyOptions = VerifyOptions()) async throws -> VerifyReport {
        try await maintain(path, readOnly: true) { try $0.verify(options) }
    }

    @Test("a healthy log verifies with no problem")
    func healthy() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            let report = try await verify(path)
            #expect(report.problems == [])
            #expect(report.eventCount == 10)
            #expect(report.head == 10)
            #expect(report.earliest == 1)
            #expect(
                report.checks == [
                    "integrity", "schema", "meta", "sequence", "ids", "latest", "removed", "voids", "time", "indexes",
                    "idempotency", "topics", "journal",
                ]
            )
        }
    }

    @Test("a row inserted with an id above sqlite_sequence is an error that names the ids")
    func idAboveSequence() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            try sqlite3(
                path,
                """
                INSERT INTO events (id, topic, type, data, time) VALUES (1000, 'orders/1', 'message', 'x', 0);
                UPDATE sqlite_sequence SET seq = 10 WHERE name = 'events';
                """
            )
            let report = try await verify(path)
            #expect(
                report.errors.map(\.description) == [
                    "error [sequence] 1 events have ids above the head 10 (sqlite_sequence.seq for events); "
                        + "largest id 1000"
                ]
            )
        }
    }

    @Test("the tables of order state out of step with the events are errors")
    func orderStateOutOfStep() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            #expect(
                try sqlite3(path, "SELECT topic, key, id FROM latest ORDER BY id;")
                    == "users/1|users/1|9\norders/1|orders/1|10\n")
            try sqlite3(
                path,
                """
                UPDATE latest SET id = 8 WHERE topic = 'orders/1';
                INSERT INTO removed (selector, through) VALUES ('orders/1', 6), ('*', 6);
                INSERT INTO voids (after, through) VALUES (3, 12);
                """
            )
            #expect(
                try await verify(path).errors.map(\.description) == [
                    "error [latest] 1 (topic, key) rows of the latest table do not name the newest event of their key",
                    "error [removed] 1 removal watermarks of prefixes are below a topic's: orders/* below orders/1 (6)",
                    "error [voids] the void 4...12 reaches above the head 10",
                    "error [voids] 7 events have ids inside the void 4...12",
                ]
            )
        }
    }

    @Test("missing or malformed meta rows are errors that name the row")
    func brokenMeta() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            try sqlite3(
                path,
                """
                DELETE FROM meta WHERE name = 'token_key';
                UPDATE meta SET value = 'not-hex' WHERE name = 'epoch';
                UPDATE meta SET value = '7' WHERE name = 'schema_version';
                """
            )
            #expect(
                try await verify(path).errors.map(\.description) == [
                    "error [meta] meta epoch \"not-hex\" is not 32 lowercase hex digits",
                    "error [meta] meta has no token_key row",
                    "error [meta] meta schema_version \"7\" does not match PRAGMA user_version 2",
                ]
            )
        }
    }

    @Test("a commit time running backwards beyond the tolerance is a warning naming both ids")
    func timeRunsBackwards() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            try sqlite3(
                path,
                """
                UPDATE events SET time = 1700000000000 + id * 1000;
                UPDATE events SET time = 1700000000000 WHERE id = 7;
                """
            )
            let report = try await verify(path)
            #expect(report.isOK)
            #expect(
                report.warnings.map(\.description) == [
                    "warning [time] 1 events have a commit time more than 1000 ms before an earlier id's: id 7 at "
                        + "2023-11-14T22:13:20.000Z after id 6 at 2023-11-14T22:13:26.000Z (6000 ms back)"
                ]
            )
            var tolerant = VerifyOptions()
            tolerant.timeTolerance = .seconds(10)
            #expect(try await verify(path, tolerant).problems == [])
        }
    }

    @Test("a topic that breaks the grammar, and a duplicated idempotency key, are errors")
    func badTopicAndDuplicateKey() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeHealthyLog(path)
            try sqlite3(
                path,
                """
                UPDATE events SET topic = 'bad topic' WHERE id = 5;
                DROP INDEX events_topic_idempotency_key;
                UPDATE events SET idempotency_key = 'key-2' WHERE id = 4;
                """
            )
            #expect(
                try await verify(path).errors.map(\.description) == [
                    "error [schema] the index events_topic_idempotency_key is missing",
                    // An UPDATE of a topic goes around the triggers that keep `latest`.
                    "error [latest] 1 (topic, key) rows of the latest table do not name the newest event of their key",
                    "error [idempotency] idempotency keys used more than once on a topic: orders/1 \"key-2\" ×2",
                    "error [topics] 1 topics break the topic grammar: \"bad topic\"",
                ]
            )
        }
    }

    @Test("a file that is not an event log is refused with not_a_log")
    func notALog() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("other.db")
            try sqlite3(path, "CREATE TABLE t (x);")
            let error = await #expect(throws: MaintenanceError.self) {
                try await maintain(path, readOnly: true) { _ = try $0.verify() }
            }
            #expect(error?.code == .notALog)
            #expect(error?.message == "\(path) is not an event log (schema version 0)")
            let missing = await #expect(throws: MaintenanceError.self) {
                try await maintain(directory.path("missing.db")) { _ = try $0.stats() }
            }
            #expect(missing?.code == .notFound)
        }
    }
}
