import Foundation
import Testing

@testable import EventLog

@Suite("Backup and restore")
struct BackupTests {
    @Test("a backup taken while appending is one snapshot: it verifies, has the same epoch, opens as the log")
    func backupWhileAppending() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let backupPath = directory.path("backup.db")
            let log = try await EventLog.open(path: path)
            // Enough pages that the copy takes many steps while appends land between them.
            for batch in 0..<5 {
                _ = try await log.append(batch: (0..<10_000).map { event("bulk/\($0 % 100)", batch * 10_000 + $0) })
            }
            let stop = Locked(false)
            let appender = Task {
                var count = 0
                while !stop.withLock({ $0 }) {
                    _ = try await log.append(event("live/1", count))
                    count += 1
                }
                return count
            }
            // Live appends land before the copy starts and after its snapshot, whatever the machine's speed.
            try await waitUntil { log.head > 50_000 }
            let report = try await maintain(path, readOnly: true) { try $0.backup(to: backupPath) }
            try await waitUntil { log.head > report.head }
            stop.withLock { $0 = true }
            let liveCount = try await appender.value
            let epoch = log.epoch
            let head = log.head
            await log.close()
            print("backup: \(report.pages) pages while \(liveCount) events were appended")

            #expect(report.epoch == epoch)
            #expect(report.head > 50_000)
            #expect(report.head < head)
            #expect(report.eventCount == report.head)
            // The copy holds exactly the log's events up to its head: a snapshot, nothing torn.
            #expect(try storedIDs(backupPath) == Array(1...report.head))
            #expect(!FileManager.default.fileExists(atPath: backupPath + ".partial"))
            let verify = try await maintain(backupPath, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
            let reopened = try await EventLog.open(path: backupPath)
            #expect(reopened.epoch == epoch)
            #expect(reopened.head == report.head)
            await reopened.close()
        }
    }

    @Test("backup refuses to overwrite a file unless asked")
    func backupRefusesOverwrite() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, [event("t/1", 1)])
            let target = directory.path("backup.db")
            try Data("keep".utf8).write(to: URL(fileURLWithPath: target))
            let error = await #expect(throws: MaintenanceError.self) {
                try await maintain(path, readOnly: true) { _ = try $0.backup(to: target) }
            }
            #expect(error?.code == .targetExists)
            #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("keep".utf8))
            let report = try await maintain(path, readOnly: true) { try $0.backup(to: target, overwrite: true) }
            #expect(report.eventCount == 1)
        }
    }

    @Test("restore puts the backup in place with a new epoch, the same events and the same token key")
    func restoreGetsANewEpoch() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let backupPath = directory.path("backup.db")
            let (epoch, _) = try await makeLog(path, (1...5).map { event("t/1", $0) })
            _ = try await maintain(path, readOnly: true) { try $0.backup(to: backupPath) }
            // The live log moves on after the backup.
            let log = try await EventLog.open(path: path)
            let tokenKey = log.tokenKey
            _ = try await log.append(batch: (6...9).map { event("t/1", $0) })
            await log.close()

            let refused = await #expect(throws: MaintenanceError.self) {
                try await onThread { try LogMaintenance.restore(from: backupPath, to: path) }
            }
            #expect(refused?.code == .targetExists)
            let report = try await onThread { try LogMaintenance.restore(from: backupPath, to: path, overwrite: true) }
            #expect(report.epoch != epoch)
            // The sequence moves past the ids the replaced log issued (6...9): they are a void, never handed out
            // again, and a client that saw one gets `reset`.
            #expect(report.head == 9)
            let restored = try await EventLog.open(path: path)
            #expect(restored.epoch == report.epoch)
            #expect(restored.tokenKey == tokenKey)
            #expect(restored.head == 9)
            #expect(try await restored.read(after: 0, selectors: .all, limit: 100).events.map(\.id) == [1, 2, 3, 4, 5])
            #expect((4...10).map { restored.isVoid($0) } == [false, false, true, true, true, true, false])
            #expect(try await restored.append(event("t/1", 10)).event.id == 10)
            await restored.close()
            let verify = try await maintain(path, readOnly: true) { try $0.verify() }
            #expect(verify.problems == [])
        }
    }
}
