/// Where a log's events are kept: the one seam between ``EventLog`` and its database.
///
/// ``EventLog`` keeps the public API, the in-memory ``LogTail`` and the ``CommitNotifier``; a store keeps
/// the rows. A store must expect that another process appends and deletes too: the head it reports is
/// the head it sees in the database, not one it counts itself, appends return the ids the database
/// assigned, and a page comes with the head and earliest of the same snapshot as its rows.
///
/// Blocking database work never runs on the caller's task: a store hands it to threads of its own
/// (``SQLiteEventStore`` uses ``SQLiteThreads``) and resumes the caller when it is done.
protocol EventStore: AnyObject, Sendable {
    /// The epoch, token key and bounds read when the store opened.
    var identity: StoreIdentity { get }

    /// False when the store was opened without a writer: ``append(_:)`` and the other writes fail with `closed`.
    var canAppend: Bool { get }

    /// Sets who hears about commits and foreign writes. Called once, before the first append.
    func observe(_ observer: any EventStoreObserver)

    /// Appends one request's events atomically, in order, as part of a group commit with the other
    /// requests queued meanwhile. Each request commits or fails alone, whatever the others do; an event whose
    /// idempotency key names an existing event returns that event, replayed. The observer's
    /// ``EventStoreObserver/storeDidCommit(_:head:foreignWrites:)`` runs before `completion`, which runs on the
    /// store's writer.
    func append(
        _ events: [PreparedEvent], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void)

    /// Head, earliest and removals as the database has them now, in one snapshot, from a reader.
    func bounds() async throws -> StoreBounds

    /// On the writer, after the appends queued before it: reads the bounds and tells the observer
    /// (``EventStoreObserver/storeDidSync(_:)``), so what another process appended or deleted is seen.
    @discardableResult
    func sync() async throws -> StoreBounds

    /// Events with ids above `position` that match `selectors`, ascending, at most `limit`, with the
    /// head and earliest of the same snapshot. `completion` runs on the store's reader thread.
    func read(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void)

    /// A page of the snapshot (`snapshot=latest`): the newest event of each (topic, key) matching `selectors`
    /// with an id above `position`, ascending, at most `limit`, with the head and earliest of the same
    /// snapshot. `completion` runs on the store's reader thread.
    func readSnapshot(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<HistoryPage, EventLogError>) -> Void)

    /// What retention removed of the events matching `selectors`.
    func removals(_ selectors: SelectorSet) async throws -> RemovalMark

    /// The largest id committed before `time` (Unix milliseconds), 0 when none: where `since` starts.
    func position(since time: Int64) async throws -> Int64

    /// The position before the `count`-th newest event matching `selectors`, 0 when fewer match.
    func position(rewinding count: Int, selectors: SelectorSet) async throws -> Int64

    /// The newest `count` events that match `selectors`, ascending by id.
    func latest(_ count: Int, selectors: SelectorSet) async throws -> [Event]

    /// Each topic with its event count and last id, in topic order.
    func topics() async throws -> [TopicSummary]

    /// Checks that a write would succeed now, without changing anything.
    func checkWritable() async throws

    /// Retention on the writer, in short transactions between group commits (a dry run only reads).
    func retain(
        _ policy: RetentionPolicy,
        dryRun: Bool,
        batching: MaintenanceBatching,
        progress: MaintenanceProgressHandler?
    ) async throws -> RetentionReport

    /// Keep-latest compaction on the writer, in short transactions between group commits.
    func compact(
        _ policy: CompactionPolicy,
        dryRun: Bool,
        batching: MaintenanceBatching,
        progress: MaintenanceProgressHandler?
    ) async throws -> CompactionReport

    /// Lets queued appends commit, then closes every connection.
    func close() async
}

extension EventStore {
    /// ``append(_:completion:)`` for a Swift task.
    func append(_ events: [PreparedEvent]) async throws -> [AppendResult] {
        try await withCheckedThrowingContinuation { continuation in
            append(events) { continuation.resume(with: $0) }
        }
    }

    /// ``read(after:selectors:limit:completion:)`` for a Swift task.
    func read(after position: Int64, selectors: SelectorSet, limit: Int) async throws -> HistoryPage {
        try await withCheckedThrowingContinuation { continuation in
            read(after: position, selectors: selectors, limit: limit) { continuation.resume(with: $0) }
        }
    }
}

/// What a store tells its log. Both calls come from the store's writer.
protocol EventStoreObserver: AnyObject, Sendable {
    /// After a group commit, before its appenders resume. `events` are the events this commit inserted
    /// (not the replayed ones), `head` the store's head after it; `foreignWrites` is true when another
    /// writer appended since this store's previous commit, so the log's tail is stale.
    func storeDidCommit(_ events: [Event], head: Int64, foreignWrites: Bool)

    /// After the store read its bounds outside a commit: another process committed, or maintenance ran.
    func storeDidSync(_ bounds: StoreBounds)
}

/// Head, earliest and removals of a store, read together in one snapshot.
struct StoreBounds: Sendable, Hashable {
    /// The smallest retained id (head + 1 when none is).
    var earliest: Int64
    /// The largest id ever assigned, by any writer, even if that row was deleted since.
    var head: Int64
    /// How many transactions have deleted events (retention, compaction). When it changes, rows the log
    /// may hold in memory are gone from the store.
    var removals: Int64
}

/// What retention removed of the events some selectors match.
public struct RemovalMark: Sendable, Hashable {
    /// The largest removed id (0 when none).
    public var through: Int64 = 0
    /// How many retention transactions removed some of them (0 when none).
    public var count: Int64 = 0

    /// Creates a mark.
    public init(through: Int64 = 0, count: Int64 = 0) {
        self.through = through
        self.count = count
    }
}

/// What a store holds about itself, read when it opens.
struct StoreIdentity: Sendable {
    /// A random identifier made with the database.
    let epoch: String
    /// The key that signs resume tokens.
    let tokenKey: [UInt8]
    /// The bounds when the store opened.
    let bounds: StoreBounds
    /// Positions that name no event of this log (ids a restore or an import skipped).
    let voids: [ClosedRange<Int64>]
}

/// An event to append, validated, with the hash of its request (for idempotency keys).
struct PreparedEvent: Sendable {
    let event: NewEvent
    /// The request hash; stored and compared only when the event has an idempotency key (0 without one).
    let hash: Int64
}
