import Foundation
import TestSupport
import Testing

/// The SSE frames `--format sse` prints for events of type `message` whose data is their id.
private func frames(_ ids: [Int]) -> String {
    ids.map { "id: \($0)\nevent: message\ndata: \($0)\n\n" }.joined()
}

/// A server on a fresh log holding, in id order: 1, 2 `orders/1`; 3 `orders/2` key a; 4 `orders/2` key b;
/// 5 `orders/2` key a; 6 `users/1`; 7 `orders/1`. Each event's data is its id. The newest event of each key is
/// 4 (orders/2 b), 5 (orders/2 a), 6 (users/1) and 7 (orders/1, keyed by its topic).
private final class StateServer {
    let directory: URL
    let daemon: Daemon
    var database: String { directory.appendingPathComponent("state.db").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "eventlog-order-state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        daemon = try Daemon(["--db", directory.appendingPathComponent("state.db").path])
        let events: [(topic: String, key: String?)] = [
            ("orders/1", nil), ("orders/1", nil), ("orders/2", "a"), ("orders/2", "b"), ("orders/2", "a"),
            ("users/1", nil), ("orders/1", nil),
        ]
        for (offset, event) in events.enumerated() {
            let id = offset + 1
            let publish = try Run.command(
                "eventlog",
                ["publish", "--server", daemon.url, "--topic", event.topic, "--data", String(id)]
                    + (event.key.map { ["--key", $0] } ?? []))
            #expect(publish.stdout == "\(id)\n", "\(publish.stderr)")
        }
    }

