import Foundation
import Testing

@testable import EventLog

/// The store side of order state (issue 13): the `latest` table and its snapshot pages, the migration of a
/// version-1 log, removal watermarks through export and import, conditional appends in a batch, and `since`.
@Suite("Order state in the store: snapshot pages, migration, watermarks, conditions")
struct OrderStateStoreTests {
    /// Every page of the snapshot after 0, `limit` at a time, as ids.
    static func snapshot(_ log: EventLog, _ selectors: [String], limit: Int) async throws -> [Int64] {
        var ids: [Int64] = []
        var after: Int64 = 0
        while true {
            let page = try await log.readSnapshot(
                after: after, selectors: try SelectorSet(parsing: selectors), limit: limit)
            ids += page.events.map(\.id)
            after = page.next
            if page.events.count < limit { return ids }
        }
    }

    @Test(
        "the snapshot is the newest event per (topic, key) in id order: keys per topic, no key = the topic, tombstones")
    func snapshotPages() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let log = try await EventLog.open(path: path)
            _ = try await log.append(batch: [
                event("orders/1", key: "a", 1),  // 1: superseded by 6
                event("orders/1", key: "b", 2),  // 2
                event("orders/2", key: "a", 3),  // 3: the same key on another topic is another key
                event("orders/1", 4),  // 4: no key, superseded by 7 (key spelled like the topic)
                event("users/9", key: "a", 5),  // 5: outside orders/*
                event("orders/1", key: "a", 6),  // 6
                event("orders/1", key: "orders/1", 7),  // 7
                NewEvent(topic: "orders/2/items", key: "x", data: nil),  // 8: a tombstone is sent
            ])
            for limit in [1, 2, 3, 100] {
                #expect(try await Self.snapshot(log, ["orders/*"], limit: limit) == [2, 3, 6, 7, 8], "limit \(limit)")
            }
            #expect(try await Self.snapshot(log, ["*"], limit: 2) == [2, 3, 5, 6, 7, 8])
            #expect(try await Self.snapshot(log, ["orders/1", "users/*"], limit: 2) == [2, 5, 6, 7])
            #expect(try await Self.snapshot(log, ["nothing/*"], limit: 2) == [])
            // A full page continues after its last event; a short one ends at the head.
            let page = try await log.readSnapshot(after: 2, selectors: .all, limit: 3)
            #expect(page.events.map(\.id) == [3, 5, 6] && page.next == 6)
            let last = try await log.readSnapshot(after: 6, selectors: .all, limit: 3)
            #expect(last.events.map(\.id) == [7, 8] && last.next == 8 && last.head == 8)
            // A newer event of a key moves it to the end; compaction that drops an expired tombstone's key
            // drops it from the snapshot too.
            _ = try await log.append(event("orders/1", key: "b", 9))
            #expect(try await Self.snapshot(log, ["orders/*"], limit: 2) == [3, 6, 7, 8, 9])
            _ = try await log.compact(CompactionPolicy(tombstoneRetention: .zero))
            #expect(try await Self.snapshot(log, ["orders/*"], limit: 2) == [3, 6, 7, 9])
            #expect(try storedIDs(path) == [3, 5, 6, 7, 9])
            await log.close()
            let verify = try await maintain(path, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
        }
    }

    @Test("a version-1 log migrates: latest is filled, its earliest becomes a floor watermark for every selector")
    func migrationFromVersionOne() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            // (A newline first: an argument that starts with "--" would be an option to the sqlite3 shell.)
            try sqlite3(
                path,
                "\n" + EmbeddedSchema.v0001 + """
                    INSERT INTO meta (name, value) VALUES ('epoch', '0123456789abcdef0123456789abcdef'),
                        ('token_key', '\(String(repeating: "ab", count: 32))'), ('schema_version', '1'),
                        ('earliest', '4');
                    INSERT INTO events (id, topic, type, key, data, time) VALUES
                        (4, 'orders/1', 'm', 'a', 'x', 1), (5, 'orders/1', 'm', 'a', 'y', 2), (6, 'users/1', 'm', NULL, 'z', 3);
                    PRAGMA user_version = 1;
                    """)
            let log = try await EventLog.open(path: path)
            #expect(try await log.removals(SelectorSet(parsing: ["users/*"])) == RemovalMark(through: 3, count: 0))
            #expect(try await Self.snapshot(log, ["*"], limit: 10) == [5, 6])
            #expect(log.earliest == 4)
            #expect(try await log.append(event("orders/1", key: "a", 7)).event.id == 7)
            await log.close()
            #expect(try sqlite3(path, "SELECT name FROM meta ORDER BY name;") == "epoch\nschema_version\ntoken_key\n")
            #expect(
                try sqlite3(path, "SELECT topic, key, id FROM latest ORDER BY id;")
                    == "users/1|users/1|6\norders/1|a|7\n")
            let verify = try await maintain(path, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
        }
    }

    @Test("export and import carry the removals (as a floor) and the voids; the imported log continues above both")
    func exportImportKeepsRemovalsAndVoids() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let backup = directory.path("backup.db")
            _ = try await makeLog(path, (1...4).map { event($0 % 2 == 0 ? "orders/1" : "logs/a", $0) })
            _ = try await maintain(path, readOnly: true) { try $0.backup(to: backup) }
            _ = try await makeLog(path, [event("orders/1", 5), event("orders/1", 6)])
            // The restore takes 5 and 6 away: a void; then retention of logs/* removes 1 and 3.
            _ = try LogMaintenance.restore(from: backup, to: path, overwrite: true)
            _ = try await maintain(path) {
                try $0.retain(RetentionPolicy(maxEvents: 0, selectors: try SelectorSet(parsing: ["logs/*"])))
            }
            let file = directory.path("export.jsonl")
            _ = try await maintain(path, readOnly: true) { maintenance in
                _ = FileManager.default.createFile(atPath: file, contents: nil)
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
                defer { try? handle.close() }
                return try maintenance.export(to: handle)
            }
            let header = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")[0]
            #expect(
                header.hasSuffix(
                    #""earliest":2,"head":6,"schemaVersion":2,"events":2,"removedThrough":3,"voids":[[4,6]]}"#))
            let imported = directory.path("imported.db")
            let report = try LogMaintenance.importEvents(
                from: try FileHandle(forReadingFrom: URL(fileURLWithPath: file)), into: imported)
            #expect(report.head == 6 && report.earliest == 2)
            let log = try await EventLog.open(path: imported)
            // The floor is every selector's: even orders/*, which lost nothing, is below 3 (the safe side).
            #expect(try await log.removals(SelectorSet(parsing: ["orders/*"])).through == 3)
            #expect((4...7).map { log.isVoid($0) } == [false, true, true, false])
            #expect(try await log.append(event("orders/1", 7)).event.id == 7)
            await log.close()
        }
    }

    @Test("conditional appends in a batch: each line sees the lines before it; one refused line refuses the batch")
    func conditionalBatch() async throws {
        try await withTemporaryDirectory { directory in
            let log = try await EventLog.open(path: directory.path("events.db"))
            func conditional(_ topic: String, _ n: Int, expecting id: Int64) -> NewEvent {
                var new = event(topic, n)
                new.expectedLastID = id
                return new
            }
            let first = try await log.append(batch: [
                conditional("o/1", 1, expecting: 0), conditional("o/1", 2, expecting: 1),
            ])
            #expect(first.map(\.event.id) == [1, 2])
            let refused = await #expect(throws: EventLogError.self) {
                try await log.append(batch: [conditional("o/2", 3, expecting: 0), conditional("o/1", 4, expecting: 1)])
            }
            #expect(refused?.code == .expectedLastIDMismatch && refused?.index == 1 && refused?.lastID == 2)
            #expect(try await log.read(after: 0, selectors: .all, limit: 10).events.map(\.id) == [1, 2])
            // Another topic's appends do not move o/1's last id.
            _ = try await log.append(event("o/3", 5))
            #expect(try await log.append(conditional("o/1", 6, expecting: 2)).event.id == 4)
            await log.close()
        }
    }

    @Test("since: the position before the first event committed at or after a time")
    func sincePosition() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            _ = try await makeLog(path, (1...6).map { event("t/1", $0) })
            try sqlite3(path, "UPDATE events SET time = id * 1000 WHERE 1; DELETE FROM events WHERE id = 3;")
            var options = EventLog.Options()
            options.readOnly = true
            let log = try await EventLog.open(path: path, options: options)
            for (time, position) in [
                (0, 0), (1000, 0), (1001, 1), (2500, 2), (3000, 2), (4000, 2), (4001, 4), (9999, 6),
            ] {
                #expect(try await log.position(since: Int64(time)) == Int64(position), "since \(time)")
            }
            #expect(try await log.position(rewinding: 2, selectors: .all) == 4)
            #expect(try await log.position(rewinding: 5, selectors: .all) == 0)
            #expect(try await log.position(rewinding: 9, selectors: .all) == 0)
            await log.close()
        }
    }
}
