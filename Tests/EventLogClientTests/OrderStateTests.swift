import NIOCore
import NIOHTTP1
import Testing

@testable import EventLogClient

private func event(_ id: Int64) -> Event {
    Event(id: id, topic: "orders/1", type: "created", key: nil, data: .json("\(id)"), time: testTime)
}

@Suite("Conditional publish, and snapshot / since / rewind starts, against a fake server")
struct OrderStateRequestTests {
    @Test("a conditional publish sends Expected-Last-Id and the same expectedLastId in the body")
    func conditionalPublish() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .created,
                body: #"{"id":8,"topic":"orders/1","time":"2026-11-25T01:07:15.123Z"}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            let first = try await client.publish(
                NewEvent(topic: "orders/1", data: .json("1"), expectedLastID: 7)
            )
            #expect(first == PublishResult(id: 8, topic: "orders/1", time: testTime, replayed: false))
            // The parameter overrides the event's own condition; 0 is "the topic has no event".
            _ = try await client.publish(NewEvent(topic: "orders/1", data: nil, expectedLastID: 7), expectedLastID: 0)
            _ = try await client.publish(NewEvent(topic: "orders/1", data: nil))
            let requests = server.recordedRequests
            #expect(requests.map { $0.header("Expected-Last-Id") } == ["7", "0", nil])
            #expect(
                requests.map(\.body) == [
                    #"{"topic":"orders/1","data":1,"expectedLastId":7}"#,
                    #"{"topic":"orders/1","expectedLastId":0}"#,
                    #"{"topic":"orders/1"}"#,
                ]
            )
        }
    }

    @Test("409 expected_last_id_mismatch is an error that carries the topic's last id")
    func mismatch() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .conflict,
                body:
                    #"{"error":{"code":"expected_last_id_mismatch","message":"topic orders/1's last id is 9, not the expected 7; nothing was appended","lastId":9}}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            do {
                _ = try await client.publish(NewEvent(topic: "orders/1", data: nil), expectedLastID: 7)
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .http)
                #expect(error.status == 409)
                #expect(error.serverCode == .expectedLastIDMismatch)
                #expect(error.lastID == 9)
                #expect(error.expectedLastIDMismatch == 9)
                #expect(error.index == nil)
                #expect(
                    error.description
                        == "http 409 expected_last_id_mismatch: topic orders/1's last id is 9, not the expected 7; "
                        + "nothing was appended")
            }
        }
    }

    @Test("a batch line's failed condition names the line and the last id; other errors have no last id")
    func batchMismatch() async throws {
        try await withFakeServer(http: { exchange in
            if exchange.request.connection == 0, exchange.request.body.contains("expectedLastId") {
                try await exchange.respond(
                    status: .conflict,
                    body:
                        #"{"error":{"code":"expected_last_id_mismatch","message":"event 1: no","index":1,"lastId":0}}"#
                )
            } else {
                try await exchange.respond(
                    status: .conflict,
                    body: #"{"error":{"code":"idempotency_conflict","message":"taken"}}"#
                )
            }
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            do {
                _ = try await client.publish(batch: [
                    NewEvent(topic: "a", data: nil), NewEvent(topic: "b", data: nil, expectedLastID: 3),
                ])
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.index == 1)
                #expect(error.lastID == 0)
                #expect(error.expectedLastIDMismatch == 0)
            }
            #expect(
                server.recordedRequests.first?.body
                    == "{\"topic\":\"a\"}\n{\"topic\":\"b\",\"expectedLastId\":3}\n"
            )
            do {
                _ = try await client.publish(NewEvent(topic: "a", data: nil))
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.serverCode == .idempotencyConflict)
                #expect(error.lastID == nil)
                #expect(error.expectedLastIDMismatch == nil)
            }
        }
    }

    @Test("history from a snapshot, a time or a rewind sends its query")
    func historyStarts() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(status: .ok, body: #"{"events":[],"next":12,"head":12,"earliest":1}"#)
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            let page = try await client.history(topics: ["a/*"], from: .snapshot(), limit: 2)
            #expect(page == HistoryPage(events: [], next: 12, head: 12, earliest: 1))
            _ = try await client.history(topics: ["a/*"], from: .snapshot(after: 5), limit: 2)
            _ = try await client.history(topics: [], from: .since(testTime))
            _ = try await client.history(topics: ["a/*"], from: .rewind(3))
            _ = try await client.history(topics: ["a/*"], from: .after(4), limit: 1)
            #expect(
                server.recordedRequests.map(\.uri) == [
                    "/v1/events?topic=a/*&snapshot=latest&limit=2",
                    "/v1/events?topic=a/*&snapshot=latest&after=5&limit=2",
                    "/v1/events?since=2026-11-25T01:07:15.123Z&limit=100",
                    "/v1/events?topic=a/*&rewind=3&limit=100",
                    "/v1/events?topic=a/*&after=4&limit=1",
                ]
            )
        }
    }

    @Test("an SSE snapshot cut off before its first event asks for the snapshot again, never for after 0")
    func sseSnapshotReconnect() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            switch exchange.request.connection {
            case 0:
                // The snapshot's from is 0; the connection drops before any event.
                try await exchange.write(sseOpen(head: 5, from: 0))
            case 1:
                try await exchange.write(sseOpen(head: 5, from: 0) + sseEvent(2) + sseEvent(4))
            default:
                try await exchange.write(sseOpen(head: 6, from: 4) + sseEvent(6))
                try await exchange.waitForClientClose()
            }
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .snapshot).makeAsyncIterator()
            let elements = try await take(8, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 5), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 5), received(2), received(4),
                    .reconnecting(attempt: 1, reason: ""), .opened(epoch: "ep", earliest: 1, head: 6), received(6),
                ]
            )
            let requests = server.recordedRequests
            #expect(requests.count == 3)
            #expect(requests.map { $0.query.first { $0.name == "snapshot" }?.value } == ["latest", "latest", nil])
            #expect(requests.map { $0.header("Last-Event-ID") } == [nil, nil, "4"])
            #expect(requests.allSatisfy { request in !request.query.contains { $0.name == "lastEventId" } })
        }
    }

    @Test("since and rewind send their SSE parameters, and resume where the server resolved them")
    func sseSinceAndRewind() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            if exchange.request.connection % 2 == 0 {
                try await exchange.write(sseOpen(head: 9, from: 6))
            } else {
                try await exchange.write(sseOpen(head: 9, from: 6) + sseEvent(7))
                try await exchange.waitForClientClose()
            }
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            for start in [StartPosition.since(testTime), .rewind(3)] {
                var iterator = client.subscribe(topics: ["orders/*"], from: start).makeAsyncIterator()
                let elements = try await take(4, from: &iterator)
                #expect(
                    elements == [
                        .opened(epoch: "ep", earliest: 1, head: 9), .reconnecting(attempt: 1, reason: ""),
                        .opened(epoch: "ep", earliest: 1, head: 9), received(7),
                    ]
                )
            }
            let requests = server.recordedRequests
            #expect(
                requests.map { request in request.query.filter { $0.name != "topic" }.map { "\($0.name)=\($0.value)" } }
                    == [
                        ["envelope=1", "since=2026-11-25T01:07:15.123Z"], ["envelope=1"],
                        ["envelope=1", "rewind=3"], ["envelope=1"],
                    ]
            )
            #expect(requests.map { $0.header("Last-Event-ID") } == [nil, "6", nil, "6"])
        }
    }

    @Test("a WebSocket snapshot resumes with the caughtup token, not the subscribed one (position 0)")
    func webSocketSnapshot() async throws {
        try await withFakeServer(webSocket: { socket in
            let subscribe = try await socket.receiveText()
            switch socket.request.connection {
            case 0:
                #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"from":"snapshot"}"#)
                try await socket.send(
                    #"{"type":"subscribed","epoch":"ep","earliest":1,"head":4,"from":0,"resume":"t0"}"#)
                try await socket.close(code: .goingAway)
                _ = try await socket.nextFrame()
            case 1:
                #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"from":"snapshot"}"#)
                try await socket.send(
                    #"{"type":"subscribed","epoch":"ep","earliest":1,"head":4,"from":0,"resume":"t0"}"#)
                try await socket.send(#"{"type":"caughtup","head":4,"resume":"t4"}"#)
                try await socket.close(code: .goingAway)
                _ = try await socket.nextFrame()
            default:
                #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"resume":"t4"}"#)
                try await socket.send(#"{"type":"subscribed","epoch":"ep","earliest":1,"head":5,"from":4}"#)
                try await socket.send(
                    #"{"type":"event","id":5,"topic":"orders/1","event":"created","time":"2026-11-25T01:07:15.123Z","data":5}"#
                )
                _ = try await socket.nextFrame()
            }
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .snapshot, transport: .webSocket)
                .makeAsyncIterator()
            let elements = try await take(7, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 4), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 4), .caughtUp, .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 5), received(5),
                ]
            )
        }
    }
}