    func stop() {
        daemon.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("eventlog publish --expect-last, replay --latest / --rewind, tail --latest")
struct OrderStateCLITests {
    @Test("publish --expect-last appends only on the expected last id; otherwise exit 1 naming the last id")
    func expectLastAgainstServer() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "eventlog-expect-last-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let daemon = try Daemon(["--db", directory.appendingPathComponent("log.db").path])
        defer { daemon.stop() }
        func publish(_ topic: String, _ data: String, expect: Int64?) throws -> Run {
            try Run.command(
                "eventlog",
                ["publish", "--server", daemon.url, "--topic", topic, "--data", data]
                    + (expect.map { ["--expect-last", String($0)] } ?? []))
        }
        let first = try publish("orders/1", "1", expect: 0)
        #expect(first.status == 0)
        #expect(first.stdout == "1\n")
        let other = try publish("users/1", "2", expect: nil)
        #expect(other.stdout == "2\n")
        // Another topic's event does not move orders/1's last id.
        let second = try publish("orders/1", "3", expect: 1)
        #expect(second.status == 0)
        #expect(second.stdout == "3\n")
        let stale = try publish("orders/1", "4", expect: 1)
        #expect(stale.status == 1)
        #expect(stale.stdout == "")
        #expect(stale.stderr == "eventlog: nothing was published: the last id of orders/1 is 3, not the expected 1\n")
        let empty = try publish("orders/9", "5", expect: 3)
        #expect(empty.status == 1)
        #expect(empty.stderr == "eventlog: nothing was published: the last id of orders/9 is 0, not the expected 3\n")
        // An NDJSON batch: each line carries its own condition, and one failed line refuses them all.
        let batch = try Run.command(
            "eventlog", ["publish", "--server", daemon.url, "--ndjson"],
            stdin: "{\"topic\":\"b/1\",\"expectedLastId\":0}\n{\"topic\":\"orders/1\",\"expectedLastId\":1}\n")
        #expect(batch.status == 1)
        #expect(
            batch.stderr
                == "eventlog: nothing was published: the last id of orders/1 is 3, not the expected 1 (event 2 of the batch)\n"
        )
        let topics = try Run.command("eventlog", ["topics", "--server", daemon.url, "--format", "jsonl"])
        #expect(
            topics.stdout == """
                {"topic":"orders/1","count":2,"lastId":3}
                {"topic":"users/1","count":1,"lastId":2}

                """)
        let next = try publish("orders/1", "6", expect: 3)
        #expect(next.stdout == "4\n")
    }

    @Test("publish --expect-last on a file: the same condition and message")
    func expectLastOnFile() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let stale = try Run.command(
            "eventlog", ["publish", "--db", fixture.path, "--topic", "orders/1", "--data", "1", "--expect-last", "1"])
        #expect(stale.status == 1)
        #expect(stale.stderr == "eventlog: nothing was published: the last id of orders/1 is 4, not the expected 1\n")
        let fresh = try Run.command(
            "eventlog", ["publish", "--db", fixture.path, "--topic", "orders/1", "--data", "1", "--expect-last", "4"])
        #expect(fresh.status == 0)
        #expect(fresh.stdout == "5\n")
    }

    @Test("replay --latest prints the newest event of each key in id order, from a server and from the file")
    func replayLatest() async throws {
        let server = try StateServer()
        defer { server.stop() }
        for source in [["--server", server.daemon.url], ["--db", server.database]] {
            let all = try Run.command("eventlog", ["replay", "--latest", "--format", "sse"] + source)
            #expect(all.status == 0, "\(source): \(all.stderr)")
            #expect(all.stdout == frames([4, 5, 6, 7]), "\(source)")
            let orders = try Run.command(
                "eventlog", ["replay", "--latest", "--topic", "orders/*", "--format", "sse"] + source)
            #expect(orders.stdout == frames([4, 5, 7]), "\(source)")
            let one = try Run.command(
                "eventlog", ["replay", "--latest", "--topic", "orders/2", "--limit", "1", "--format", "sse"] + source)
            #expect(one.stdout == frames([4]), "\(source)")
            let none = try Run.command("eventlog", ["replay", "--latest", "--topic", "nothing/*"] + source)
            #expect(none.status == 0)
            #expect(none.stdout == "")
        }
    }

    @Test("replay --rewind N prints exactly the last N matching events, from a server and from the file")
    func replayRewind() async throws {
        let server = try StateServer()
        defer { server.stop() }
        for source in [["--server", server.daemon.url], ["--db", server.database]] {
            let two = try Run.command("eventlog", ["replay", "--rewind", "2", "--format", "sse"] + source)
            #expect(two.status == 0, "\(source): \(two.stderr)")
            #expect(two.stdout == frames([6, 7]), "\(source)")
            let orders = try Run.command(
                "eventlog", ["replay", "--rewind", "3", "--topic", "orders/*", "--format", "sse"] + source)
            #expect(orders.stdout == frames([4, 5, 7]), "\(source)")
            let more = try Run.command(
                "eventlog", ["replay", "--rewind", "100", "--topic", "orders/*", "--format", "sse"] + source)
            #expect(more.stdout == frames([1, 2, 3, 4, 5, 7]), "\(source)")
            let bounded = try Run.command(
                "eventlog", ["replay", "--rewind", "4", "--until", "5", "--format", "sse"] + source)
            #expect(bounded.stdout == frames([4, 5]), "\(source)")
        }
    }

    @Test("tail -f --latest prints the state, then the events published after it, from a server")
    func tailLatest() async throws {
        let server = try StateServer()
        defer { server.stop() }
        let process = Subprocess()
        process.executableURL = Run.executable("eventlog")
        process.arguments = [
            "tail", "-f", "--latest", "--server", server.daemon.url, "--topic", "orders/*", "--format", "sse",
        ]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // The snapshot is printed once the subscription reached it, so what is published next is live for it. The
        // bound only keeps a broken test from hanging.
        var received = ""
        let deadline = Date().addingTimeInterval(60)
        while received.components(separatedBy: "\n\n").count - 1 < 3, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            received += String(decoding: out.fileHandleForReading.availableDataNonBlocking(), as: UTF8.self)
        }
        #expect(received == frames([4, 5, 7]))
        let publish = try Run.command(
            "eventlog",
            ["publish", "--server", server.daemon.url, "--topic", "orders/2", "--key", "b", "--data", "8"])
        #expect(publish.stdout == "8\n")
        while received.components(separatedBy: "\n\n").count - 1 < 4, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            received += String(decoding: out.fileHandleForReading.availableDataNonBlocking(), as: UTF8.self)
        }
        #expect(received == frames([4, 5, 7, 8]))
    }

    @Test("the new options refuse what does not go together, as usage errors")
    func usage() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let cases: [([String], String)] = [
            (["replay", "--latest", "--rewind", "2"], "Error: give one start: --latest or --rewind\n"),
            (["replay", "--after", "1", "--latest"], "Error: give one start: --after or --latest\n"),
            (["replay", "--rewind", "0"], "Error: --rewind must be in 1...1000000\n"),
            (["replay", "--rewind", "2", "--since", "1h"], "Error: give --rewind or --since, not both\n"),
            (
                ["replay", "--latest", "--until", "3"],
                "Error: --latest prints the state now; give no --since, --until or --until-time\n"
            ),
            (["publish", "--topic", "a", "--expect-last=-1"], "Error: --expect-last must not be negative\n"),
            (
                ["publish", "--ndjson", "--expect-last", "1"],
                "Error: --ndjson lines carry their own \"expectedLastId\"; give no --expect-last\n"
            ),
        ]
        for (arguments, message) in cases {
            let run = try Run.command("eventlog", arguments + ["--db", fixture.path])
            #expect(run.status == 2, "\(arguments)")
            #expect(run.stderr.hasPrefix(message), "\(arguments): \(run.stderr)")
        }
        let help = try Run.command("eventlog", ["replay", "--help"])
        #expect(
            help.stdout.contains(
                """
                  --latest                Print the newest event of each key (its topic for an
                                          event without one), in id order: the current state.
                  --rewind <rewind>       Start with the last N matching events, 1...1000000.

                """))
    }
}
