import ArgumentParser
import Foundation
import NIOCore

/// Options of the `compaction` benchmark.
struct CompactionOptions: ParsableArguments {
    @Option(
        name: .customLong("compaction-events"),
        help: "Events in the log before compaction. Default 1000000, or 200000 with --quick.")
    var events: Int?

    @Option(name: .customLong("compaction-keys"), help: "Distinct keys the events cycle through (per topic).")
    var keys = 10_000

    @Option(name: .customLong("compaction-rate"), help: "Publishes per second during both windows (paced).")
    var rate: Double = 500

    @Option(
        name: .customLong("compaction-window"),
        help: "Seconds of the window without maintenance. Default: the phase duration (--duration).")
    var window: Double?

    @Option(
        name: .customLong("compaction-max-seconds"),
        help: "Most seconds to let eventlog-maint compact run (it is killed after, and the row says so).")
    var maxSeconds: Double = 300

    @Option(help: "The eventlog-maint binary. Default: the one beside eventlog-bench or eventlogd.")
    var eventlogMaint: String?

    func validate() throws {
        guard (events ?? 1000) >= 1000, keys > 0, rate > 0, maxSeconds > 0 else {
            throw ValidationError("--compaction-events must be at least 1000; keys, rate, max seconds positive")
        }
    }
}

