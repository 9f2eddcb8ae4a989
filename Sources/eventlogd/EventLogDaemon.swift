import ArgumentParser
import Dispatch
import EventLog
import EventLogAuth
import EventLogCommandLine
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
            \(OptionEnvironment.ruleDescription) SIGTERM or SIGINT shuts down gracefully: the listener closes, \
            open streams end, in-flight publishes commit and are answered, then the log closes and the process \
            exits 0. Exit status: 0 success, 1 an error, 2 a usage error.
            """,
        version: CommandLineTool.version
    )

    /// Runs with the exit statuses every eventlog tool shares; every option also reads its variable.
    static func main() async {
        await CommandLineTool.main(Self.self, environment: .allOptions)
    }

    // The defaults come from the library's own, so that the help cannot disagree with what runs.
    private static let serverDefaults = ServerConfiguration()
    private static let logDefaults = EventLog.Options()

    @Option(help: "The address to bind.")
    var host = Self.serverDefaults.host

    @Option(help: "The port to bind, 0 for any free port.")
    var port = Self.serverDefaults.port

    @Option(
        name: .customLong("db"),
        help: """
            The database: a SQLite file, created if missing, or a PostgreSQL URL \
            (postgres://user@host:port/dbname), whose schema eventlog is created if missing and which any number \
            of eventlogd nodes may share.
            """)
    var databasePath = "./data/eventlog.db"

    @Option(
        help: """
            full: every acknowledged event is on disk (fsync); normal: survives a process crash, a power loss may \
            lose the last commits.
            """
    )
    var durability = Self.logDefaults.durability.rawValue

    @Option(help: "Seconds between keepalive comments on idle SSE streams.")
    var keepalive = Self.serverDefaults.keepalive.secondsValue

    @Option(help: "The SSE retry hint sent to clients, in milliseconds.")
    var sseRetry = Self.serverDefaults.sseRetryMilliseconds

    @Option(help: "The largest request body in bytes; larger is refused with 413.")
    var maxBodyBytes = Self.serverDefaults.maxBodyBytes

    @Option(help: "The largest event data in bytes; larger is refused with 413.")
    var maxEventBytes = Self.logDefaults.limits.maxDataBytes

    @Option(help: "The most open connections; more get 503.")
    var maxConnections = Self.serverDefaults.maxConnections

    @Option(help: "An origin allowed by CORS, repeatable; '*' allows all.")
    var corsOrigin = Self.serverDefaults.corsOrigins

    @Option(help: "Seconds between WebSocket pings; a connection that misses a pong is closed.")
    var wsPing = Self.serverDefaults.webSocketPingInterval.secondsValue

    @Option(help: "Seconds a subscriber's socket may stay unwritable (the client stopped reading) before it closes.")
    var stallTimeout = Self.serverDefaults.stallTimeout.secondsValue

    @Option(help: "The largest WebSocket message in bytes; larger closes with 1009.")
    var maxWsFrameBytes = Self.serverDefaults.maxWebSocketFrameBytes

    @Option(help: "How many of the newest events to keep in memory; subscribers further behind read from disk.")
    var tailEvents = Self.logDefaults.tailEvents

    @Option(help: "Memory for the newest events, in bytes; subscribers further behind read from disk.")
    var tailBytes = Self.logDefaults.tailBytes

    @Option(
        help: """
            Cap the database at this many pages (PRAGMA max_page_count), like a disk quota: publishes past it get \
            503 until retention frees space. Default: no cap.
            """
    )
    var maxDbPages: Int?

    @Option(
        help: "Retention: delete events older than this, e.g. 7d or 12h. Default: keep.",
        transform: { try MaintenanceText.parseDuration($0) })
    var retainMaxAge: Duration?

    @Option(help: "Retention: keep at most this many events. Default: keep.")
    var retainMaxEvents: Int?

    @Option(
        help: "Retention: keep at most this much event data, e.g. 10GB. Default: keep.",
        transform: { try MaintenanceText.parseSize($0) })
    var retainMaxBytes: Int64?

    @Option(help: "How often retention runs when a --retain-* limit is set, e.g. 5m.")
    var retainInterval = "1m"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = Logger.Level.info.rawValue

    @Option(help: "Auth: a file holding an HS256 secret (32 bytes or more) that JWTs are signed with; repeatable.")
    var jwtSecretFile: [String] = []

    @Option(help: "Auth: a PEM public key (EC P-256 for ES256, RSA for RS256) that JWTs are signed with; repeatable.")
    var jwtKeyFile: [String] = []

    @Option(help: "Auth: a JWKS file of ES256/RS256 public keys, told apart by the token's kid.")
    var jwksFile: String?

    @Option(help: "Auth: the iss every JWT must carry.")
    var jwtIssuer: String?

    @Option(help: "Auth: a value every JWT's aud must hold.")
    var jwtAudience: String?

    @Option(help: "Auth: how far a JWT's exp and nbf may be off (clock skew), e.g. 10s.")
    var jwtLeeway = "10s"

    @Option(help: "Auth: a JSON file of API keys (their SHA-256, a name, publish and subscribe selectors).")
    var apiKeys: String?

    @Option(help: "Auth: a selector callers without a credential may read, repeatable (e.g. 'public/*').")
    var anonymousSubscribe: [String] = []

    @Flag(help: "Auth: accept a token as the access_token query parameter (it is redacted from logs).")
    var allowQueryToken = false

    mutating func validate() throws {
        _ = try retentionPolicy()
        do {
            _ = try MaintenanceText.parseDuration(retainInterval)
        } catch {
            throw ValidationError("--retain-interval: \(error)")
        }
        do {
            _ = try MaintenanceText.parseDuration(jwtLeeway)
        } catch {
            throw ValidationError("--jwt-leeway: \(error)")
        }
        if EventLog.Durability(rawValue: durability) == nil {
            throw ValidationError("--durability must be full or normal, not \(durability)")
        }
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        for (name, value) in [("port", port), ("sse-retry", sseRetry)] where value < 0 {
            throw ValidationError("--\(name) must not be negative")
        }
        for (name, value) in [
            ("max-body-bytes", maxBodyBytes), ("max-event-bytes", maxEventBytes), ("max-connections", maxConnections),
            ("max-ws-frame-bytes", maxWsFrameBytes), ("tail-events", tailEvents), ("tail-bytes", tailBytes),
            ("max-db-pages", maxDbPages ?? 1),
        ] where value <= 0 {
            throw ValidationError("--\(name) must be positive")
        }
        for (name, value) in [("keepalive", keepalive), ("ws-ping", wsPing), ("stall-timeout", stallTimeout)]
        where !(value > 0) {
            throw ValidationError("--\(name) must be a positive number of seconds")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "eventlogd")

        var options = EventLog.Options()
        options.durability = EventLog.Durability(rawValue: durability) ?? .full
        options.limits.maxDataBytes = maxEventBytes
        options.tailEvents = tailEvents
        options.tailBytes = tailBytes
        options.maxPageCount = maxDbPages
        options.logger = Logger(label: "eventlog")

        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.keepalive = .milliseconds(Int(keepalive * 1000))
        configuration.sseRetryMilliseconds = sseRetry
        configuration.maxBodyBytes = maxBodyBytes
        configuration.maxConnections = maxConnections
        configuration.maxWebSocketFrameBytes = maxWsFrameBytes
        configuration.webSocketPingInterval = .milliseconds(Int(wsPing * 1000))
        configuration.stallTimeout = .milliseconds(Int(stallTimeout * 1000))
        configuration.corsOrigins = corsOrigin
        configuration.allowQueryToken = allowQueryToken

        let authenticator: Authenticator
        do {
            authenticator = try await Authenticator(authConfiguration())
        } catch {
            FileHandle.standardError.write(Data("eventlogd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let path = databasePath
        // A PostgreSQL log is shared by any number of nodes: no file, no lock of one server per log.
        let postgres = EventLog.isPostgresURL(path)
        let files = postgres ? nil : NewFiles(databasePath: path)
        let lock: ServerLock?
        do {
            try files?.createDirectory()
            lock = postgres ? nil : try ServerLock(databasePath: path)
        } catch let held as ServerLock.Held {
            FileHandle.standardError.write(Data("eventlogd: \(held)\n".utf8))
            throw ExitCode(1)
        } catch {
            logger.critical("cannot lock the log", metadata: ["db": "\(path)", "error": "\(error)"])
            files?.remove()
            throw ExitCode(1)
        }
        let log: EventLog
        do {
            log = try await EventLog.open(path: path, options: options)
        } catch {
            logger.critical(
                "cannot open the log",
                metadata: ["db": "\(EventLog.redactedLocation(databasePath))", "error": "\(error)"])
            lock?.release()
            files?.remove()
            throw ExitCode(1)
        }
        let server = EventLogServer(
            log: log, configuration: configuration, logger: logger, authenticator: authenticator)
        do {
            try await server.start()
        } catch {
            logger.critical(
                "cannot bind",
                metadata: ["host": "\(configuration.host)", "port": "\(configuration.port)", "error": "\(error)"])
            await log.close()
            lock?.release()
            files?.remove()
            throw ExitCode(1)
        }
        if !authenticator.isEnabled {
            logger.warning(
                """
                auth is off: anyone who can reach this port may publish to and read every topic; configure \
                --jwt-secret-file, --jwt-key-file, --jwks-file, --api-keys or --anonymous-subscribe
                """)
        } else if !authenticator.acceptsCredentials {
            logger.warning(
                """
                auth is on with anonymous grants only: no token or API key can be verified, so nobody may publish; \
                add --jwt-secret-file, --jwt-key-file, --jwks-file or --api-keys
                """)
        }

        let retention = try retentionPolicy().map { policy in
            let interval =
                (try? MaintenanceText.parseDuration(retainInterval)) ?? .seconds(60)
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
        lock?.release()
        logger.info("log closed", metadata: ["head": "\(log.head)"])
    }

    /// What the auth options say.
    private func authConfiguration() -> AuthConfiguration {
        var auth = AuthConfiguration()
        auth.secretFiles = jwtSecretFile
        auth.keyFiles = jwtKeyFile
        auth.jwksFile = jwksFile
        auth.issuer = jwtIssuer
        auth.audience = jwtAudience
        auth.leeway = (try? MaintenanceText.parseDuration(jwtLeeway)) ?? .seconds(10)
        auth.apiKeysFile = apiKeys
        auth.anonymousSubscribe = anonymousSubscribe
        return auth
    }

    /// The retention policy the --retain-* options describe, or nil when none is set.
    private func retentionPolicy() throws -> RetentionPolicy? {
        guard retainMaxAge != nil || retainMaxEvents != nil || retainMaxBytes != nil else { return nil }
        if let retainMaxEvents, retainMaxEvents < 0 {
            throw ValidationError("--retain-max-events must not be negative")
        }
        let policy = RetentionPolicy(maxAge: retainMaxAge, maxEvents: retainMaxEvents, maxBytes: retainMaxBytes)
        do {
            try policy.validate()
        } catch {
            throw ValidationError("retention: \(error.message)")
        }
        return policy
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
