import Foundation

extension SQLiteEventStore {
    /// Opens the store at `path`, creating it and running the migrations when needed (unless read-only):
    /// the writer thread with WAL mode, `busy_timeout`, the durability mode and the checkpointer, then
    /// the reader threads.
    static func open(path: String, options: EventLog.Options) async throws -> SQLiteEventStore {
        try await withCheckedThrowingContinuation { continuation in
            // Opening starts threads and touches the disk: keep it off the cooperative pool.
            let thread = Thread {
                continuation.resume(with: Result { try make(path: path, options: options) })
            }
            thread.start()
        }
    }

    private static func make(path: String, options: EventLog.Options) throws -> SQLiteEventStore {
        let identity = Locked<StoreIdentity?>(nil)
        let busyTimeout = options.busyTimeoutMilliseconds
        var writer: Writer?
        var checkpointer: Checkpointer?
        if !options.readOnly {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            let state = SQLiteWriter(logger: options.logger)
            let checkpointerBox = Locked<Checkpointer?>(nil)
            let threads = try SQLiteThreads<WriterJob>(
                name: "eventlog-writer",
                count: 1,
                maxBatch: options.maxEventsPerCommit,
                tick: .init(interval: options.foreignWritePollInterval) { connection in
                    state.pollForeignWrites(connection)
                },
                open: {
                    let connection = try Connection(path: path, mode: .readWrite, busyTimeoutMilliseconds: busyTimeout)
                    // A maintenance transaction (eventlog-maint) holds the lock for milliseconds at a time: take it
                    // back as soon as it is free.
                    connection.pollWhenBusy(timeout: .milliseconds(Int(busyTimeout)))
                    try configureWriter(connection, options: options)
                    try Migrator.migrate(connection)
                    let started = try Checkpointer(path: path, busyTimeoutMilliseconds: busyTimeout)
                    try started.attach(to: connection)
                    checkpointerBox.withLock { $0 = started }
                    let loaded = try loadIdentity(connection)
                    identity.withLock { $0 = loaded }
                    state.head = loaded.bounds.head
                    state.dataVersion = try connection.scalarInt("PRAGMA data_version")
                    return connection
                },
                handle: { connection, jobs in
                    state.process(jobs, on: connection)
                }
            )
            writer = Writer(threads: threads, state: state)
            checkpointer = checkpointerBox.withLock { $0 }
        }
        let readers: SQLiteThreads<ConnectionJob>
        do {
            readers = try SQLiteThreads<ConnectionJob>(name: "eventlog-reader", count: max(options.readers, 1)) {
                let connection = try Connection(path: path, mode: .readOnly, busyTimeoutMilliseconds: busyTimeout)
                if identity.withLock({ $0 }) == nil {
                    let version = try connection.scalarInt("PRAGMA user_version") ?? 0
                    guard version >= 1 && version <= Migrator.latestVersion else {
                        throw EventLogError(.corrupt, "\(path) is not an event log (schema version \(version))")
                    }
                    guard version == Migrator.latestVersion else {
                        // Reads use the tables of the newest schema; only a writer migrates.
                        throw EventLogError(
                            .corrupt,
                            "\(path) has schema version \(version); open it once with eventlogd (or any writer) to migrate it"
                        )
                    }
                    let loaded = try loadIdentity(connection)
                    identity.withLock { if $0 == nil { $0 = loaded } }
                }
                return connection
            }
        } catch {
            writer?.threads.shutdown()
            checkpointer?.stop()
            throw error
        }
        guard let loaded = identity.withLock({ $0 }) else {
            throw EventLogError(.corrupt, "could not read the log's meta table")
        }
        return SQLiteEventStore(identity: loaded, writer: writer, readers: readers, checkpointer: checkpointer)
    }

    /// The writer connection's pragmas: WAL, the durability mode, and the optional page cap.
    private static func configureWriter(_ connection: Connection, options: EventLog.Options) throws {
        // https://sqlite.org/wal.html: readers never block the writer and the writer never blocks readers.
        guard try connection.scalarText("PRAGMA journal_mode=WAL")?.lowercased() == "wal" else {
            throw EventLogError(.storageUnavailable, "cannot switch \(connection.path) to WAL mode")
        }
        // Debian's SQLite defaults WAL databases to FULL; set the mode explicitly either way.
        try connection.execute("PRAGMA synchronous=\(options.durability == .full ? "FULL" : "NORMAL")")
        if let maxPageCount = options.maxPageCount {
            _ = try connection.scalarInt("PRAGMA max_page_count=\(maxPageCount)")
        }
    }

    /// What the meta table says when the store opens: the epoch, the token key and the bounds.
    static func loadIdentity(_ connection: Connection) throws -> StoreIdentity {
        guard let epoch = try connection.scalarText("SELECT value FROM meta WHERE name = 'epoch'"),
            let keyHex = try connection.scalarText("SELECT value FROM meta WHERE name = 'token_key'"),
            let tokenKey = [UInt8](hex: keyHex)
        else {
            throw EventLogError(.corrupt, "\(connection.path): the meta table lacks the epoch or the token key")
        }
        return StoreIdentity(
            epoch: epoch, tokenKey: tokenKey, bounds: try readBounds(connection), voids: try readVoids(connection))
    }
}

extension [UInt8] {
    init?(hex: String) {
        let bytes = Array(hex.utf8)
        guard bytes.count % 2 == 0 else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count / 2)
        var index = 0
        while index < bytes.count {
            guard let high = UInt8(String(decoding: bytes[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            result.append(high)
            index += 2
        }
        self = result
    }
}
