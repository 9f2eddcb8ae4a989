import EventLog
import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing

@Suite(
    "One eventlogd per database: the lock, other processes' writes, what a start and a stop leave on disk",
    .serialized, .timeLimit(.minutes(3)))
struct ServingTests {
    @Test("a second eventlogd on the same database exits 1 with one line naming the first one's pid")
    func secondServerRefused() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = try ServerProcess(databasePath: directory.databasePath)
        defer { first.kill9() }
        let second = try Exited.run(
            ServerProcess.executableURL, ["--host", "127.0.0.1", "--port", "0", "--db", directory.databasePath])
        #expect(second.status == 1)
        #expect(
            second.stderr == "eventlogd: another eventlogd (pid \(first.pid)) is serving \(directory.databasePath)\n")
        // The first one serves on, untouched.
        let published = try await TestHTTPClient(port: first.port).publish(topic: "still/serving")
        #expect(published.status == 201)
        #expect(published.json["id"] as? Int == 1)
        // Once it stopped, the database is free again.
        first.signal(SIGTERM)
        #expect(await first.waitForExit() == 0)
        let third = try ServerProcess(databasePath: directory.databasePath)
        defer { third.kill9() }
        let health = try await TestHTTPClient(port: third.port).request(.GET, "/healthz")
        #expect(health.json["head"] as? Int == 1)
    }

    @Test("a server killed by SIGKILL leaves a lock file that does not block the next start")
    func killedServerDoesNotBlock() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let killed = try ServerProcess(databasePath: directory.databasePath)
        killed.kill9()
        let lockPath = ServerLock.lockPath(forDatabase: directory.databasePath)
        #expect(try String(contentsOfFile: lockPath, encoding: .utf8) == "\(killed.pid)\n")
        let next = try ServerProcess(databasePath: directory.databasePath)
        defer { next.kill9() }
        #expect(try String(contentsOfFile: lockPath, encoding: .utf8) == "\(next.pid)\n")
    }

    @Test("a clean shutdown leaves the database as one file, without -wal, -shm or lock file")
    func shutdownLeavesOneFile() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        for index in 1...20 {
            let response = try await client.publish(topic: "orders/\(index)", data: "\(index)")
            #expect(response.status == 201)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.url.path).sorted()
        #expect(files == ["eventlog.db", "eventlog.db-shm", "eventlog.db-wal", "eventlog.db.lock"])
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path) == ["eventlog.db"])
        // The one file holds everything: copy it alone and read the copy.
        let copy = directory.url.appendingPathComponent("copy.db").path
        try FileManager.default.copyItem(atPath: directory.databasePath, toPath: copy)
        var options = EventLog.Options()
        options.readOnly = true
        let log = try await EventLog.open(path: copy, options: options)
        let page = try await log.read(after: 0, selectors: .all, limit: 100)
        await log.close()
        #expect(page.events.map(\.id) == Array(1...20))
        #expect(page.events.map { $0.data?.text } == (1...20).map { "\($0)" })
    }

    @Test("a start that cannot bind leaves no new database or directory behind, and keeps an existing one")
    func failedStartLeavesNothing() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(holder.localAddress?.port)
        let fresh = directory.url.appendingPathComponent("new/nested/eventlog.db").path
        let refused = try Exited.run(
            ServerProcess.executableURL, ["--host", "127.0.0.1", "--port", "\(port)", "--db", fresh])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("cannot bind"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path) == [])

        // An existing database is the user's: a failed start leaves it, and its events, alone.
        let existing = try ServerProcess(databasePath: directory.databasePath)
        let response = try await TestHTTPClient(port: existing.port).publish(topic: "kept", data: "\"yes\"")
        #expect(response.status == 201)
        existing.signal(SIGTERM)
        #expect(await existing.waitForExit() == 0)
        let again = try Exited.run(
            ServerProcess.executableURL,
            ["--host", "127.0.0.1", "--port", "\(port)", "--db", directory.databasePath])
        #expect(again.status == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path) == ["eventlog.db"])
        try await holder.close()
        let restarted = try ServerProcess(databasePath: directory.databasePath)
        defer { restarted.kill9() }
        let health = try await TestHTTPClient(port: restarted.port).request(.GET, "/healthz")
        #expect(health.json["head"] as? Int == 1)
    }

    @Test("events that eventlog publish --db writes beside the server reach a live SSE subscriber within 100 ms")
    func foreignWritesReachSubscribers() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath, arguments: ["--keepalive", "600"])
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        let publishes = 7
        let cli = ServerProcess.executableURL.deletingLastPathComponent().appendingPathComponent("eventlog")
        let latencies = try await client.sse("/v1/events?topic=orders/*&envelope=1") { reader in
            while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {}
            // Nothing else publishes through the server: only its watch on the file can deliver these.
            let publisher = Task {
                var statuses: [Int32] = []
                for index in 1...publishes {
                    let published = try await Exited.launch(
                        cli,
                        [
                            "publish", "--db", directory.databasePath, "--topic", "orders/\(index)", "--type",
                            "paid", "--data", "{\"n\":\(index)}",
                        ])
                    statuses.append(published.status)
                }
                return statuses
            }
            var latencies: [Double] = []
            for index in 1...publishes {
                let message = try #require(try await reader.nextMessage())
                let arrived = Date()
                let envelope = jsonObject(message.dataText)
                #expect(message.idValue == Int64(index))
                #expect(message.event == "paid")
                #expect(envelope["topic"] as? String == "orders/\(index)")
                #expect((envelope["data"] as? [String: Any])?["n"] as? Int == index)
                // `time` is when the CLI committed (milliseconds, same clock).
                let committed = try #require(Self.parseTime(envelope["time"] as? String))
                latencies.append(arrived.timeIntervalSince(committed) * 1000)
            }
            #expect(try await publisher.value == Array(repeating: 0, count: publishes))
            return latencies
        }
        // The median, so one scheduling hiccup on a busy machine does not decide; each value is printed.
        let median = latencies.sorted()[latencies.count / 2]
        print("foreign write → SSE latencies (ms): \(latencies.map { Int($0.rounded()) }), median \(Int(median))")
        #expect(median < 100)
    }

    private static func parseTime(_ text: String?) -> Date? {
        guard let text else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}

/// A process run to its end: exit status and what it wrote to stderr.
struct Exited {
    let status: Int32
    let stderr: String

    /// Runs `executable` with `arguments` and waits for it (at most `timeout` seconds, then SIGKILL).
    static func run(_ executable: URL, _ arguments: [String], timeout: TimeInterval = 60) throws -> Exited {
        let process = Subprocess()
        process.executableURL = executable
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        let text = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return Exited(status: process.terminationStatus, stderr: String(decoding: text, as: UTF8.self))
    }

    /// ``run(_:_:timeout:)`` on a thread of its own, so waiting for the process blocks no task.
    static func launch(_ executable: URL, _ arguments: [String], timeout: TimeInterval = 60) async throws -> Exited {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try run(executable, arguments, timeout: timeout) }) }.start()
        }
    }
}
