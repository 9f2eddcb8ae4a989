import Foundation
import TestSupport
import Testing

@testable import EventLog

/// The built `eventlog-maint`, run as a user would run it.
@Suite("eventlog-maint")
struct ToolTests {
    /// The executable beside the test bundle (the same build directory).
    static var executableURL: URL {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("eventlog-maint")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/eventlog-maint")
    }

    struct Outcome {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs the tool with `arguments` and waits for it.
    static func run(_ arguments: [String]) async throws -> Outcome {
        try await onThread {
            let process = Subprocess()
            process.executableURL = executableURL
            process.arguments = arguments
            let output = Pipe()
            let errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            process.standardInput = FileHandle.nullDevice
            try process.run()
            // Read both pipes to the end before waiting, so a full pipe cannot block the child.
            let errorData = Locked(Data())
            let drained = DispatchSemaphore(value: 0)
            Thread {
                let data = errors.fileHandleForReading.readDataToEndOfFile()
                errorData.withLock { $0 = data }
                drained.signal()
            }.start()
            let outputData = output.fileHandleForReading.readDataToEndOfFile()
            drained.wait()
            process.waitUntilExit()
            return Outcome(
                status: process.terminationStatus,
                stdout: String(decoding: outputData, as: UTF8.self),
                stderr: String(decoding: errorData.withLock { $0 }, as: UTF8.self)
            )
        }
    }

    @Test("a malformed duration is a usage error: exit 2 with a clear message")
    func badDuration() async throws {
        let outcome = try await Self.run(["retain", "--db", "/nonexistent.db", "--max-age", "3x"])
        #expect(outcome.status == 2)
        #expect(
            outcome.stderr.hasPrefix(
                "Error: The value '3x' is invalid for '--max-age <max-age>': "
                    + "invalid duration \"3x\": use whole numbers "
                    + "with units ms, s, m, h, d, w, e.g. 30d, 1h30m or 500ms\n"
            )
        )
        let size = try await Self.run(["retain", "--db", "/nonexistent.db", "--max-bytes", "10XB"])
        #expect(size.status == 2)
        #expect(size.stderr.contains("invalid size \"10XB\""))
    }

