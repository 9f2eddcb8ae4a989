import EventLog
import EventLogAuth
import EventLogClient
import EventLogWire
import Foundation
import NIOHTTP1
import Testing

@testable import EventLogServer

/// A server with auth on: an HS256 secret in a temporary file, tokens minted with it.
struct AuthFixture {
    let secret: [UInt8] = Array("0123456789abcdef0123456789abcdef-test-secret".utf8)
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory()
        try Data(secret).write(to: URL(fileURLWithPath: secretPath))
    }

    var secretPath: String { directory.url.appendingPathComponent("secret").path }

    func authenticator(
        anonymous: [String] = [], leeway: Duration = .zero, apiKeys: String? = nil
    ) async throws -> Authenticator {
        var configuration = AuthConfiguration()
        configuration.secretFiles = [secretPath]
        configuration.anonymousSubscribe = anonymous
        configuration.leeway = leeway
        if let apiKeys {
            let path = directory.url.appendingPathComponent("keys.json").path
            try Data(apiKeys.utf8).write(to: URL(fileURLWithPath: path))
            configuration.apiKeysFile = path
        }
        return try await Authenticator(configuration)
    }

    func token(
        publish: [String] = [], subscribe: [String] = [], admin: Bool = false, lifetime: Duration = .seconds(600),
        subject: String = "alice"
    ) async throws -> String {
        var request = TokenMinter.Request()
        request.publish = publish
        request.subscribe = subscribe
        request.admin = admin
        request.lifetime = lifetime
        request.subject = subject
        return try await TokenMinter.mint(request, secret: secret)
    }

    func bearer(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }
}

/// The server with auth on, over real sockets: who may publish, read, list and watch what.
@Suite struct AuthServerTests {
    static let challenge = "Bearer realm=\"eventlog\", error=\"invalid_token\""

    @Test func publishNeedsACoveringGrantAndABatchIsRefusedWhole() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            let client = server.client
            let writer = fixture.bearer(try await fixture.token(publish: ["orders/*"], subscribe: ["*"]))
            let json = [("Content-Type", "application/json")]

            let anonymous = try await client.request(.POST, "/v1/events", headers: json, body: #"{"topic":"orders/1"}"#)
            #expect(anonymous.status == 401)
            #expect(anonymous.errorCode == "authentication_required")
            #expect(anonymous.headers.first(name: "www-authenticate") == Self.challenge)

            let allowed = try await client.request(
                .POST, "/v1/events", headers: json + writer, body: #"{"topic":"orders/1","data":"a"}"#)
            #expect(allowed.status == 201)
            #expect(allowed.json["id"] as? Int == 1)

            let outside = try await client.request(
                .POST, "/v1/events", headers: json + writer, body: #"{"topic":"orders","data":"a"}"#)
            #expect(outside.status == 403)
            #expect(outside.errorCode == "forbidden_topic")
            #expect((outside.json["error"] as? [String: Any])?["selector"] as? String == "orders")

            let batch = "{\"topic\":\"orders/2\"}\n{\"topic\":\"orders/3\"}\n{\"topic\":\"logs/1\"}\n"
            let refused = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")] + writer, body: batch)
            #expect(refused.status == 403)
            let error = try #require(refused.json["error"] as? [String: Any])
            #expect(error["code"] as? String == "forbidden_topic")
            #expect(error["index"] as? Int == 2)
            #expect(error["selector"] as? String == "logs/1")
            // Nothing of the batch was appended.
            #expect(server.log.head == 1)

            let bad = try await client.request(
                .POST, "/v1/events", headers: json + fixture.bearer("not-a-key"), body: #"{"topic":"orders/1"}"#)
            #expect(bad.status == 401)
            #expect(bad.errorCode == "invalid_token")
            #expect(!bad.body.contains("not-a-key"))
        }
    }

    @Test func readsAreCheckedPerSelectorAndTopicsAreFiltered() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(authenticator: try await fixture.authenticator(anonymous: ["public/*"])) { server in
            for topic in ["orders/1", "orders/10", "orders/1/items", "orders/2", "public/news"] {
                _ = try await server.log.append(NewEvent(topic: topic, type: "t", data: .text(topic)))
            }
            let client = server.client
            let reader = fixture.bearer(try await fixture.token(subscribe: ["orders/1"]))

            let own = try await client.request(.GET, "/v1/events?topic=orders/1", headers: reader)
            #expect(own.status == 200)
            #expect((own.json["events"] as? [[String: Any]])?.map { $0["id"] as? Int } == [1])

            for selector in ["orders/2", "orders/10", "orders/1/*", "orders/*", "*"] {
                let refused = try await client.request(.GET, "/v1/events?topic=\(selector)", headers: reader)
                #expect(refused.status == 403, "\(selector)")
                #expect(refused.errorCode == "forbidden_topic")
                #expect((refused.json["error"] as? [String: Any])?["selector"] as? String == selector)
                let last = try await client.request(.GET, "/v1/events?topic=\(selector)&last=5", headers: reader)
                #expect(last.status == 403, "last \(selector)")
            }
            // No topic means `*`, which only `*` covers.
            #expect(try await client.request(.GET, "/v1/events", headers: reader).status == 403)

            let topics = try await client.request(.GET, "/v1/topics", headers: reader)
            let listed = (topics.json["topics"] as? [[String: Any]])?.compactMap { $0["topic"] as? String }
            #expect(listed == ["orders/1", "public/news"])

            // Anonymous callers get the anonymous grants only.
            #expect(try await client.request(.GET, "/v1/events?topic=public/*").status == 200)
            let anonymous = try await client.request(.GET, "/v1/events?topic=orders/1")
            #expect(anonymous.status == 401)
            #expect(anonymous.errorCode == "authentication_required")
            let anonymousTopics = try await client.request(.GET, "/v1/topics")
            #expect(
                (anonymousTopics.json["topics"] as? [[String: Any]])?.compactMap { $0["topic"] as? String } == [
                    "public/news"
                ])

            // /metrics needs admin; /healthz stays open.
            #expect(try await client.request(.GET, "/metrics", headers: reader).status == 403)
            let admin = fixture.bearer(try await fixture.token(admin: true))
            #expect(try await client.request(.GET, "/metrics", headers: admin).status == 200)
            #expect(try await client.request(.GET, "/healthz").status == 200)
        }
    }

