import EventLog
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import EventLogServer

@Suite(
    "The eventlogd process: memory under a stalled subscriber, graceful shutdown", .serialized,
    .timeLimit(.minutes(5)))
struct ProcessTests {
    @Test("a subscriber that stops reading while 50,000 events are published does not grow server memory, and resumes")
    func stalledSubscriber() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // A stall timeout longer than publishing can take on a loaded machine: the test stalls on purpose.
        let server = try ServerProcess(
            databasePath: directory.databasePath,
            arguments: ["--keepalive", "600", "--tail-bytes", "4000000", "--stall-timeout", "600"])
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        let payload = String(repeating: "p", count: 1000)
        let eventCount = 50_000
        let batchSize = 250
        // Open a subscriber that reads the first frames, then stops reading.
        let stalled = try await client.connect { channel in
            // A small receive buffer, so the kernel cannot soak up the stream for us.
            channel.setOption(.socketOption(.so_rcvbuf), value: 8192)
        }
        let received = try await stalled.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders([("Host", "127.0.0.1"), ("Accept", "text/event-stream")])
            headers.add(name: "Last-Event-ID", value: "0")
            try await outbound.write(
                .head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/events?topic=big/*", headers: headers))
            )
            try await outbound.write(.end(nil))
            var reader = SSEReader(iterator: inbound.makeAsyncIterator())
            while let message = try await reader.nextMessage(), message.event != "eventlog.caughtup" {}
            try await Task.sleep(for: .milliseconds(300))
            let baseline = residentBytes(pid: server.pid) ?? 0
            // Publish 50,000 events (about 55 MB of frames) while the subscriber reads nothing.
            for batch in 0..<(eventCount / batchSize) {
                var body = ""
                for index in 0..<batchSize {
                    body += "{\"topic\":\"big/\(batch)\",\"data\":\"\(index)-\(payload)\"}\n"
                }
                let response = try await client.request(
                    .POST, "/v1/events", headers: [("Content-Type", "application/x-ndjson")], body: body)
                #expect(response.status == 201)
            }
            let stalledRSS = residentBytes(pid: server.pid) ?? 0
            let growth = stalledRSS - baseline
            // Buffering the stalled stream would hold its ~55 MB of frames on top of what publishing costs
            // (about 15 MB here: the 4 MB tail, SQLite's caches and the allocator's high-water mark).
            #expect(growth < 35 * 1024 * 1024, "server RSS grew by \(growth / 1024 / 1024) MB")
            // Publishing was not held up either: the log has everything.
            let health = try await client.request(.GET, "/healthz")
            #expect(health.json["head"] as? Int == eventCount)
            // Now read again: every event arrives, in order, once.
            var next: Int64 = 1
            var ok = true
            while next <= Int64(eventCount), let message = try await reader.nextMessage() {
                guard let id = message.idValue else { continue }
                if id != next || !message.dataText.hasPrefix("\((id - 1) % Int64(batchSize))-") {
                    ok = false
                    break
                }
                next += 1
            }
            #expect(ok)
            return next - 1
        }
        #expect(received == Int64(eventCount))
    }

    @Test("SIGTERM under publishing load: exit 0, and every event whose 201 was seen is in the log after restart")
    func gracefulShutdownUnderLoad() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = try ServerProcess(databasePath: directory.databasePath)
        defer { server.kill9() }
        let client = TestHTTPClient(port: server.port)
        let acknowledged = Locked<[(Int, String)]>([])
        let streamEnded = Locked(false)
        let subscriber = Task {
            try await client.sse("/v1/events?topic=*") { reader in
                while try await reader.next() != nil {}
                streamEnded.withLock { $0 = true }
            }
        }
        let publishers = (0..<20).map { worker in
            Task {
                for index in 0..<10_000 {
                    let data = "\"w\(worker)-\(index)\""
                    guard let response = try? await client.publish(topic: "load/\(worker)", data: data) else { return }
                    if response.status == 201, let id = response.json["id"] as? Int {
                        acknowledged.withLock { $0.append((id, "w\(worker)-\(index)")) }
                    } else if response.status != 503 && response.status != 0 {
                        // 503 shutting_down, or 0: the connection closed before an answer (an idle
                        // keep-alive connection closed by the shutdown). Neither acknowledges the event.
                        Issue.record("unexpected status \(response.status): \(response.body)")
                    }
                }
            }
        }
        while acknowledged.withLock({ $0.count }) < 300 { try await Task.sleep(for: .milliseconds(10)) }
        server.signal(SIGTERM)
        let status = await server.waitForExit(timeout: 30)
        #expect(status == 0)
        for publisher in publishers { await publisher.value }
        _ = try? await subscriber.value
        #expect(streamEnded.withLock { $0 })
        let acked = acknowledged.withLock { $0 }
        #expect(acked.count >= 300)
        // Restart on the same database: every acknowledged event is there, with its data.
        let restarted = try ServerProcess(databasePath: directory.databasePath)
        defer { restarted.kill9() }
        let log = try await EventLog.open(path: directory.databasePath, options: readOnlyOptions)
        var stored: [Int64: String] = [:]
        var position: Int64 = 0
        while true {
            let page = try await log.read(after: position, selectors: .all, limit: 1000)
            for event in page.events { stored[event.id] = event.data?.text }
            if page.events.isEmpty { break }
            position = page.next
        }
        await log.close()
        var missing = 0
        for (id, data) in acked where stored[Int64(id)] != data { missing += 1 }
        #expect(missing == 0)
        #expect(stored.count >= acked.count)
    }
}

@Suite("eventlogd reads EVENTLOG_* variables by the rule of its flags")
struct ProcessEnvironmentTests {
    /// A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range (32768-60999 on Linux),
    /// so that no other test's server on port 0 is given it before eventlogd binds it.
    private func freePort() async throws -> Int {
        for _ in 0..<100 {
            let port = Int.random(in: 10_000..<20_000)
            guard
                let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .bind(host: "127.0.0.1", port: port).get()
            else { continue }
            try await channel.close()
            return port
        }
        throw PortError()
    }

    private struct PortError: Error {}

    @Test("EVENTLOG_PORT sets the port; --port on the command line wins over it")
    func portFromEnvironment() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let chosen = try await freePort()
        let fromVariable = try ServerProcess(
            databasePath: directory.databasePath, port: nil,
            environment: ["EVENTLOG_PORT": String(chosen), "EVENTLOG_TAIL_EVENTS": "8"])
        #expect(fromVariable.port == chosen)
        let health = try await TestHTTPClient(port: chosen).request(.GET, "/healthz")
        #expect(health.status == 200)
        fromVariable.signal(SIGTERM)
        #expect(await fromVariable.waitForExit() == 0)
        let fromFlag = try ServerProcess(
            databasePath: directory.databasePath, port: 0, environment: ["EVENTLOG_PORT": String(chosen)])
        defer { fromFlag.kill9() }
        #expect(fromFlag.port != chosen)
        #expect(fromFlag.port > 0)
    }
}

extension TestHTTPClient {
    /// Connects with extra channel setup (options) before the HTTP handlers.
    func connect(
        _ configure: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                configure(channel).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
    }
}
