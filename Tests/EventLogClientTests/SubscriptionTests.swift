import Foundation
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Testing

@testable import EventLogClient

let sseHeaders = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-store")]

func sseEvent(_ id: Int64, topic: String = "orders/1") -> String {
    "id: \(id)\nevent: created\n"
        + "data: {\"id\":\(id),\"topic\":\"\(topic)\",\"type\":\"created\",\"time\":\"2026-11-25T01:07:15.123Z\",\"data\":\(id)}\n\n"
}

func sseOpen(epoch: String = "ep", earliest: Int64 = 1, head: Int64, from: Int64) -> String {
    "retry: 10\nevent: eventlog.open\n"
        + "data: {\"epoch\":\"\(epoch)\",\"earliest\":\(earliest),\"head\":\(head),\"from\":\(from)}\n\n"
}

func received(_ id: Int64, topic: String = "orders/1") -> SubscriptionElement {
    .event(Event(id: id, topic: topic, type: "created", key: nil, data: .json("\(id)"), time: testTime))
}

/// A configuration that reconnects quickly.
func fastConfiguration() -> EventLogClient.Configuration {
    var configuration = EventLogClient.Configuration()
    configuration.reconnectBackoff = .init(initial: .milliseconds(5), maximum: .milliseconds(50), jitter: 0)
    configuration.honourServerRetry = false
    return configuration
}

/// A configuration that reconnects quickly, with every client timer on `clock`.
private func manualConfiguration(_ clock: ManualClock) -> EventLogClient.Configuration {
    var configuration = fastConfiguration()
    configuration.clock = ClockTimers(clock)
    return configuration
}

/// Reads `count` elements, replacing reconnect reasons with "" so they compare exactly.
func take(
    _ count: Int,
    from iterator: inout Subscription.AsyncIterator
) async throws -> [SubscriptionElement] {
    var elements: [SubscriptionElement] = []
    while elements.count < count, let element = try await iterator.next() {
        if case .reconnecting(let attempt, _) = element {
            elements.append(.reconnecting(attempt: attempt, reason: ""))
        } else {
            elements.append(element)
        }
    }
    return elements
}

