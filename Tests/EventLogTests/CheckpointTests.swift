import Foundation
import Testing

@testable import EventLog

@Suite("WAL checkpoints under steady appends")
struct CheckpointTests {
    @Test("appends that never pause: the WAL starts over and stays near the writer's finishing threshold")
    func walStaysBounded() async throws {
        try await withTemporaryLog { log, directory in
            let walPath = directory.path("events.db-wal")
            let appenders = 8
            let perAppender = 4000
            let payload = String(repeating: "x", count: 200)
            // The largest WAL seen between appends, sampled by every appender.
            let largest = Locked<Int64>(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for appender in 0..<appenders {
                    group.addTask {
                        for index in 0..<perAppender {
                            _ = try await log.append(NewEvent(topic: "wal/\(appender)", data: .text(payload)))
                            if index % 100 == 0 {
                                let size = Self.fileSize(walPath)
                                largest.withLock { $0 = max($0, size) }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await log.read(after: 0, selectors: SelectorSet([.all]), limit: 1).head == 32_000)
            // 4,000 frames of 4,096 + 24 bytes is 16.5 MB; one more group commit's frames may come on top.
            // Without the writer's finishing checkpoint this run grew the WAL to 235 MB.
            let bound: Int64 = 20_000_000
            #expect(largest.withLock { $0 } < bound)
            #expect(Self.fileSize(walPath) < bound)
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return (attributes?[.size] as? NSNumber)?.int64Value ?? 0
    }
}
