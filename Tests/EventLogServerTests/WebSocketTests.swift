import EventLog
import EventLogClient
import Foundation
import Synchronization
import Testing

@testable import EventLogServer

@Suite("WebSocket subscriptions, publishes and resume tokens", .timeLimit(.minutes(3)))
struct WebSocketTests {
    @Test("subscribe sends subscribed, the replay with a token per event, caughtup, then live events")
    func subscribeReplayLive() async throws {
        try await withTestServer { server in
            let client = server.client
            _ = try await client.publish(topic: "orders/1", data: "{\"n\":1}")
            _ = try await client.publish(topic: "users/1", data: "\"skip\"")
            _ = try await client.publish(topic: "orders/2", type: "paid", data: "\"two\"")
            let messages = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    try await ws.send(["op": "subscribe", "topics": ["orders/*"], "from": "earliest"])
                    var messages = try await ws.read(until: "caughtup")
                    _ = try await client.publish(topic: "orders/3", data: "null")
                    messages += try await ws.read(until: "event")
                    return messages
                }
            }
            #expect(messages.map { $0["type"] as? String } == ["subscribed", "event", "event", "caughtup", "event"])
            try #require(messages.count >= 5)
            #expect(messages[0]["epoch"] as? String == server.log.epoch)
            #expect(messages[0]["head"] as? Int == 3)
            #expect(messages[0]["from"] as? Int == 0)
            #expect(messages[1]["id"] as? Int == 1)
            #expect((messages[1]["data"] as? [String: Any])?["n"] as? Int == 1)
            #expect(messages[2]["id"] as? Int == 3)
            #expect(messages[2]["event"] as? String == "paid")
            #expect(messages[2]["data"] as? String == "two")
            #expect(messages[3]["head"] as? Int == 3)
            #expect(messages[4]["id"] as? Int == 4)
            #expect(messages[4]["data"] is NSNull)
            let tokens = messages.compactMap { $0["resume"] as? String }
            #expect(tokens.count == 5)
            #expect(Set(tokens).count == 4)  // caughtup's token is the last event's position
            #expect(server.server.tokens.decode(messages[2]["resume"] as? String ?? "") == .success(3))
        }
    }

    @Test("a subscribe that replaces a running replay: nothing of the old subscription follows the new subscribed")
    func resubscribeEndsTheOldFirst() async throws {
        try await withTestServer { server in
            let old = (1...3_000).map { NewEvent(topic: "old/1", type: "t", data: .text("o\($0)")) }
            _ = try await server.log.append(batch: old)
            _ = try await server.log.append(NewEvent(topic: "new/1", type: "t", data: .text("n")))
            let messages = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    try await ws.send(["op": "subscribe", "topics": ["old/1"], "from": "earliest"])
                    // The old subscription is replaying (3,000 events, pages of 512) when the new one comes.
                    var messages = try await ws.read(until: "event")
                    try await ws.send(["op": "subscribe", "topics": ["new/1"], "from": "earliest"])
                    messages += try await ws.read(until: "caughtup")
                    if messages.filter({ $0["type"] as? String == "subscribed" }).count < 2 {
                        // The old subscription's own caughtup came first: read on to the new one's.
                        messages += try await ws.read(until: "caughtup")
                    }
                    return messages
                }
            }
            let subscribedAt = messages.indices.filter { messages[$0]["type"] as? String == "subscribed" }
            try #require(subscribedAt.count == 2)
            let before = messages[..<subscribedAt[1]].compactMap { $0["id"] as? Int }
            let after = Array(messages[(subscribedAt[1] + 1)...])
            // Before: a prefix of the old replay, in order; after: the new subscription alone.
            #expect(before == Array(1...before.count))
            #expect(after.map { $0["type"] as? String } == ["event", "caughtup"])
            #expect(after.first?["id"] as? Int == 3_001)
            #expect(after.first?["topic"] as? String == "new/1")
        }
    }

    @Test("publish over WebSocket is acknowledged after the commit; an idempotent retry gets the same id")
    func publishWithAck() async throws {
        try await withTestServer { server in
            let acks = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    var answers: [WSMessage] = []
                    try await ws.send(["op": "publish", "ref": "a", "topic": "orders/1", "data": ["n": 1]])
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    let publish: [String: Any] = [
                        "op": "publish", "ref": "b", "topic": "orders/1", "data": ["n": 2], "idempotencyKey": "k-1",
                    ]
                    try await ws.send(publish)
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    try await ws.send(publish.merging(["ref": 7]) { $1 })
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    try await ws.send(publish.merging(["ref": "d", "data": ["n": 3]]) { $1 })
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    try await ws.send(["op": "publish", "ref": "e", "topic": "bad topic"])
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    try await ws.send("{not json")
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    try await ws.send(["op": "dance"])
                    answers.append(try await ws.next() ?? WSMessage(text: "{}"))
                    return answers
                }
            }
            try #require(acks.count >= 7)
            #expect(acks[0]["type"] as? String == "ack")
            #expect(acks[0]["ref"] as? String == "a")
            #expect(acks[0]["id"] as? Int == 1)
            #expect(acks[1]["id"] as? Int == 2)
            #expect(acks[1]["replayed"] as? Bool == false)
            #expect(acks[2]["type"] as? String == "ack")
            #expect(acks[2]["ref"] as? Int == 7)
            #expect(acks[2]["id"] as? Int == 2)
            #expect(acks[2]["replayed"] as? Bool == true)
            #expect(acks[3]["type"] as? String == "error")
            #expect(acks[3]["code"] as? String == "idempotency_conflict")
            #expect(acks[3]["ref"] as? String == "d")
            #expect(acks[4]["code"] as? String == "invalid_topic")
            #expect(acks[4]["ref"] as? String == "e")
            #expect(acks[5]["code"] as? String == "malformed_json")
            #expect(acks[6]["code"] as? String == "invalid_op")
            // The acknowledged events are in the log: the ack came after the commit.
            let page = try await server.log.read(after: 0, selectors: .all, limit: 10)
            #expect(page.events.map(\.id) == [1, 2])
        }
    }

    @Test("a tampered token, a token from another log and a malformed one are refused with nothing replayed")
    func invalidTokens() async throws {
        try await withTestServer { server in
            try await withTestServer { other in
                for index in 1...3 { _ = try await server.client.publish(topic: "t/\(index)", data: "\(index)") }
                let good = server.server.tokens.encode(position: 1)
                let foreign = other.server.tokens.encode(position: 1)
                var tampered = Array(good)
                let middle = tampered.count / 2
                tampered[middle] = tampered[middle] == "A" ? "B" : "A"
                for token in [String(tampered), foreign, "garbage", "v1..", String(good.dropLast(3))] {
                    let answers = try await withTimeout(.seconds(60)) {
                        try await TestWebSocket.connect(port: server.port) { ws in
                            try await ws.send(["op": "subscribe", "topics": ["t/*"], "resume": token])
                            let first = try await ws.next() ?? WSMessage(text: "{}")
                            // The connection stays usable: a valid subscribe works afterwards.
                            try await ws.send(["op": "subscribe", "topics": ["t/*"], "resume": good])
                            let after = try await ws.read(until: "caughtup")
                            return [first] + after
                        }
                    }
                    try #require(!answers.isEmpty, "\(token)")
                    #expect(answers[0]["type"] as? String == "error", "\(token)")
                    #expect(answers[0]["code"] as? String == "invalid_resume_token", "\(token)")
                    #expect(answers.dropFirst().compactMap { $0["id"] as? Int } == [2, 3], "\(token)")
                }
            }
        }
    }

    @Test("a token survives a restart: a new process on the same database resumes with no gap and no duplicate")
    func resumeAfterRestart() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var process = try ServerProcess(databasePath: directory.databasePath)
        var client = TestHTTPClient(port: process.port)
        for index in 1...5 { _ = try await client.publish(topic: "r/\(index % 2)", data: "\(index)") }
        let port = process.port
        let token = try await withTimeout(.seconds(60)) {
            try await TestWebSocket.connect(port: port) { ws in
                try await ws.send(["op": "subscribe", "topics": ["r/*"], "from": "earliest"])
                let messages = try await ws.read(until: "caughtup")
                return messages.first { $0["id"] as? Int == 3 }?["resume"] as? String ?? ""
            }
        }
        process.signal(SIGTERM)
        #expect(await process.waitForExit() == 0)
        process = try ServerProcess(databasePath: directory.databasePath)
        defer { process.kill9() }
        client = TestHTTPClient(port: process.port)
        for index in 6...7 { _ = try await client.publish(topic: "r/\(index % 2)", data: "\(index)") }
        let newPort = process.port
        let ids = try await withTimeout(.seconds(60)) {
            try await TestWebSocket.connect(port: newPort) { ws in
                try await ws.send(["op": "subscribe", "topics": ["r/*"], "resume": token])
                return try await ws.read(until: "caughtup").compactMap { $0["id"] as? Int }
            }
        }
        #expect(ids == [4, 5, 6, 7])
    }

    @Test(
        "hundreds of resumes at random tokens while publishes continue: exactly the events after each token, in order"
    )
    func randomizedTokenResumes() async throws {
        try await withTestServer(
            configure: {
                $0.pageSize = 5
            },
            options: {
                $0.tailEvents = 150
            }
        ) { server in
            let client = server.client
            let topics = ["a/1", "a/2/x", "b/1", "c"]
            for index in 0..<200 { _ = try await client.publish(topic: topics[index % topics.count], data: "\(index)") }
            let stop = Atomic<Bool>(false)
            let publisher = Task {
                var count = 0
                while !stop.load(ordering: .relaxed) && count < 20_000 {
                    _ = try await client.publish(topic: topics[count % topics.count], data: "\(count)")
                    count += 1
                }
            }
            let selections: [[String]] = [["a/*"], ["b/1", "c"], ["*"]]
            struct Session: Sendable {
                let start: Int64
                let selectors: [String]
                let ids: [Int64]
            }
            let tokens = server.server.tokens
            let sessions = try await withThrowingTaskGroup(of: [Session].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var sessions: [Session] = []
                        var generator = SystemRandomNumberGenerator()
                        for round in 0..<55 {
                            let start = Int64.random(in: 0...server.log.head, using: &generator)
                            let selectors = selections[(worker + round) % selections.count]
                            let liveWanted = Int.random(in: 0...3, using: &generator)
                            let ids = try await withTimeout(.seconds(30)) {
                                try await TestWebSocket.connect(port: server.port) { ws in
                                    try await ws.send([
                                        "op": "subscribe", "topics": selectors,
                                        "resume": tokens.encode(position: start),
                                    ])
                                    var ids: [Int64] = []
                                    var live = 0
                                    var caughtUp = false
                                    while let message = try await ws.next() {
                                        switch message["type"] as? String {
                                        case "event":
                                            ids.append(Int64(message["id"] as? Int ?? -1))
                                            if caughtUp { live += 1 }
                                        case "caughtup": caughtUp = true
                                        case "error": Issue.record("error \(message)")
                                        default: break
                                        }
                                        if caughtUp && live >= liveWanted { break }
                                    }
                                    return ids
                                }
                            }
                            sessions.append(Session(start: start, selectors: selectors, ids: ids))
                        }
                        return sessions
                    }
                }
                var all: [Session] = []
                for try await batch in group { all += batch }
                return all
            }
            stop.store(true, ordering: .relaxed)
            _ = await publisher.result
            #expect(sessions.count == 220)
            var log: [Event] = []
            var position: Int64 = 0
            while true {
                let page = try await server.log.read(after: position, selectors: .all, limit: 1000)
                if page.events.isEmpty { break }
                log += page.events
                position = page.next
            }
            var sawLive = 0
            for session in sessions {
                let selectors = try SelectorSet(parsing: session.selectors)
                let last = session.ids.last ?? session.start
                let expected = log.filter { $0.id > session.start && $0.id <= last && selectors.matches($0.topic) }
                    .map(\.id)
                #expect(session.ids == expected, "start \(session.start) \(session.selectors)")
                if (session.ids.last ?? 0) > 200 { sawLive += 1 }
            }
            #expect(sawLive > 0)
        }
    }

    @Test(
        "an EventLogClient subscription survives SIGKILL and restart of the server: every event once, in order",
        arguments: [Transport.webSocket, Transport.sse])
    func clientSurvivesKill(transport: Transport) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var process = try ServerProcess(databasePath: directory.databasePath, arguments: ["--sse-retry", "100"])
        let port = process.port
        var configuration = EventLogClient.Configuration()
        configuration.honourServerRetry = false
        configuration.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(300))
        let client = EventLogClient(baseURL: "http://127.0.0.1:\(port)", configuration: configuration)
        for index in 1...20 {
            _ = try await client.publish(NewEvent(topic: "k/\(index % 3)", data: .text("\(index)")))
        }
        let received = Locked<[Int64]>([])
        let reconnects = Locked(0)
        let consumer = Task {
            for try await element in client.subscribe(topics: ["k/*"], from: .earliest, transport: transport) {
                switch element {
                case .event(let event):
                    received.withLock { $0.append(event.id) }
                    if event.id == 60 { return }
                case .reconnecting: reconnects.withLock { $0 += 1 }
                case .gap, .reset: Issue.record("unexpected \(element)")
                default: break
                }
            }
        }
        for index in 21...40 {
            _ = try await client.publish(NewEvent(topic: "k/\(index % 3)", data: .text("\(index)")))
        }
        try await waitUntil(timeout: .seconds(60)) { received.withLock { $0.count } >= 30 }
        process.kill9()
        process = try ServerProcess(
            databasePath: directory.databasePath, port: port, arguments: ["--sse-retry", "100"])
        defer { process.kill9() }
        client.closeIdleConnections()
        for index in 41...60 {
            _ = try await client.publish(NewEvent(topic: "k/\(index % 3)", data: .text("\(index)")))
        }
        try await waitUntil(timeout: .seconds(30)) { received.withLock { $0.count } >= 60 }
        consumer.cancel()
        #expect(received.withLock { $0 } == Array(1...60))
        #expect(reconnects.withLock { $0 } >= 1)
    }
}

/// Polls `condition` until it holds, or throws `TimedOut`.
func waitUntil(timeout: Duration, _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut() }
        try await Task.sleep(for: .milliseconds(20))
    }
}
