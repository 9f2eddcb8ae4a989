import Foundation
import Testing

@testable import EventLog

@Suite("Checkpoint, vacuum and stats")
struct StorageTests {
    /// A log with 20,000 events of ~500 bytes, of which retention then removes all but 100.
    private func makeLogWithFreePages(_ path: String) async throws {
        let filler = String(repeating: "x", count: 500)
        let log = try await EventLog.open(path: path)
        for batch in 0..<2 {
            _ = try await log.append(
                batch: (0..<10_000).map { NewEvent(topic: "t/\($0 % 10)", data: .text("\(batch) \($0) \(filler)")) }
            )
        }
        await log.close()
        _ = try await maintain(path) { try $0.retain(RetentionPolicy(maxEvents: 100)) }
    }

    @Test("checkpoint truncate empties the WAL while the log is open")
    func checkpoint() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let log = try await EventLog.open(path: path)
            _ = try await log.append(batch: (0..<1000).map { event("t/1", $0) })
            let report = try await maintain(path) { try $0.checkpoint(.truncate) }
            #expect(!report.busy)
            #expect(report.walBytesBefore > 0)
            #expect(report.walBytesAfter == 0)
            #expect(report.checkpointedFrames == report.walFrames)
            // The server goes on appending after it.
            #expect(try await log.append(event("t/1", 1000)).event.id == 1001)
            await log.close()
        }
    }

    @Test("vacuum in place returns free pages to the file system and keeps ids and epoch")
    func vacuumInPlace() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLogWithFreePages(path)
            let before = try await maintain(path, readOnly: true) { try $0.stats() }
            #expect(before.freePages > 1000)
            let report = try await maintain(path) { try $0.vacuum() }
            #expect(report.freePagesBefore == before.freePages)
            #expect(report.freePagesAfter == 0)
            #expect(report.bytesAfter < report.bytesBefore / 10)
            let after = try await maintain(path, readOnly: true) { try $0.stats() }
            #expect(after.epoch == before.epoch)
            #expect(after.ids == 19_901...20_000)
            #expect(after.head == 20_000)
            #expect(after.earliest == 19_901)
        }
    }

    @Test("vacuum into writes a compacted copy that verifies; the target must be new")
    func vacuumInto() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let target = directory.path("compact.db")
            try await makeLogWithFreePages(path)
            let report = try await maintain(path, readOnly: true) { try $0.vacuum(into: target) }
            #expect(report.bytesAfter < report.bytesBefore / 10)
            let copy = try await maintain(target, readOnly: true) { try $0.stats() }
            let original = try await maintain(path, readOnly: true) { try $0.stats() }
            #expect(copy.epoch == original.epoch)
            #expect(copy.eventCount == 100)
            #expect(copy.head == 20_000)
            #expect(copy.freePages == 0)
            #expect(try await maintain(target, readOnly: true) { try $0.verify() }.errors == [])
            let error = await #expect(throws: MaintenanceError.self) {
                try await maintain(path, readOnly: true) { _ = try $0.vacuum(into: target) }
            }
            #expect(error?.code == .targetExists)
        }
    }

    @Test("incremental vacuum needs auto_vacuum=incremental; once enabled it frees pages in small steps")
    func incrementalVacuum() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLogWithFreePages(path)
            let refused = await #expect(throws: MaintenanceError.self) {
                try await maintain(path) { _ = try $0.incrementalVacuum() }
            }
            #expect(refused?.code == .notSupported)
            _ = try await maintain(path) { try $0.enableIncrementalVacuum() }
            #expect(try await maintain(path, readOnly: true) { try $0.stats() }.autoVacuum == "incremental")
            // New history, then retention frees its pages again.
            let log = try await EventLog.open(path: path)
            _ = try await log.append(
                batch: (0..<5000).map {
                    NewEvent(topic: "t/1", data: .text(String(repeating: "y", count: 500) + "\($0)"))
                })
            await log.close()
            _ = try await maintain(path) { try $0.retain(RetentionPolicy(maxEvents: 10)) }
            let partial = try await maintain(path) { try $0.incrementalVacuum(maxPages: 100) }
            #expect(partial.freePagesBefore > 300)
            #expect(partial.freePagesAfter == partial.freePagesBefore - 100)
            let report = try await maintain(path) { try $0.incrementalVacuum() }
            #expect(report.freePagesAfter == 0)
            #expect(report.bytesAfter < report.bytesBefore)
            #expect(try await maintain(path, readOnly: true) { try $0.verify() }.problems == [])
        }
    }

    @Test("stats: counts, bounds, topics, sizes")
    func stats() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let (epoch, _) = try await makeLog(path, (1...6).map { event($0 <= 4 ? "a/1" : "b/1", $0) })
            _ = try await maintain(path) { try $0.retain(RetentionPolicy(maxEvents: 4)) }
            let stats = try await maintain(path, readOnly: true) { try $0.stats(perTopic: true) }
            #expect(stats.epoch == epoch)
            #expect(stats.schemaVersion == 2)
            #expect(stats.eventCount == 4)
            #expect(stats.earliest == 3)
            #expect(stats.head == 6)
            #expect(stats.ids == 3...6)
            #expect(stats.topicCount == 2)
            #expect(
                stats.topics == [
                    TopicSummary(topic: "a/1", count: 2, lastID: 4), TopicSummary(topic: "b/1", count: 2, lastID: 6),
                ])
            #expect(stats.fileBytes == stats.pageCount * stats.pageSize)
        }
    }
}
