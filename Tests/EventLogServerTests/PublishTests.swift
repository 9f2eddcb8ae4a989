import EventLog
import Foundation
import NIOHTTP1
import TestSupport
import Testing

@testable import EventLogServer

@Suite("Publishing and history over HTTP", .timeLimit(.minutes(3)))
struct PublishTests {
    @Test("a publish answers 201 with its id after the commit, and the event reads back exactly")
    func publishThenRead() async throws {
        try await withTestServer { server in
            let client = server.client
            let response = try await client.publish(
                topic: "orders/1", type: "created", data: #"{"total": 12.50, "items": ["a", "b"]}"#)
            #expect(response.status == 201)
            #expect(response.json["id"] as? Int == 1)
            #expect(response.json["topic"] as? String == "orders/1")
            // The answer came after the commit: the log already has it, on disk too.
            #expect(server.log.head == 1)
            let fresh = try await EventLog.open(path: server.directory.databasePath, options: readOnlyOptions)
            let page = try await fresh.read(after: 0, selectors: .all, limit: 10)
            #expect(page.events.map(\.id) == [1])
            #expect(page.events.first?.data == .json(#"{"items":["a","b"],"total":12.50}"#))
            #expect(page.events.first?.type == "created")
            await fresh.close()

            let history = try await client.request(.GET, "/v1/events?topic=orders/*&after=0")
            #expect(history.status == 200)
            #expect(history.headers.first(name: "content-type") == "application/json")
            let events = history.json["events"] as? [[String: Any]] ?? []
            #expect(events.count == 1)
            #expect(events.first?["id"] as? Int == 1)
            #expect(events.first?["type"] as? String == "created")
            #expect((events.first?["data"] as? [String: Any])?["items"] as? [String] == ["a", "b"])
            #expect(history.json["head"] as? Int == 1)
            #expect(history.json["earliest"] as? Int == 1)
            #expect(history.json["next"] as? Int == 1)
        }
    }

    @Test("an NDJSON batch is atomic: all lines get ids in order, or a bad line fails it with nothing appended")
    func ndjsonBatch() async throws {
        try await withTestServer { server in
            let client = server.client
            let ok = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")],
                body: "{\"topic\":\"a/1\",\"data\":1}\n\n{\"topic\":\"a/2\",\"data\":\"two\"}\r\n{\"topic\":\"a/3\"}\n")
            #expect(ok.status == 201)
            #expect(ok.json["ids"] as? [Int] == [1, 2, 3])
            let bad = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")],
                body: "{\"topic\":\"a/4\",\"data\":1}\n{\"topic\":\"a//5\",\"data\":1}\n{\"topic\":\"a/6\"}\n")
            #expect(bad.status == 400)
            #expect(bad.errorCode == "invalid_topic")
            #expect((bad.json["error"] as? [String: Any])?["index"] as? Int == 1)
            #expect(server.log.head == 3)
            let history = try await client.request(.GET, "/v1/events?topic=*")
            #expect(
                (history.json["events"] as? [[String: Any]])?.map { $0["topic"] as? String } == ["a/1", "a/2", "a/3"])
        }
    }

    @Test("Idempotency-Key: 201 first, 200 with Idempotent-Replayed and the same id on retry, 409 on a different body")
    func idempotency() async throws {
        try await withTestServer { server in
            let client = server.client
            let first = try await client.publish(topic: "orders/9", data: "{\"n\":1}", idempotencyKey: "req-1")
            #expect(first.status == 201)
            #expect(first.headers.first(name: "idempotent-replayed") == nil)
            let retry = try await client.publish(topic: "orders/9", data: "{ \"n\" : 1 }", idempotencyKey: "req-1")
            #expect(retry.status == 200)
            #expect(retry.headers.first(name: "idempotent-replayed") == "true")
            #expect(retry.json["id"] as? Int == first.json["id"] as? Int)
            let conflict = try await client.publish(topic: "orders/9", data: "{\"n\":2}", idempotencyKey: "req-1")
            #expect(conflict.status == 409)
            #expect(conflict.errorCode == "idempotency_conflict")
            #expect(server.log.head == 1)
        }
    }

    @Test("every error status of the contract comes back on its bad input, and nothing is appended")
    func errorStatuses() async throws {
        try await withTestServer(
            configure: { configuration in
                configuration.maxBodyBytes = 4096
            },
            options: { options in
                options.limits.maxDataBytes = 1000
            }
        ) { server in
            let client = server.client
            let seeded = try await client.publish(topic: "seed/1", data: "1")
            #expect(seeded.status == 201)
            let json = [("Content-Type", "application/json")]
            let cases: [(String, HTTPMethod, String, [(String, String)], String?, Int, String)] = [
                ("malformed JSON", .POST, "/v1/events", json, "{\"topic\": ", 400, "malformed_json"),
                ("not an object", .POST, "/v1/events", json, "[1,2]", 400, "malformed_json"),
                ("no topic", .POST, "/v1/events", json, "{\"data\":1}", 400, "invalid_topic"),
                ("bad topic", .POST, "/v1/events", json, "{\"topic\":\"a b\"}", 400, "invalid_topic"),
                ("empty segment", .POST, "/v1/events", json, "{\"topic\":\"a//b\"}", 400, "invalid_topic"),
                ("topic not a string", .POST, "/v1/events", json, "{\"topic\":5}", 400, "invalid_field"),
                ("unknown field", .POST, "/v1/events", json, "{\"topic\":\"a\",\"tpye\":\"x\"}", 400, "invalid_field"),
                (
                    "LF in type", .POST, "/v1/events", json, "{\"topic\":\"a\",\"type\":\"x\\ndata: evil\"}", 400,
                    "invalid_type"
                ),
                (
                    "CR in type", .POST, "/v1/events", json, "{\"topic\":\"a\",\"type\":\"x\\rid: 9\"}", 400,
                    "invalid_type"
                ),
                ("NUL in key", .POST, "/v1/events", json, "{\"topic\":\"a\",\"key\":\"k\\u0000\"}", 400, "invalid_key"),
                (
                    "reserved type", .POST, "/v1/events", json, "{\"topic\":\"a\",\"type\":\"eventlog.reset\"}", 400,
                    "invalid_type"
                ),
                (
                    "duplicate key", .POST, "/v1/events", json, "{\"topic\":\"a\",\"topic\":\"b\"}", 400,
                    "malformed_json"
                ),
                (
                    "data over the event limit", .POST, "/v1/events", json,
                    "{\"topic\":\"a\",\"data\":\"\(String(repeating: "x", count: 1001))\"}", 413, "event_too_large"
                ),
                (
                    "body over the limit", .POST, "/v1/events", json,
                    "{\"topic\":\"a\",\"data\":\"\(String(repeating: "x", count: 5000))\"}", 413, "body_too_large"
                ),
                (
                    "wrong content type", .POST, "/v1/events", [("Content-Type", "text/plain")], "{\"topic\":\"a\"}",
                    415,
                    "unsupported_media_type"
                ),
                ("no content type", .POST, "/v1/events", [], "{\"topic\":\"a\"}", 415, "unsupported_media_type"),
                (
                    "empty batch", .POST, "/v1/events", [("Content-Type", "application/x-ndjson")], "\n\n", 400,
                    "empty_batch"
                ),
                ("bad limit", .GET, "/v1/events?topic=a&limit=1001", [], nil, 400, "invalid_parameter"),
                ("bad after", .GET, "/v1/events?topic=a&after=-1", [], nil, 400, "invalid_parameter"),
                ("bad selector", .GET, "/v1/events?topic=a/*/b", [], nil, 400, "invalid_selector"),
                ("unknown path", .GET, "/v2/events", [], nil, 404, "not_found"),
                ("wrong method", .DELETE, "/v1/events", [], nil, 405, "method_not_allowed"),
                (
                    "bad Last-Event-ID", .GET, "/v1/events?topic=a",
                    [("Accept", "text/event-stream"), ("Last-Event-ID", "12abc")],
                    nil, 400, "invalid_last_event_id"
                ),
                (
                    "negative lastEventId", .GET, "/v1/events?topic=a&lastEventId=-5",
                    [("Accept", "text/event-stream")],
                    nil,
                    400, "invalid_last_event_id"
                ),
                (
                    "SSE without topic", .GET, "/v1/events", [("Accept", "text/event-stream")], nil, 400,
                    "invalid_parameter"
                ),
                ("plain GET on /v1/ws", .GET, "/v1/ws", [], nil, 426, "upgrade_required"),
            ]
            for (name, method, uri, headers, body, status, code) in cases {
                let response = try await client.request(method, uri, headers: headers, body: body)
                #expect(response.status == status, "\(name)")
                #expect(response.errorCode == code, "\(name): \(response.body)")
                #expect(response.headers.first(name: "content-type") == "application/json", "\(name)")
            }
            // A batch with a conflicting idempotency key in its second line leaves no trace.
            _ = try await client.publish(topic: "k/1", data: "1", idempotencyKey: "once")
            let conflictBatch = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")],
                body: "{\"topic\":\"k/2\",\"data\":1}\n{\"topic\":\"k/1\",\"data\":2,\"idempotencyKey\":\"once\"}\n")
            #expect(conflictBatch.status == 409)
            #expect(server.log.head == 2)
            // The server still serves, and no failed request appended anything.
            let health = try await client.request(.GET, "/healthz")
            #expect(health.status == 200)
            let history = try await client.request(.GET, "/v1/events?topic=*")
            #expect((history.json["events"] as? [[String: Any]])?.map { $0["topic"] as? String } == ["seed/1", "k/1"])
            let after = try await client.publish(topic: "after/1", data: "1")
            #expect(after.json["id"] as? Int == 3)
        }
    }

    @Test("a store that cannot write answers 503 storage_unavailable, keeps every acknowledged event, and stays valid")
    func storageFull() async throws {
        try await withTestServer(
            configure: { _ in
            },
            options: { options in
                options.maxPageCount = 64
            }
        ) { server in
            let client = server.client
            let payload = "\"" + String(repeating: "z", count: 20_000) + "\""
            var acknowledged: [Int] = []
            var sawFull = false
            for index in 0..<200 {
                let response = try await client.publish(topic: "fill/\(index)", data: payload)
                if response.status == 201 {
                    acknowledged.append(response.json["id"] as? Int ?? -1)
                } else {
                    #expect(response.status == 503)
                    #expect(response.errorCode == "storage_unavailable")
                    sawFull = true
                    break
                }
            }
            #expect(sawFull)
            #expect(!acknowledged.isEmpty)
            let health = try await client.request(.GET, "/healthz")
            #expect(health.status == 200 || health.status == 503)
            let history = try await client.request(.GET, "/v1/events?topic=*&limit=1000")
            #expect((history.json["events"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == acknowledged)
            let check = try runSQLite(server.directory.databasePath, "PRAGMA integrity_check;")
            #expect(check == "ok")
        }
    }

    @Test("topics, healthz and metrics report the log")
    func operations() async throws {
        try await withTestServer { server in
            let client = server.client
            for topic in ["b/1", "a/1", "b/1"] { _ = try await client.publish(topic: topic) }
            let topics = try await client.request(.GET, "/v1/topics")
            let list = topics.json["topics"] as? [[String: Any]] ?? []
            #expect(list.map { $0["topic"] as? String } == ["a/1", "b/1"])
            #expect(list.map { $0["count"] as? Int } == [1, 2])
            #expect(list.map { $0["lastId"] as? Int } == [2, 3])
            let health = try await client.request(.GET, "/healthz")
            #expect(health.status == 200)
            #expect(health.json["head"] as? Int == 3)
            let metrics = try await client.request(.GET, "/metrics")
            #expect(metrics.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
            #expect(metrics.body.contains("\neventlog_events_appended_total 3\n"))
            #expect(metrics.body.contains("\neventlog_head 3\n"))
            #expect(metrics.body.contains("eventlog_publish_duration_seconds_count 3\n"))
            #expect(metrics.body.contains("\neventlog_sse_connections 0\n"))
            let preflight = try await client.request(
                .OPTIONS, "/v1/events", headers: [("Origin", "http://example.test")])
            #expect(preflight.status == 204)
            #expect(preflight.headers.first(name: "access-control-allow-origin") == "*")
            #expect(preflight.headers.first(name: "access-control-allow-headers")?.contains("Last-Event-ID") == true)
        }
    }

    @Test("a request with an Upgrade header that is not a WebSocket upgrade on /v1/ws gets an ordinary answer")
    func foreignUpgradeHeaders() async throws {
        try await withTestServer { server in
            let client = server.client
            let h2c = try await withTimeout(.seconds(60)) {
                try await client.request(.GET, "/healthz", headers: [("Connection", "Upgrade"), ("Upgrade", "h2c")])
            }
            #expect(h2c.status == 200)
            let otherPath = try await withTimeout(.seconds(60)) {
                try await client.request(
                    .GET, "/healthz",
                    headers: [
                        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ])
            }
            #expect(otherPath.status == 200)
            let noKey = try await withTimeout(.seconds(60)) {
                try await client.request(
                    .GET, "/v1/ws", headers: [("Connection", "Upgrade"), ("Upgrade", "websocket")])
            }
            #expect(noKey.status == 426)
            #expect(noKey.errorCode == "upgrade_required")
        }
    }

    @Test("CORS answers only the configured origins")
    func corsOrigins() async throws {
        try await withTestServer(configure: { $0.corsOrigins = ["http://app.test"] }) { server in
            let allowed = try await server.client.request(.GET, "/healthz", headers: [("Origin", "http://app.test")])
            #expect(allowed.headers.first(name: "access-control-allow-origin") == "http://app.test")
            let other = try await server.client.request(.GET, "/healthz", headers: [("Origin", "http://evil.test")])
            #expect(other.headers.first(name: "access-control-allow-origin") == nil)
        }
    }
}

var readOnlyOptions: EventLog.Options {
    var options = EventLog.Options()
    options.readOnly = true
    return options
}

/// Runs SQL with the sqlite3 command-line tool and returns its trimmed output.
func runSQLite(_ path: String, _ sql: String) throws -> String {
    let process = Subprocess()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    process.arguments = [path, sql]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
