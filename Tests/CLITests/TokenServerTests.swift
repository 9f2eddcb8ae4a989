import EventLogWire
import Foundation
import TestSupport
import Testing

@testable import EventLogCommandLine

/// A running `eventlogd` on 127.0.0.1 and a free port, stopped by ``stop()``.
final class Daemon: @unchecked Sendable {
    // @unchecked: `process` is only used from the test that owns this object.
    let process: Subprocess
    let url: String
    /// Reads the daemon's log for as long as it runs.
    private let logReader: PipeReader

    /// Starts eventlogd with `arguments` and waits until its log says where it listens.
    init(_ arguments: [String]) throws {
        let process = Subprocess()
        process.executableURL = Run.executable("eventlogd")
        process.arguments = ["--host", "127.0.0.1", "--port", "0"] + arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("EVENTLOG_") }
        let log = Pipe()
        process.standardError = log
        process.standardOutput = FileHandle.nullDevice
        let text = Locked("")
        try process.run()
        let reader = PipeReader(log.fileHandleForReading) { chunk in
            text.withLock { $0 += String(decoding: chunk, as: UTF8.self) }
        }
        self.process = process
        self.logReader = reader
        let deadline = Date().addingTimeInterval(30)
        var port: Substring?
        while port == nil, process.isRunning, Date() < deadline {
            Thread.sleep(forTimeInterval: 0.02)
            port = text.withLock { log in
                log.split(separator: "\n").first { $0.contains("listening") }?.split(separator: "port=").last?
                    .prefix { $0.isNumber }
            }
        }
        guard let port else {
            process.terminate()
            throw DaemonError(log: text.withLock { $0 })
        }
        self.url = "http://127.0.0.1:\(port)"
    }

    struct DaemonError: Error {
        let log: String
    }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

@Suite("eventlog --token against eventlogd with auth")
struct TokenServerTests {
    @Test(
        "--token and EVENTLOG_TOKEN reach the server for every command; 401 and 403 print the server's message, exit 1"
    )
    func tokenAgainstServer() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "eventlog-token-server-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let secret = directory.appendingPathComponent("secret").path
        try Data("an HS256 secret of at least 32 bytes, for tests\n".utf8).write(to: URL(fileURLWithPath: secret))
        // An API key that may read orders, made by the tool, in the file eventlogd reads.
        let newKey = try Run.command("eventlog", ["token", "new-key", "--name", "reader", "--subscribe", "orders/*"])
        let keyLines = newKey.stdout.split(separator: "\n").map(String.init)
        try #require(keyLines.count == 2)
        let keys = directory.appendingPathComponent("keys.json")
        try Data(#"{"keys":[\#(keyLines[1])]}"#.utf8).write(to: keys)

        let daemon = try Daemon([
            "--db", directory.appendingPathComponent("log.db").path, "--jwt-secret-file", secret,
            "--api-keys", keys.path, "--jwt-leeway", "0s",
        ])
        defer { daemon.stop() }
        let server = ["--server", daemon.url]
        let minted = try Run.command(
            "eventlog",
            [
                "token", "mint", "--secret-file", secret, "--subject", "writer", "--publish", "orders/*", "--subscribe",
                "orders/*",
            ])
        try #require(minted.status == 0)
        let token = String(minted.stdout.dropLast())

        // No credential: refused with the server's message.
        let anonymous = try Run.command("eventlog", ["publish"] + server + ["--topic", "orders/1", "--data", "1"])
        #expect(anonymous.status == 1)
        #expect(
            anonymous.stderr
                == "eventlog: http 401 authentication_required: not allowed to publish to \"orders/1\"; present a token "
                + "(Authorization: Bearer)\n")
        #expect(anonymous.stdout == "")

        let published = try Run.command(
            "eventlog", ["publish"] + server + ["--token", token, "--topic", "orders/1", "--data", "1"])
        #expect(published.status == 0)
        #expect(published.stdout == "1\n")
        // EVENTLOG_TOKEN, with --server on the command line: the token is not an alternative to the server.
        let replay = try Run.command(
            "eventlog", ["replay"] + server + ["--topic", "orders/*", "--format", "sse"],
            environment: ["EVENTLOG_TOKEN": token])
        #expect(replay.status == 0)
        #expect(replay.stdout == "id: 1\nevent: message\ndata: 1\n\n")
        // The API key from new-key reads too; it may not publish.
        let byKey = try Run.command(
            "eventlog", ["tail"] + server + ["--token", keyLines[0], "--topic", "orders/*", "--format", "sse"])
        #expect(byKey.stderr == "")
        #expect(byKey.stdout == replay.stdout)
        let keyTopics = try Run.command("eventlog", ["topics"] + server + ["--token", keyLines[0]])
        #expect(keyTopics.stdout == "{\"topic\":\"orders/1\",\"count\":1,\"lastId\":1}\n")
        let keyPublish = try Run.command(
            "eventlog", ["publish"] + server + ["--token", keyLines[0], "--topic", "orders/2", "--data", "2"])
        #expect(keyPublish.status == 1)
        #expect(keyPublish.stderr == "eventlog: http 403 forbidden_topic: not allowed to publish to \"orders/2\"\n")

        // A selector the token does not cover, through the history endpoint.
        let forbidden = try Run.command(
            "eventlog", ["replay"] + server + ["--token", token, "--topic", "users/*"])
        #expect(forbidden.status == 1)
        #expect(forbidden.stderr == "eventlog: server answered 403: not allowed to read \"users/*\"\n")
        let invalid = try Run.command("eventlog", ["stats"] + server + ["--token", "not-a-key"])
        #expect(invalid.status == 1)
        #expect(invalid.stderr == "eventlog: http 401 invalid_token: not a valid token or API key\n")

        // An expired token (1 s, no leeway) is refused with token_expired.
        let short = try Run.command("eventlog", ["token", "mint", "--secret-file", secret, "--ttl", "1s"])
        let shortToken = String(short.stdout.dropLast())
        try await Task.sleep(for: .milliseconds(1100))
        let expired = try Run.command("eventlog", ["topics"] + server + ["--token", shortToken])
        #expect(expired.status == 1)
        #expect(expired.stderr.hasPrefix("eventlog: http 401 token_expired: the token expired at "))
    }
}

@Suite("OptionEnvironment: alternatives among the options that read the environment")
struct OptionAlternativesTests {
    let tool = DeclaredCommand.tree(of: Sample.self)
    let variables = ["EVENTLOG_MAX_BODY_BYTES": "9", "EVENTLOG_ORIGIN": "o", "EVENTLOG_LINES": "7"]

    @Test("an alternative on the command line keeps out the other alternatives' variables, and only those")
    func subset() {
        let environment = OptionEnvironment.options(
            ["max-body-bytes", "origin", "lines"], alternatives: ["origin", "lines"])
        let given = environment.prepare(["serve", "--origin", "x"], tool: tool, variables: variables)
        #expect(given.arguments == ["serve", "--max-body-bytes=9", "--origin", "x"])
        #expect(given.fromEnvironment.map(\.variable) == ["EVENTLOG_MAX_BODY_BYTES"])
        // With no alternative given, every variable applies.
        let none = environment.prepare(["serve"], tool: tool, variables: variables)
        #expect(none.arguments == ["serve", "--max-body-bytes=9", "--origin=o", "--lines=7"])
        // The option outside the alternatives given on the command line keeps nothing out.
        let other = environment.prepare(["serve", "--max-body-bytes", "1"], tool: tool, variables: variables)
        #expect(other.arguments == ["serve", "--origin=o", "--lines=7", "--max-body-bytes", "1"])
    }
}