    @Test("a missing limit or mode is a usage error (exit 2); --help exits 0")
    func validation() async throws {
        let retain = try await Self.run(["retain", "--db", "x.db"])
        #expect(retain.status == 2)
        #expect(retain.stderr.hasPrefix("Error: give at least one of --max-age, --max-events, --max-bytes\n"))
        let compact = try await Self.run(["compact", "--db", "x.db"])
        #expect(compact.status == 2)
        #expect(compact.stderr.hasPrefix("Error: compact needs --keep-latest (the one compaction mode)\n"))
        let noDB = try await Self.run(["stats"])
        #expect(noDB.status == 2)
        let help = try await Self.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("SUBCOMMANDS:"))
        #expect(help.stdout.contains("retain"))
        #expect(help.stdout.contains("import"))
    }

    @Test("a runtime error is one line on stderr and exit 1")
    func runtimeError() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("missing.db")
            let outcome = try await Self.run(["stats", "--db", path])
            #expect(outcome.status == 1)
            #expect(outcome.stderr == "eventlog-maint: no such file: \(path)\n")
            #expect(outcome.stdout == "")
        }
    }

    @Test("retain --dry-run, then retain: summaries, plain progress lines when stderr is not a terminal")
    func retain() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...10).map { event("t/1", $0) })
            // One batch however slow the machine: the default 10 ms batch time can end a batch after one event.
            let dry = try await Self.run([
                "retain", "--db", path, "--max-events", "3", "--dry-run", "--batch-time", "60s",
            ])
            #expect(dry.status == 0)
            #expect(
                dry.stdout == """
                    retention (dry run): would remove 7 events, ~364 B (ids 1...7)
                    earliest: would move 1 -> 8 (head 10)

                    """
            )
            #expect(dry.stderr == "examining: 7/7 ids (100%), would remove 7 events\n")
            let real = try await Self.run([
                "retain", "--db", path, "--max-events", "3", "--quiet", "--batch-time", "60s",
            ])
            #expect(real.status == 0)
            #expect(
                real.stdout == """
                    retention: removed 7 events, ~364 B (ids 1...7) in 1 transactions
                    earliest: 1 -> 8 (head 10)

                    """
            )
            #expect(real.stderr == "")
            #expect(try storedIDs(path) == [8, 9, 10])
        }
    }

    @Test("compact reports what it examined and what it removed; --min-age sparing everything says so")
    func compactReport() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            // orders/1: 3 events of one key, orders/2: 2, users/7: 2 (not selected). All a moment old.
            try await makeLog(
                path,
                [
                    event("orders/1", 1), event("orders/1", 2), event("orders/1", 3), event("orders/2", 4),
                    event("orders/2", 5), event("users/7", 6), event("users/7", 7),
                ])
            let spared = try await Self.run([
                "compact", "--db", path, "--keep-latest", "--topic", "orders/*", "--min-age", "1h", "--batch-time",
                "60s",
            ])
            #expect(spared.status == 0)
            #expect(
                spared.stdout == """
                    compaction: examined 5 events with 2 keys; removed 0 events (0 tombstones), ~0 B in 1 transactions
                    kept 3 superseded events younger than --min-age 1h
                    earliest: unchanged at 1 (head 7)

                    """
            )
            #expect(spared.stderr == "mapping keys: 7/7 ids (100%)\nexamining: 7/7 ids (100%), removed 0 events\n")
            #expect(try storedIDs(path) == [1, 2, 3, 4, 5, 6, 7])
            let dry = try await Self.run([
                "compact", "--db", path, "--keep-latest", "--topic", "orders/*", "--dry-run", "--batch-time", "60s",
            ])
            #expect(dry.status == 0)
            #expect(
                dry.stdout == """
                    compaction (dry run): examined 5 events with 2 keys; would remove 3 events (0 tombstones), ~186 B
                    earliest: unchanged at 1 (head 7)

                    """
            )
            #expect(dry.stderr == "mapping keys: 7/7 ids (100%)\nexamining: 7/7 ids (100%), would remove 3 events\n")
            let real = try await Self.run([
                "compact", "--db", path, "--keep-latest", "--topic", "orders/*", "--batch-time", "60s",
            ])
            #expect(real.status == 0)
            #expect(
                real.stdout == """
                    compaction: examined 5 events with 2 keys; removed 3 events (0 tombstones), ~186 B in 1 transactions
                    earliest: 1 -> 3 (head 7)

                    """
            )
            #expect(real.stderr == "mapping keys: 7/7 ids (100%)\nexamining: 7/7 ids (100%), removed 3 events\n")
            #expect(try storedIDs(path) == [3, 5, 6, 7])
        }
    }

    @Test("verify exits 1 on a corrupted file and prints what is wrong; 0 on a healthy one")
    func verify() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            try await makeLog(path, (1...3).map { event("t/1", $0) })
            let healthy = try await Self.run(["verify", "--db", path, "--quiet"])
            #expect(healthy.status == 0)
            #expect(healthy.stdout.hasPrefix("verify: ok (3 events, head 3, earliest 1, epoch "))
            try sqlite3(path, "UPDATE latest SET id = 1 WHERE topic = 't/1';")
            let broken = try await Self.run(["verify", "--db", path, "--quiet"])
            #expect(broken.status == 1)
            #expect(
                broken.stdout.hasPrefix(
                    """
                    error [latest] 1 (topic, key) rows of the latest table do not name the newest event of their key
                    verify: 1 errors, 0 warnings (3 events, head 3, earliest 1, epoch
                    """
                )
            )
        }
    }

    @Test("backup, restore and stats through the tool")
    func backupAndRestore() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let backup = directory.path("backup.db")
            let restored = directory.path("restored.db")
            let (epoch, _) = try await makeLog(path, (1...3).map { event("t/1", $0) })
            let made = try await Self.run(["backup", "--db", path, "--to", backup, "--quiet"])
            #expect(made.status == 0)
            #expect(made.stdout.hasSuffix("3 events, head 3, epoch \(epoch)\n"))
            let again = try await Self.run(["backup", "--db", path, "--to", backup, "--quiet"])
            #expect(again.status == 1)
            #expect(again.stderr == "eventlog-maint: \(backup) exists; pass overwrite (--force) to replace it\n")
            let restore = try await Self.run(["restore", "--db", restored, "--from", backup, "--quiet"])
            #expect(restore.status == 0)
            #expect(restore.stdout.hasPrefix("restore: \(restored), 3 events, head 3, new epoch "))
            #expect(!restore.stdout.contains(epoch))
            let stats = try await Self.run(["stats", "--db", restored, "--json"])
            #expect(stats.status == 0)
            #expect(stats.stdout.contains("\"events\":3,\"earliest\":1,\"head\":3,\"topics\":1"))
        }
    }
}
