import ArgumentParser
import Dispatch
import EventLog
import EventLogServer
import Foundation
import Logging

/// `eventlogd`: serves an event log over HTTP, SSE and WebSocket.
@main
struct EventLogDaemon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eventlogd",
        abstract: "Serve a durable event log over HTTP (publish, history), Server-Sent Events and WebSocket.",
        discussion: """
            Every option can also be set with an environment variable named after it: --port is \
            EVENTLOG_PORT, --max-body-bytes is EVENTLOG_MAX_BODY_BYTES, and so on. A flag on the command line \
            wins over the environment. SIGTERM or SIGINT shuts down gracefully: the listener closes, open \
            streams end, in-flight publishes commit and are answered, then the log closes and the process exits 0.
            """
    )

    @Option(help: "The address to bind (EVENTLOG_HOST). Default 127.0.0.1.")
    var host: String?

    @Option(help: "The port to bind, 0 for any free port (EVENTLOG_PORT). Default 8080.")
    var port: Int?

    @Option(
        name: .customLong("db"),
        help: "The database file, created if missing (EVENTLOG_DB). Default ./data/eventlog.db.")
    var databasePath: String?

    @Option(
        help:
            "full: every acknowledged event is on disk (fsync); normal: survives a process crash, a power loss may lose the last commits (EVENTLOG_DURABILITY). Default full."
    )
    var durability: String?

    @Option(help: "Seconds between keepalive comments on idle SSE streams (EVENTLOG_KEEPALIVE). Default 15.")
    var keepalive: Double?

    @Option(help: "The SSE retry hint sent to clients, in milliseconds (EVENTLOG_SSE_RETRY). Default 2000.")
    var sseRetry: Int?

    @Option(
        help:
            "The largest request body in bytes; larger is refused with 413 (EVENTLOG_MAX_BODY_BYTES). Default 8388608.")
    var maxBodyBytes: Int?

    @Option(
        help: "The largest event data in bytes; larger is refused with 413 (EVENTLOG_MAX_EVENT_BYTES). Default 1048576."
    )
    var maxEventBytes: Int?

    @Option(help: "The most open connections; more get 503 (EVENTLOG_MAX_CONNECTIONS). Default 10000.")
    var maxConnections: Int?

    @Option(
        help:
            "An origin allowed by CORS, repeatable; '*' allows all (EVENTLOG_CORS_ORIGINS, comma-separated). Default *."
    )
    var corsOrigin: [String] = []

    @Option(
        help:
            "Seconds between WebSocket pings; a connection that misses a pong is closed (EVENTLOG_WS_PING). Default 30."
    )
    var wsPing: Double?

    @Option(
        help:
            "The largest WebSocket message in bytes; larger closes with 1009 (EVENTLOG_MAX_WS_FRAME_BYTES). Default 1048576."
    )
    var maxWsFrameBytes: Int?

    @Option(
        help:
            "Memory for the newest events, in bytes; subscribers further behind read from disk (EVENTLOG_TAIL_BYTES). Default 67108864."
    )
    var tailBytes: Int?

    @Option(
        help:
            "Cap the database at this many pages (PRAGMA max_page_count), like a disk quota: publishes past it get 503 until retention frees space (EVENTLOG_MAX_DB_PAGES). Default none."
    )
    var maxDbPages: Int?

    @Option(help: "Retention: delete events older than this, e.g. 7d or 12h (EVENTLOG_RETAIN_MAX_AGE). Default: keep.")
    var retainMaxAge: String?

    @Option(help: "Retention: keep at most this many events (EVENTLOG_RETAIN_MAX_EVENTS). Default: keep.")
    var retainMaxEvents: Int?

    @Option(help: "Retention: keep at most this much event data, e.g. 10GB (EVENTLOG_RETAIN_MAX_BYTES). Default: keep.")
    var retainMaxBytes: String?

    @Option(
        help: "How often retention runs when a --retain-* limit is set, e.g. 5m (EVENTLOG_RETAIN_INTERVAL). Default 1m."
    )
    var retainInterval: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (EVENTLOG_LOG_LEVEL). Default info.")
    var logLevel: String?

    mutating func validate() throws {
        _ = try retentionPolicy()
        if let text = setting(retainInterval, "EVENTLOG_RETAIN_INTERVAL") {
            do {
                _ = try MaintenanceText.parseDuration(text)
            } catch {
                throw ValidationError("--retain-interval: \(error)")
            }
        }
        let environment = ProcessInfo.processInfo.environment
        for name in [
            "EVENTLOG_PORT", "EVENTLOG_SSE_RETRY", "EVENTLOG_MAX_BODY_BYTES", "EVENTLOG_MAX_EVENT_BYTES",
            "EVENTLOG_MAX_CONNECTIONS", "EVENTLOG_MAX_WS_FRAME_BYTES", "EVENTLOG_TAIL_BYTES",
            "EVENTLOG_MAX_DB_PAGES", "EVENTLOG_RETAIN_MAX_EVENTS",
        ] {
            if let value = environment[name], Int(value) == nil {
                throw ValidationError("\(name) must be an integer, not \(value)")
            }
        }
        for name in ["EVENTLOG_KEEPALIVE", "EVENTLOG_WS_PING"] {
            if let value = environment[name], Double(value) == nil {
                throw ValidationError("\(name) must be a number of seconds, not \(value)")
            }
        }
        if let durability = setting(durability, "EVENTLOG_DURABILITY"), EventLog.Durability(rawValue: durability) == nil
        {
            throw ValidationError("--durability must be full or normal, not \(durability)")
        }
        if let level = setting(logLevel, "EVENTLOG_LOG_LEVEL"), Logger.Level(rawValue: level) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        for (name, value) in [
            ("port", number(port, "EVENTLOG_PORT")), ("sse-retry", number(sseRetry, "EVENTLOG_SSE_RETRY")),
        ] {
            if let value, value < 0 { throw ValidationError("--\(name) must not be negative") }
        }
        for (name, value) in [
            ("max-body-bytes", number(maxBodyBytes, "EVENTLOG_MAX_BODY_BYTES")),
            ("max-event-bytes", number(maxEventBytes, "EVENTLOG_MAX_EVENT_BYTES")),
            ("max-connections", number(maxConnections, "EVENTLOG_MAX_CONNECTIONS")),
            ("max-ws-frame-bytes", number(maxWsFrameBytes, "EVENTLOG_MAX_WS_FRAME_BYTES")),
            ("tail-bytes", number(tailBytes, "EVENTLOG_TAIL_BYTES")),
            ("max-db-pages", number(maxDbPages, "EVENTLOG_MAX_DB_PAGES")),
        ] {
            if let value, value <= 0 { throw ValidationError("--\(name) must be positive") }
        }
        for (name, value) in [
            ("keepalive", seconds(keepalive, "EVENTLOG_KEEPALIVE")), ("ws-ping", seconds(wsPing, "EVENTLOG_WS_PING")),
        ] {
            if let value, !(value > 0) { throw ValidationError("--\(name) must be a positive number of seconds") }
        }
    }

    func run() async throws {
        let level = setting(logLevel, "EVENTLOG_LOG_LEVEL").flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "eventlogd")

        var options = EventLog.Options()
        options.durability = setting(durability, "EVENTLOG_DURABILITY").flatMap(EventLog.Durability.init) ?? .full
        if let bytes = number(maxEventBytes, "EVENTLOG_MAX_EVENT_BYTES") { options.limits.maxDataBytes = bytes }
        if let bytes = number(tailBytes, "EVENTLOG_TAIL_BYTES") { options.tailBytes = bytes }
        options.maxPageCount = number(maxDbPages, "EVENTLOG_MAX_DB_PAGES")
        options.logger = Logger(label: "eventlog")

        var configuration = ServerConfiguration()
        configuration.host = setting(host, "EVENTLOG_HOST") ?? configuration.host
        configuration.port = number(port, "EVENTLOG_PORT") ?? configuration.port
        if let value = seconds(keepalive, "EVENTLOG_KEEPALIVE") {
            configuration.keepalive = .milliseconds(Int(value * 1000))
        }
        if let value = number(sseRetry, "EVENTLOG_SSE_RETRY") { configuration.sseRetryMilliseconds = value }
        if let value = number(maxBodyBytes, "EVENTLOG_MAX_BODY_BYTES") { configuration.maxBodyBytes = value }
        if let value = number(maxConnections, "EVENTLOG_MAX_CONNECTIONS") { configuration.maxConnections = value }
        if let value = number(maxWsFrameBytes, "EVENTLOG_MAX_WS_FRAME_BYTES") {
            configuration.maxWebSocketFrameBytes = value
        }
        if let value = seconds(wsPing, "EVENTLOG_WS_PING") {
            configuration.webSocketPingInterval = .milliseconds(Int(value * 1000))
        }
        if !corsOrigin.isEmpty {
            configuration.corsOrigins = corsOrigin
        } else if let origins = ProcessInfo.processInfo.environment["EVENTLOG_CORS_ORIGINS"] {
            configuration.corsOrigins = origins.split(separator: ",").map {
                String($0).trimmingCharacters(in: .whitespaces)
            }
        }

        let path = setting(databasePath, "EVENTLOG_DB") ?? "./data/eventlog.db"
        let files = NewFiles(databasePath: path)
        let lock: ServerLock
        do {
            try files.createDirectory()
            lock = try ServerLock(databasePath: path)
        } catch let held as ServerLock.Held {
            FileHandle.standardError.write(Data("eventlogd: \(held)\n".utf8))
            throw ExitCode(1)
        } catch {
            logger.critical("cannot lock the log", metadata: ["db": "\(path)", "error": "\(error)"])
            files.remove()
            throw ExitCode(1)
        }
        let log: EventLog
        do {
            log = try await EventLog.open(path: path, options: options)
        } catch {
            logger.critical("cannot open the log", metadata: ["db": "\(path)", "error": "\(error)"])
            lock.release()
            files.remove()
            throw ExitCode(1)
        }
        let server = EventLogServer(log: log, configuration: configuration, logger: logger)
        do {
            try await server.start()
        } catch {
            logger.critical(
                "cannot bind",
                metadata: ["host": "\(configuration.host)", "port": "\(configuration.port)", "error": "\(error)"])
            await log.close()
            lock.release()
            files.remove()
            throw ExitCode(1)
        }

        let retention = try retentionPolicy().map { policy in
            let interval =
                (try? MaintenanceText.parseDuration(setting(retainInterval, "EVENTLOG_RETAIN_INTERVAL") ?? "1m"))
                ?? .seconds(60)
            return Task { await Self.runRetention(policy, every: interval, log: log, logger: logger) }
        }

        // SIGTERM and SIGINT start a graceful shutdown; the process exits 0 when it is done.
        let signals = [SIGTERM, SIGINT].map { signalNumber -> any DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                logger.info("signal received", metadata: ["signal": "\(signalNumber)"])
                Task { await server.shutdown() }
            }
            source.resume()
            return source
        }
        await server.waitUntilStopped()
        retention?.cancel()
        await retention?.value
        signals.forEach { $0.cancel() }
        await log.close()
        lock.release()
        logger.info("log closed", metadata: ["head": "\(log.head)"])
    }

    /// The retention policy the --retain-* options describe, or nil when none is set.
    private func retentionPolicy() throws -> RetentionPolicy? {
        let age = setting(retainMaxAge, "EVENTLOG_RETAIN_MAX_AGE")
        let events = number(retainMaxEvents, "EVENTLOG_RETAIN_MAX_EVENTS")
        let bytes = setting(retainMaxBytes, "EVENTLOG_RETAIN_MAX_BYTES")
        guard age != nil || events != nil || bytes != nil else { return nil }
        do {
            let policy = RetentionPolicy(
                maxAge: try age.map { try MaintenanceText.parseDuration($0) },
                maxEvents: events,
                maxBytes: try bytes.map { try MaintenanceText.parseSize($0) }
            )
            try policy.validate()
            return policy
        } catch {
            throw ValidationError("retention: \(error)")
        }
    }

    /// Runs retention through the log's own writer (the same code as `eventlog-maint retain`) on a schedule.
    private static func runRetention(
        _ policy: RetentionPolicy, every interval: Duration, log: EventLog, logger: Logger
    )
        async
    {
        while !Task.isCancelled {
            do {
                let report = try await log.retain(policy)
                if report.removedEvents > 0 {
                    logger.info(
                        "retention",
                        metadata: ["removed": "\(report.removedEvents)", "earliest": "\(report.earliestAfter)"])
                }
            } catch {
                logger.error("retention failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    private func setting(_ flag: String?, _ variable: String) -> String? {
        flag ?? ProcessInfo.processInfo.environment[variable]
    }

    private func number(_ flag: Int?, _ variable: String) -> Int? {
        flag ?? ProcessInfo.processInfo.environment[variable].flatMap { Int($0) }
    }

    private func seconds(_ flag: Double?, _ variable: String) -> Double? {
        flag ?? ProcessInfo.processInfo.environment[variable].flatMap { Double($0) }
    }
}

/// What a start creates that did not exist before it: the database file and its directory. A start
/// that fails (the port is taken, another server holds the lock) removes them again, so it leaves
/// nothing behind.
private struct NewFiles {
    let databasePath: String
    /// The missing directories, innermost first.
    private let newDirectories: [String]
    private let newDatabase: Bool

    init(databasePath: String) {
        self.databasePath = databasePath
        let manager = FileManager.default
        var missing: [String] = []
        var directory = (databasePath as NSString).deletingLastPathComponent
        while !directory.isEmpty, directory != "/", !manager.fileExists(atPath: directory) {
            missing.append(directory)
            directory = (directory as NSString).deletingLastPathComponent
        }
        newDirectories = missing
        newDatabase = !manager.fileExists(atPath: databasePath)
    }

    /// Creates the database's directory (and its parents) when it is missing.
    func createDirectory() throws {
        guard let directory = newDirectories.first else { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Removes the database file (with its -wal and -shm files) and the directory, if this start made them.
    func remove() {
        let manager = FileManager.default
        if newDatabase {
            for suffix in ["", "-wal", "-shm", "-journal"] { try? manager.removeItem(atPath: databasePath + suffix) }
        }
        // rmdir removes only empty directories: anything another process put there meanwhile stays.
        for directory in newDirectories where rmdir(directory) != 0 { break }
    }
}
