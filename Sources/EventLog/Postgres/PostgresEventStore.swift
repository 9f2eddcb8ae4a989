import Foundation
import Logging
import Synchronization

/// The ``EventStore`` of a log in PostgreSQL, shared by any number of eventlogd nodes.
///
/// As for SQLite, no database call runs on the caller's task: one writer thread runs the group commits
/// (``PostgresWriter``), reader threads answer reads, and a listener thread waits for `NOTIFY` from the other
/// nodes' commits and from `eventlog.publish`. Each thread owns one libpq connection, which reconnects by itself
/// after PostgreSQL comes back; until then appends and reads fail with `storage_unavailable`.
final class PostgresEventStore: EventStore {
    struct Writer: Sendable {
        let threads: DatabaseThreads<PGConnection, PostgresWriterJob>
        let state: PostgresWriter
    }

    let identity: StoreIdentity
    private let writer: Writer?
    let readers: DatabaseThreads<PGConnection, DatabaseJob<PGConnection>>
    private let listener: PostgresListener?

    private init(
        identity: StoreIdentity, writer: Writer?, readers: DatabaseThreads<PGConnection, DatabaseJob<PGConnection>>,
        listener: PostgresListener?
    ) {
        self.identity = identity
        self.writer = writer
        self.readers = readers
        self.listener = listener
    }

    /// True for a `--db` value that names a PostgreSQL database rather than a SQLite file.
    static func isURL(_ location: String) -> Bool {
        location.hasPrefix("postgres://") || location.hasPrefix("postgresql://")
    }

