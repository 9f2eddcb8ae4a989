import Foundation

/// The ``EventStore`` of one SQLite file in WAL mode.
///
/// One read-write connection on one writer thread runs the group commits (``SQLiteWriter``) and the
/// maintenance steps; read-only connections on reader threads answer reads; a ``Checkpointer`` copies
/// the WAL into the database file on a thread of its own. No SQLite call runs on the caller's task.
///
/// Opening and the meta table are in `SQLiteEventStore+Open.swift`, the group commit in
/// `SQLiteWriter.swift`, the reads in `SQLiteQueries.swift`, retention and compaction in
/// `SQLiteEventStore+Maintenance.swift`.
final class SQLiteEventStore: EventStore {
    /// The writer thread and the state only it touches.
    struct Writer: Sendable {
        let threads: SQLiteThreads<WriterJob>
        let state: SQLiteWriter
    }

    let identity: StoreIdentity
    /// `nil` when opened read-only.
    private let writer: Writer?
    let readers: SQLiteThreads<ConnectionJob>
    /// Started with the writer; stopped after it.
    private let checkpointer: Checkpointer?

    init(
        identity: StoreIdentity,
        writer: Writer?,
        readers: SQLiteThreads<ConnectionJob>,
        checkpointer: Checkpointer?
    ) {
        self.identity = identity
        self.writer = writer
        self.readers = readers
        self.checkpointer = checkpointer
    }

    var canAppend: Bool { writer != nil }

    /// Appends and tasks queued for the writer thread and not yet taken by it.
    var queuedWriterJobs: Int { writer?.threads.pendingCount ?? 0 }

    /// What the writer's group commits did so far; `nil` when opened read-only.
    var writerStatistics: SQLiteWriter.Statistics? { writer?.state.statistics }

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
        guard let writer else { throw EventLogError(.closed, "the log is open read-only") }
        let state = writer.state
        return try await withWriter { connection in try state.syncWithFile(connection) }
    }

    func checkWritable() async throws {
        try await withWriter { connection in
            do {
                try connection.execute("BEGIN IMMEDIATE")
                try connection.run("UPDATE meta SET value = value WHERE name = 'epoch'")
                try connection.execute("COMMIT")
            } catch let error as SQLiteError {
                if !connection.isAutocommit { try? connection.execute("ROLLBACK") }
                throw EventLogError.storage(error)
            }
        }
    }

    /// Runs `body` on the writer thread, between group commits. Maintenance uses it to write in
    /// small transactions without a second writer.
    func withWriter<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        guard let writer else { throw EventLogError(.closed, "the log is open read-only") }
        return try await withCheckedThrowingContinuation { continuation in
            let job = ConnectionJob { connection in continuation.resume(with: Result { try body(connection) }) }
            if !writer.threads.submit(.task(job)) { continuation.resume(throwing: EventLogError.closed) }
        }
    }

    /// Runs `body` on a reader thread.
    func withReader<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try await readers.run(body)
    }

    func close() async {
        let writer = self.writer
        let readers = self.readers
        let checkpointer = self.checkpointer
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                // Readers first, the checkpointer's read-write connection last: when the last connection to
                // a WAL database closes, SQLite checkpoints it and deletes the -wal and -shm files, so a
                // stopped server leaves one file (https://sqlite.org/wal.html#the_wal_file). A read-only
                // connection cannot do that, so it must not be the last.
                readers.shutdown()
                writer?.threads.shutdown()
                // After the writer: its WAL hook points at the checkpointer.
                checkpointer?.stop()
                continuation.resume()
            }.start()
        }
    }
}
