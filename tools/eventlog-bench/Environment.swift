import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// Options every server benchmark takes.
struct ServerOptions: ParsableArguments {
    /// A short run: fewer connections, shorter phases.
    @Flag(help: "A short run (1,000 instead of 10,000 connections, 3 s phases) that finishes within a few minutes.")
    var quick = false

    /// Seconds per timed phase.
    @Option(help: "Seconds each timed phase runs. Default 10, or 3 with --quick.")
    var duration: Double?

    /// The eventlogd binary.
    @Option(help: "The eventlogd binary. Default: the one beside eventlog-bench (built with swift build if missing).")
    var eventlogd: String?

    /// The Redis peer script.
    @Option(help: "The Redis Streams peer script. Default: ../shared/peers/redis-streams.sh, then /work/shared/...")
    var redisScript: String?

    /// Skip the Redis side.
    @Flag(help: "Measure eventlog only.")
    var noRedis = false

    /// Event loop threads of the load generator.
    @Option(help: "Event loop threads of the load generator.")
    var clientThreads = 2

    func validate() throws {
        guard clientThreads > 0 else { throw ValidationError("--client-threads must be positive") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
    }
}

/// What a benchmark phase needs: the load generator, the settings, and the servers to start.
final class BenchEnvironment: Sendable {
    let quick: Bool
    /// Seconds per timed phase.
    let duration: Double
    let eventlogdPath: String
    /// The peer script, or nil to skip Redis.
    let redisScript: String?
    let client: LoadClient
    /// The load generator's event loops.
    let loops: [any EventLoop]

    private init(
        quick: Bool, duration: Double, eventlogdPath: String, redisScript: String?, group: MultiThreadedEventLoopGroup
    ) {
        self.quick = quick
        self.duration = duration
        self.eventlogdPath = eventlogdPath
        self.redisScript = redisScript
        client = LoadClient(group: group)
        loops = Array(group.makeIterator())
    }

    /// Resolves the binaries and starts the load generator's event loops.
    static func make(_ options: ServerOptions) async throws -> BenchEnvironment {
        SignalCleanup.install()
        let eventlogd = try await locateEventLogDaemon(options.eventlogd)
        var script: String?
        if !options.noRedis {
            let candidates =
                options.redisScript.map { [$0] } ?? [
                    "../shared/peers/redis-streams.sh", "/work/shared/peers/redis-streams.sh",
                ]
            guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw BenchError("no Redis peer script at \(candidates.joined(separator: " or ")); --no-redis skips it")
            }
            script = found
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.clientThreads)
        return BenchEnvironment(
            quick: options.quick, duration: options.duration ?? (options.quick ? 3 : 10), eventlogdPath: eventlogd,
            redisScript: script, group: group)
    }

    /// Stops the event loops and whatever server is still running.
    func shutdown() async {
        ServerRegistry.shared.killAll()
        try? await client.group.shutdownGracefully()
    }

    /// The loop `index` falls on, round robin.
    func loop(_ index: Int) -> any EventLoop {
        loops[index % loops.count]
    }

    /// Prints a line at once (the output is often piped to a file).
    func say(_ line: String) {
        print(line)
        fflush(nil)
    }

    private static func locateEventLogDaemon(_ given: String?) async throws -> String {
        if let given {
            guard FileManager.default.isExecutableFile(atPath: given) else { throw BenchError("\(given) not found") }
            return given
        }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let directory = me.deletingLastPathComponent()
        let sibling = directory.appendingPathComponent("eventlogd").path
        if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
        // .../<scratch>/<triple>/<configuration>/eventlog-bench: build eventlogd into the same place.
        let configuration = directory.lastPathComponent
        let scratch = directory.deletingLastPathComponent().deletingLastPathComponent()
        let package = scratch.deletingLastPathComponent()
        print("eventlogd not found beside eventlog-bench; building it (\(configuration))...")
        _ = try await Processes.run(
            "/usr/bin/env",
            [
                "swift", "build", "--package-path", package.path, "--scratch-path", scratch.path, "-c", configuration,
                "--product", "eventlogd",
            ],
            timeout: .seconds(900))
        guard FileManager.default.isExecutableFile(atPath: sibling) else {
            throw BenchError("building eventlogd did not produce \(sibling); pass --eventlogd PATH")
        }
        return sibling
    }

    // MARK: Servers

    /// Starts a fresh `eventlogd` (`--durability full`, a new database in a temporary directory, or the
    /// prepared `database` file when given, which the caller removes), runs `body`, and stops the server
    /// whatever happens.
    func withEventLog<T: Sendable>(
        arguments: [String] = [], database: String? = nil, _ body: (StartedServer) async throws -> T
    ) async throws -> T {
        let server = try await startEventLog(arguments: arguments, database: database)
        do {
            let result = try await body(server)
            await stop(server)
            return result
        } catch {
            await stop(server)
            throw error
        }
    }

    /// Starts Redis with the peer script, runs `body`, and stops it whatever happens. Nil with --no-redis.
    func withRedis<T: Sendable>(_ body: (StartedServer) async throws -> T) async throws -> T? {
        guard redisScript != nil else { return nil }
        let server = try await startRedis()
        do {
            let result = try await body(server)
            await stop(server)
            return result
        } catch {
            await stop(server)
            throw error
        }
    }

    /// Starts `count` `eventlogd` nodes one after the other on the same `database` (a PostgreSQL URL), runs `body`
    /// with them, and stops them all whatever happens.
    func withEventLogNodes<T: Sendable>(
        _ count: Int, database: String, arguments: [String] = [], _ body: ([StartedServer]) async throws -> T
    ) async throws -> T {
        var nodes: [StartedServer] = []
        do {
            for _ in 0..<count { nodes.append(try await startEventLog(arguments: arguments, database: database)) }
            let result = try await body(nodes)
            for node in nodes { await stop(node) }
            return result
        } catch {
            for node in nodes { await stop(node) }
            throw error
        }
    }

