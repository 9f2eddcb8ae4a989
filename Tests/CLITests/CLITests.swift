import EventLog
import EventLogWire
import Foundation
import TestSupport
import Testing

/// Runs a built executable of this package and captures its output.
struct Run {
    let status: Int32
    let stdout: String
    let stderr: String

    static func executable(_ name: String) -> URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/\(name)")
    }

    /// Runs `name` with `arguments`, feeding `stdin`, and waits (at most `timeout` seconds). The tool sees
    /// `environment` and no other `EVENTLOG_*` variable, and help is 80 columns wide.
    static func command(
        _ name: String, _ arguments: [String], stdin: String? = nil, environment: [String: String] = [:],
        timeout: TimeInterval = 60
    )
        throws -> Run
    {
        let process = Subprocess()
        process.executableURL = executable(name)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("EVENTLOG_") }
            .merging(["COLUMNS": "80"].merging(environment) { $1 }) { $1 }
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        let outReader = PipeReader(out.fileHandleForReading)
        let errReader = PipeReader(err.fileHandleForReading)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus,
            stdout: String(decoding: outReader.wait(), as: UTF8.self),
            stderr: String(decoding: errReader.wait(), as: UTF8.self))
    }
}

/// A fixture log with fixed commit times, written with the sqlite3 CLI into a log the library created.
struct Fixture {
    let directory: URL
    var path: String { directory.appendingPathComponent("fixture.db").path }

    static func make() async throws -> Fixture {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "eventlog-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let fixture = Fixture(directory: directory)
        let log = try await EventLog.open(path: fixture.path)
        await log.close()
        // 2026-01-01T00:00:00Z = 1767225600000 ms; one event a minute.
        let rows = [
            "(1, 'orders/1', 'created', NULL, '{\"total\":10}', 1, 1767225600000)",
            "(2, 'users/7', 'joined', NULL, 'ann', 0, 1767225660000)",
            "(3, 'orders/2', 'created', 'o2', 'two\nlines', 0, 1767225720000)",
            "(4, 'orders/1', 'paid', NULL, NULL, 0, 1767225780000)",
        ]
        let sql =
            "INSERT INTO events (id, topic, type, key, data, data_format, time) VALUES "
            + rows.joined(separator: ", ") + ";"
        let process = Subprocess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [fixture.path, sql]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return fixture
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

@Suite("The eventlog command line, run as a built binary")
struct CLITests {
    @Test("replay prints the selected events as JSON lines, exactly")
    func replayJSONL() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let run = try Run.command("eventlog", ["replay", "--db", fixture.path, "--topic", "orders/*"])
        #expect(run.status == 0)
        #expect(
            run.stdout == """
                {"id":1,"topic":"orders/1","type":"created","time":"2026-01-01T00:00:00.000Z","data":{"total":10}}
                {"id":3,"topic":"orders/2","type":"created","key":"o2","time":"2026-01-01T00:02:00.000Z","data":"two\\nlines"}
                {"id":4,"topic":"orders/1","type":"paid","time":"2026-01-01T00:03:00.000Z","data":null}

                """)
        #expect(run.stderr == "")
    }

