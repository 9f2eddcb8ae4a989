import ArgumentParser
import NIOCore

/// Options of the `publish` benchmark.
struct PublishOptions: ParsableArguments {
    @Option(help: "Concurrent single-event publishers, each waiting for its answer before the next publish.")
    var publishers = 50

    @Option(name: .customLong("batch-size"), help: "Events per batch (repeatable).")
    var batchSizes: [Int] = [100, 1000]

    @Option(help: "Concurrent batch publishers.")
    var batchPublishers = 4

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100

    func validate() throws {
        guard publishers > 0, batchPublishers > 0 else { throw ValidationError("publishers must be positive") }
        guard batchSizes.allSatisfy({ $0 > 0 }) else { throw ValidationError("--batch-size must be positive") }
    }
}

/// Durable publish throughput and latency: single events from many keep-alive connections, and batches.
/// eventlog: `POST /v1/events` (JSON, then NDJSON batches). Redis: `XADD` one at a time, then the same
/// number of `XADD`s pipelined, and wrapped in `MULTI`/`EXEC`.
enum PublishPhase {
    static func run(_ env: BenchEnvironment, _ options: PublishOptions) async throws -> [ResultRow] {
        let seconds = env.duration
        let batchSeconds = env.quick ? min(seconds, 2) : min(seconds, 5)
        let warmUp = env.quick ? 0.5 : 1.0
        let payload = String(repeating: "x", count: options.eventBytes)
        env.say(
            "## publish: \(options.publishers) single-event publishers for \(seconds) s; batches of "
                + "\(options.batchSizes.map(String.init).joined(separator: ", ")) from \(options.batchPublishers) "
                + "publishers for \(batchSeconds) s each")

        struct Side: Sendable {
            var single: ClosedLoopResult
            /// Server CPU seconds (utime + stime) over the measured single-publish window.
            var singleCPUSeconds: Double
            var batches: [Int: ClosedLoopResult] = [:]
            var transactions: [Int: ClosedLoopResult] = [:]
        }

        let eventlog = try await env.withEventLog { server -> Side in
            let connections = try await env.client.httpConnections(port: server.port, count: options.publishers)
            defer { connections.forEach { $0.close() } }
            let singles = (0..<options.publishers).map {
                HTTPLoadConnection.request(
                    "POST", "/v1/events", contentType: "application/json",
                    body: "{\"topic\":\"bench/\($0 % 16)\",\"data\":\"\(payload)\"}")
            }
            _ = try await runClosedLoop(connections: connections, requests: singles, seconds: warmUp)
            let cpu = CPUUsage(serverPID: server.pid)
            let single = try await runClosedLoop(connections: connections, requests: singles, seconds: seconds)
            let singleCPU = cpu.serverSeconds
            report(
                env, "eventlog single", single, eventsPerRequest: 1,
                cpu.summary(serverName: "eventlogd") + "; " + cpuPerEvent(singleCPU, single))
            var side = Side(single: single, singleCPUSeconds: singleCPU)
            for size in options.batchSizes {
                let body = (0..<size).map { "{\"topic\":\"bench/\($0 % 16)\",\"data\":\"\(payload)\"}" }
                    .joined(separator: "\n")
                let request = HTTPLoadConnection.request(
                    "POST", "/v1/events", contentType: "application/x-ndjson", body: body)
                let cpu = CPUUsage(serverPID: server.pid)
                let result = try await runClosedLoop(
                    connections: Array(connections.prefix(options.batchPublishers)), requests: [request],
                    seconds: batchSeconds)
                report(
                    env, "eventlog batch \(size)", result, eventsPerRequest: size, cpu.summary(serverName: "eventlogd"))
                side.batches[size] = result
            }
            return side
        }

        let redis = try await env.withRedis { server -> Side in
            let connections = try await env.client.redisConnections(port: server.port, count: options.publishers)
            defer { connections.forEach { $0.close() } }
            let singles = (0..<options.publishers).map { RESP.command("XADD", "bench:\($0 % 16)", "*", "d", payload) }
            _ = try await runClosedLoop(connections: connections, requests: singles, seconds: warmUp)
            let cpu = CPUUsage(serverPID: server.pid)
            let single = try await runClosedLoop(connections: connections, requests: singles, seconds: seconds)
            let singleCPU = cpu.serverSeconds
            report(
                env, "Redis single", single, eventsPerRequest: 1,
                cpu.summary(serverName: "redis") + "; " + cpuPerEvent(singleCPU, single))
            var side = Side(single: single, singleCPUSeconds: singleCPU)
            let batchConnections = Array(connections.prefix(options.batchPublishers))
            for size in options.batchSizes {
                var pipelined = ByteBuffer()
                for index in 0..<size {
                    RESP.encode(["XADD", "bench:\(index % 16)", "*", "d", payload], into: &pipelined)
                }
                var cpu = CPUUsage(serverPID: server.pid)
                let pipeline = try await runClosedLoop(
                    connections: batchConnections, requests: [LoadRequest(bytes: pipelined, replies: size)],
                    seconds: batchSeconds)
                report(
                    env, "Redis pipeline \(size)", pipeline, eventsPerRequest: size, cpu.summary(serverName: "redis"))
                side.batches[size] = pipeline
                var transaction = ByteBuffer()
                RESP.encode(["MULTI"], into: &transaction)
                transaction.writeImmutableBuffer(pipelined)
                RESP.encode(["EXEC"], into: &transaction)
                cpu = CPUUsage(serverPID: server.pid)
                let multi = try await runClosedLoop(
                    connections: batchConnections, requests: [LoadRequest(bytes: transaction, replies: size + 2)],
                    seconds: batchSeconds)
                report(env, "Redis MULTI \(size)", multi, eventsPerRequest: size, cpu.summary(serverName: "redis"))
                side.transactions[size] = multi
            }
            return side
        }

        let name = "publish"
        var rows = [
            ResultRow(
                benchmark: name, metric: "single events, \(options.publishers) publishers (durable)", unit: "events/s",
                eventlog: eventlog.single.eventsPerSecond(1), redis: redis?.single.eventsPerSecond(1), better: .higher,
                target: .timesRedis(1.5), note: "Redis: XADD, appendfsync always"),
            ResultRow(
                benchmark: name, metric: "single publish latency p50", unit: "ms",
                eventlog: eventlog.single.latencies.milliseconds(0.5), redis: redis?.single.latencies.milliseconds(0.5),
                better: .lower),
            ResultRow(
                benchmark: name, metric: "single publish latency p99", unit: "ms",
                eventlog: eventlog.single.latencies.milliseconds(0.99),
                redis: redis?.single.latencies.milliseconds(0.99), better: .lower),
            ResultRow(
                benchmark: name, metric: "server CPU per published event (single, durable)", unit: "µs",
                eventlog: microsecondsPerEvent(eventlog.singleCPUSeconds, eventlog.single),
                redis: redis.flatMap { microsecondsPerEvent($0.singleCPUSeconds, $0.single) }, better: .lower,
                target: .atMost(40), note: "utime+stime of the server process (/proc/PID/stat) / events published"),
        ]
        for size in options.batchSizes {
            let events = eventlog.batches[size]?.eventsPerSecond(size)
            rows.append(
                ResultRow(
                    benchmark: name, metric: "batches of \(size), \(options.batchPublishers) publishers (vs pipeline)",
                    unit: "events/s", eventlog: events, redis: redis?.batches[size]?.eventsPerSecond(size),
                    better: .higher, note: "NDJSON vs \(size) pipelined XADD"))
            rows.append(
                ResultRow(
                    benchmark: name, metric: "batches of \(size), \(options.batchPublishers) publishers (vs MULTI)",
                    unit: "events/s", eventlog: events, redis: redis?.transactions[size]?.eventsPerSecond(size),
                    better: .higher, note: "NDJSON vs MULTI + \(size) XADD + EXEC"))
        }
        return rows
    }

    /// Server CPU µs per event answered in a single-publish window; nil without any.
    static func microsecondsPerEvent(_ cpuSeconds: Double, _ result: ClosedLoopResult) -> Double? {
        result.requests > 0 ? cpuSeconds * 1e6 / Double(result.requests) : nil
    }

    private static func cpuPerEvent(_ cpuSeconds: Double, _ result: ClosedLoopResult) -> String {
        guard let micros = microsecondsPerEvent(cpuSeconds, result) else { return "no events" }
        return String(format: "server CPU %.1f µs per event (%.2f s CPU)", micros, cpuSeconds)
    }

    private static func report(
        _ env: BenchEnvironment, _ label: String, _ result: ClosedLoopResult, eventsPerRequest: Int, _ cpu: String
    ) {
        var line = "  \(label): \(Report.number(result.eventsPerSecond(eventsPerRequest))) events/s "
        line +=
            "(\(result.requests) requests in \(String(format: "%.2f", result.seconds)) s), \(result.latencies.summary)"
        line += "; \(cpu)"
        if result.failures > 0 { line += "; \(result.failures) FAILED: \(result.firstFailure ?? "")" }
        env.say(line)
    }
}
