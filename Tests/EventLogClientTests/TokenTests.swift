import Foundation
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Testing

@testable import EventLogClient

/// A token provider that hands out `t-1`, `t-2`, ... and counts its calls.
private final class NumberedTokens: Sendable {
    private let calls = Locked(0)

    /// How many times the provider was called.
    var count: Int { self.calls.current }

    var provider: EventLogClient.TokenProvider {
        { [calls] in
            "t-\(calls.withLock { count in count += 1; return count })"
        }
    }

    /// A quickly reconnecting configuration that takes its tokens from this provider.
    func configuration() -> EventLogClient.Configuration {
        var configuration = fastConfiguration()
        configuration.tokenProvider = self.provider
        return configuration
    }
}

private let expiredBody = #"{"error":{"code":"token_expired","message":"the token expired at 2026-11-25T01:07:15Z"}}"#
private let publishAnswer = #"{"id":41,"topic":"orders/1","time":"2026-11-25T01:07:15.123Z"}"#
private let subscribed = #"{"type":"subscribed","epoch":"ep","earliest":1,"head":0,"from":0}"#

private func wsEvent(_ id: Int64) -> String {
    #"{"type":"event","id":\#(id),"topic":"orders/1","event":"created","time":"2026-11-25T01:07:15.123Z","data":\#(id)}"#
}

/// The error that ends a subscription: the next element must be one, and the iterator is finished after it.
private func endingError(_ iterator: inout Subscription.AsyncIterator) async throws -> EventLogClientError {
    do {
        let element = try await iterator.next()
        Issue.record("expected an error, got \(String(describing: element))")
        throw CancellationError()
    } catch let error as EventLogClientError {
        let after = try await iterator.next()
        #expect(after == nil)
        return error
    }
}

/// The `Authorization` header of every request the server recorded, in order.
private func authorizations(_ server: FakeServer) -> [String?] {
    server.recordedRequests.map { $0.header("Authorization") }
}

@Suite("Bearer tokens: the provider, its header, and renewal")
struct TokenTests {
    @Test("publish, history, topics and send each call the provider and send its token as a bearer")
    func requestsCarryTheToken() async throws {
        try await withFakeServer(http: { exchange in
            switch exchange.request.path {
            case "/v1/topics": try await exchange.respond(status: .ok, body: #"{"topics":[]}"#)
            case "/v1/events" where exchange.request.method == .GET:
                try await exchange.respond(status: .ok, body: #"{"events":[],"next":0,"head":0,"earliest":1}"#)
            case _ where exchange.request.header("Content-Type") == "application/x-ndjson":
                try await exchange.respond(status: .ok, body: "{\"events\":[\(publishAnswer)]}")
            default: try await exchange.respond(status: .ok, body: publishAnswer)
            }
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            _ = try await client.publish(NewEvent(topic: "orders/1", type: "created", data: nil))
            _ = try await client.publish(batch: [NewEvent(topic: "orders/1", type: "created", data: nil)])
            _ = try await client.history(topics: ["orders/*"])
            _ = try await client.topics()
            _ = try await client.send(method: "GET", path: "/healthz")
            // A header given to send wins: the provider is not asked.
            _ = try await client.send(method: "GET", path: "/healthz", headers: [("Authorization", "Bearer mine")])
            #expect(
                authorizations(server) == [
                    "Bearer t-1", "Bearer t-2", "Bearer t-3", "Bearer t-4", "Bearer t-5", "Bearer mine",
                ]
            )
            #expect(tokens.count == 5)
        }
    }

    @Test("a fixed token is sent as a bearer; none (nil or empty) sends no Authorization header")
    func fixedToken() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(status: .ok, body: #"{"topics":[]}"#)
        }) { server in
            var configuration = EventLogClient.Configuration()
            configuration.token = "elk_abc"
            _ = try await EventLogClient(baseURL: server.baseURL, configuration: configuration).topics()
            configuration.token = ""
            _ = try await EventLogClient(baseURL: server.baseURL, configuration: configuration).topics()
            configuration.token = "ignored"
            configuration.tokenProvider = { nil }
            _ = try await EventLogClient(baseURL: server.baseURL, configuration: configuration).topics()
            #expect(authorizations(server) == ["Bearer elk_abc", nil, nil])
        }
    }

