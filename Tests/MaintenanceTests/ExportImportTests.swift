import Foundation
import Testing

@testable import EventLog

@Suite("Export and import")
struct ExportImportTests {
    /// Every column of every event, as text, for comparing two files.
    private func dump(_ path: String) throws -> [String] {
        try withConnection(path) { connection in
            try connection.rows(
                """
                SELECT id, topic, type, key, data, data_format, time, idempotency_key, request_hash
                FROM events ORDER BY id
                """
            ) { row in
                (0..<9).map { row.isNull(Int32($0)) ? "NULL" : row.text(Int32($0)) ?? "" }.joined(separator: "|")
            }
        }
    }

    @Test("export then import keeps every id, byte and idempotency key, head, earliest and token key; new epoch")
    func roundTrip() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let file = directory.path("export.jsonl")
            let imported = directory.path("imported.db")
            let log = try await makeVariedLog(path)
            let exported = try await export(path, to: file)
            await log.close()
            #expect(exported.events == 4)
            #expect(exported.head == 7)
            #expect(exported.earliest == 3)

            let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
            try #require(lines.count == 5)
            #expect(
                lines[0].hasPrefix("{\"eventlog\":\"export\",\"version\":1,\"epoch\":\"\(log.epoch)\",\"tokenKey\":\""))
            #expect(
                lines[0].hasSuffix(
                    "\"earliest\":3,\"head\":7,\"schemaVersion\":2,\"events\":4,\"removedThrough\":2,\"voids\":[]}"))
            #expect(
                lines[2].hasSuffix(
                    #","topic":"orders/1","type":"updated","key":"o-1","data":{"a":[1,2.5e3,true,null],"b":"x\"y"}}"#
                ))

            let report = try await importFile(file, into: imported)
            #expect(report.events == 4)
            #expect(report.ids == 3...6)
            #expect(report.head == 7)
            #expect(report.earliest == 3)
            #expect(report.epoch != log.epoch)
            #expect(!report.keptEpoch)
            #expect(try dump(imported) == (try dump(path)))
            #expect(try bounds(imported) == (3, 7))

            // The imported log goes on after the exported head, and recognises a retry of an imported request.
            let reopened = try await EventLog.open(path: imported)
            #expect(reopened.epoch == report.epoch)
            #expect(reopened.tokenKey == log.tokenKey)
            #expect(try await reopened.append(event("orders/9", 9)).event.id == 8)
            let retry = try await reopened.append(
                NewEvent(
                    topic: "orders/1", type: "created", key: "o-1", data: .text("line 1\nline \"2\"\t€ 😀"),
                    idempotencyKey: "req-1")
            )
            #expect(retry.replayed)
            #expect(retry.event.id == 3)
            await reopened.close()
            let verify = try await maintain(imported, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
        }
    }

    @Test("keepEpoch keeps the export's epoch as well")
    func keepEpoch() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let file = directory.path("export.jsonl")
            let imported = directory.path("imported.db")
            let log = try await makeVariedLog(path)
            _ = try await export(path, to: file)
            await log.close()
            let report = try await importFile(file, into: imported, keepEpoch: true)
            #expect(report.keptEpoch)
            #expect(report.epoch == log.epoch)
            let reopened = try await EventLog.open(path: imported)
            #expect(reopened.epoch == log.epoch)
            #expect(reopened.tokenKey == log.tokenKey)
            await reopened.close()
        }
    }

    @Test("import refuses a log that already has events, and leaves it untouched")
    func importNeedsAnEmptyLog() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let file = directory.path("export.jsonl")
            try await makeLog(path, [event("t/1", 1)])
            _ = try await export(path, to: file)
            let error = await #expect(throws: MaintenanceError.self) { try await importFile(file, into: path) }
            #expect(error?.code == .targetNotEmpty)
            #expect(try storedIDs(path) == [1])
        }
    }

    @Test("a malformed line fails the whole import with its line number, and nothing is stored")
    func malformedLine() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.path("bad.jsonl")
            let target = directory.path("imported.db")
            let lines = [
                #"{"id":1,"time":"2026-01-01T00:00:00.000Z","topic":"t/1","type":"message","data":"a"}"#,
                #"{"id":2,"time":"2026-01-01T00:00:00.000Z","topic":"t/1","type":"message","data":"b"}"#,
                #"{"id":2,"time":"2026-01-01T00:00:00.000Z","topic":"t/1","type":"message","data":"c"}"#,
            ]
            try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let error = await #expect(throws: MaintenanceError.self) { try await importFile(file, into: target) }
            #expect(error?.code == .invalidExport)
            #expect(error?.message == "line 3: id 2 is not above the previous id 2; ids must be unique and ascending")
            #expect(try storedIDs(target) == [])

            try "{\"id\":1,\"topic\":\"t/1\",\"data\":{\"a\":1,}}\n".write(
                toFile: file, atomically: true, encoding: .utf8)
            let syntax = await #expect(throws: MaintenanceError.self) { try await importFile(file, into: target) }
            #expect(syntax?.message == "line 1: expected a string key at byte 37")
        }
    }
}
