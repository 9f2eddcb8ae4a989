import ArgumentParser
import NIOCore

/// Options of the `idle` benchmark.
struct IdleOptions: ParsableArguments {
    @Option(help: "Idle connections to open. Default 10000, or 1000 with --quick.")
    var connections: Int?

    @Flag(help: "Skip the WebSocket idle subscribers (SSE only).")
    var noWebsocket = false
}

/// Server memory per idle subscriber: resident memory with N idle subscriptions open, minus before, over N.
enum IdlePhase {
    static func run(_ env: BenchEnvironment, _ options: IdleOptions) async throws -> [ResultRow] {
        let count = options.connections ?? (env.quick ? 1000 : 10_000)
        env.say("## idle: \(count) idle subscriptions (SSE, then WebSocket, for eventlog; XREAD BLOCK for Redis)")
        let eventlog = try await env.withEventLog { server -> Double in
            try await idleSubscribers(env, server: server, count: count, kind: "SSE streams") { index in
                let loop = env.loop(index)
                let subscriber = SSESubscriber(
                    eventLoop: loop, selectors: ["idle/\(index % 100)"], lastEventID: nil, options: .init())
                let channel = try await env.client.connect(port: server.port, on: loop, handler: subscriber)
                _ = try await wait(subscriber.caughtUp.futureResult, seconds: 60, "idle subscriber \(index)")
                return channel
            }
        }
        // WebSocket subscribers, on their own fresh server: `subscribe` from latest, idle after `caughtup`.
        var webSocket: Double?
        if !options.noWebsocket {
            webSocket = try await env.withEventLog { server -> Double in
                try await idleSubscribers(env, server: server, count: count, kind: "WebSocket subscriptions") {
                    index in
                    let loop = env.loop(index)
                    let subscriber = WebSocketSubscriber(eventLoop: loop, topics: ["idle/\(index % 100)"])
                    let channel = try await env.client.connect(port: server.port, on: loop, handler: subscriber)
                    try await wait(subscriber.caughtUp.futureResult, seconds: 60, "idle WebSocket \(index)")
                    return channel
                }
            }
        }
        // For comparison, on a second fresh server: connections that sent no request yet (the NIO channel
        // and HTTP pipeline only, no subscription). eventlogd closes them after its 30 s request timeout.
        try await env.withEventLog { server in
            try await Task.sleep(for: .milliseconds(500))
            let before = Processes.residentBytes(server.pid) ?? 0
            let plain = try await env.client.httpConnections(port: server.port, count: count)
            try await Task.sleep(for: .seconds(1))
            let after = Processes.residentBytes(server.pid) ?? 0
            plain.forEach { $0.close() }
            env.say(
                "  eventlogd: \(count) connections that sent no request yet: "
                    + String(format: "%.1f", Double(after - before) / Double(count) / 1024)
                    + " KB each (RSS \(before / 1024) KB before, \(after / 1024) KB after)")
        }
        let redis = try await env.withRedis { server -> Double in
            _ = try await env.redisCommand(port: server.port, ["CONFIG", "SET", "maxclients", "12000"])
            try await Task.sleep(for: .milliseconds(500))
            let before = Processes.residentBytes(server.pid) ?? 0
            let connected = try await env.client.connectMany(count: count, parallel: 200) { index in
                let loop = env.loop(index)
                let connection = RESPConnection(eventLoop: loop)
                let channel = try await env.client.connect(port: server.port, on: loop, handler: connection)
                let reader = RedisStreamReader(
                    connection: connection, keys: ["idle:\(index % 100)"], after: ["$"], block: true, count: 100)
                reader.start()
                return Connected(handler: reader, channel: channel)
            }
            try await LiveDelivery.waitForBlockedClients(env, port: server.port, count: count)
            try await Task.sleep(for: .seconds(1))
            let after = Processes.residentBytes(server.pid) ?? 0
            env.say(
                "  redis-server: RSS \(before / 1024) KB before, \(after / 1024) KB with \(connected.count) clients in "
                    + "XREAD BLOCK")
            await connected.closeAll()
            return Double(after - before) / Double(count) / 1024
        }
        var rows = [
            ResultRow(
                benchmark: "idle", metric: "server memory per idle subscriber (\(Report.number(Double(count))))",
                unit: "KB", eventlog: eventlog, redis: redis, better: .lower, target: .atMost(8),
                note: "RSS delta / connections")
        ]
        if let webSocket {
            rows.append(
                ResultRow(
                    benchmark: "idle",
                    metric: "server memory per idle WebSocket subscriber (\(Report.number(Double(count))))",
                    unit: "KB", eventlog: webSocket, redis: redis, better: .lower, target: .atMost(8),
                    note: "RSS delta / connections; Redis: the same XREAD BLOCK figure as the SSE row"))
        }
        return rows
    }

    /// Opens `count` idle subscribers with `connect` (which returns once one is caught up) and returns the
    /// server's RSS growth per subscriber in KB.
    private static func idleSubscribers(
        _ env: BenchEnvironment, server: StartedServer, count: Int, kind: String,
        _ connect: @escaping @Sendable (Int) async throws -> any Channel
    ) async throws -> Double {
        try await Task.sleep(for: .milliseconds(500))
        let before = Processes.residentBytes(server.pid) ?? 0
        let channels = try await env.client.connectMany(count: count, parallel: 200, connect)
        try await Task.sleep(for: .seconds(1))
        let after = Processes.residentBytes(server.pid) ?? 0
        env.say(
            "  eventlogd: RSS \(before / 1024) KB before, \(after / 1024) KB with \(channels.count) idle \(kind): "
                + String(format: "%.1f", Double(after - before) / Double(count) / 1024) + " KB each")
        for channel in channels { channel.close(promise: nil) }
        for channel in channels { _ = try? await wait(channel.closeFuture, seconds: 10, "close") }
        return Double(after - before) / Double(count) / 1024
    }
}

