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
        return try await store.retain(policy, dryRun: dryRun, batching: batching, progress: progress)
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
        return try await store.compact(policy, dryRun: dryRun, batching: batching, progress: progress)
    }
}
