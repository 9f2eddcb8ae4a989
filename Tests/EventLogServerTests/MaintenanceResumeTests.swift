import EventLog
import Foundation
import TestSupport
import Testing

@testable import EventLogServer

/// Runs the built `eventlog-maint` with `arguments` and returns its exit status and output.
func runMaint(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Subprocess()
    process.executableURL = ServerProcess.executableURL.deletingLastPathComponent().appendingPathComponent(
        "eventlog-maint")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite("Resuming across maintenance, against a running server", .serialized, .timeLimit(.minutes(3)))
struct MaintenanceResumeTests {
    @Test(
        "after eventlog-maint retention beside the server, a resuming SSE or WebSocket client gets gap, then the replay from earliest"
    )
    func gapAfterRetention() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        for index in 1...30 { _ = try await client.publish(topic: "m/\(index % 3)", data: "\(index)") }
        let retain = try runMaint(["retain", "--db", directory.databasePath, "--max-events", "10", "--quiet"])
        #expect(retain.status == 0, "\(retain.output)")
        // SSE: a client that saw up to 5 missed 6...20.
        let sse = try await withTimeout(.seconds(60)) {
            try await client.sse("/v1/events?topic=m/*", headers: [("Last-Event-ID", "5")]) { reader in
                var seen: [SSEMessage] = []
                while let message = try await reader.nextMessage() {
                    seen.append(message)
                    if message.event == "eventlog.caughtup" { break }
                }
                return seen
            }
        }
        try #require(sse.count >= 3)
        #expect(sse[1].event == "eventlog.open")
        #expect(sse[2].event == "eventlog.gap")
        #expect(jsonObject(sse[2].dataText)["earliest"] as? Int == 21)
        #expect(sse.compactMap(\.idValue) == Array(21...30))
        // WebSocket: the same with a token for position 5.
        let log = try await EventLog.open(path: directory.databasePath, options: readOnlyOptions)
        let token = ResumeTokenCodec(key: log.tokenKey, epoch: log.epoch).encode(position: 5)
        await log.close()
        let ws = try await withTimeout(.seconds(60)) {
            try await TestWebSocket.connect(port: server.port) { ws in
                try await ws.send(["op": "subscribe", "topics": ["m/*"], "resume": token])
                return try await ws.read(until: "caughtup")
            }
        }
        #expect(
            ws.map { $0["type"] as? String } == ["subscribed", "gap"] + Array(repeating: "event", count: 10) + [
                "caughtup"
            ])
        try #require(ws.count >= 2)
        #expect(ws[1]["earliest"] as? Int == 21)
        #expect(ws.compactMap { $0["id"] as? Int } == Array(21...30))
        // Publishing still works and continues the ids.
        let after = try await client.publish(topic: "m/1", data: "31")
        #expect(after.json["id"] as? Int == 31)
    }

    @Test("a log compacted by eventlog-maint beside the server replays exactly the surviving events, in id order")
    func replayAfterCompaction() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        // Three keys on one topic, updated in turns; key k2 ends with a tombstone.
        for index in 1...30 {
            let key = "k\(index % 3)"
            let data = key == "k2" && index > 27 ? "null" : "\(index)"
            let body = "{\"topic\":\"c/1\",\"key\":\"\(key)\",\"data\":\(data)}"
            _ = try await client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/json")], body: body)
        }
        // Warm the server's memory with a full replay first, so a stale tail would show.
        _ = try await withTimeout(.seconds(60)) {
            try await client.sse("/v1/events?topic=c/1&lastEventId=earliest") { reader in
                while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {}
            }
        }
        let compact = try runMaint([
            "compact", "--db", directory.databasePath, "--keep-latest", "--min-age", "0s", "--tombstone-retention",
            "forever", "--quiet",
        ])
        #expect(compact.status == 0, "\(compact.output)")
        let surviving = try runSQLite(
            directory.databasePath, "SELECT group_concat(id) FROM (SELECT id FROM events ORDER BY id);"
        )
        .split(separator: ",").compactMap { Int64($0) }
        #expect(surviving == [28, 29, 30])
        let replayed = try await withTimeout(.seconds(60)) {
            try await client.sse("/v1/events?topic=c/1&lastEventId=earliest&envelope=1") { reader in
                var events: [(Int64, String)] = []
                while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {
                    if let id = message.idValue { events.append((id, message.dataText)) }
                }
                return events.map { "\($0.0)" }
            }
        }
        #expect(replayed == surviving.map(String.init))
        let verify = try runMaint(["verify", "--db", directory.databasePath])
        #expect(verify.status == 0, "\(verify.output)")
    }

    @Test("eventlogd --retain-max-events runs retention on its schedule, through the same code, and moves earliest")
    func scheduledRetention() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(
            databasePath: directory.databasePath, arguments: ["--retain-max-events", "5", "--retain-interval", "200ms"])
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        for index in 1...20 { _ = try await client.publish(topic: "s/1", data: "\(index)") }
        // Waits for the scheduled run; the bound only keeps a broken test from hanging.
        var earliest = 0
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            earliest = try await client.request(.GET, "/healthz").json["earliest"] as? Int ?? 0
            if earliest == 16 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(earliest == 16)
        let history = try await client.request(.GET, "/v1/events?topic=*")
        #expect((history.json["events"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == Array(16...20))
    }
}