    @Test func sseIsCheckedBeforeItOpensAndEndsAtTheTokensExpiry() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            _ = try await server.log.append(NewEvent(topic: "orders/1", type: "t", data: .text("a")))
            _ = try await server.log.append(NewEvent(topic: "orders/2", type: "t", data: .text("b")))
            let client = server.client
            let narrow = try await fixture.token(subscribe: ["orders/1"])
            let refused = try await client.sse("/v1/events?topic=orders/2", headers: fixture.bearer(narrow)) { reader in
                try await reader.readHead()
                return (reader.status, try await reader.readRest())
            }
            #expect(refused.0 == 403)
            #expect(refused.1.contains("\"selector\":\"orders/2\""))

            // Last-Event-ID carries a position, never rights. The token is minted just before the connect and
            // lives long enough for a loaded CI machine to open the stream (exp is in whole seconds: 9 to 10 s).
            let short = try await fixture.token(subscribe: ["orders/1"], lifetime: .seconds(10))
            let ids = try await withTimeout(.seconds(30)) {
                try await client.sse(
                    "/v1/events?topic=orders/1", headers: fixture.bearer(short) + [("Last-Event-ID", "0")]
                ) { reader in
                    try await reader.readHead()
                    #expect(reader.status == 200)
                    var ids: [Int64] = []
                    while let message = try await reader.nextMessage() {
                        if let id = message.idValue { ids.append(id) }
                    }
                    // The loop ends because the server ended the response, not because the socket broke.
                    #expect(reader.ended)
                    return ids
                }
            }
            #expect(ids == [1])

            // The cookie works for EventSource, which cannot set headers.
            let cookie = try await fixture.token(subscribe: ["orders/*"])
            let cookieIDs = try await client.sse(
                "/v1/events?topic=orders/*",
                headers: [("Cookie", "theme=dark; eventlog_token=\(cookie)"), ("Last-Event-ID", "0")]
            ) { reader in
                var ids: [Int64] = []
                while ids.count < 2, let message = try await reader.nextMessage() {
                    if let id = message.idValue { ids.append(id) }
                }
                return ids
            }
            #expect(cookieIDs == [1, 2])