    @Test("replay --format sse prints the exact frames a subscriber gets; --format table aligns columns")
    func replaySSEAndTable() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let sse = try Run.command(
            "eventlog", ["replay", "--db", fixture.path, "--format", "sse", "--from", "2", "--until", "3"])
        #expect(sse.status == 0)
        #expect(sse.stdout == "id: 2\nevent: joined\ndata: ann\n\nid: 3\nevent: created\ndata: two\ndata: lines\n\n")
        let table = try Run.command("eventlog", ["replay", "--db", fixture.path, "--format", "table", "--after", "2"])
        #expect(table.status == 0)
        #expect(
            table.stdout == """
                 3  2026-01-01T00:02:00.000Z  orders/2  created  two\\nlines
                 4  2026-01-01T00:03:00.000Z  orders/1  paid     null

                """)
    }

    @Test("replay by time: --since and --until-time select by commit time; --limit stops early")
    func replayByTime() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let run = try Run.command(
            "eventlog",
            ["replay", "--db", fixture.path, "--since", "2026-01-01T00:01:00Z", "--until-time", "2026-01-01T00:02:30Z"])
        #expect(run.status == 0)
        #expect(run.stdout.split(separator: "\n").map { String($0.prefix(8)) } == ["{\"id\":2,", "{\"id\":3,"])
        let limited = try Run.command("eventlog", ["replay", "--db", fixture.path, "--limit", "1"])
        #expect(limited.stdout.split(separator: "\n").count == 1)
        // A relative age: every fixture event is older than an hour.
        let recent = try Run.command("eventlog", ["replay", "--db", fixture.path, "--since", "1h"])
        #expect(recent.status == 0)
        #expect(recent.stdout == "")
    }

    @Test("publish prints the new id, and replay shows the event")
    func publishThenReplay() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let publish = try Run.command(
            "eventlog",
            [
                "publish", "--db", fixture.path, "--topic", "orders/9", "--type", "created", "--data",
                "{\"b\":2,\"a\":1}",
            ])
        #expect(publish.status == 0)
        #expect(publish.stdout == "5\n")
        let batch = try Run.command(
            "eventlog", ["publish", "--db", fixture.path, "--ndjson"],
            stdin: "{\"topic\":\"b/1\",\"data\":\"x\"}\n{\"topic\":\"b/2\"}\n")
        #expect(batch.stdout == "6\n7\n")
        let replay = try Run.command("eventlog", ["replay", "--db", fixture.path, "--after", "4", "--format", "sse"])
        #expect(
            replay.stdout
                == "id: 5\nevent: created\ndata: {\"a\":1,\"b\":2}\n\nid: 6\nevent: message\ndata: x\n\nid: 7\nevent: message\ndata: \n\n"
        )
        let topics = try Run.command("eventlog", ["topics", "--db", fixture.path])
        #expect(topics.stdout.split(separator: "\n").first == "{\"topic\":\"b/1\",\"count\":1,\"lastId\":6}")
        let stats = try Run.command("eventlog", ["stats", "--db", fixture.path])
        #expect(stats.stdout.contains("events 7\ntopics 6\nearliest 1\nhead 7\n"))
    }

    @Test("tail prints the newest events, and tail -f prints an event published after it started")
    func tailFollow() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let tail = try Run.command("eventlog", ["tail", "--db", fixture.path, "-n", "2", "--format", "sse"])
        #expect(tail.stdout == "id: 3\nevent: created\ndata: two\ndata: lines\n\nid: 4\nevent: paid\ndata: \n\n")
        let earlier = try Run.command(
            "eventlog", ["publish", "--db", fixture.path, "--topic", "live/0", "--data", "41"])
        #expect(earlier.stdout == "5\n")
        let process = Subprocess()
        process.executableURL = Run.executable("eventlog")
        process.arguments = ["tail", "-f", "--db", fixture.path, "-n", "1", "--topic", "live/*"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // Once tail printed the newest live event it follows from that event's id, so what is published next is
        // new to it: no guess at how long it takes to start. The bound only keeps a broken test from hanging.
        var received = ""
        let deadline = Date().addingTimeInterval(60)
        while received.filter({ $0 == "\n" }).count < 1, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            received += String(decoding: out.fileHandleForReading.availableDataNonBlocking(), as: UTF8.self)
        }
        #expect(received.hasPrefix("{\"id\":5,\"topic\":\"live/0\",\"type\":\"message\",\"time\":\""))
        #expect(received.hasSuffix("\"data\":41}\n"))
        let publish = try Run.command(
            "eventlog", ["publish", "--db", fixture.path, "--topic", "live/1", "--data", "42"])
        #expect(publish.stdout == "6\n")
        while received.filter({ $0 == "\n" }).count < 2, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            received += String(decoding: out.fileHandleForReading.availableDataNonBlocking(), as: UTF8.self)
        }
        let lines = received.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 3)
        #expect(
            lines.dropFirst().first?.hasPrefix("{\"id\":6,\"topic\":\"live/1\",\"type\":\"message\",\"time\":\"")
                == true)
        #expect(received.hasSuffix("\"data\":42}\n"))
    }

    @Test("user errors exit 1 with one clear line; usage errors exit 2")
    func errors() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let missing = try Run.command(
            "eventlog", ["replay", "--db", fixture.directory.appendingPathComponent("none.db").path])
        #expect(missing.status == 1)
        #expect(missing.stderr.hasPrefix("eventlog: no database at "))
        #expect(missing.stderr.split(separator: "\n").count == 1)
        let badTopic = try Run.command("eventlog", ["publish", "--db", fixture.path, "--topic", "a b", "--data", "1"])
        #expect(badTopic.status == 1)
        #expect(badTopic.stderr == "eventlog: invalid topic \"a b\": byte 0x20 is not allowed\n")
        let badData = try Run.command("eventlog", ["publish", "--db", fixture.path, "--topic", "a", "--data", "{oops"])
        #expect(badData.status == 1)
        #expect(badData.stderr.hasPrefix("eventlog: --data is not JSON"))
        let noServer = try Run.command("eventlog", ["topics", "--server", "http://127.0.0.1:1"])
        #expect(noServer.status == 1)
        #expect(noServer.stderr.hasPrefix("eventlog: "))
        #expect(noServer.stderr.split(separator: "\n").count == 1)
        // An unreachable PostgreSQL: its URL once, with the password hidden, and libpq's reason, in one line.
        let noPostgres = try Run.command("eventlog", ["replay", "--db", "postgres://bob:secret@127.0.0.1:1/x"])
        #expect(noPostgres.status == 1)
        #expect(
            noPostgres.stderr.hasPrefix("eventlog: PostgreSQL: cannot connect to postgres://bob:***@127.0.0.1:1/x: "))
        #expect(noPostgres.stderr.components(separatedBy: "127.0.0.1:1/x").count == 2)
        #expect(!noPostgres.stderr.contains("secret"))
        #expect(noPostgres.stderr.split(separator: "\n").count == 1)
        let usage = try Run.command("eventlog", ["replay"])
        #expect(usage.status == 2)
        #expect(usage.stderr.contains("give exactly one of --db PATH or --server URL"))
        let unknown = try Run.command("eventlog", ["replay", "--db", fixture.path, "--bogus"])
        #expect(unknown.status == 2)
    }

    @Test("publish to a server that is not listening says which URL it could not reach, and why, in one line")
    func publishWithoutServer() async throws {
        // A port nothing listens on: bound on 127.0.0.1 to find a free one, then closed.
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(socket >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                Glibc.bind(socket, address, length) == 0 && getsockname(socket, address, &length) == 0
            }
        }
        Glibc.close(socket)
        try #require(bound)
        let url = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
        let run = try Run.command("eventlog", ["publish", "--server", url, "--topic", "a", "--data", "1"])
        #expect(run.status == 1)
        #expect(run.stderr == "eventlog: cannot connect to \(url): connection refused\n")
        #expect(run.stdout == "")
    }
}

extension FileHandle {
    /// What can be read now without blocking (empty when nothing is waiting).
    func availableDataNonBlocking() -> Data {
        let flags = fcntl(fileDescriptor, F_GETFL)
        _ = fcntl(fileDescriptor, F_SETFL, flags | O_NONBLOCK)
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.read(fileDescriptor, &buffer, buffer.count)
            if count <= 0 { break }
            data.append(buffer, count: count)
        }
        _ = fcntl(fileDescriptor, F_SETFL, flags)
        return data
    }
}
