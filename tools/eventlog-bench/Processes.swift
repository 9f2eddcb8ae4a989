import Dispatch
import Foundation
import Synchronization

/// A server process the bench started (`eventlogd`, or Redis through the peer script). It is registered
/// until stopped, so a failure or a signal still stops it.
struct StartedServer: Sendable {
    /// What runs.
    enum Kind: Sendable {
        case eventlogd
        case redis
        /// A throwaway PostgreSQL cluster (`tools/pg.sh`); `pid` is its postmaster.
        case postgres
    }

    let kind: Kind
    let pid: Int32
    let port: Int
    /// The temporary directory holding its data and its log (deleted on stop).
    let directory: String
    /// For `.postgres`: the `tools/pg.sh` that started it (and stops it).
    var script: String? = nil

    var name: String {
        switch kind {
        case .eventlogd: "eventlogd"
        case .redis: "redis-server"
        case .postgres: "postgres"
        }
    }
}

/// The servers that are running, so that every exit path stops them.
final class ServerRegistry: Sendable {
    /// The registry of this process.
    static let shared = ServerRegistry()

    private let running = Mutex<[StartedServer]>([])

    func add(_ server: StartedServer) {
        running.withLock { $0.append(server) }
    }

    func remove(_ server: StartedServer) {
        running.withLock { $0.removeAll { $0.pid == server.pid } }
    }

    /// Kills whatever is still registered, without waiting long: the exit path after a signal.
    func killAll() {
        let servers = running.withLock { servers -> [StartedServer] in
            defer { servers.removeAll() }
            return servers
        }
        // The nodes first, then the database they use.
        for server in servers where server.kind != .postgres {
            kill(server.pid, SIGKILL)
            try? FileManager.default.removeItem(atPath: server.directory)
        }
        for server in servers where server.kind == .postgres {
            Processes.stopPostgresNow(server)
        }
    }
}

/// Stops the registered servers when the bench is interrupted (SIGINT, SIGTERM), then exits.
enum SignalCleanup {
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    /// Installs the handlers; call once, before any server starts.
    static func install() {
        guard sources.isEmpty else { return }
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                ServerRegistry.shared.killAll()
                FileHandle.standardError.write(Data("eventlog-bench: interrupted, servers stopped\n".utf8))
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// An error of the bench itself (a server that does not start, a check that fails, a timeout).
struct BenchError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Spawning, stopping and observing processes (posix_spawn, so the bench owns the pids and can reap them).
enum Processes {
    /// Starts `path` with `arguments`, its stdout and stderr going to `logPath`. Returns the pid.
    static func spawn(_ path: String, _ arguments: [String], logPath: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard result == 0 else { throw BenchError("cannot start \(path): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Whether our child `pid` has exited (reaping it if so).
    static func childExited(_ pid: Int32) -> Bool {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        return result == pid || (result == -1 && errno == ECHILD)
    }

    /// Whether a process that is not our child is gone (or a zombie nobody reaps).
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state == "Z" || state == "X"
    }

    /// Runs `path arguments` to completion (bounded by `timeout`) and returns what it printed.
    static func run(_ path: String, _ arguments: [String], timeout: Duration = .seconds(120)) async throws -> String {
        let directory = try makeTemporaryDirectory(prefix: "eventlog-bench-run")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = directory + "/output"
        let pid = try spawn(path, arguments, logPath: output)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if clock.now > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw BenchError("\(path) \(arguments.joined(separator: " ")) did not finish within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw BenchError("\(path) \(arguments.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }

    /// A fresh directory under the system's temporary directory.
    static func makeTemporaryDirectory(prefix: String) throws -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let result = mkdtemp(&template) else { throw BenchError("mkdtemp failed: \(errno)") }
        return String(cString: result)
    }

    /// Resident memory of `pid` in bytes (VmRSS in /proc/PID/status).
    static func residentBytes(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let digits = line.filter(\.isNumber)
            return Int(digits).map { $0 * 1024 }
        }
        return nil
    }

    /// Peak resident memory of `pid` in bytes (VmHWM in /proc/PID/status).
    static func peakResidentBytes(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let digits = line.filter(\.isNumber)
            return Int(digits).map { $0 * 1024 }
        }
        return nil
    }

    /// CPU time (user + system) `pid` has used so far, in seconds; `nil` is this process.
    static func cpuSeconds(_ pid: Int32?) -> Double {
        let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
        guard let stat = try? String(contentsOfFile: path, encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return 0
        }
        // After the command name: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Stops a PostgreSQL cluster from a non-async exit path: `pg.sh stop DIR` (a fast shutdown, bounded to 30 s),
    /// then SIGKILL for a postmaster still there, and the directory removed.
    static func stopPostgresNow(_ server: StartedServer) {
        if let script = server.script,
            let pid = try? spawn("/bin/bash", [script, "stop", server.directory], logPath: "/dev/null")
        {
            let deadline = ContinuousClock.now + .seconds(30)
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                if ContinuousClock.now > deadline {
                    kill(pid, SIGKILL)
                    _ = waitpid(pid, &status, 0)
                    break
                }
                usleep(50_000)
            }
        }
        if server.pid > 0, !isGone(server.pid) { kill(server.pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: server.directory)
    }

    /// The load averages (1, 5, 15 minutes) as /proc/loadavg shows them.
    static func loadAverage() -> String {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return text.split(separator: " ").prefix(3).joined(separator: " ")
    }
}

/// CPU used by the server and by the bench over a stretch of wall time, as a number of cores each.
struct CPUUsage: Sendable {
    private let serverPID: Int32
    private let start: ContinuousClock.Instant
    private let serverStart: Double
    private let benchStart: Double

    init(serverPID: Int32) {
        self.serverPID = serverPID
        start = .now
        serverStart = Processes.cpuSeconds(serverPID)
        benchStart = Processes.cpuSeconds(nil)
    }

    /// CPU seconds (utime + stime in /proc/PID/stat, clock ticks over `sysconf(_SC_CLK_TCK)`) the server
    /// used since `init`.
    var serverSeconds: Double {
        Processes.cpuSeconds(serverPID) - serverStart
    }

    /// "server 1.62 cores, bench 0.31 cores" since `init`.
    func summary(serverName: String) -> String {
        let wall = (ContinuousClock.now - start).secondsValue
        guard wall > 0 else { return "" }
        let server = (Processes.cpuSeconds(serverPID) - serverStart) / wall
        let bench = (Processes.cpuSeconds(nil) - benchStart) / wall
        return String(format: "CPU: %@ %.2f cores, bench %.2f cores", serverName, server, bench)
    }
}