    private func startEventLog(arguments: [String], database: String?) async throws -> StartedServer {
        var lastLog = ""
        for _ in 1...3 {
            let directory = try Processes.makeTemporaryDirectory(prefix: "eventlog-bench-db")
            let port = Int.random(in: 20_000..<30_000)
            let pid = try Processes.spawn(
                eventlogdPath,
                [
                    "--host", "127.0.0.1", "--port", String(port), "--db", database ?? directory + "/bench.db",
                    "--durability", "full", "--max-connections", "12000", "--log-level", "warning",
                ] + arguments,
                logPath: directory + "/eventlogd.log")
            let server = StartedServer(kind: .eventlogd, pid: pid, port: port, directory: directory)
            ServerRegistry.shared.add(server)
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            while clock.now < deadline, !Processes.childExited(pid) {
                if await healthy(port: port) { return server }
                try await Task.sleep(for: .milliseconds(100))
            }
            lastLog = (try? String(contentsOfFile: directory + "/eventlogd.log", encoding: .utf8)) ?? ""
            await stop(server)
        }
        throw BenchError("eventlogd did not start: \(lastLog.suffix(1000))")
    }

    private func healthy(port: Int) async -> Bool {
        let loop = loops[0]
        let connection = HTTPLoadConnection(eventLoop: loop)
        guard let channel = try? await client.connect(port: port, on: loop, handler: connection) else { return false }
        defer { channel.close(promise: nil) }
        guard let reply = try? await connection.request(HTTPLoadConnection.request("GET", "/healthz")) else {
            return false
        }
        return reply.isSuccess
    }

    private func startRedis() async throws -> StartedServer {
        guard let redisScript else { throw BenchError("Redis is disabled") }
        var problem = ""
        for _ in 1...3 {
            let port = Int.random(in: 30_000..<32_000)
            let output = try await Processes.run("/bin/bash", [redisScript, "start", String(port)])
            let fields = output.split(separator: "\n").last?.split(separator: " ") ?? []
            guard fields.count == 3, let printedPort = Int(fields[0]), let pid = Int32(fields[1]) else {
                throw BenchError("the Redis peer script printed \"\(output)\", not \"PORT PID DIR\"")
            }
            let server = StartedServer(kind: .redis, pid: pid, port: printedPort, directory: String(fields[2]))
            ServerRegistry.shared.add(server)
            if !Processes.isGone(pid), let reply = try? await redisCommand(port: printedPort, ["PING"]),
                reply.text == "PONG"
            {
                return server
            }
            problem = (try? String(contentsOfFile: server.directory + "/redis.log", encoding: .utf8)) ?? ""
            await stop(server)
        }
        throw BenchError("Redis did not start: \(problem.suffix(1000))")
    }

    /// One Redis command on a fresh connection.
    func redisCommand(port: Int, _ arguments: [String]) async throws -> RESPValue {
        let loop = loops[0]
        let connection = RESPConnection(eventLoop: loop)
        let channel = try await client.connect(port: port, on: loop, handler: connection)
        defer { channel.close(promise: nil) }
        let reply = try await connection.request(RESP.command(arguments, mode: .values))
        guard case .resp(let replies) = reply, let value = replies.values.first else {
            throw BenchError("Redis \(arguments.first ?? ""): \(reply.summary)")
        }
        return value
    }

    /// A field of Redis `INFO` (e.g. `blocked_clients`).
    func redisInfo(port: Int, _ field: String) async throws -> String? {
        let text = try await redisCommand(port: port, ["INFO"]).text ?? ""
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix(field + ":") {
            return String(line.dropFirst(field.count + 1))
        }
        return nil
    }

    /// Stops a server: SIGTERM and a bounded wait for eventlogd, the peer script for Redis; SIGKILL if it
    /// lingers. Removes its directory.
    func stop(_ server: StartedServer) async {
        let clock = ContinuousClock()
        switch server.kind {
        case .eventlogd:
            kill(server.pid, SIGTERM)
            let deadline = clock.now + .seconds(15)
            while !Processes.childExited(server.pid) {
                if clock.now > deadline {
                    kill(server.pid, SIGKILL)
                    var status: Int32 = 0
                    _ = waitpid(server.pid, &status, 0)
                    break
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            try? FileManager.default.removeItem(atPath: server.directory)
        case .redis:
            if let redisScript {
                _ = try? await Processes.run(
                    "/bin/bash", [redisScript, "stop", String(server.pid), server.directory], timeout: .seconds(30))
            }
            let deadline = clock.now + .seconds(10)
            while !Processes.isGone(server.pid) {
                if clock.now > deadline {
                    kill(server.pid, SIGKILL)
                    break
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            try? FileManager.default.removeItem(atPath: server.directory)
        case .postgres:
            if let script = server.script {
                _ = try? await Processes.run(
                    "/bin/bash", [script, "stop", server.directory], timeout: .seconds(60))
            }
            Processes.stopPostgresNow(server)
        }
        ServerRegistry.shared.remove(server)
    }
}

/// A connected handler and its channel, to close it later.
struct Connected<Handler: Sendable>: Sendable {
    let handler: Handler
    let channel: any Channel
}

extension Array {
    /// Closes every channel and waits (bounded) until they are closed.
    func closeAll<Handler>() async where Element == Connected<Handler> {
        for connected in self { connected.channel.close(promise: nil) }
        for connected in self { _ = try? await wait(connected.channel.closeFuture, seconds: 10, "close") }
    }
}