/// Options of the `replay` benchmark.
struct ReplayOptions: ParsableArguments {
    @Option(help: "Events the resuming client is behind.")
    var events = 100_000

    @Option(help: "Replays to run; the median is reported. Default 3, or 1 with --quick.")
    var runs: Int?

    @Option(help: "Entries per XRANGE page on the Redis side.")
    var redisPage = 1000

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100
}

/// Replay throughput: a client resuming N events behind reads them all until it is caught up.
enum ReplayPhase {
    static func run(_ env: BenchEnvironment, _ options: ReplayOptions) async throws -> [ResultRow] {
        let runs = options.runs ?? (env.quick ? 1 : 3)
        let total = options.events
        let payload = String(repeating: "x", count: options.eventBytes)
        env.say("## replay: \(total) events behind, \(runs) run(s), median reported")
        let eventlog = try await env.withEventLog { server -> Double in
            // Populate with NDJSON batches of 1,000 over 4 connections.
            let connections = try await env.client.httpConnections(port: server.port, count: 4)
            defer { connections.forEach { $0.close() } }
            let batch = (0..<1000).map { _ in "{\"topic\":\"replay\",\"data\":\"\(payload)\"}" }.joined(separator: "\n")
            let request = HTTPLoadConnection.request(
                "POST", "/v1/events", contentType: "application/x-ndjson", body: batch)
            let batches = (total + 999) / 1000
            _ = try await env.client.connectMany(count: batches, parallel: connections.count) { index in
                let reply = try await connections[index % connections.count].request(request)
                guard reply.isSuccess else { throw BenchError("populating: \(reply.summary)") }
                return true
            }
            let head = Int64(batches * 1000)
            var rates: [Double] = []
            for run in 0..<runs {
                let loop = env.loop(run)
                let cpu = CPUUsage(serverPID: server.pid)
                let start = monotonicNanos()
                let subscriber = SSESubscriber(
                    eventLoop: loop, selectors: ["replay"], lastEventID: head - Int64(total), options: .init())
                let channel = try await env.client.connect(port: server.port, on: loop, handler: subscriber)
                let caught = try await wait(subscriber.caughtUp.futureResult, seconds: 300, "replay caught up")
                let delivered = try await onLoop(loop) { subscriber.snapshot.delivered }
                channel.close(promise: nil)
                let seconds = Double(caught.at - start) / 1e9
                guard delivered == total else { throw BenchError("replay delivered \(delivered) of \(total) events") }
                rates.append(Double(delivered) / seconds)
                env.say(
                    "  eventlog run \(run + 1): \(delivered) events in \(String(format: "%.3f", seconds)) s = "
                        + "\(Report.number(Double(delivered) / seconds)) events/s; "
                        + cpu.summary(serverName: "eventlogd"))
            }
            return rates.sorted()[rates.count / 2]
        }
        let redis = try await env.withRedis { server -> Double in
            let connections = try await env.client.redisConnections(port: server.port, count: 1)
            defer { connections.forEach { $0.close() } }
            var pipelined = ByteBuffer()
            for _ in 0..<1000 { RESP.encode(["XADD", "replay", "*", "d", payload], into: &pipelined) }
            for _ in 0..<((total + 999) / 1000) {
                let reply = try await connections[0].request(LoadRequest(bytes: pipelined, replies: 1000))
                guard reply.isSuccess else { throw BenchError("populating Redis: \(reply.summary)") }
            }
            var rates: [Double] = []
            for run in 0..<runs {
                let cpu = CPUUsage(serverPID: server.pid)
                let start = monotonicNanos()
                var read = 0
                var next = "-"
                while read < total {
                    let reply = try await connections[0].request(
                        RESP.command(["XRANGE", "replay", next, "+", "COUNT", String(options.redisPage)], mode: .raw))
                    guard case .resp(let replies) = reply, replies.errors == 0, let raw = replies.raw.first else {
                        throw BenchError("XRANGE: \(reply.summary)")
                    }
                    var count = 0
                    var last = ""
                    raw.withUnsafeReadableBytes { bytes in
                        RESP.scanEntries(bytes, fromXRead: false) { _, id, _ in
                            count += 1
                            last = String(decoding: id, as: UTF8.self)
                        }
                    }
                    guard count > 0 else { break }
                    read += count
                    next = "(" + last
                }
                let seconds = Double(monotonicNanos() - start) / 1e9
                guard read >= total else { throw BenchError("XRANGE paging read \(read) of \(total) entries") }
                rates.append(Double(read) / seconds)
                env.say(
                    "  Redis run \(run + 1): \(read) entries in \(String(format: "%.3f", seconds)) s = "
                        + "\(Report.number(Double(read) / seconds)) entries/s; " + cpu.summary(serverName: "redis"))
            }
            return rates.sorted()[rates.count / 2]
        }
        return [
            ResultRow(
                benchmark: "replay", metric: "resume \(Report.number(Double(total))) events behind",
                unit: "events/s", eventlog: eventlog, redis: redis, better: .higher, target: .atLeast(500_000),
                note: "SSE Last-Event-ID until caughtup vs XRANGE COUNT \(options.redisPage) paging")
        ]
    }
}
