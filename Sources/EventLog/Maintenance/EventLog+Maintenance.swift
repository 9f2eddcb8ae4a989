extension EventLog {
    /// Retention inside the server: the same steps as ``LogMaintenance/retain(_:dryRun:)``, planned on a reader
    /// and run on the writer thread, one short transaction per writer job. Appends queued meanwhile commit
    /// between two batches, so publishing keeps flowing; after each batch the in-memory `earliest` and tail
    /// follow the file and subscribers are woken (a lagging one gets its `gap`).
    public func retain(
        _ policy: RetentionPolicy,
        dryRun: Bool = false,
        batching: MaintenanceBatching = MaintenanceBatching(),
        progress: MaintenanceProgressHandler? = nil
    ) async throws -> RetentionReport {
        try policy.validate()
        let run = Locked(RetentionRun(policy: policy, dryRun: dryRun, batching: batching))
        let now = Timestamp.nowMilliseconds()
        try await storageErrors {
            try await withReader { connection in try run.withLock { try $0.plan(connection, now: now) } }
            while true {
                let step: @Sendable (Connection) throws -> Bool = { connection in
                    try run.withLock { try $0.step(connection, progress: progress) }
                }
                // A dry run only reads, so it stays off the writer.
                if dryRun {
                    if try await withReader(step) { break }
                } else if try await writerStep(step) {
                    break
                }
            }
        }
        return run.withLock { $0.report }
    }

    /// Keep-latest compaction inside the server (see ``CompactionPolicy``): the key map is built on a reader,
    /// the deletes run on the writer one short transaction per job, as for ``retain(_:dryRun:batching:progress:)``.
    ///
    /// Events still in the in-memory tail are not taken out of it: a subscriber reading recent positions may
    /// still be sent an event that compaction has just removed from the file, which compaction's promise
    /// (at least the latest event of every key) allows.
    public func compact(
        _ policy: CompactionPolicy,
        dryRun: Bool = false,
        batching: MaintenanceBatching = MaintenanceBatching(),
        progress: MaintenanceProgressHandler? = nil
    ) async throws -> CompactionReport {
        try policy.validate()
        let run = Locked(
            CompactionRun(policy: policy, dryRun: dryRun, batching: batching, now: Timestamp.nowMilliseconds())
        )
        try await storageErrors {
            while try await !withReader({ connection in
                try run.withLock { try $0.mapStep(connection, progress: progress) }
            }) {
            }
            while true {
                let step: @Sendable (Connection) throws -> Bool = { connection in
                    try run.withLock { try $0.removeStep(connection, progress: progress) }
                }
                if dryRun {
                    if try await withReader(step) { break }
                } else if try await writerStep(step) {
                    break
                }
            }
        }
        return run.withLock { $0.report }
    }

    /// Runs one maintenance step on the writer, then rests as long as it took: appends that arrive while the
    /// writer rests commit at once instead of queueing behind the next step. With four callers appending during
    /// a compaction of 1M events this cut p90 append latency from ~9.5 ms to ~1.5 ms; the compaction took twice
    /// as long (21 s instead of 10 s, debug build).
    private func writerStep(_ step: @escaping @Sendable (Connection) throws -> Bool) async throws -> Bool {
        let started = ContinuousClock.now
        let finished = try await withWriter(step)
        if !finished { try await Task.sleep(for: min(ContinuousClock.now - started, .milliseconds(20))) }
        return finished
    }

    /// Reports SQLite failures as the log's own `storage_unavailable`, as appends do.
    private func storageErrors(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as SQLiteError {
            throw EventLogError.storage(error)
        }
    }
}
