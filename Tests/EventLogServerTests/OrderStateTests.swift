import EventLog
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import EventLogServer

/// Order state (issue 13): gaps only where a subscriber's own events were removed, ids never reused across a
/// restore, snapshot then tail, `since` and `rewind`, and conditional appends. Against real servers.
@Suite("Order state: precise gaps, restores, snapshot, since and rewind, conditional appends", .timeLimit(.minutes(5)))
struct OrderStateTests {
    /// Reads an SSE stream until `eventlog.caughtup` (included).
    static func untilCaughtUp(
        _ client: TestHTTPClient, _ uri: String, headers: [(String, String)] = []
    ) async throws -> [SSEMessage] {
        try await withTimeout(.seconds(60)) {
            try await client.sse(uri, headers: headers) { reader in
                var seen: [SSEMessage] = []
                while let message = try await reader.nextMessage() {
                    seen.append(message)
                    if message.event == "eventlog.caughtup" { break }
                }
                return seen
            }
        }
    }

    /// The control events (`eventlog.*`) and ids of a stream, in order: `open`, `gap 1<9`, `3`, `caughtup 9`.
    static func transcript(_ messages: [SSEMessage]) -> [String] {
        messages.compactMap { message -> String? in
            let data = jsonObject(message.dataText)
            switch message.event {
            case "eventlog.open": return "open"
            case "eventlog.gap": return "gap \(data["requested"] as? Int ?? -1)<\(data["earliest"] as? Int ?? -1)"
            case "eventlog.reset": return "reset \(data["requested"] as? Int ?? -1) head \(data["head"] as? Int ?? -1)"
            case "eventlog.caughtup": return "caughtup"
            default: return message.id
            }
        }
    }

    /// Publishes `{"topic":..,"key":..,"data":..}` with `headers`; returns the response.
    static func publish(
        _ client: TestHTTPClient, topic: String, key: String? = nil, data: String = "1",
        headers: [(String, String)] = []
    ) async throws -> TestResponse {
        let keyField = key.map { ",\"key\":\"\($0)\"" } ?? ""
        return try await client.request(
            .POST, "/v1/events", headers: [("Content-Type", "application/json")] + headers,
            body: "{\"topic\":\"\(topic)\"\(keyField),\"data\":\(data)}")
    }