    /// Connects to `url`, creating the schema or migrating it when needed (unless read-only).
    static func open(url: String, options: EventLog.Options) async throws -> PostgresEventStore {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try make(url: url, options: options) }) }.start()
        }
    }

    private static func make(url: String, options: EventLog.Options) throws -> PostgresEventStore {
        let identity = Mutex<StoreIdentity?>(nil)
        var writer: Writer?
        if !options.readOnly {
            let state = PostgresWriter(logger: options.logger, limits: options.limits, maxCatchUp: options.tailEvents)
            let threads = try DatabaseThreads<PGConnection, PostgresWriterJob>(
                name: "eventlog-pg-writer",
                count: 1,
                maxBatch: options.maxEventsPerCommit,
                tick: .init(interval: .seconds(1)) { connection in state.tick(connection) },
                open: {
                    let connection = try storageErrors { try PGConnection(url: url) }
                    try storageErrors { try PostgresMigrator.migrate(connection) }
                    let loaded = try storageErrors { try loadIdentity(connection) }
                    identity.withLock { $0 = loaded }
                    state.start(at: loaded.bounds)
                    return connection
                },
                handle: { connection, jobs in state.process(jobs, on: connection) }
            )
            writer = Writer(threads: threads, state: state)
        }
        let readers: DatabaseThreads<PGConnection, DatabaseJob<PGConnection>>
        do {
            readers = try DatabaseThreads(name: "eventlog-pg-reader", count: max(options.readers, 1)) {
                let connection = try storageErrors { try PGConnection(url: url) }
                if identity.withLock({ $0 }) == nil {
                    let version = try storageErrors { try PostgresMigrator.version(connection) }
                    guard version == PostgresSchema.latestVersion else {
                        throw EventLogError(
                            .corrupt,
                            "\(connection.displayName) has eventlog schema version \(version), not \(PostgresSchema.latestVersion); open it once with eventlogd (or any writer) to create or migrate it"
                        )
                    }
                    let loaded = try storageErrors { try loadIdentity(connection) }
                    identity.withLock { if $0 == nil { $0 = loaded } }
                }
                return connection
            }
        } catch {
            writer?.threads.shutdown()
            throw error
        }
        guard let loaded = identity.withLock({ $0 }) else {
            throw EventLogError(.corrupt, "could not read the log's meta table")
        }
        let listener = writer.map { writer in
            PostgresListener(url: url, logger: options.logger) { channel, payload, sender in
                let state = writer.state
                if channel == PostgresListener.commitChannel && sender == state.connectionPID.load(ordering: .relaxed) {
                    // This node's own commit: its writer has put the events into the tail already.
                    return
                }
                if channel == PostgresListener.outboxChannel {
                    state.outboxChanged()
                    if !state.outboxQueued.exchange(true, ordering: .relaxed) { writer.threads.submit(.outbox) }
                } else if channel == PostgresListener.reconnectedChannel
                    || (Int64(payload) ?? .max) > state.knownHead.load(ordering: .relaxed)
                {
                    if channel == PostgresListener.reconnectedChannel { state.outboxChanged() }
                    if !state.catchUpQueued.exchange(true, ordering: .relaxed) { writer.threads.submit(.catchUp) }
                }
            }
        }
        return PostgresEventStore(identity: loaded, writer: writer, readers: readers, listener: listener)
    }

    static func loadIdentity(_ connection: PGConnection) throws -> StoreIdentity {
        let meta = try connection.query("SELECT name, value FROM eventlog.meta WHERE name IN ('epoch', 'token_key')")
        var values: [String: String] = [:]
        for row in 0..<meta.rowCount { values[meta.text(row, 0) ?? ""] = meta.text(row, 1) }
        guard let epoch = values["epoch"], let keyHex = values["token_key"], let tokenKey = [UInt8](hex: keyHex) else {
            throw EventLogError(.corrupt, "\(connection.displayName): eventlog.meta lacks the epoch or the token key")
        }
        return StoreIdentity(
            epoch: epoch, tokenKey: tokenKey, bounds: try readBounds(connection), voids: try readVoids(connection))
    }

    /// Head, earliest and removals in one statement (one snapshot).
    static func readBounds(_ connection: PGConnection) throws -> StoreBounds {
        let result = try connection.query(
            "SELECT c.head, c.removals, coalesce((SELECT min(id) FROM eventlog.events), c.head + 1) FROM eventlog.counter c"
        )
        return StoreBounds(earliest: result.int64(0, 2), head: result.int64(0, 0), removals: result.int64(0, 1))
    }

    static func readVoids(_ connection: PGConnection) throws -> [ClosedRange<Int64>] {
        let result = try connection.query(
            "SELECT after, through FROM eventlog.voids WHERE through > after ORDER BY after")
        return (0..<result.rowCount).map { (result.int64($0, 0) + 1)...result.int64($0, 1) }
    }

    var canAppend: Bool { writer != nil }

    /// What the writer did so far; nil when read-only.
    var writerStatistics: PostgresWriter.Statistics? { writer?.state.statistics }

    func observe(_ observer: any EventStoreObserver) {
        writer?.state.observe(observer)
    }

    func append(
        _ events: [PreparedEvent], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void
    ) {
        guard let writer else { return completion(.failure(EventLogError(.closed, "the log is open read-only"))) }
        if !writer.threads.submit(.append(AppendRequest(events: events, completion: completion))) {
            completion(.failure(EventLogError.closed))
        }
    }

    func bounds() async throws -> StoreBounds {
        try await withReader { connection in try Self.readBounds(connection) }
    }

    @discardableResult
    func sync() async throws -> StoreBounds {
        guard writer != nil else { throw EventLogError(.closed, "the log is open read-only") }
        // The catch-up on the writer, after the queued appends, tells the log what it found.
        return try await withWriter { connection in try Self.readBounds(connection) }
    }

    func checkWritable() async throws {
        try await withWriter { connection in
            try connection.transaction {
                _ = try connection.query("UPDATE eventlog.meta SET value = value WHERE name = 'epoch'")
            }
        }
    }

    /// Runs `body` on the writer thread between group commits; the writer catches up afterwards.
    func withWriter<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        guard let writer else { throw EventLogError(.closed, "the log is open read-only") }
        return try await withCheckedThrowingContinuation { continuation in
            let job = DatabaseJob<PGConnection> { connection in
                continuation.resume(with: Result { try Self.storageErrors { try body(connection) } })
            }
            if !writer.threads.submit(.task(job)) { continuation.resume(throwing: EventLogError.closed) }
        }
    }

    /// Runs `body` on a reader thread; PostgreSQL failures become `storage_unavailable`.
    func withReader<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        try await readers.run { connection in try Self.storageErrors { try body(connection) } }
    }

    /// Maps a ``PGError`` to the log's `storage_unavailable`.
    static func storageErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PGError {
            throw EventLogError.storage(error)
        }
    }

    func close() async {
        let writer = self.writer
        let readers = self.readers
        let listener = self.listener
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                listener?.stop()
                readers.shutdown()
                writer?.threads.shutdown()
                continuation.resume()
            }.start()
        }
    }
}
