import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import EventLogClient

/// Runs `body` against a fake server and stops the server afterwards.
func withFakeServer<Result>(
    http: @escaping FakeServer.HTTPHandler = { try await $0.respond(status: .notFound) },
    webSocket: FakeServer.WebSocketHandler? = nil,
    _ body: (FakeServer) async throws -> Result
) async throws -> Result {
    let server = try await FakeServer.start(http: http, webSocket: webSocket)
    do {
        let result = try await body(server)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// A default configuration with every client timer on `clock`: an idle keep-alive connection stays young until the
/// test advances the clock, however slow the machine is.
private func manualConfiguration(_ clock: ManualClock) -> EventLogClient.Configuration {
    var configuration = EventLogClient.Configuration()
    configuration.clock = ClockTimers(clock)
    return configuration
}

@Suite("Requests against a fake server")
struct RequestTests {
    @Test("publish sends JSON with Host, Content-Length and the Idempotency-Key header")
    func publish() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .ok,
                headers: [("Content-Type", "application/json"), ("Idempotent-Replayed", "true")],
                body: #"{"id":41,"topic":"orders/1","time":"2026-11-25T01:07:15.123Z"}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            let result = try await client.publish(
                NewEvent(topic: "orders/1", type: "created", data: .json(#"{"n":1}"#), idempotencyKey: "k-1")
            )
            #expect(
                result == PublishResult(id: 41, topic: "orders/1", time: testTime, replayed: true))

            let request = try #require(server.recordedRequests.first)
            #expect(request.method == .POST)
            #expect(request.uri == "/v1/events")
            #expect(request.header("Host") == "127.0.0.1:\(server.port)")
            #expect(request.header("Content-Type") == "application/json")
            #expect(request.header("Idempotency-Key") == "k-1")
            #expect(request.header("Content-Length") == String(request.body.utf8.count))
            #expect(request.body == #"{"topic":"orders/1","type":"created","data":{"n":1}}"#)
        }
    }

    @Test("a batch is sent as NDJSON with one idempotency key per line")
    func batch() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .created,
                body: #"{"events":[{"id":1,"topic":"a","time":"2026-11-25T01:07:15.001Z","replayed":false},"#
                    + #"{"id":2,"topic":"b","time":"2026-11-25T01:07:15.002Z","replayed":true}],"ids":[1,2]}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            let results = try await client.publish(batch: [
                NewEvent(topic: "a", data: .text("x"), idempotencyKey: "i1"),
                NewEvent(topic: "b", key: "k", data: nil),
            ])
            #expect(
                results == [
                    PublishResult(id: 1, topic: "a", time: testTime - 122, replayed: false),
                    PublishResult(id: 2, topic: "b", time: testTime - 121, replayed: true),
                ]
            )
            let request = try #require(server.recordedRequests.first)
            #expect(request.header("Content-Type") == "application/x-ndjson")
            #expect(request.header("Idempotency-Key") == nil)
            #expect(
                request.body
                    == "{\"topic\":\"a\",\"data\":\"x\",\"idempotencyKey\":\"i1\"}\n{\"topic\":\"b\",\"key\":\"k\"}\n")
            #expect(try await client.publish(batch: []) == [])
            #expect(server.recordedRequests.count == 1)
        }
    }

    @Test("an error answer becomes an error with the status, the server's code, message and line")
    func errorAnswer() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .conflict,
                body: #"{"error":{"code":"idempotency_conflict","message":"the key names another event","index":1}}"#
            )
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            do {
                _ = try await client.publish(NewEvent(topic: "a", data: nil, idempotencyKey: "k"))
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .http)
                #expect(error.status == 409)
                #expect(error.serverCode == .idempotencyConflict)
                #expect(error.message == "the key names another event")
                #expect(error.index == 1)
                #expect(error.description == "http 409 idempotency_conflict (line 1): the key names another event")
            }
        }
    }

    @Test("sequential requests reuse one keep-alive connection")
    func keepAlive() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .created, body: #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: manualConfiguration(ManualClock()))
            for _ in 0..<5 {
                _ = try await client.publish(NewEvent(topic: "a", data: nil))
            }
            #expect(server.recordedRequests.count == 5)
            #expect(server.acceptedConnections == 1)
            client.closeIdleConnections()
        }
    }

    @Test("an idle connection is reused until it is idleConnectionTimeout old, then replaced")
    func idleConnectionAge() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .created, body: #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)
        }) { server in
            let clock = ManualClock()
            var configuration = manualConfiguration(clock)
            configuration.idleConnectionTimeout = .seconds(5)
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            _ = try await client.publish(NewEvent(topic: "a", data: nil))
            clock.advance(by: .seconds(5) - .nanoseconds(1))
            _ = try await client.publish(NewEvent(topic: "a", data: nil))
            #expect(server.acceptedConnections == 1)
            clock.advance(by: .seconds(5))
            _ = try await client.publish(NewEvent(topic: "a", data: nil))
            #expect(server.acceptedConnections == 2)
            #expect(server.recordedRequests.map(\.connection) == [0, 0, 1])
            client.closeIdleConnections()
        }
    }

    @Test("with no idle connections allowed, each request has its own connection")
    func noKeepAlive() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .created, body: #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)
        }) { server in
            var configuration = EventLogClient.Configuration()
            configuration.maxIdleConnections = 0
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            for _ in 0..<3 {
                _ = try await client.publish(NewEvent(topic: "a", data: nil))
            }
            #expect(server.acceptedConnections == 3)
        }
    }

    @Test("a replayable request is retried once when the server closed the idle connection")
    func staleConnection() async throws {
        let calls = Locked(0)
        try await withFakeServer(http: { exchange in
            let call = calls.withLock { count in
                defer { count += 1 }
                return count
            }
            if call == 1 {
                // Close the reused connection without answering, as a server closing an idle connection would.
                return
            }
            try await exchange.respond(
                status: .created, body: #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: manualConfiguration(ManualClock()))
            _ = try await client.publish(NewEvent(topic: "a", data: nil, idempotencyKey: "k"))
            _ = try await client.publish(NewEvent(topic: "a", data: nil, idempotencyKey: "k"))
            #expect(server.recordedRequests.count == 3)
            #expect(server.acceptedConnections == 2)
        }
    }

    @Test("a request without an idempotency key is not retried after a failure")
    func notReplayed() async throws {
        let calls = Locked(0)
        try await withFakeServer(http: { exchange in
            let call = calls.withLock { count in
                defer { count += 1 }
                return count
            }
            if call == 1 {
                return
            }
            try await exchange.respond(
                status: .created, body: #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            _ = try await client.publish(NewEvent(topic: "a", data: nil))
            do {
                _ = try await client.publish(NewEvent(topic: "a", data: nil))
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .connectionClosed)
            }
            #expect(server.recordedRequests.count == 2)
        }
    }

    @Test("history and topics send their queries and decode their answers")
    func historyAndTopics() async throws {
        try await withFakeServer(http: { exchange in
            if exchange.request.path == "/v1/topics" {
                try await exchange.respond(
                    status: .ok,
                    body: #"{"topics":[{"topic":"a/1","count":2,"lastId":8}],"head":8,"earliest":1}"#
                )
            } else {
                try await exchange.respond(
                    status: .ok,
                    body:
                        #"{"events":[{"id":8,"topic":"a/1","type":"m","time":"2026-11-25T01:07:15.123Z","data":{"z":1,"a":2},"key":"k"}],"#
                        + #""next":8,"head":8,"earliest":1}"#
                )
            }
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL)
            let page = try await client.history(topics: ["a/*", "b+c"], after: 7, limit: 10)
            #expect(
                page
                    == HistoryPage(
                        events: [
                            Event(
                                id: 8, topic: "a/1", type: "m", key: "k", data: .json(#"{"a":2,"z":1}"#), time: testTime
                            )
                        ],
                        next: 8,
                        head: 8,
                        earliest: 1
                    )
            )
            #expect(try await client.topics() == [TopicSummary(topic: "a/1", count: 2, lastID: 8)])
            let requests = server.recordedRequests
            #expect(requests.map(\.uri) == ["/v1/events?topic=a/*&topic=b%2Bc&after=7&limit=10", "/v1/topics"])
            #expect(requests.first?.header("Accept") == "application/json")
        }
    }

    @Test("send returns any answer as it is")
    func rawSend() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(status: .serviceUnavailable, headers: [("X-Test", "1")], body: "down")
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL + "/")
            let response = try await client.send(method: "GET", path: "/healthz")
            #expect(response.status == 503)
            #expect(response.text == "down")
            #expect(response.headers(named: "x-test") == ["1"])
            #expect(server.recordedRequests.first?.uri == "/healthz")
        }
    }

    @Test("a request that gets no answer in time fails with a timeout", .timeLimit(.minutes(1)))
    func requestTimeout() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.waitForClientClose()
        }) { server in
            let clock = ManualClock()
            var configuration = manualConfiguration(clock)
            configuration.requestTimeout = .milliseconds(200)
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            let request = Task { try await client.topics() }
            #expect(try await clock.waitForSleepers(1) == [.milliseconds(200)])
            clock.advance(by: .milliseconds(199))
            #expect(clock.deadlines == [.milliseconds(200)])
            clock.advance(by: .milliseconds(1))
            do {
                _ = try await request.value
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .timeout)
                #expect(error.description == "timeout: no complete answer within the request timeout")
            }
        }
    }

    @Test("a refused connection fails with \"cannot connect to <base URL>: connection refused\"")
    func connectionRefused() async throws {
        // Port 1: privileged and nothing listens there, so no test's server can hold it (a port found free and
        // closed could be taken by another test's server before the request, which then published to its log).
        let baseURL = "http://127.0.0.1:1"
        let client = EventLogClient(baseURL: baseURL)
        do {
            _ = try await client.publish(NewEvent(topic: "a", data: nil))
            Issue.record("expected an error")
        } catch let error as EventLogClientError {
            #expect(error.code == .connectionFailed)
            #expect(error.message == "cannot connect to \(baseURL): connection refused")
            #expect(error.description == "cannot connect to \(baseURL): connection refused")
        }
    }

    @Test("connection failures are told in plain words")
    func connectFailureReasons() {
        let timedOut = ChannelError.connectTimeout(.seconds(10))
        let refused = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        let unreachable = IOError(errnoCode: EHOSTUNREACH, reason: "connect")
        #expect(EventLogClientError.connectFailureReason(timedOut) == "connection timed out")
        #expect(EventLogClientError.connectFailureReason(refused) == "connection refused")
        #expect(EventLogClientError.connectFailureReason(unreachable) == "host unreachable")
        let timeout = EventLogClientError.cannotConnect(to: "http://10.0.0.1:8080", timedOut)
        #expect(timeout.code == .timeout)
        #expect(timeout.description == "cannot connect to http://10.0.0.1:8080: connection timed out")
    }

    @Test("an invalid base URL fails every call with invalidURL")
    func invalidURL() async throws {
        let client = EventLogClient(baseURL: "https://127.0.0.1:1")
        do {
            _ = try await client.topics()
            Issue.record("expected an error")
        } catch let error as EventLogClientError {
            #expect(error.code == .invalidURL)
        }
        var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
        await #expect(throws: EventLogClientError.self) { _ = try await iterator.next() }
    }
}