            // A cookie from a foreign page is not a credential here.
            let foreign = try await client.request(
                .GET, "/v1/events?topic=orders/1",
                headers: [("Cookie", "eventlog_token=\(cookie)"), ("Origin", "http://evil.example")])
            #expect(foreign.status == 403)
            #expect(foreign.errorCode == "forbidden")
            let sameOrigin = try await client.request(
                .GET, "/v1/events?topic=orders/1",
                headers: [("Cookie", "eventlog_token=\(cookie)"), ("Origin", "http://127.0.0.1:\(server.port)")])
            #expect(sameOrigin.status == 200)
        }
    }

    @Test func queryTokensOnlyWhenAllowed() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        let token = try await fixture.token(subscribe: ["orders/1"])
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            let refused = try await server.client.request(.GET, "/v1/events?topic=orders/1&access_token=\(token)")
            #expect(refused.status == 401)
            #expect(refused.errorCode == "invalid_token")
            #expect(!refused.body.contains(token))
        }
        try await withTestServer(
            configure: { $0.allowQueryToken = true }, authenticator: try await fixture.authenticator()
        ) { server in
            let allowed = try await server.client.request(.GET, "/v1/events?topic=orders/1&access_token=\(token)")
            #expect(allowed.status == 200)
        }
        #expect(
            Access.redacted("/v1/events?topic=a&access_token=\(token)&x=1")
                == "/v1/events?topic=a&access_token=REDACTED&x=1")
        #expect(Access.redacted("/v1/events?access%5Ftoken=\(token)") == "/v1/events?access_token=REDACTED")
    }

    @Test func apiKeysAuthenticateBackends() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        let (key, hash) = TokenMinter.newAPIKey()
        let file = #"{"keys":[{"name":"backend","sha256":"\#(hash)","publish":["orders/*"]}]}"#
        try await withTestServer(authenticator: try await fixture.authenticator(apiKeys: file)) { server in
            let json = [("Content-Type", "application/json")]
            let published = try await server.client.request(
                .POST, "/v1/events", headers: json + fixture.bearer(key), body: #"{"topic":"orders/7"}"#)
            #expect(published.status == 201)
            let read = try await server.client.request(.GET, "/v1/events?topic=orders/7", headers: fixture.bearer(key))
            #expect(read.status == 403)
        }
    }

    @Test func corsGivesListedOriginsCredentialsAndNeverWithAStar() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(
            configure: { $0.corsOrigins = ["https://shop.example"] }, authenticator: try await fixture.authenticator()
        ) { server in
            let preflight = try await server.client.request(
                .OPTIONS, "/v1/events", headers: [("Origin", "https://shop.example")])
            #expect(preflight.status == 204)
            #expect(preflight.headers.first(name: "access-control-allow-origin") == "https://shop.example")
            #expect(preflight.headers.first(name: "access-control-allow-credentials") == "true")
            #expect(preflight.headers.first(name: "access-control-allow-headers")?.contains("Authorization") == true)
            let other = try await server.client.request(
                .OPTIONS, "/v1/events", headers: [("Origin", "https://evil.example")])
            #expect(other.headers.first(name: "access-control-allow-origin") == nil)
        }
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            let star = try await server.client.request(.GET, "/healthz", headers: [("Origin", "https://shop.example")])
            #expect(star.headers.first(name: "access-control-allow-origin") == "*")
            #expect(star.headers.first(name: "access-control-allow-credentials") == nil)
        }
    }

    @Test func webSocketAuthenticatesAtTheUpgradeOrByAnAuthOp() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            _ = try await server.log.append(NewEvent(topic: "orders/1", type: "t", data: .text("a")))
            _ = try await server.log.append(NewEvent(topic: "orders/2", type: "t", data: .text("b")))

            // A bad credential at the upgrade is answered 401 over HTTP: no socket.
            await #expect(throws: TestWebSocketError.refused) {
                try await TestWebSocket.connect(port: server.port, headers: fixture.bearer("a.b.c")) { _ in }
            }
            let upgrade = try await server.client.request(
                .GET, "/v1/ws",
                headers: fixture.bearer("a.b.c") + [
                    ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ])
            #expect(upgrade.status == 401)
            #expect(upgrade.errorCode == "invalid_token")

            // Anonymous, then an auth op; a resume token of another stream carries no rights.
            let reader = try await fixture.token(publish: ["orders/1"], subscribe: ["orders/1"], subject: "bob")
            try await TestWebSocket.connect(port: server.port) { socket in
                try await socket.send(["op": "subscribe", "topics": ["orders/1"], "from": 0, "ref": 1])
                let anonymous = try #require(try await socket.next())
                #expect(anonymous["code"] as? String == "authentication_required")
                #expect(anonymous["ref"] as? Int == 1)

                try await socket.send(["op": "auth", "token": reader, "ref": 2])
                let authed = try #require(try await socket.next())
                #expect(authed["type"] as? String == "authenticated")
                #expect(authed["subject"] as? String == "bob")
                #expect(authed["ref"] as? Int == 2)

                try await socket.send(["op": "subscribe", "topics": ["orders/2"], "from": 0, "ref": 3])
                let forbidden = try #require(try await socket.next())
                #expect(forbidden["code"] as? String == "forbidden_topic")
                #expect(forbidden["selector"] as? String == "orders/2")

                try await socket.send(["op": "publish", "topic": "orders/2", "data": "x", "ref": 4])
                let refusedPublish = try #require(try await socket.next())
                #expect(refusedPublish["code"] as? String == "forbidden_topic")
                #expect(server.log.head == 2)

                try await socket.send(["op": "subscribe", "topics": ["orders/1"], "from": 0, "ref": 5])
                let messages = try await socket.read(until: "caughtup")
                #expect(messages.compactMap { $0["id"] as? Int } == [1])
            }

            // A bad token in an auth op ends the socket with 1008.
            try await TestWebSocket.connect(port: server.port) { socket in
                try await socket.send(["op": "auth", "token": "x.y.z", "ref": 1])
                let error = try #require(try await socket.next())
                #expect(error["code"] as? String == "invalid_token")
                #expect(try await socket.next() == nil)
                #expect(socket.closeCode == 1008)
            }
        }
    }

    @Test func webSocketWarnsBeforeExpiryTakesARenewalAndClosesWithout() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(authenticator: try await fixture.authenticator()) { server in
            // Long enough to connect and subscribe before the warning (at half the lifetime) on a machine running the
            // whole suite, where a connect can take seconds (exp is in whole seconds: 13 to 14 s).
            let short = try await fixture.token(subscribe: ["orders/*"], lifetime: .seconds(14))
            // Renewed: the warning comes, an auth op with a fresh token answers it, and the socket outlives the
            // first token while events keep arriving.
            try await withTimeout(.seconds(30)) {
                try await TestWebSocket.connect(port: server.port, headers: fixture.bearer(short)) { socket in
                    try await socket.send(["op": "subscribe", "topics": ["orders/*"], "ref": 1])
                    _ = try await socket.read(until: "caughtup")
                    let warning = try #require(try await socket.next())
                    #expect(warning["type"] as? String == "error")
                    #expect(warning["code"] as? String == "token_expired")
                    #expect(warning["ref"] == nil)
                    let fresh = try await fixture.token(subscribe: ["orders/1"], lifetime: .seconds(600))
                    try await socket.send(["op": "auth", "token": fresh, "ref": 2])
                    #expect(try await socket.next()?["type"] as? String == "authenticated")
                    // The new grants no longer cover `orders/*`: the subscription stops and says so.
                    let narrowed = try #require(try await socket.next())
                    #expect(narrowed["code"] as? String == "forbidden_topic")
                    #expect(narrowed["selector"] as? String == "orders/*")
                    try await Task.sleep(for: .seconds(8.5))
                    try await socket.send(["op": "subscribe", "topics": ["orders/1"], "ref": 3])
                    #expect(try await socket.next()?["type"] as? String == "subscribed")
                }
            }
            // Not renewed: closed with 1008 once the token has expired.
            let another = try await fixture.token(subscribe: ["orders/*"], lifetime: .seconds(8))
            try await withTimeout(.seconds(30)) {
                try await TestWebSocket.connect(port: server.port, headers: fixture.bearer(another)) { socket in
                    while try await socket.next() != nil {}
                    #expect(socket.closeCode == 1008)
                }
            }
        }
    }
}