/// Publish latency while `eventlog-maint compact --keep-latest` runs on the server's database, against the
/// same paced publishing without it. eventlog only: Redis Streams have no keyed compaction.
enum CompactionPhase {
    static func run(_ env: BenchEnvironment, _ options: CompactionOptions) async throws -> [ResultRow] {
        let maint = try locateMaint(env, options.eventlogMaint)
        let window = options.window ?? env.duration
        let total = options.events ?? (env.quick ? 200_000 : 1_000_000)
        let rate = options.rate
        env.say(
            "## compaction: \(Report.number(Double(total))) keyed events (\(options.keys) keys × 16 topics), "
                + "then publish p99 at \(Report.number(rate))/s for \(window) s without maintenance and while "
                + "eventlog-maint compact --keep-latest runs")
        struct Outcome: Sendable {
            var without: PacedResult
            var with: PacedResult
            var compactSeconds: Double
            var compactOutput: String
            var finished: Bool
        }
        let outcome = try await env.withEventLog { server -> Outcome in
            let database = server.directory + "/bench.db"
            try await fill(env, server: server, events: total, keys: options.keys)
            let loop = env.loops[0]
            // 64 connections, so that a slow answer rarely leaves the pacer without a free one (the backlog is
            // reported when it does: latency is then measured from the late send, not from when it was due).
            let connections = try await env.client.httpConnections(port: server.port, count: 64, on: loop)
            defer { connections.forEach { $0.close() } }
            let pad = String(repeating: "x", count: 77)
            let make: PacedPublisher.MakeRequest = { _, sentAt in
                HTTPLoadConnection.request(
                    "POST", "/v1/events", contentType: "application/json",
                    body: "{\"topic\":\"live\",\"data\":\"t=\(stamp(sentAt));\(pad)\"}")
            }
            // Warm-up, then the window without maintenance.
            _ = try await paced(loop, connections, rate: rate, seconds: 1, make)
            let without = try await paced(loop, connections, rate: rate, seconds: window, make)
            env.say("  without maintenance: \(describe(without))")
            // The same while compaction runs; publishing stops when eventlog-maint exits.
            let log = server.directory + "/maint.log"
            let started = monotonicNanos()
            let pid = try Processes.spawn(
                maint, ["compact", "--db", database, "--keep-latest", "--quiet"], logPath: log)
            let pacer = PacedPublisher(
                eventLoop: loop, connections: connections, rate: rate, seconds: options.maxSeconds, makeRequest: make)
            pacer.start()
            var status: Int32 = 0
            var finished = false
            while true {
                if waitpid(pid, &status, WNOHANG) == pid {
                    finished = true
                    break
                }
                if Double(monotonicNanos() - started) / 1e9 > options.maxSeconds {
                    kill(pid, SIGKILL)
                    _ = waitpid(pid, &status, 0)
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let compactSeconds = Double(monotonicNanos() - started) / 1e9
            pacer.stop()
            let with = try await wait(pacer.future, seconds: options.maxSeconds + 30, "publishing during compaction")
            let output = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            env.say(
                "  eventlog-maint compact \(finished ? "exited with status \(status)" : "KILLED after the limit") "
                    + "after \(String(format: "%.1f", compactSeconds)) s: \(output.replacingOccurrences(of: "\n", with: "; "))"
            )
            env.say("  while compacting: \(describe(with))")
            if finished, status != 0 { throw BenchError("eventlog-maint compact failed (status \(status)): \(output)") }
            return Outcome(
                without: without, with: with, compactSeconds: compactSeconds, compactOutput: output,
                finished: finished)
        }
        let before = outcome.without.acknowledgements.milliseconds(0.99)
        let during = outcome.with.acknowledgements.milliseconds(0.99)
        let ratio = before.flatMap { b in during.map { $0 / b } }
        let events = Report.number(Double(total))
        let noRedis = "Redis: no equivalent (Streams have no keyed compaction)"
        let compactNote =
            (outcome.finished ? "" : "compaction KILLED at the time limit; ")
            + "compact ran \(String(format: "%.1f", outcome.compactSeconds)) s, "
            + "\(Report.number(Double(outcome.with.acknowledged))) publishes during it"
            + (outcome.with.maxBacklog > 0 ? ", publisher fell behind by up to \(outcome.with.maxBacklog)" : "")
        return [
            ResultRow(
                benchmark: "compaction", metric: "publish p99 at \(Report.number(rate))/s, no maintenance",
                unit: "ms", eventlog: before, redis: nil, better: .lower, note: noRedis),
            ResultRow(
                benchmark: "compaction",
                metric:
                    "publish p99 at \(Report.number(rate))/s while eventlog-maint compact runs over \(events) events",
                unit: "ms", eventlog: during, redis: nil, better: .lower, note: compactNote),
            ResultRow(
                benchmark: "compaction", metric: "publish p99 during compaction / without", unit: "×",
                eventlog: ratio, redis: nil, better: .lower, target: .atMost(2), note: noRedis),
        ]
    }

    /// Fills the log with `events` keyed events: NDJSON batches of 1,000 over 4 connections.
    private static func fill(_ env: BenchEnvironment, server: StartedServer, events: Int, keys: Int) async throws {
        let connections = try await env.client.httpConnections(port: server.port, count: 4)
        defer { connections.forEach { $0.close() } }
        let payload = String(repeating: "x", count: 100)
        // Enough distinct bodies that every key of every topic occurs (keys × 16 topics events per cycle).
        let distinct = max(1, min((keys * 16 + 999) / 1000, 1000))
        let requests = (0..<distinct).map { batch in
            let body = (0..<1000).map { index -> String in
                let n = batch * 1000 + index
                return "{\"topic\":\"compact/\(n % 16)\",\"key\":\"k\((n / 16) % keys)\",\"data\":\"\(payload)\"}"
            }.joined(separator: "\n")
            return HTTPLoadConnection.request("POST", "/v1/events", contentType: "application/x-ndjson", body: body)
        }
        let start = monotonicNanos()
        let batches = events / 1000
        _ = try await env.client.connectMany(count: batches, parallel: connections.count) { index in
            let reply = try await connections[index % connections.count].request(requests[index % requests.count])
            guard reply.isSuccess else { throw BenchError("filling the log: \(reply.summary)") }
            return true
        }
        let seconds = Double(monotonicNanos() - start) / 1e9
        env.say(
            "  filled \(Report.number(Double(batches * 1000))) events in \(String(format: "%.1f", seconds)) s; "
                + "database \(fileSize(server.directory + "/bench.db") / 1_048_576) MB")
    }

    private static func paced(
        _ loop: any EventLoop, _ connections: [HTTPLoadConnection], rate: Double, seconds: Double,
        _ make: @escaping PacedPublisher.MakeRequest
    ) async throws -> PacedResult {
        let pacer = PacedPublisher(
            eventLoop: loop, connections: connections, rate: rate, seconds: seconds, makeRequest: make)
        pacer.start()
        return try await wait(pacer.future, seconds: seconds + 30, "paced publishing")
    }

    private static func describe(_ result: PacedResult) -> String {
        var text = "\(result.acknowledged) of \(result.sent) acknowledged, ack \(result.acknowledgements.summary)"
        if result.maxBacklog > 0 { text += ", publisher fell behind by up to \(result.maxBacklog)" }
        if result.failures > 0 { text += ", \(result.failures) FAILED: \(result.firstFailure ?? "")" }
        return text
    }

    private static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    private static func locateMaint(_ env: BenchEnvironment, _ given: String?) throws -> String {
        let candidates =
            given.map { [$0] } ?? [
                URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
                    .appendingPathComponent("eventlog-maint").path,
                URL(fileURLWithPath: env.eventlogdPath).deletingLastPathComponent()
                    .appendingPathComponent("eventlog-maint").path,
            ]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchError(
                "no eventlog-maint at \(candidates.joined(separator: " or ")); build it with --product eventlog-maint "
                    + "or pass --eventlog-maint PATH")
        }
        return found
    }
}