    @Test("retention of logs/* never touches orders/* subscribers; logs/* subscribers get the gap of their own")
    func alternatingTopics() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        for id in 1...10 {
            let response = try await Self.publish(client, topic: id % 2 == 1 ? "orders/1" : "logs/a", data: "\(id)")
            #expect(response.json["id"] as? Int == id)
        }
        let retain = try runMaint([
            "retain", "--db", directory.databasePath, "--topic", "logs/*", "--max-events", "1", "--quiet",
        ])
        #expect(retain.status == 0, "\(retain.output)")
        // Ids 2, 4, 6 and 8 went. An orders/* subscriber resuming at 1 gets 3, 5, 7 and 9, and no gap.
        let orders = try await Self.untilCaughtUp(
            client, "/v1/events?topic=orders/*", headers: [("Last-Event-ID", "1")])
        #expect(Self.transcript(orders) == ["open", "3", "5", "7", "9", "caughtup"])
        #expect(jsonObject(orders[1].dataText)["earliest"] as? Int == 1)
        // The same on WebSocket and in the history.
        let ws = try await withTimeout(.seconds(60)) {
            try await TestWebSocket.connect(port: server.port) { ws in
                try await ws.send(["op": "subscribe", "topics": ["orders/*"], "from": 1])
                return try await ws.read(until: "caughtup")
            }
        }
        #expect(
            ws.map { $0["type"] as? String ?? "" } == ["subscribed", "event", "event", "event", "event", "caughtup"])
        #expect(ws.compactMap { $0["id"] as? Int } == [3, 5, 7, 9])
        let history = try await client.request(.GET, "/v1/events?topic=orders/*&after=1")
        #expect(((history.json["events"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int } == [3, 5, 7, 9])
        #expect(history.json["gap"] == nil)
        // A logs/* subscriber at 1 lost 2...8: gap, then what is left.
        let logs = try await Self.untilCaughtUp(client, "/v1/events?topic=logs/*", headers: [("Last-Event-ID", "1")])
        #expect(Self.transcript(logs) == ["open", "gap 1<9", "10", "caughtup"])
        #expect(jsonObject(logs[2].dataText)["reason"] as? String == "retention")
        let logsHistory = try await client.request(.GET, "/v1/events?topic=logs/a&after=1")
        #expect(((logsHistory.json["events"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int } == [10])
        let gap = logsHistory.json["gap"] as? [String: Any]
        #expect(gap?["requested"] as? Int == 1 && gap?["earliest"] as? Int == 9)
        // Past the last removed event, no gap; from earliest, everything retained and no gap.
        let past = try await Self.untilCaughtUp(client, "/v1/events?topic=logs/*", headers: [("Last-Event-ID", "8")])
        #expect(Self.transcript(past) == ["open", "10", "caughtup"])
        let all = try await Self.untilCaughtUp(client, "/v1/events?topic=*&lastEventId=earliest")
        #expect(Self.transcript(all) == ["open", "1", "3", "5", "7", "9", "10", "caughtup"])
    }

    @Test("after a restore, ids continue above every id issued before; a client past the restored head gets reset")
    func restoreNeverReusesIDs() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let backup = directory.url.appendingPathComponent("backup.db").path
        var server = try ServerProcess(databasePath: directory.databasePath)
        var client = TestHTTPClient(port: server.port)
        for id in 1...5 { _ = try await Self.publish(client, topic: "orders/1", data: "\(id)") }
        let backedUp = try runMaint(["backup", "--db", directory.databasePath, "--to", backup, "--quiet"])
        #expect(backedUp.status == 0, "\(backedUp.output)")
        // The client sees 6, 7 and 8, which the restore will take away.
        for id in 6...8 { _ = try await Self.publish(client, topic: "orders/1", data: "\(id)") }
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        let restored = try runMaint(["restore", "--db", directory.databasePath, "--from", backup, "--force", "--quiet"])
        #expect(restored.status == 0, "\(restored.output)")
        server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        client = TestHTTPClient(port: server.port)
        let next = try await Self.publish(client, topic: "orders/1", data: "\"new\"")
        #expect(next.json["id"] as? Int == 9)
        // Resuming at 7 (inside what the restore took away): reset, then the live tail; never the new 9 as if it
        // followed 7.
        for position in ["6", "7", "8"] {
            let messages = try await Self.untilCaughtUp(
                client, "/v1/events?topic=orders/*", headers: [("Last-Event-ID", position)])
            #expect(Self.transcript(messages) == ["open", "reset \(position) head 9", "caughtup"])
        }
        // At the restored head, nothing was lost: the new event follows.
        let atHead = try await Self.untilCaughtUp(
            client, "/v1/events?topic=orders/*", headers: [("Last-Event-ID", "5")])
        #expect(Self.transcript(atHead) == ["open", "9", "caughtup"])
        let verify = try runMaint(["verify", "--db", directory.databasePath, "--quiet"])
        #expect(verify.status == 0, "\(verify.output)")
    }

    @Test("snapshot=latest while publishes continue: the newest event per key, caughtup, then every later id once")
    func snapshotThenTail() async throws {
        // A short keepalive: the reader below checks after every message whether it has seen the end.
        try await withTestServer(configure: { $0.keepalive = .milliseconds(100) }) { server in
            let client = server.client
            // (topic, key) of every published id; orders/* events over 3 topics × 5 keys, some without a key.
            let published = Published()
            let send: @Sendable (Int) async throws -> Void = { n in
                let topic = ["orders/1", "orders/2", "orders/3/items", "audit/x"][n % 4]
                let key: String? = n % 7 == 0 ? nil : "k\(n % 5)"
                let response = try await Self.publish(client, topic: topic, key: key, data: "\(n)")
                let id = try #require(response.json["id"] as? Int)
                published.withLock { $0[id] = (topic, key ?? topic) }
            }
            for n in 0..<400 { try await send(n) }
            // Quiet: the snapshot of the history API, in pages of 7, is exactly the newest id of each key.
            func newest(through head: Int) -> [Int] {
                let all = published.withLock { $0 }.filter { $0.key <= head && $0.value.topic.hasPrefix("orders/") }
                var newestByKey: [String: Int] = [:]
                for (id, event) in all {
                    newestByKey[event.topic + "|" + event.key] = max(
                        newestByKey[event.topic + "|" + event.key] ?? 0, id)
                }
                return newestByKey.values.sorted()
            }
            var paged: [Int] = []
            var after = 0
            while true {
                let page = try await client.request(
                    .GET, "/v1/events?topic=orders/*&snapshot=latest&limit=7&after=\(after)")
                let ids = ((page.json["events"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int }
                paged += ids
                after = try #require(page.json["next"] as? Int)
                if ids.count < 7 { break }
            }
            #expect(paged == newest(through: 400))
            #expect(after == 400)
            // Under load: 300 more publishes race the SSE snapshot.
            let publisher = Task { for n in 400..<700 { try await send(n) } }
            let stream = try await withTimeout(.seconds(120)) {
                try await client.sse("/v1/events?topic=orders/*&snapshot=latest") { reader in
                    var snapshot: [Int] = []
                    var tail: [Int] = []
                    var caughtUpAt: Int?
                    var openedHead = 0
                    // `next()`, not `nextMessage()`: keepalive comments count too.
                    while let message = try await reader.next() {
                        switch message.event {
                        case "eventlog.open": openedHead = jsonObject(message.dataText)["head"] as? Int ?? -1
                        case "eventlog.caughtup": caughtUpAt = jsonObject(message.dataText)["head"] as? Int ?? -1
                        default:
                            if let id = message.idValue.map(Int.init) {
                                if caughtUpAt == nil { snapshot.append(id) } else { tail.append(id) }
                            }
                        }
                        // Done once every publish was answered and the stream reached the last orders/* id.
                        let done = published.withLock { events -> Bool in
                            guard events.count == 700 else { return false }
                            let last = events.filter { $0.value.topic.hasPrefix("orders/") }.keys.max() ?? 0
                            return (tail.last ?? snapshot.last ?? 0) >= last
                        }
                        if done { break }
                    }
                    return (openedHead, snapshot, caughtUpAt ?? -1, tail)
                }
            }
            try await publisher.value
            let (openedHead, snapshot, caughtUpAt, tail) = stream
            let events = published.withLock { $0 }
            let ordersIDs = events.filter { $0.value.topic.hasPrefix("orders/") }.keys.sorted()
            #expect(caughtUpAt >= openedHead && openedHead >= 400)
            // One cursor: strictly increasing, nothing twice.
            #expect(
                snapshot + tail == (snapshot + tail).sorted()
                    && Set(snapshot + tail).count == snapshot.count + tail.count)
            // After caughtup, every later id of the selectors, once.
            #expect(tail == ordersIDs.filter { $0 > caughtUpAt })
            // At caughtup the client holds the newest event of every key as of that point.
            var lastSeen: [String: Int] = [:]
            for id in snapshot { lastSeen[events[id]!.topic + "|" + events[id]!.key] = id }
            #expect(lastSeen.values.sorted() == newest(through: caughtUpAt))
            // What the log held when the snapshot opened comes as its newest version only (a key updated later may
            // come again with its newer event).
            let before = Set(newest(through: openedHead))
            #expect(snapshot.filter { $0 <= openedHead }.allSatisfy { before.contains($0) })
        }
    }

    /// (topic, key) of each published id, shared with the publishing task.
    final class Published: Sendable {
        private let events = Mutex<[Int: (topic: String, key: String)]>([:])

        func withLock<T>(_ body: (inout [Int: (topic: String, key: String)]) -> T) -> T {
            events.withLock { body(&$0) }
        }
    }

    @Test("since and rewind: exact boundaries on SSE, WebSocket and history; bad values are 400")
    func sinceAndRewind() async throws {
        try await withTestServer { server in
            let client = server.client
            var times: [String] = []
            for n in 1...5 {
                let response = try await Self.publish(client, topic: n == 3 ? "other/1" : "orders/\(n)", data: "\(n)")
                times.append(try #require(response.json["time"] as? String))
                try await Task.sleep(for: .milliseconds(15))
            }
            let time3 = try #require(Timestamp.parseRFC3339(times[2]))
            let exact = Timestamp.rfc3339(milliseconds: time3)
            let later = Timestamp.rfc3339(milliseconds: time3 + 1)
            // since: the first event at or after the time (3 is another topic's, so orders/* starts at 4).
            for (query, expected) in [
                ("topic=*&since=\(exact)", ["3", "4", "5"]), ("topic=*&since=\(later)", ["4", "5"]),
                ("topic=orders/*&since=\(exact)", ["4", "5"]), ("topic=*&since=1h", ["1", "2", "3", "4", "5"]),
                ("topic=*&since=2999-01-01T00:00:00Z", []),
                ("topic=orders/*&rewind=2", ["4", "5"]), ("topic=orders/*&rewind=4", ["1", "2", "4", "5"]),
                ("topic=orders/*&rewind=99", ["1", "2", "4", "5"]), ("topic=orders/1&topic=other/*&rewind=1", ["3"]),
            ] {
                let messages = try await Self.untilCaughtUp(client, "/v1/events?\(query)")
                #expect(Self.transcript(messages) == ["open"] + expected + ["caughtup"], "\(query)")
            }
            // The history: the same starts.
            for (query, expected) in [
                ("topic=*&since=\(exact)", [3, 4, 5]), ("topic=orders/*&rewind=2", [4, 5]),
                ("topic=orders/*&since=\(later)&limit=1", [4]),
            ] {
                let page = try await client.request(.GET, "/v1/events?\(query)")
                #expect(
                    ((page.json["events"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int } == expected,
                    "\(query)")
            }
            // WebSocket: {"rewind":N} and {"since":..}, then the live tail.
            let ws = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    try await ws.send(["op": "subscribe", "topics": ["orders/*"], "from": ["rewind": 2]])
                    var messages = try await ws.read(until: "caughtup")
                    _ = try await Self.publish(client, topic: "orders/6", data: "6")
                    messages += try await ws.read(until: "event")
                    try await ws.send(["op": "subscribe", "topics": ["*"], "from": ["since": later]])
                    messages += try await ws.read(until: "caughtup")
                    try await ws.send(["op": "subscribe", "topics": ["*"], "from": ["rewind": 0]])
                    messages += try await ws.read(until: "error")
                    return messages
                }
            }
            #expect(ws.compactMap { $0["id"] as? Int } == [4, 5, 6, 4, 5, 6])
            #expect(ws.last?["code"] as? String == "invalid_parameter")
            // Bad values and two starts at once are refused before the stream opens.
            for query in [
                "rewind=0", "rewind=-1", "rewind=x", "since=yesterday", "since=", "snapshot=oldest",
                "rewind=2&since=1h", "lastEventId=3&snapshot=latest",
            ] {
                let response = try await client.request(
                    .GET, "/v1/events?topic=*&\(query)", headers: [("Accept", "text/event-stream")])
                #expect(response.status == 400, "\(query)")
                #expect(response.errorCode == "invalid_parameter", "\(query)")
            }
        }
    }

    @Test("conditional appends: 20 writers race each round, exactly one wins, the others get 409 with its id")
    func conditionalAppendRace() async throws {
        try await withTestServer { server in
            let client = server.client
            var last = 0
            var winners: [Int] = []
            for round in 0..<10 {
                let expected = last
                let outcomes = try await withThrowingTaskGroup(of: (Int, Int?, Int?).self) { group in
                    for writer in 0..<20 {
                        group.addTask {
                            let response = try await Self.publish(
                                client, topic: "orders/77", data: "{\"round\":\(round),\"writer\":\(writer)}",
                                headers: [("Expected-Last-Id", "\(expected)")])
                            let error = response.json["error"] as? [String: Any]
                            return (response.status, response.json["id"] as? Int, error?["lastId"] as? Int)
                        }
                    }
                    var all: [(Int, Int?, Int?)] = []
                    for try await outcome in group { all.append(outcome) }
                    return all
                }
                let won = outcomes.filter { $0.0 == 201 }
                try #require(won.count == 1, "round \(round): \(outcomes.map(\.0))")
                let id = try #require(won[0].1)
                #expect(outcomes.filter { $0.0 == 409 }.count == 19)
                #expect(outcomes.filter { $0.0 == 409 }.allSatisfy { $0.2 == id })
                winners.append(id)
                last = id
            }
            #expect(winners == Array(1...10))
            let history = try await client.request(.GET, "/v1/events?topic=orders/77&limit=100")
            #expect(
                ((history.json["events"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int } == Array(1...10))
            // An idempotent retry of a won append returns it (200), though the topic moved on.
            let first = try await Self.publish(
                client, topic: "orders/88", data: "\"paid\"",
                headers: [("Expected-Last-Id", "0"), ("Idempotency-Key", "pay-1")])
            #expect(first.status == 201 && first.json["id"] as? Int == 11)
            _ = try await Self.publish(
                client, topic: "orders/88", data: "\"shipped\"", headers: [("Expected-Last-Id", "11")])
            let retry = try await Self.publish(
                client, topic: "orders/88", data: "\"paid\"",
                headers: [("Expected-Last-Id", "0"), ("Idempotency-Key", "pay-1")])
            #expect(retry.status == 200 && retry.json["id"] as? Int == 11)
            #expect(retry.headers.first(name: "Idempotent-Replayed") == "true")
            // A stale writer cannot move the order back: 409 names the current last id, and nothing is appended.
            let stale = try await Self.publish(
                client, topic: "orders/88", data: "\"paid\"", headers: [("Expected-Last-Id", "11")])
            #expect(stale.status == 409)
            #expect(stale.errorCode == "expected_last_id_mismatch")
            #expect((stale.json["error"] as? [String: Any])?["lastId"] as? Int == 12)
            // A batch is refused whole, naming its line.
            let batch = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")],
                body: """
                    {"topic":"orders/99","data":1,"expectedLastId":0}
                    {"topic":"orders/88","data":2,"expectedLastId":11}
                    """)
            #expect(batch.status == 409)
            let batchError = batch.json["error"] as? [String: Any]
            #expect(batchError?["index"] as? Int == 1 && batchError?["lastId"] as? Int == 12)
            let after = try await client.request(.GET, "/v1/events?topic=orders/99")
            #expect((after.json["events"] as? [Any])?.isEmpty == true)
            #expect(server.log.head == 12)
            // Bad headers, and the header on a batch, are 400.
            for value in ["abc", "-1", "1.5", ""] {
                let bad = try await Self.publish(client, topic: "orders/88", headers: [("Expected-Last-Id", value)])
                #expect(bad.status == 400, "\(value)")
            }
            let header = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson"), ("Expected-Last-Id", "12")],
                body: "{\"topic\":\"orders/88\",\"data\":3}\n")
            #expect(header.status == 400 && header.errorCode == "invalid_parameter")
            // WebSocket publish: the error names the last id.
            let answers = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    try await ws.send([
                        "op": "publish", "ref": "a", "topic": "orders/88", "data": "x", "expectedLastId": 5,
                    ])
                    var messages = try await ws.read(until: "error")
                    try await ws.send([
                        "op": "publish", "ref": "b", "topic": "orders/88", "data": "x", "expectedLastId": 12,
                    ])
                    messages += try await ws.read(until: "ack")
                    return messages
                }
            }
            #expect(answers.map { $0["type"] as? String ?? "" } == ["error", "ack"])
            #expect(answers.first?["code"] as? String == "expected_last_id_mismatch")
            #expect(answers.first?["lastId"] as? Int == 12)
            #expect(answers.last?["id"] as? Int == 13)
        }
    }
}
