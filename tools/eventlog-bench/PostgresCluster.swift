import EventLog
import Foundation
import Synchronization

/// The throwaway PostgreSQL cluster of `eventlog-bench postgres`: started with `tools/pg.sh start DIR PORT` on
/// 127.0.0.1 the first time a phase needs it, registered with ``ServerRegistry`` (so the end of the run, a failure,
/// SIGINT/SIGTERM and the watchdog all stop it with `tools/pg.sh stop DIR`), with a fresh database per measured
/// configuration.
struct PGCluster: Sendable {
    let server: StartedServer
    /// The superuser URL of the `postgres` database.
    let url: String
    /// `SELECT version()`.
    let version: String

    /// The URL of database `name` on this cluster, with a statement timeout (a bench connection never waits on a
    /// lock for ever).
    func databaseURL(_ name: String, statementTimeout: Bool = false) -> String {
        var base = url
        if let slash = base.lastIndex(of: "/") { base = String(base[...slash]) }
        return base + name + (statementTimeout ? "?options=-c%20statement_timeout%3D30000" : "")
    }

    /// Creates database `name` (dropping one left from before), runs `body` with its URL, and drops it.
    func withDatabase<T: Sendable>(_ name: String, _ body: (String) async throws -> T) async throws -> T {
        let admin = url
        try await onThread {
            let connection = try PGConnection(url: admin)
            defer { connection.close() }
            try connection.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            try connection.execute("CREATE DATABASE \(name)")
        }
        let drop: @Sendable () async -> Void = {
            _ = try? await onThread {
                let connection = try PGConnection(url: admin)
                defer { connection.close() }
                try connection.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            }
        }
        do {
            let result = try await body(databaseURL(name))
            await drop()
            return result
        } catch {
            await drop()
            throw error
        }
    }

    /// The postmaster and its children (backends, WAL writer, checkpointer...), for their CPU time.
    var processIDs: [Int32] {
        [server.pid] + Processes.children(of: server.pid)
    }
}

/// Starts the cluster once per run, on first use.
final class PGClusterHolder: Sendable {
    private let cluster = Mutex<PGCluster?>(nil)
    private let script: String?
    private let port: Int?

    init(script: String?, port: Int?) {
        self.script = script
        self.port = port
    }

    /// The running cluster, started now if it is not yet. (Phases run one after the other.)
    func get(_ env: BenchEnvironment) async throws -> PGCluster {
        if let running = cluster.withLock({ $0 }) { return running }
        let started = try await Self.start(env, script: try Self.locateScript(script), port: port)
        cluster.withLock { $0 = started }
        return started
    }

    private static func start(_ env: BenchEnvironment, script: String, port given: Int?) async throws -> PGCluster {
        var problem = ""
        for _ in 1...3 {
            let directory = try Processes.makeTemporaryDirectory(prefix: "eventlog-bench-pg")
            let port = given ?? Int.random(in: 34_000..<36_000)
            // Registered before it starts (pid -1: nothing to signal yet), so that an interruption meanwhile still
            // runs `pg.sh stop DIR`.
            let placeholder = StartedServer(
                kind: .postgres, pid: -1, port: port, directory: directory, script: script)
            ServerRegistry.shared.add(placeholder)
            do {
                let output = try await Processes.run(
                    "/bin/bash", [script, "start", directory, String(port)], timeout: .seconds(180))
                guard let url = output.split(separator: "\n").last.map(String.init), url.hasPrefix("postgres://"),
                    let pidText = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
                    let pid = pidText.split(separator: "\n").first.flatMap({ Int32($0) })
                else { throw BenchError("\(script) start printed \"\(output)\", not a URL") }
                let server = StartedServer(kind: .postgres, pid: pid, port: port, directory: directory, script: script)
                ServerRegistry.shared.remove(placeholder)
                ServerRegistry.shared.add(server)
                let version = try await onThread {
                    let connection = try PGConnection(url: url)
                    defer { connection.close() }
                    let settings = try connection.query(
                        "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit'), "
                            + "current_setting('shared_buffers')")
                    return "\(settings.text(0, 0) ?? "?"); fsync=\(settings.text(0, 1) ?? "?"), "
                        + "synchronous_commit=\(settings.text(0, 2) ?? "?"), shared_buffers=\(settings.text(0, 3) ?? "?")"
                }
                env.say("PostgreSQL: \(url) (\(directory)); \(version)")
                return PGCluster(server: server, url: url, version: version)
            } catch {
                problem =
                    "\(error) " + ((try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "")
                await env.stop(placeholder)
                ServerRegistry.shared.remove(placeholder)
                if given != nil { break }
            }
        }
        throw BenchError("PostgreSQL did not start: \(problem.suffix(1500))")
    }

    /// `--pg-script`, else `tools/pg.sh` under the current directory, else in the package eventlog-bench was built
    /// from (`<package>/<scratch>/<triple>/<configuration>/eventlog-bench`).
    private static func locateScript(_ given: String?) throws -> String {
        if let given {
            guard FileManager.default.fileExists(atPath: given) else { throw BenchError("\(given) not found") }
            return given
        }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let package = me.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let candidates = [
            FileManager.default.currentDirectoryPath + "/tools/pg.sh", package.path + "/tools/pg.sh",
        ]
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw BenchError("no tools/pg.sh at \(candidates.joined(separator: " or ")); pass --pg-script PATH")
        }
        return found
    }
}

/// Runs blocking work (libpq) on a thread of its own, off the cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = "eventlog-bench-pg"
        thread.start()
    }
}

extension Processes {
    /// The pids whose parent is `parent` (from /proc/PID/stat).
    static func children(of parent: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [Int32] = []
        for entry in entries {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == parent { found.append(pid) }
        }
        return found
    }
}

/// CPU seconds (utime + stime) used by a set of processes since `init`; processes that started later are not
/// counted, those that ended are counted up to their last reading.
struct GroupCPU: Sendable {
    private let start: [Int32: Double]

    init(_ pids: [Int32]) {
        var start: [Int32: Double] = [:]
        for pid in pids { start[pid] = Processes.cpuSeconds(pid) }
        self.start = start
    }

    var seconds: Double {
        start.reduce(0) { total, entry in
            let now = Processes.cpuSeconds(entry.key)
            return total + (now > 0 ? max(0, now - entry.value) : 0)
        }
    }
}