@Suite("Subscriptions against a fake server")
struct SubscriptionTests {
    @Test("an SSE subscription resumes with Last-Event-ID after the server drops it, without duplicates")
    func sseResume() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            if exchange.request.connection == 0 {
                try await exchange.write(sseOpen(head: 5, from: 0) + sseEvent(1) + sseEvent(2))
                // Half an event, then the connection drops: it must never be delivered.
                try await exchange.write(sseEvent(3) + "id: 4\ndata: {\"id\":4")
                return
            }
            // The server replays event 3 again (as a careless server might); the client drops it.
            try await exchange.write(sseOpen(head: 5, from: 3) + sseEvent(3) + sseEvent(4) + sseEvent(5))
            try await exchange.write("event: eventlog.caughtup\ndata: {\"head\":5}\n\n")
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["orders/*", "a+b"], from: .earliest).makeAsyncIterator()
            let elements = try await take(9, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 5), received(1), received(2), received(3),
                    .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 5), received(4), received(5), .caughtUp,
                ]
            )
            let requests = server.recordedRequests
            try #require(requests.count == 2)
            #expect(requests[0].uri == "/v1/events?topic=orders/*&topic=a%2Bb&envelope=1&lastEventId=earliest")
            #expect(requests[0].header("Accept") == "text/event-stream")
            #expect(requests[0].header("Last-Event-ID") == nil)
            #expect(requests[1].uri == "/v1/events?topic=orders/*&topic=a%2Bb&envelope=1")
            #expect(requests[1].header("Last-Event-ID") == "3")
        }
    }

    @Test("a live SSE subscription resumes from the position the server opened at")
    func sseLiveResume() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            if exchange.request.connection == 0 {
                try await exchange.write(sseOpen(head: 42, from: 42))
                try await exchange.end()
                return
            }
            try await exchange.write(sseOpen(head: 43, from: 42) + sseEvent(43))
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["orders/1"]).makeAsyncIterator()
            let elements = try await take(4, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 42), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 43), received(43),
                ]
            )
            #expect(server.recordedRequests.map { $0.header("Last-Event-ID") } == [nil, "42"])
        }
    }

    @Test("a 400 ends an SSE subscription with the server's error, without retrying")
    func sseBadRequest() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .badRequest,
                body: #"{"error":{"code":"invalid_last_event_id","message":"not an integer"}}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"], from: .after(-1)).makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .http)
                #expect(error.status == 400)
                #expect(error.serverCode == .invalidLastEventID)
            }
            #expect(try await iterator.next() == nil)
            let recorded = server.recordedRequests
            try #require(recorded.count == 1)
            #expect(recorded[0].header("Last-Event-ID") == "-1")
        }
    }

    @Test("a 503 is retried")
    func sseUnavailable() async throws {
        try await withFakeServer(http: { exchange in
            if exchange.request.connection == 0 {
                try await exchange.respond(
                    status: .serviceUnavailable,
                    body: #"{"error":{"code":"shutting_down","message":"bye"}}"#
                )
                return
            }
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            let first = try await iterator.next()
            guard case .reconnecting(1, let reason) = first else {
                Issue.record("expected a reconnect, got \(String(describing: first))")
                return
            }
            #expect(reason == "http 503 shutting_down: bye")
            #expect(try await iterator.next() == .opened(epoch: "ep", earliest: 1, head: 0))
        }
    }

    @Test("a response that is not an event stream ends the subscription")
    func sseWrongContentType() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(status: .ok, headers: [("Content-Type", "application/json")], body: "{}")
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .protocolViolation)
            }
        }
    }

    @Test("a refused connection is retried with backoff until the attempt limit")
    func connectionRefused() async throws {
        let server = try await FakeServer.start()
        let url = server.baseURL
        await server.stop()

        var configuration = fastConfiguration()
        configuration.maxReconnectAttempts = 2
        let client = EventLogClient(baseURL: url, configuration: configuration)
        var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
        let refused = "cannot connect to \(url): connection refused"
        #expect(try await iterator.next() == .reconnecting(attempt: 1, reason: refused))
        #expect(try await iterator.next() == .reconnecting(attempt: 2, reason: refused))
        do {
            _ = try await iterator.next()
            Issue.record("expected an error")
        } catch let error as EventLogClientError {
            #expect(error.code == .connectionFailed)
            #expect(error.description == "connectionFailed: gave up after 2 reconnect attempts; last: \(refused)")
        }
    }

    @Test(
        "a connection that goes silent past the idle timeout reconnects once, after exactly the idle timeout",
        .timeLimit(.minutes(1))
    )
    func idleTimeout() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        }) { server in
            let clock = ManualClock()
            var configuration = manualConfiguration(clock)
            configuration.subscriptionIdleTimeout = .milliseconds(500)
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            let opened = SubscriptionElement.opened(epoch: "ep", earliest: 1, head: 0)
            let first = try await iterator.next()
            #expect(first == opened)
            // The stream went quiet: the one timer is the idle timeout, and 1 ms before it nothing fires.
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(500)])
            clock.advance(by: .milliseconds(499))
            #expect(clock.deadlines == [.milliseconds(500)])
            clock.advance(by: .milliseconds(1))
            #expect(
                try await iterator.next()
                    == .reconnecting(attempt: 1, reason: "nothing received within the idle timeout")
            )
            // The reconnect waits its backoff on the same clock, then the new stream opens with a fresh idle timer.
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(505)])
            clock.advance(by: .milliseconds(5))
            #expect(try await iterator.next() == opened)
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(1005)])
            #expect(server.acceptedConnections == 2)
        }
    }

    @Test("cancelling the consuming task closes the connection")
    func cancellationClosesConnection() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            let opened = Locked(false)
            let consumer = Task {
                for try await element in client.subscribe(topics: ["a"]) {
                    if case .opened = element {
                        opened.withLock { $0 = true }
                    }
                }
            }
            try await waitUntil { opened.current }
            consumer.cancel()
            _ = await consumer.result
            try await waitUntil { server.endedConnections == 1 }
            #expect(server.acceptedConnections == 1)
        }
    }

    @Test("dropping the iterator closes the connection")
    func droppingIteratorClosesConnection() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            do {
                var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
                #expect(try await iterator.next() == .opened(epoch: "ep", earliest: 1, head: 0))
            }
            try await waitUntil { server.endedConnections == 1 }
        }
    }

    @Test("a slow consumer makes the client stop reading instead of buffering")
    func backpressure() async throws {
        let written = Locked(0)
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            let padding = String(repeating: "x", count: 4000)
            var id: Int64 = 0
            while id < 50_000 {
                id += 1
                let event =
                    "id: \(id)\nevent: m\n"
                    + "data: {\"id\":\(id),\"topic\":\"a\",\"type\":\"m\",\"time\":\"2026-11-25T01:07:15.123Z\",\"data\":\"\(padding)\"}\n\n"
                try await exchange.write(event)
                written.withLock { $0 = Int(id) }
            }
            try await exchange.waitForClientClose()
        }) { server in
            var configuration = fastConfiguration()
            configuration.subscriptionBufferSize = 4
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            _ = try await iterator.next()
            _ = try await iterator.next()
            // Wait until the server cannot write any more: every buffer between it and the consumer is full.
            var stalled = written.current
            while true {
                try await Task.sleep(for: .milliseconds(300))
                let now = written.current
                if now == stalled { break }
                stalled = now
            }
            // The kernel's socket buffers hold tens of megabytes at most, far less than the 200 MB on offer; a client
            // that buffered without bound would have taken all of it.
            #expect(stalled < 50_000)
            // Reading resumes where it stopped, in order.
            for expected in Int64(2)...Int64(stalled + 50) {
                guard case .event(let event)? = try await iterator.next() else {
                    Issue.record("expected an event")
                    return
                }
                #expect(event.id == expected)
            }
        }
    }

    @Test("a WebSocket subscription resumes with the newest token and answers pings with masked pongs")
    func webSocketResume() async throws {
        try await withFakeServer(webSocket: { socket in
            let subscribe = try await socket.receiveText()
            if socket.request.connection == 0 {
                #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"from":"earliest"}"#)
                try await socket.send(#"{"type":"subscribed","epoch":"ep","earliest":1,"head":2,"from":0}"#)
                try await socket.send(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer(string: "p1")))
                try await socket.send(
                    #"{"type":"event","id":1,"topic":"orders/1","event":"created","time":"2026-11-25T01:07:15.123Z","data":1,"resume":"t1"}"#
                )
                try await socket.send(#"{"type":"caughtup","head":2,"resume":"t2"}"#)
                let pong = try await socket.nextFrame()
                #expect(pong?.opcode == .pong)
                #expect(pong?.maskKey != nil)
                #expect(pong.map { String(buffer: $0.unmaskedData) } == "p1")
                try await socket.close(code: .goingAway, reason: "restarting")
                _ = try await socket.nextFrame()
                return
            }
            #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"resume":"t2"}"#)
            #expect(socket.received.first?.maskKey != nil)
            try await socket.send(#"{"type":"subscribed","epoch":"ep","earliest":1,"head":3,"from":2}"#)
            try await socket.send(
                #"{"type":"event","id":3,"topic":"orders/1","event":"created","time":"2026-11-25T01:07:15.123Z","data":3,"resume":"t3"}"#
            )
            _ = try await socket.nextFrame()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .earliest, transport: .webSocket)
                .makeAsyncIterator()
            let elements = try await take(6, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 2), received(1), .caughtUp,
                    .reconnecting(attempt: 1, reason: ""), .opened(epoch: "ep", earliest: 1, head: 3),
                    received(3),
                ]
            )
            #expect(server.recordedRequests.map(\.uri) == ["/v1/ws", "/v1/ws"])
        }
    }

    @Test("a rejected resume token ends a WebSocket subscription with invalidResumeToken")
    func invalidResumeToken() async throws {
        try await withFakeServer(webSocket: { socket in
            _ = try await socket.receiveText()
            try await socket.send(#"{"type":"error","code":"invalid_resume_token","message":"bad signature"}"#)
            _ = try await socket.nextFrame()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"], from: .resumeToken("forged"), transport: .webSocket)
                .makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .invalidResumeToken)
                #expect(error.message == "bad signature")
            }
            #expect(server.acceptedConnections == 1)
        }
    }

    @Test("a close frame that blames the client ends a WebSocket subscription")
    func webSocketFatalClose() async throws {
        try await withFakeServer(webSocket: { socket in
            _ = try await socket.receiveText()
            try await socket.close(code: .unacceptableData, reason: "no")
            _ = try await socket.nextFrame()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"], transport: .webSocket).makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .protocolViolation)
                #expect(error.message == "the server closed the WebSocket (1003): no")
            }
            #expect(server.acceptedConnections == 1)
        }
    }

    @Test("a resume token cannot start an SSE subscription")
    func resumeTokenNeedsWebSocket() async throws {
        try await withFakeServer { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"], from: .resumeToken("t")).makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .invalidArgument)
            }
            #expect(server.acceptedConnections == 0)
        }
    }

    @Test("the server's retry: sets the SSE reconnect delay", .timeLimit(.minutes(1)))
    func serverRetry() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            if exchange.request.connection == 0 {
                try await exchange.end()
                return
            }
            try await exchange.waitForClientClose()
        }) { server in
            let clock = ManualClock()
            var configuration = EventLogClient.Configuration()
            configuration.clock = ClockTimers(clock)
            configuration.subscriptionIdleTimeout = nil
            // Without the server's 10 ms, the first reconnect would wait a minute.
            configuration.reconnectBackoff = .init(initial: .seconds(60), maximum: .seconds(60), jitter: 0)
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            let elements = try await take(2, from: &iterator)
            #expect(elements == [.opened(epoch: "ep", earliest: 1, head: 0), .reconnecting(attempt: 1, reason: "")])
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(10)])
            clock.advance(by: .milliseconds(10))
            #expect(try await iterator.next() == .opened(epoch: "ep", earliest: 1, head: 0))
        }
    }

    @Test(
        "collect returns the elements up to the requested number of events, or times out",
        .timeLimit(.minutes(1))
    )
    func collect() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 3, from: 0) + sseEvent(1) + sseEvent(2) + sseEvent(3))
            try await exchange.waitForClientClose()
        }) { server in
            let clock = ManualClock()
            var configuration = manualConfiguration(clock)
            // The only timer left on the clock is collect's own.
            configuration.subscriptionIdleTimeout = nil
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            let subscription = client.subscribe(topics: ["orders/*"], from: .earliest)
            // The clock never moves, so only the events can end this collect.
            let elements = try await subscription.collect(events: 2, timeout: .seconds(10))
            #expect(elements == [.opened(epoch: "ep", earliest: 1, head: 3), received(1), received(2)])
            #expect(clock.deadlines == [])

            let short = Task { try await subscription.collect(events: 4, timeout: .milliseconds(300)) }
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(300)])
            clock.advance(by: .milliseconds(299))
            #expect(clock.deadlines == [.milliseconds(300)])
            clock.advance(by: .milliseconds(1))
            do {
                _ = try await short.value
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .timeout)
                #expect(error.description == "timeout: fewer than 4 events within 0.3 seconds")
            }
            try await waitUntil { server.endedConnections == 2 }
        }
    }

    @Test("a refused WebSocket upgrade reports the HTTP error")
    func webSocketRefused() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .forbidden,
                body: #"{"error":{"code":"forbidden","message":"no"}}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: fastConfiguration())
            var iterator = client.subscribe(topics: ["a"], transport: .webSocket).makeAsyncIterator()
            do {
                _ = try await iterator.next()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .http)
                #expect(error.status == 403)
                #expect(error.serverCodeText == "forbidden")
                #expect(error.serverCode == .forbidden)
            }
        }
    }
}

/// Polls `condition` until it holds. The bound only keeps a broken test from hanging.
func waitUntil(timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

@Suite("Subscriptions from an actor")
struct ActorConsumerTests {
    @Test("a subscription can be consumed from the main actor")
    func mainActorConsumer() async throws {
        let server = try await FakeServer.start(http: { exchange in
            try await exchange.startStream(headers: [("Content-Type", "text/event-stream")])
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        })
        let element = try await Self.firstElement(EventLogClient(baseURL: server.baseURL))
        #expect(element == .opened(epoch: "ep", earliest: 1, head: 0))
        await server.stop()
    }

    @MainActor
    private static func firstElement(_ client: EventLogClient) async throws -> SubscriptionElement? {
        for try await element in client.subscribe(topics: ["a"]) {
            return element
        }
        return nil
    }
}