/// eventlogd's auth options, on the real binary.
@Suite("eventlogd's auth options", .serialized, .timeLimit(.minutes(3)))
struct AuthDaemonTests {
    @Test("a bad key file stops the start with one line naming it; a good one turns auth on")
    func keyFiles() async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        let short = fixture.directory.url.appendingPathComponent("short").path
        try Data("too-short".utf8).write(to: URL(fileURLWithPath: short))
        let database = fixture.directory.databasePath
        let refused = try Exited.run(
            ServerProcess.executableURL,
            ["--host", "127.0.0.1", "--port", "0", "--db", database, "--jwt-secret-file", short])
        #expect(refused.status == 1)
        #expect(refused.stderr == "eventlogd: \(short): an HS256 secret needs at least 32 bytes, this one has 9\n")
        #expect(!FileManager.default.fileExists(atPath: database))

        let missing = try Exited.run(
            ServerProcess.executableURL,
            ["--host", "127.0.0.1", "--port", "0", "--db", database, "--api-keys", "/nonexistent/keys.json"])
        #expect(missing.status == 1)
        #expect(missing.stderr == "eventlogd: --api-keys /nonexistent/keys.json: cannot read the file\n")

        let badLeeway = try Exited.run(
            ServerProcess.executableURL,
            ["--db", database, "--jwt-secret-file", fixture.secretPath, "--jwt-leeway", "soon"])
        #expect(badLeeway.status == 2)
        #expect(badLeeway.stderr.contains("--jwt-leeway"))

