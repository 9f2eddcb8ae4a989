import ArgumentParser
import EventLogAuth
import Foundation
import NIOCore

/// Options of the `auth` benchmark.
struct AuthOptions: ParsableArguments {
    @Option(help: "Concurrent single-event publishers.")
    var publishers = 50

    @Option(help: "Concurrent SSE connectors, each opening a stream, waiting for it to catch up, and closing it.")
    var connectors = 16

    @Option(help: "Distinct tokens cycled through by the 'a new token each time' run (above the server's cache).")
    var tokens = 5000

    func validate() throws {
        guard publishers > 0, connectors > 0, tokens > 0 else {
            throw ValidationError("--publishers, --connectors and --tokens must be positive")
        }
    }
}

/// What auth costs: durable publish throughput and the SSE connect rate with auth off, and on (HS256 JWTs),
/// each on a fresh eventlogd. The connect rate is measured with one token reused (verified once, then
/// remembered by the server) and with a different token at each connect (a signature check each time).
enum AuthPhase {
    static func run(_ env: BenchEnvironment, _ options: AuthOptions) async throws -> [ResultRow] {
        let seconds = env.duration
        env.say(
            "## auth: \(options.publishers) publishers and \(options.connectors) SSE connectors, \(seconds) s each, "
                + "auth off and on")
        let directory = try Processes.makeTemporaryDirectory(prefix: "eventlog-bench-auth")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let secret = Array("eventlog-bench-secret-0123456789abcdef".utf8)
        try Data(secret).write(to: URL(fileURLWithPath: directory + "/secret"))
        var request = TokenMinter.Request()
        request.publish = ["bench/*"]
        request.subscribe = ["bench/*"]
        request.lifetime = .seconds(3600)
        let token = try await TokenMinter.mint(request, secret: secret)
        var tokens: [String] = []
        for index in 0..<options.tokens {
            request.subject = "subscriber-\(index)"
            tokens.append(try await TokenMinter.mint(request, secret: secret))
        }

        struct Side: Sendable {
            var publish: ClosedLoopResult
            var connects: [Double]
        }
        func measure(arguments: [String], publishHeaders: String, connectHeaders: [[String]]) async throws -> Side {
            try await env.withEventLog(arguments: arguments) { server in
                let connections = try await env.client.httpConnections(port: server.port, count: options.publishers)
                defer { connections.forEach { $0.close() } }
                let singles = (0..<options.publishers).map {
                    HTTPLoadConnection.request(
                        "POST", "/v1/events", contentType: "application/json",
                        body: "{\"topic\":\"bench/\($0 % 16)\",\"data\":\"x\"}", headers: publishHeaders)
                }
                _ = try await runClosedLoop(connections: connections, requests: singles, seconds: 0.5)
                let cpu = CPUUsage(serverPID: server.pid)
                let publish = try await runClosedLoop(connections: connections, requests: singles, seconds: seconds)
                env.say(
                    "  publish \(arguments.isEmpty ? "auth off" : "auth on"): "
                        + "\(Report.number(publish.eventsPerSecond(1))) events/s, \(publish.latencies.summary); "
                        + "\(cpu.summary(serverName: "eventlogd"))"
                        + (publish.failures > 0 ? "; \(publish.failures) FAILED: \(publish.firstFailure ?? "")" : ""))
                var rates: [Double] = []
                for headers in connectHeaders {
                    rates.append(try await connectRate(env, port: server.port, headers: headers, seconds: seconds))
                }
                return Side(publish: publish, connects: rates)
            }
        }

        let off = try await measure(arguments: [], publishHeaders: "", connectHeaders: [[""]])
        let on = try await measure(
            arguments: ["--jwt-secret-file", directory + "/secret"],
            publishHeaders: "Authorization: Bearer \(token)\r\n",
            connectHeaders: [
                ["Authorization: Bearer \(token)\r\n"],
                tokens.map { "Authorization: Bearer \($0)\r\n" },
            ])
        func relative(_ value: Double, _ base: Double) -> String {
            base > 0 ? String(format: "%.2f× auth off", value / base) : ""
        }
        let publishOff = off.publish.eventsPerSecond(1)
        let publishOn = on.publish.eventsPerSecond(1)
        let connectOff = off.connects[0]
        return [
            ResultRow(
                benchmark: "auth", metric: "single publishes, \(options.publishers) publishers, auth off",
                unit: "events/s", eventlog: publishOff, redis: nil, better: .higher),
            ResultRow(
                benchmark: "auth", metric: "single publishes, \(options.publishers) publishers, auth on (HS256 JWT)",
                unit: "events/s", eventlog: publishOn, redis: nil, better: .higher,
                note: relative(publishOn, publishOff)),
            ResultRow(
                benchmark: "auth", metric: "SSE connects, \(options.connectors) connectors, auth off",
                unit: "connects/s", eventlog: connectOff, redis: nil, better: .higher),
            ResultRow(
                benchmark: "auth", metric: "SSE connects, auth on, one token reused", unit: "connects/s",
                eventlog: on.connects[0], redis: nil, better: .higher, note: relative(on.connects[0], connectOff)),
            ResultRow(
                benchmark: "auth", metric: "SSE connects, auth on, a new token each time", unit: "connects/s",
                eventlog: on.connects[1], redis: nil, better: .higher, note: relative(on.connects[1], connectOff)),
        ]

        /// Connects per second: each connector opens an SSE stream (with the next of `headers`), waits for
        /// `eventlog.caughtup`, closes it, and starts again, until the time is up.
        func connectRate(
            _ env: BenchEnvironment, port: Int, headers: [String], seconds: Double
        ) async throws
            -> Double
        {
            let deadline = monotonicNanos() + UInt64(seconds * 1e9)
            let start = monotonicNanos()
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for connector in 0..<options.connectors {
                    group.addTask {
                        var count = 0
                        var next = connector
                        while monotonicNanos() < deadline {
                            let loop = env.loop(next)
                            let subscriber = SSESubscriber(
                                eventLoop: loop, selectors: ["bench/\(connector % 16)"], lastEventID: nil,
                                options: .init(), headers: headers[next % headers.count])
                            let channel = try await env.client.connect(port: port, on: loop, handler: subscriber)
                            _ = try await wait(subscriber.caughtUp.futureResult, seconds: 30, "SSE connect")
                            try? await channel.close()
                            count += 1
                            next += options.connectors
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            let elapsed = Double(monotonicNanos() - start) / 1e9
            let rate = Double(total) / elapsed
            env.say(
                "  SSE connects (\(headers.count == 1 ? (headers[0].isEmpty ? "auth off" : "one token") : "\(headers.count) tokens")): "
                    + "\(Report.number(rate))/s (\(total) in \(String(format: "%.2f", elapsed)) s)")
            return rate
        }
    }
}

/// `auth`: what access control costs.
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Publish throughput and SSE connect rate with auth off and on (HS256 JWTs), side by side.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: AuthOptions

    func run() async throws {
        try await ServerBenchmark.run(server, title: "auth", [("auth", { try await AuthPhase.run($0, options) })])
    }
}
