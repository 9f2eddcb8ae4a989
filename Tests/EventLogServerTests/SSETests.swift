import Foundation
import NIOHTTP1
import Synchronization
import Testing

@testable import EventLog
@testable import EventLogServer

@Suite("Server-Sent Events subscriptions", .timeLimit(.minutes(3)))
struct SSETests {
    @Test("a stream opens with retry and eventlog.open, replays, sends caughtup once, then goes live")
    func replayThenLive() async throws {
        try await withTestServer(configure: { $0.sseRetryMilliseconds = 1500 }) { server in
            let client = server.client
            _ = try await client.publish(topic: "orders/1", data: "\"first\"")
            _ = try await client.publish(topic: "users/1", data: "\"skip\"")
            _ = try await client.publish(topic: "orders/2/items", data: "\"line one\\nline two\\r\\nline three\"")
            let messages = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=orders/*", headers: [("Last-Event-ID", "0")]) { reader in
                    var seen: [SSEMessage] = []
                    while let message = try await reader.nextMessage() {
                        seen.append(message)
                        if message.event == "eventlog.caughtup" {
                            #expect(reader.status == 200)
                            #expect(reader.headers.first(name: "cache-control") == "no-store")
                            #expect(reader.headers.first(name: "x-accel-buffering") == "no")
                            #expect(reader.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true)
                            _ = try await client.publish(topic: "users/2", data: "\"skip\"")
                            _ = try await client.publish(topic: "orders/3", type: "paid", data: "{\"v\":1}")
                        }
                        if message.id == "5" { break }
                    }
                    return seen
                }
            }
            try #require(messages.count >= 6)
            #expect(messages[0].retry == "1500")
            #expect(messages[1].event == "eventlog.open")
            #expect(messages[1].id == nil)
            let open = jsonObject(messages[1].dataText)
            #expect(open["epoch"] as? String == server.log.epoch)
            #expect(open["earliest"] as? Int == 1)
            #expect(open["head"] as? Int == 3)
            #expect(open["from"] as? Int == 0)
            #expect(messages[2].id == "1")
            #expect(messages[2].event == "message")
            #expect(messages[2].data == ["first"])
            #expect(messages[3].id == "3")
            #expect(messages[3].data == ["line one", "line two", "line three"])
            #expect(messages[4].event == "eventlog.caughtup")
            #expect(messages[4].id == nil)
            #expect(jsonObject(messages[4].dataText)["head"] as? Int == 3)
            #expect(messages[5].id == "5")
            #expect(messages[5].event == "paid")
            #expect(messages[5].data == ["{\"v\":1}"])
            #expect(messages.count == 6)
        }
    }

    @Test("the lastEventId parameter, earliest and envelope=1 work; the header wins over the parameter")
    func queryParameterAndEnvelope() async throws {
        try await withTestServer { server in
            let client = server.client
            for index in 1...4 { _ = try await client.publish(topic: "t/\(index)", data: "\(index)") }
            func ids(_ uri: String, headers: [(String, String)] = []) async throws -> [String] {
                try await withTimeout(.seconds(60)) {
                    try await client.sse(uri, headers: headers) { reader in
                        var ids: [String] = []
                        while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {
                            if let id = message.id { ids.append(id) }
                        }
                        return ids
                    }
                }
            }
            #expect(try await ids("/v1/events?topic=t/*&lastEventId=2") == ["3", "4"])
            #expect(try await ids("/v1/events?topic=t/*&lastEventId=earliest") == ["1", "2", "3", "4"])
            #expect(try await ids("/v1/events?topic=t/*&lastEventId=0") == ["1", "2", "3", "4"])
            #expect(try await ids("/v1/events?topic=t/*&lastEventId=1", headers: [("Last-Event-ID", "3")]) == ["4"])
            #expect(
                try await ids("/v1/events?topic=t/*", headers: [("Last-Event-ID", "earliest")]) == ["1", "2", "3", "4"])
            #expect(try await ids("/v1/events?topic=t/2&topic=t/4") == [])
            let envelope = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=t/2&topic=t/4&envelope=1&lastEventId=earliest") { reader in
                    var data: [String] = []
                    while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {
                        if message.id != nil { data.append(message.dataText) }
                    }
                    return data
                }
            }
            try #require(envelope.count == 2)
            let first = jsonObject(envelope[0])
            #expect(first["id"] as? Int == 2)
            #expect(first["topic"] as? String == "t/2")
            #expect(first["type"] as? String == "message")
            #expect(first["data"] as? Int == 2)
            #expect((first["time"] as? String)?.hasSuffix("Z") == true)
        }
    }

    @Test("a position below removed matching events gets eventlog.gap then what is left; one past head gets reset")
    func gapAndReset() async throws {
        try await withTestServer { server in
            let client = server.client
            for index in 1...10 { _ = try await client.publish(topic: "g/\(index)", data: "\(index)") }
            // Retention (done here by hand, as another process would) removed ids 1...5: the rows, the watermarks
            // of their topics, of g/* and of *, and the count of removals that tells the server to look.
            _ = try runSQLite(
                server.directory.databasePath,
                """
                DELETE FROM events WHERE id < 6;
                INSERT INTO removed (selector, through) VALUES ('g/1', 1), ('g/2', 2), ('g/3', 3), ('g/4', 4), ('g/5', 5),
                    ('g/*', 5), ('*', 5);
                INSERT INTO meta (name, value) VALUES ('removals', '1');
                """)
            let gap = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=g/*", headers: [("Last-Event-ID", "2")]) { reader in
                    var seen: [SSEMessage] = []
                    while let message = try await reader.nextMessage() {
                        seen.append(message)
                        if message.event == "eventlog.caughtup" { break }
                    }
                    return seen
                }
            }
            #expect(
                gap.map { $0.event ?? "" } == [
                    "", "eventlog.open", "eventlog.gap", "message", "message", "message", "message", "message",
                    "eventlog.caughtup",
                ])
            try #require(gap.count >= 3)
            let gapData = jsonObject(gap[2].dataText)
            #expect(gapData["requested"] as? Int == 2)
            #expect(gapData["earliest"] as? Int == 6)
            #expect(gapData["reason"] as? String == "retention")
            #expect(gap.compactMap(\.id) == ["6", "7", "8", "9", "10"])
            // Exactly earliest - 1 is not a gap: nothing was missed.
            let noGap = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=g/*", headers: [("Last-Event-ID", "5")]) { reader in
                    var events: [String] = []
                    while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {
                        events.append(message.event ?? "")
                    }
                    return events
                }
            }
            #expect(!noGap.contains("eventlog.gap"))
            // earliest never gets a gap.
            let fromEarliest = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=g/*&lastEventId=earliest") { reader in
                    var ids: [String] = []
                    while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {
                        #expect(message.event != "eventlog.gap")
                        if let id = message.id { ids.append(id) }
                    }
                    return ids
                }
            }
            #expect(fromEarliest == ["6", "7", "8", "9", "10"])
            let reset = try await withTimeout(.seconds(60)) {
                try await client.sse("/v1/events?topic=g/*", headers: [("Last-Event-ID", "99")]) { reader in
                    var seen: [SSEMessage] = []
                    while let message = try await reader.nextMessage() {
                        seen.append(message)
                        if message.event == "eventlog.caughtup" {
                            _ = try await client.publish(topic: "g/11", data: "11")
                        }
                        if message.id != nil { break }
                    }
                    return seen
                }
            }
            #expect(
                reset.map { $0.event ?? "" } == ["", "eventlog.open", "eventlog.reset", "eventlog.caughtup", "message"])
            try #require(reset.count >= 3)
            let resetData = jsonObject(reset[2].dataText)
            #expect(resetData["requested"] as? Int == 99)
            #expect(resetData["head"] as? Int == 10)
            #expect(resetData["epoch"] as? String == server.log.epoch)
            #expect(reset.last?.id == "11")
        }
    }

    @Test("a keepalive comment is sent on the configured interval while nothing happens")
    func keepalive() async throws {
        try await withTestServer(configure: { $0.keepalive = .milliseconds(200) }) { server in
            let comments = try await withTimeout(.seconds(60)) {
                try await server.client.sse("/v1/events?topic=quiet") { reader in
                    var comments = 0
                    while let message = try await reader.next() {
                        if message.comment { comments += 1 }
                        if comments == 3 { break }
                    }
                    return comments
                }
            }
            #expect(comments == 3)
        }
    }

    @Test("a disconnected subscriber frees its resources at once")
    func disconnectFreesResources() async throws {
        try await withTestServer(configure: { $0.keepalive = .seconds(60) }) { server in
            try await withTimeout(.seconds(60)) {
                try await server.client.sse("/v1/events?topic=idle/*") { reader in
                    while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {}
                }
            }
            // The stream is closed by the client; the server notices without waiting for a keepalive. The bound, half
            // the keepalive interval, is generous for a loaded machine and still too short for a keepalive to do it.
            var waiting = -1
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                waiting = server.log.notifier.waiterCount
                if waiting == 0 && server.server.metrics.connections == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(waiting == 0)
            #expect(server.server.metrics.connections == 0)
            let metrics = try await server.client.request(.GET, "/metrics")
            #expect(metrics.body.contains("\neventlog_sse_connections 0\n"))
        }
    }

    @Test(
        "hundreds of reconnects at random positions while publishes continue: exactly the events after N, in order, no gap, no duplicate"
    )
    func randomizedReconnects() async throws {
        try await withTestServer(
            configure: { configuration in
                configuration.pageSize = 7
            },
            options: { options in
                options.tailEvents = 200
            }
        ) { server in
            let client = server.client
            let topics = ["orders/1", "orders/2/items", "users/1", "users/2", "misc"]
            for index in 0..<300 { _ = try await client.publish(topic: topics[index % topics.count], data: "\(index)") }
            let stop = Atomic<Bool>(false)
            let publisher = Task {
                var count = 0
                while !stop.load(ordering: .relaxed) && count < 20_000 {
                    _ = try await client.publish(topic: topics[count % topics.count], data: "\(count)")
                    count += 1
                }
                return count
            }
            let selections: [[String]] = [
                ["orders/*"], ["users/2"], ["*"], ["orders/*", "users/1"], ["misc", "orders/1"],
            ]
            struct Session: Sendable {
                let start: Int64
                let selectors: [String]
                let ids: [Int64]
                let sawCaughtUp: Bool
            }
            let sessions = try await withThrowingTaskGroup(of: [Session].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var generator = SystemRandomNumberGenerator()
                        var sessions: [Session] = []
                        for round in 0..<60 {
                            let head = server.log.head
                            let start = Int64.random(in: 0...head, using: &generator)
                            let selectors = selections[(worker + round) % selections.count]
                            let liveWanted = Int.random(in: 0...3, using: &generator)
                            let query = selectors.map { "topic=\($0)" }.joined(separator: "&")
                            let useHeader = round % 2 == 0
                            let uri = "/v1/events?\(query)" + (useHeader ? "" : "&lastEventId=\(start)")
                            let session = try await withTimeout(.seconds(30)) {
                                try await client.sse(uri, headers: useHeader ? [("Last-Event-ID", "\(start)")] : []) {
                                    reader in
                                    var ids: [Int64] = []
                                    var caughtUp = false
                                    var live = 0
                                    while let message = try await reader.nextMessage() {
                                        if message.event == "eventlog.caughtup" {
                                            caughtUp = true
                                            if liveWanted == 0 { break }
                                        } else if let id = message.idValue {
                                            ids.append(id)
                                            if caughtUp {
                                                live += 1
                                                if live >= liveWanted { break }
                                            }
                                        }
                                    }
                                    return Session(start: start, selectors: selectors, ids: ids, sawCaughtUp: caughtUp)
                                }
                            }
                            sessions.append(session)
                        }
                        return sessions
                    }
                }
                var all: [Session] = []
                for try await batch in group { all += batch }
                return all
            }
            stop.store(true, ordering: .relaxed)
            let published = try await publisher.value
            #expect(published > 0)
            #expect(sessions.count == 240)
            // Check every session against the log itself.
            var log: [Event] = []
            var position: Int64 = 0
            while true {
                let page = try await server.log.read(after: position, selectors: .all, limit: 1000)
                log += page.events
                if page.events.isEmpty { break }
                position = page.next
            }
            #expect(log.map(\.id) == Array(1...Int64(log.count)))
            var liveSessions = 0
            for session in sessions {
                #expect(session.sawCaughtUp)
                let selectors = try SelectorSet(parsing: session.selectors)
                let last = session.ids.last ?? session.start
                let expected = log.filter { $0.id > session.start && $0.id <= last && selectors.matches($0.topic) }
                    .map(\.id)
                #expect(session.ids == expected, "start \(session.start) selectors \(session.selectors)")
                if let lastID = session.ids.last, lastID > 300 { liveSessions += 1 }
            }
            #expect(liveSessions > 0)
        }
    }

    @Test("a commit made while a loop had no subscribers never stands in for a later subscriber's read")
    func resumeAfterACommitNobodyHeard() async throws {
        try await withTestServer { server in
            let client = server.client
            // Subscribers on every loop hear commit 1, then all leave.
            let caughtUp = Locked(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await client.sse("/v1/events?topic=heard/t", headers: [("Last-Event-ID", "0")]) { reader in
                            while let message = try await reader.nextMessage() {
                                if message.event == "eventlog.caughtup" { caughtUp.withLock { $0 += 1 } }
                                if message.id == "1" { break }
                            }
                        }
                    }
                }
                try await waitUntil(timeout: .seconds(30)) { caughtUp.withLock { $0 } == 8 }
                _ = try await client.publish(topic: "heard/t", data: "\"one\"")
                try await group.waitForAll()
            }
            try await waitUntil(timeout: .seconds(30)) { server.server.hubs.count == 0 }
            // Commit 2 reaches no loop. A subscriber resuming at 0 must not take commit 1 (after 0) for its page.
            _ = try await client.publish(topic: "heard/t", data: "\"two\"")
            let ids = try await withTimeout(.seconds(30)) {
                try await client.sse("/v1/events?topic=heard/t", headers: [("Last-Event-ID", "0")]) { reader in
                    var ids: [String] = []
                    while let message = try await reader.nextMessage() {
                        if message.event == "eventlog.caughtup" { break }
                        if let id = message.id { ids.append(id) }
                    }
                    return ids
                }
            }
            #expect(ids == ["1", "2"])
        }
    }
}