        // The secret through its variable; a query token in a debug log is redacted.
        let token = try await fixture.token(subscribe: ["orders/*"])
        let server = try ServerProcess(
            databasePath: database, arguments: ["--allow-query-token", "--log-level", "debug"],
            environment: ["EVENTLOG_JWT_SECRET_FILE": fixture.secretPath])
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        #expect(try await client.request(.GET, "/v1/events?topic=orders/1").status == 401)
        #expect(try await client.request(.GET, "/v1/events?topic=orders/1&access_token=\(token)").status == 200)
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        let log = server.log.joined(separator: "\n")
        #expect(log.contains("target=/v1/events?topic=orders/1&access_token=REDACTED"))
        #expect(log.contains("code=authentication_required path=/v1/events"))
        #expect(!log.contains(token))
        #expect(!log.contains("auth is off"))
    }

    @Test("without auth options the server is open and says so once")
    func openWarning() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        #expect(try await TestHTTPClient(port: server.port).publish(topic: "open/1").status == 201)
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        #expect(server.log.filter { $0.contains("auth is off") }.count == 1)
    }
}

/// EventLogClient with a token provider against the server with auth on: short tokens are renewed (WebSocket)
/// or replaced at the reconnect that follows the stream's end (SSE), and nothing is lost or repeated.
@Suite("EventLogClient with a token provider, across expiries")
struct ClientTokenTests {
    @Test(
        "every event exactly once, in order, while 8 s tokens expire and are replaced",
        arguments: [
            Transport.sse, .webSocket,
        ])
    func renewal(transport: Transport) async throws {
        let fixture = try AuthFixture()
        defer { fixture.directory.remove() }
        try await withTestServer(
            configure: { $0.sseRetryMilliseconds = 50 }, authenticator: try await fixture.authenticator()
        ) { server in
            // The subscriber's tokens come from the provider; the publisher has one long token of its own.
            let provided = Locked(0)
            var configuration = EventLogClient.Configuration()
            configuration.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(200))
            configuration.tokenProvider = {
                provided.withLock { $0 += 1 }
                return try await fixture.token(subscribe: ["orders/1"], lifetime: .seconds(8))
            }
            let client = EventLogClient(baseURL: "http://127.0.0.1:\(server.port)", configuration: configuration)
            var publisherConfiguration = EventLogClient.Configuration()
            publisherConfiguration.token = try await fixture.token(publish: ["orders/*"])
            let publisher = EventLogClient(
                baseURL: "http://127.0.0.1:\(server.port)", configuration: publisherConfiguration)
            let received = Locked<[Int64]>([])
            let consumer = Task {
                for try await element in client.subscribe(topics: ["orders/1"], from: .earliest, transport: transport) {
                    if case .event(let event) = element { received.withLock { $0.append(event.id) } }
                }
            }
            defer { consumer.cancel() }
            // 14 s of publishes, 4 a second, every other one outside the subscription: past one expiry at least.
            var expected: [Int64] = []
            let clock = ContinuousClock()
            let end = clock.now + .seconds(14)
            var index = 0
            while clock.now < end {
                let topic = index % 2 == 0 ? "orders/1" : "orders/2"
                let answer = try await publisher.publish(NewEvent(topic: topic, data: .text("\(index)")))
                if topic == "orders/1" { expected.append(answer.id) }
                index += 1
                try await Task.sleep(for: .milliseconds(250))
            }
            let count = expected.count
            try await waitUntil(timeout: .seconds(30)) { received.withLock { $0.count } >= count }
            #expect(received.withLock { $0 } == expected)
            // The provider was asked again when the first token ran out: the WebSocket renewed it on its socket,
            // the SSE stream ended at its expiry and reconnected with a fresh one.
            #expect(provided.withLock { $0 } >= 2)
        }
    }
}