@Suite("Resume logic of snapshot, since and rewind starts")
struct OrderStateResumeTests {
    @Test("a snapshot never resumes from its from 0: again before caughtup, after the head at it, after an event")
    func snapshot() throws {
        var state = SubscriptionState(start: .snapshot)
        #expect(try state.nextSSEStart() == .snapshot)
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 10, from: 0))
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .snapshot)
        #expect(state.nextWebSocketStart() == .snapshot)
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 10, from: 0))
        #expect(try state.receive(.caughtUp(head: 10)) == [.caughtUp])
        #expect(try state.nextSSEStart() == .after(10))
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 12, from: 10))
        #expect(try state.receive(.event(event(12))) == [.event(event(12))])
        #expect(try state.nextSSEStart() == .after(12))

        var cut = SubscriptionState(start: .snapshot)
        _ = cut.nextWebSocketStart()
        _ = try cut.receive(.opened(epoch: "e", earliest: 1, head: 10, from: 0, resumeToken: "t0"))
        _ = try cut.receive(.event(event(3)))
        #expect(cut.nextWebSocketStart() == .after(3))
        #expect(try cut.nextSSEStart() == .after(3))
    }

    @Test("a snapshot that finds a new epoch on reconnect reports the reset and starts over with a snapshot")
    func snapshotEpochChange() throws {
        var state = SubscriptionState(start: .snapshot)
        _ = try state.nextSSEStart()
        _ = try state.receive(.opened(epoch: "old", earliest: 1, head: 10, from: 0))
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .snapshot)
        #expect(
            try state.receive(.opened(epoch: "new", earliest: 1, head: 4, from: 0))
                == [.opened(epoch: "new", earliest: 1, head: 4), .reset(requested: 4, head: 4, epoch: "new")]
        )
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .snapshot)
    }

    @Test("since and rewind resume from the position the server resolved before their first event")
    func sinceAndRewind() throws {
        for start in [StartPosition.since(testTime), .rewind(5)] {
            var state = SubscriptionState(start: start)
            #expect(try state.nextSSEStart() == start)
            #expect(state.nextWebSocketStart() == start)
            _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 20, from: 15))
            #expect(try state.nextSSEStart() == .after(15))
            #expect(state.nextWebSocketStart() == .after(15))
            _ = try state.receive(.event(event(16)))
            #expect(try state.nextSSEStart() == .after(16))
        }
    }
}
