import EventLog
import Foundation
import TestSupport
import Testing

@Suite("The eventlog command line on a PostgreSQL log", .serialized, .enabled(if: TestPostgres.isAvailable))
struct PostgresCLITests {
    @Test("--db postgres://… publishes into the shared log, and replay, tail, topics and stats read it")
    func publishReplayOnPostgres() async throws {
        try await TestPostgres.withDatabase { url in
            // A node (eventlogd's library) creates the schema and publishes first; the CLI continues its ids.
            let node = try await EventLog.open(path: url)
            let first = try await node.append(NewEvent(topic: "orders/1", type: "created", data: .text("one")))
            #expect(first.event.id == 1)
            let publish = try Run.command(
                "eventlog",
                ["publish", "--db", url, "--topic", "orders/2", "--type", "paid", "--data", "{\"b\":2,\"a\":1}"])
            #expect(publish.status == 0)
            #expect(publish.stdout == "2\n")
            let batch = try Run.command(
                "eventlog", ["publish", "--db", url, "--ndjson"],
                stdin: "{\"topic\":\"b/1\",\"data\":\"x\"}\n{\"topic\":\"b/2\"}\n")
            #expect(batch.stdout == "3\n4\n")
            // The node hears of the CLI's commits (NOTIFY) and serves them like its own.
            let deadline = ContinuousClock.now + .seconds(10)
            while node.head < 4 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(node.head == 4)
            await node.close()
            let replay = try Run.command("eventlog", ["replay", "--db", url, "--format", "sse"])
            #expect(replay.status == 0)
            #expect(
                replay.stdout
                    == "id: 1\nevent: created\ndata: one\n\nid: 2\nevent: paid\ndata: {\"a\":1,\"b\":2}\n\n"
                    + "id: 3\nevent: message\ndata: x\n\nid: 4\nevent: message\ndata: \n\n")
            let selected = try Run.command(
                "eventlog", ["replay", "--db", url, "--topic", "orders/*", "--after", "1", "--format", "sse"])
            #expect(selected.stdout == "id: 2\nevent: paid\ndata: {\"a\":1,\"b\":2}\n\n")
            let tail = try Run.command("eventlog", ["tail", "--db", url, "-n", "1", "--format", "sse"])
            #expect(tail.stdout == "id: 4\nevent: message\ndata: \n\n")
            let topics = try Run.command("eventlog", ["topics", "--db", url])
            #expect(
                topics.stdout
                    == "{\"topic\":\"b/1\",\"count\":1,\"lastId\":3}\n{\"topic\":\"b/2\",\"count\":1,\"lastId\":4}\n"
                    + "{\"topic\":\"orders/1\",\"count\":1,\"lastId\":1}\n{\"topic\":\"orders/2\",\"count\":1,\"lastId\":2}\n"
            )
            let stats = try Run.command("eventlog", ["stats", "--db", url])
            #expect(stats.stdout.contains("events 4\ntopics 4\nearliest 1\nhead 4\n"))
        }
    }

    @Test("a PostgreSQL URL that cannot be reached fails in one line without its password")
    func unreachable() throws {
        let run = try Run.command(
            "eventlog", ["replay", "--db", "postgres://app:secret@127.0.0.1:1/none?connect_timeout=2"])
        #expect(run.status == 1)
        #expect(!run.stderr.contains("secret"))
        #expect(run.stderr.hasPrefix("eventlog: "))
        #expect(run.stderr.contains("postgres://app:***@127.0.0.1:1/none"))
        #expect(run.stderr.split(separator: "\n").count == 1)
    }
}