    @Test("a token that a header cannot carry fails with invalidArgument before anything is sent")
    func tokenWithLineBreak() async throws {
        try await withFakeServer { server in
            var configuration = EventLogClient.Configuration()
            configuration.token = "abc\r\nX-Injected: 1"
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            do {
                _ = try await client.topics()
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.code == .invalidArgument)
                #expect(!error.message.contains("abc"))
            }
            #expect(server.acceptedConnections == 0)
        }
    }

    @Test("a 401 token_expired is sent once more with a new token; a second one is the answer")
    func requestRetriedOnceAfterExpiry() async throws {
        try await withFakeServer(http: { exchange in
            if exchange.request.header("Authorization") == "Bearer t-2" {
                try await exchange.respond(status: .ok, body: publishAnswer)
            } else {
                try await exchange.respond(status: .unauthorized, body: expiredBody)
            }
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            let result = try await client.publish(NewEvent(topic: "orders/1", type: "created", data: nil))
            #expect(result.id == 41)
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-2"])
            // t-3 is refused, and so is t-4: the second refusal is thrown.
            do {
                _ = try await client.publish(NewEvent(topic: "orders/1", type: "created", data: nil))
                Issue.record("expected an error")
            } catch let error as EventLogClientError {
                #expect(error.status == 401)
                #expect(error.serverCode == .tokenExpired)
                #expect(error.message == "the token expired at 2026-11-25T01:07:15Z")
            }
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-2", "Bearer t-3", "Bearer t-4"])
            #expect(tokens.count == 4)
        }
    }

    @Test("an SSE subscription asks the provider at every reconnect and sends each connection its token")
    func sseReconnectsWithNewTokens() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            switch exchange.request.connection {
            case 0:
                // The server ends the stream at the token's expiry.
                try await exchange.write(sseOpen(head: 2, from: 0) + sseEvent(1))
                try await exchange.end()
            case 1:
                try await exchange.write(sseOpen(head: 2, from: 1) + sseEvent(2))
                try await exchange.end()
            default:
                try await exchange.write(sseOpen(head: 2, from: 2))
                try await exchange.waitForClientClose()
            }
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .earliest).makeAsyncIterator()
            let elements = try await take(7, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 2), received(1), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 2), received(2), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 2),
                ]
            )
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-2", "Bearer t-3"])
            #expect(server.recordedRequests.map { $0.header("Last-Event-ID") } == [nil, "1", "2"])
            #expect(tokens.count == 3)
        }
    }

    @Test("an SSE connect refused with token_expired is retried at once with a new token, without a reconnect")
    func sseExpiredTokenRetriedOnce() async throws {
        try await withFakeServer(http: { exchange in
            guard exchange.request.header("Authorization") == "Bearer t-2" else {
                try await exchange.respond(status: .unauthorized, body: expiredBody)
                return
            }
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 1, from: 0) + sseEvent(1))
            try await exchange.waitForClientClose()
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .earliest).makeAsyncIterator()
            let elements = try await take(2, from: &iterator)
            #expect(elements == [.opened(epoch: "ep", earliest: 1, head: 1), received(1)])
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-2"])
            #expect(tokens.count == 2)
        }
    }

    @Test("token_expired twice in a row ends a subscription, SSE or WebSocket, after exactly two attempts")
    func expiredTwiceEnds() async throws {
        for transport in [Transport.sse, .webSocket] {
            // Without a WebSocket handler the fake server answers the upgrade request as an ordinary request.
            try await withFakeServer(http: { exchange in
                try await exchange.respond(status: .unauthorized, body: expiredBody)
            }) { server in
                let tokens = NumberedTokens()
                let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
                var iterator = client.subscribe(topics: ["orders/*"], transport: transport).makeAsyncIterator()
                let error = try await endingError(&iterator)
                #expect(error.code == .http)
                #expect(error.status == 401)
                #expect(error.serverCode == .tokenExpired)
                #expect(authorizations(server) == ["Bearer t-1", "Bearer t-2"], "\(transport)")
                #expect(tokens.count == 2)
            }
        }
    }

    @Test(
        "a WebSocket token_expired warning makes the client send an auth op with a new token on the same socket; authenticated is accepted, and a reconnect asks the provider again"
    )
    func webSocketRenewal() async throws {
        try await withFakeServer(webSocket: { socket in
            let subscribe = try await socket.receiveText()
            if socket.request.connection == 0 {
                #expect(subscribe == #"{"op":"subscribe","topics":["orders/*"],"from":"earliest"}"#)
                try await socket.send(subscribed)
                try await socket.send(#"{"type":"error","code":"token_expired","message":"the token expires in 30 s"}"#)
                #expect(try await socket.receiveText() == #"{"op":"auth","token":"t-2","ref":"auth"}"#)
                try await socket.send(
                    #"{"type":"authenticated","ref":"auth","subject":"alice","expiresAt":"2026-11-25T02:07:15.123Z"}"#)
                try await socket.send(wsEvent(1))
                try await socket.close(code: .goingAway, reason: "restarting")
                _ = try await socket.nextFrame()
                return
            }
            try await socket.send(subscribed)
            try await socket.send(wsEvent(2))
            _ = try await socket.nextFrame()
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["orders/*"], from: .earliest, transport: .webSocket)
                .makeAsyncIterator()
            let elements = try await take(5, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 0), received(1), .reconnecting(attempt: 1, reason: ""),
                    .opened(epoch: "ep", earliest: 1, head: 0), received(2),
                ]
            )
            // The upgrade requests carry the tokens of their connects; t-2 went in the auth op.
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-3"])
            #expect(tokens.count == 3)
        }
    }

    @Test("a renewal the server refuses with token_expired (with the op's ref) reconnects at once with a new token")
    func webSocketRefusedRenewal() async throws {
        try await withFakeServer(webSocket: { socket in
            _ = try await socket.receiveText()
            try await socket.send(subscribed)
            if socket.request.connection == 0 {
                try await socket.send(#"{"type":"error","code":"token_expired","message":"expires soon"}"#)
                #expect(try await socket.receiveText() == #"{"op":"auth","token":"t-2","ref":"auth"}"#)
                try await socket.send(#"{"type":"error","code":"token_expired","message":"expired","ref":"auth"}"#)
                try await socket.close(code: .policyViolation)
                _ = try await socket.nextFrame()
                return
            }
            try await socket.send(wsEvent(1))
            _ = try await socket.nextFrame()
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["orders/*"], transport: .webSocket).makeAsyncIterator()
            let elements = try await take(3, from: &iterator)
            #expect(
                elements == [
                    .opened(epoch: "ep", earliest: 1, head: 0), .opened(epoch: "ep", earliest: 1, head: 0), received(1),
                ]
            )
            #expect(authorizations(server) == ["Bearer t-1", "Bearer t-3"])
            #expect(tokens.count == 3)
        }
    }

    @Test(
        "a subscribe refused for its rights ends a WebSocket subscription with the server's code, not retried",
        arguments: [ErrorCode.forbiddenTopic, .authenticationRequired, .invalidToken]
    )
    func webSocketRefusedSubscribe(code: ErrorCode) async throws {
        try await withFakeServer(webSocket: { socket in
            _ = try await socket.receiveText()
            try await socket.send(
                #"{"type":"error","code":"\#(code.rawValue)","selector":"orders/2","message":"not allowed to read \"orders/2\""}"#
            )
            _ = try await socket.nextFrame()
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["orders/2"], transport: .webSocket).makeAsyncIterator()
            let error = try await endingError(&iterator)
            #expect(error.code == .server)
            #expect(error.serverCode == code)
            #expect(error.description == "server \(code.rawValue): not allowed to read \"orders/2\"")
            #expect(server.acceptedConnections == 1)
            #expect(tokens.count == 1)
        }
    }

    @Test("an SSE connect refused with 403 forbidden_topic ends the subscription with the server's message")
    func sseForbidden() async throws {
        try await withFakeServer(http: { exchange in
            try await exchange.respond(
                status: .forbidden,
                body: #"{"error":{"code":"forbidden_topic","message":"not allowed to read \"*\"","selector":"*"}}"#
            )
        }) { server in
            let tokens = NumberedTokens()
            let client = EventLogClient(baseURL: server.baseURL, configuration: tokens.configuration())
            var iterator = client.subscribe(topics: ["*"]).makeAsyncIterator()
            let error = try await endingError(&iterator)
            #expect(error.description == "http 403 forbidden_topic: not allowed to read \"*\"")
            #expect(server.recordedRequests.count == 1)
        }
    }

    @Test("a provider that fails makes a subscription reconnect with its error as the reason")
    func providerFailure() async throws {
        struct Unavailable: Error, CustomStringConvertible {
            var description: String { "the token service is down" }
        }
        let calls = Locked(0)
        var configuration = fastConfiguration()
        configuration.tokenProvider = {
            guard
                calls.withLock({ count in
                    count += 1; return count
                }) > 1
            else { throw Unavailable() }
            return "t"
        }
        try await withFakeServer(http: { exchange in
            try await exchange.startStream(headers: sseHeaders)
            try await exchange.write(sseOpen(head: 0, from: 0))
            try await exchange.waitForClientClose()
        }) { server in
            let client = EventLogClient(baseURL: server.baseURL, configuration: configuration)
            var iterator = client.subscribe(topics: ["a"]).makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first == .reconnecting(attempt: 1, reason: "the token service is down"))
            let second = try await iterator.next()
            #expect(second == .opened(epoch: "ep", earliest: 1, head: 0))
            #expect(authorizations(server) == ["Bearer t"])
        }
    }
}
