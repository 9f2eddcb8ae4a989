import Logging
import Synchronization

/// A durable, append-only event log in one SQLite file.
///
/// Appends go to one writer thread that drains every queued append into one transaction (group
/// commit); each `append` returns only after its transaction committed. Reads come from the
/// in-memory ``LogTail`` when the position is recent, and from read-only WAL reader connections on
/// their own threads otherwise. No SQLite call runs on the Swift cooperative pool.
///
/// This type is the API, the tail and the notifier; the rows are kept by an ``EventStore``
/// (``SQLiteEventStore``), which tells the log about commits through ``EventStoreObserver``.
public final class EventLog: Sendable {
    /// How hard a commit waits for the disk.
    public enum Durability: String, Sendable, CaseIterable {
        /// `synchronous=FULL`: an acknowledged event is on disk and survives a power loss.
        case full
        /// `synchronous=NORMAL`: an acknowledged event survives a process crash; a power loss may
        /// lose the last commits (https://sqlite.org/pragma.html#pragma_synchronous).
        case normal
    }

    /// How to open a log.
    public struct Options: Sendable {
        /// Durability of commits. Default ``Durability/full``.
        public var durability: Durability = .full
        /// Limits on each event.
        public var limits = EventLimits()
        /// Open without a writer: no appends, no migrations. For tools that read beside a server.
        public var readOnly = false
        /// How many recent events the in-memory tail keeps.
        public var tailEvents = 16_384
        /// Approximate bytes the in-memory tail may hold.
        public var tailBytes = 64 << 20
        /// Reader connections (threads) for positions outside the tail.
        public var readers = 2
        /// How long a connection waits for another process's lock, in milliseconds.
        public var busyTimeoutMilliseconds: Int32 = 5000
        /// The most events one group commit takes.
        public var maxEventsPerCommit = 8192
        /// A cap on the file size in pages (`PRAGMA max_page_count`); `nil` for none. For tests of a full disk.
        public var maxPageCount: Int?
        /// How often the writer checks whether another process (`eventlog publish --db`,
        /// `eventlog-maint`) committed to the file, so live subscribers get those events promptly.
        /// The check is `PRAGMA data_version` on the writer's connection, which changes only for
        /// other connections' commits (https://sqlite.org/pragma.html#pragma_data_version).
        public var foreignWritePollInterval: Duration = .milliseconds(20)
        /// Where to log.
        public var logger = Logger(label: "eventlog")

        /// Default options.
        public init() {}
    }

    /// A page of events from ``read(after:selectors:limit:)``: the history page of the wire.
    public typealias Page = HistoryPage

    /// The file path.
    public let path: String
    /// The log's epoch: a random identifier made with the database. Positions mean something only within it.
    public let epoch: String
    /// The key that signs resume tokens, kept in the meta table so tokens survive restarts.
    public let tokenKey: [UInt8]
    /// The options the log was opened with.
    public let options: Options

    let store: any EventStore
    private let state: Mutex<SharedState>
    let notifier: CommitNotifier

    struct SharedState {
        var tail: LogTail
        var earliest: Int64
        /// `meta.removals` as last seen: retention or compaction in any process bumps it.
        var removals: Int64 = 0
        var closed = false
    }

    /// Opens the log at `path`, creating it and running the migrations when needed (unless read-only).
    /// Sets WAL mode, `busy_timeout` and the durability mode.
    ///
    /// A `postgres://` or `postgresql://` URL instead of a path opens a log in PostgreSQL (``PostgresEventStore``),
    /// which any number of processes on any number of machines may share: the schema `eventlog` is created or
    /// migrated when needed.
    public static func open(path: String, options: Options = Options()) async throws -> EventLog {
        if isPostgresURL(path) {
            let store = try await PostgresEventStore.open(url: path, options: options)
            return EventLog(path: PGConnection.redacted(path), options: options, store: store)
        }
        let store = try await SQLiteEventStore.open(path: path, options: options)
        return EventLog(path: path, options: options, store: store)
    }

    /// True when `location` (a `--db` value) is a PostgreSQL URL rather than a SQLite file path.
    public static func isPostgresURL(_ location: String) -> Bool {
        PostgresEventStore.isURL(location)
    }

    /// `location` for messages and logs: a PostgreSQL URL without its password (`postgres://user:***@host/db`).
    public static func redactedLocation(_ location: String) -> String {
        PGConnection.redacted(location)
    }

    /// True when this log is kept in PostgreSQL.
    public var isPostgres: Bool { store is PostgresEventStore }

    private init(path: String, options: Options, store: any EventStore) {
        self.path = path
        self.options = options
        self.store = store
        let identity = store.identity
        epoch = identity.epoch
        tokenKey = identity.tokenKey
        state = Mutex(
            SharedState(
                tail: LogTail(head: identity.bounds.head, maxEvents: options.tailEvents, maxBytes: options.tailBytes),
                earliest: identity.bounds.earliest,
                removals: identity.bounds.removals
            )
        )
        notifier = CommitNotifier(head: identity.bounds.head)
        store.observe(self)
    }

    // MARK: Appending

    /// Appends one event and returns it once it is committed, or the original event when its
    /// idempotency key names one already (`replayed` is then true).
    public func append(_ event: NewEvent) async throws -> AppendResult {
        try await append(batch: [event])[0]
    }

    /// Appends a batch atomically: every event is committed, in order, or none is. A failure names
    /// the index of the event that caused it.
    public func append(batch events: [NewEvent]) async throws -> [AppendResult] {
        try await withCheckedThrowingContinuation { continuation in
            append(batch: events) { continuation.resume(with: $0) }
        }
    }

    /// ``append(batch:)`` for callers that are not Swift tasks (a server's event loop): `completion` runs on
    /// the writer thread after the commit (or at once, for a batch refused before it reaches the writer).
    public func append(
        batch events: [NewEvent], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void
    ) {
        guard !events.isEmpty else {
            return completion(.failure(EventLogError(.emptyBatch, "the batch has no events")))
        }
        for (index, event) in events.enumerated() {
            do {
                try options.limits.validate(event)
            } catch {
                return completion(.failure(events.count == 1 ? error : error.at(index: index)))
            }
        }
        guard store.canAppend else { return completion(.failure(EventLogError(.closed, "the log is open read-only"))) }
        // Hashed here, on the caller's thread, not on the writer; only events with an idempotency key use it.
        store.append(
            events.map { PreparedEvent(event: $0, hash: $0.idempotencyKey == nil ? 0 : $0.requestHash) },
            completion: completion)
    }

    // MARK: Reading

    /// The largest committed id known to this process.
    public var head: Int64 { state.withLock { $0.tail.head } }

    /// How many group commits this log's writer has made since it opened (0 when read-only). With the
    /// events appended it gives the mean group size; `eventlog-bench append` reports it.
    public var groupCommits: Int {
        if let store = store as? PostgresEventStore { return store.writerStatistics?.groupCommits ?? 0 }
        return (store as? SQLiteEventStore)?.writerStatistics?.groupCommits ?? 0
    }

    /// The smallest retained id known to this process (see ``refreshBounds()`` for the file's view).
    public var earliest: Int64 { state.withLock { $0.earliest } }

    /// Reads `head` and `earliest` from the database file itself, which also sees what other
    /// processes (a maintenance tool, another writer) did. When another process appended, later
    /// reads return its events and waiters are woken: a read-only log follows a server this way.
    public func refreshBounds() async throws -> (earliest: Int64, head: Int64) {
        let bounds = try await store.bounds()
        if store.canAppend, bounds.head > head {
            // This may be this process's own commit between its COMMIT and its tail update; only the
            // writer can tell that from another process's append. On the writer, after the pending
            // commits, the tail is synced with the file before this returns.
            try await store.sync()
        }
        let readOnly = !store.canAppend
        let (head, moved) = state.withLock { state -> (Int64, Bool) in
            state.earliest = max(state.earliest, bounds.earliest)
            if bounds.removals != state.removals {
                // Retention or compaction deleted rows (perhaps in another process): stop serving them
                // from memory; reads go to the file until the tail fills again.
                state.removals = bounds.removals
                state.tail.reset(head: state.tail.head)
            }
            guard readOnly, bounds.head > state.tail.head else { return (state.tail.head, false) }
            // A read-only log follows the writer's appends: forget the tail so reads below the new head go
            // to the file.
            state.tail.reset(head: bounds.head)
            return (bounds.head, true)
        }
        if moved { notifier.wakeAll(head: head) }
        return (bounds.earliest, head)
    }

    /// Events with ids above `position` that match `selectors`, ascending, at most `limit`.
    ///
    /// Recent positions are answered from memory; older ones from the store within one read
    /// transaction, so `head`, `earliest` and the rows are one consistent snapshot.
    public func read(after position: Int64, selectors: SelectorSet, limit: Int) async throws -> Page {
        if let page = try readTail(after: position, selectors: selectors, limit: limit) { return page }
        let page = try await store.read(after: position, selectors: selectors, limit: max(1, limit))
        state.withLock { $0.earliest = max($0.earliest, page.earliest) }
        return page
    }

    /// The page after `position` from the in-memory tail, without waiting for anything; `nil` when the tail
    /// does not cover `position` (read it from the store with ``read(after:selectors:limit:completion:)``).
    /// Throws ``EventLogError/Code/closed`` once the log is closed.
    ///
    /// The tail is copied under the lock (two references) and scanned outside it, so the writer never waits
    /// for a reader.
    public func readTail(after position: Int64, selectors: SelectorSet, limit: Int) throws(EventLogError) -> Page? {
        let (tail, earliest, closed) = state.withLock { ($0.tail, $0.earliest, $0.closed) }
        guard !closed else { throw EventLogError.closed }
        guard !selectors.isEmpty else {
            return Page(events: [], next: max(position, tail.head), head: tail.head, earliest: earliest)
        }
        guard let found = tail.read(after: position, selectors: selectors, limit: max(1, limit)) else { return nil }
        return Page(events: found.events, next: found.next, head: tail.head, earliest: earliest)
    }

    /// Reads the page after `position` from the store, on one of its reader threads, and calls `completion`
    /// there with it. For callers that are not Swift tasks (a server's event loop); others use
    /// ``read(after:selectors:limit:)``.
    public func read(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<Page, EventLogError>) -> Void
    ) {
        store.read(after: position, selectors: selectors, limit: max(1, limit)) { result in
            if case .success(let page) = result {
                self.state.withLock { $0.earliest = max($0.earliest, page.earliest) }
            }
            completion(result)
        }
    }

    /// A page of the snapshot (`snapshot=latest`): the newest event of each (topic, key) matching `selectors`
    /// with an id above `position`, ascending, at most `limit`. Read pages after `next` until one is not full:
    /// by then every key's newest event as of that page's head was returned (a key updated meanwhile comes
    /// again with its newer event), and the live tail goes on from `next`. A key is its `key`, or its topic
    /// for an event without one (as for compaction).
    public func readSnapshot(after position: Int64, selectors: SelectorSet, limit: Int) async throws -> Page {
        try await withCheckedThrowingContinuation { continuation in
            readSnapshot(after: position, selectors: selectors, limit: limit) { continuation.resume(with: $0) }
        }
    }

    /// ``readSnapshot(after:selectors:limit:)`` for callers that are not Swift tasks; `completion` runs on a
    /// reader thread.
    public func readSnapshot(
        after position: Int64, selectors: SelectorSet, limit: Int,
        completion: @escaping @Sendable (Result<Page, EventLogError>) -> Void
    ) {
        guard !selectors.isEmpty else {
            let (head, earliest) = state.withLock { ($0.tail.head, $0.earliest) }
            return completion(.success(Page(events: [], next: max(position, head), head: head, earliest: earliest)))
        }
        store.readSnapshot(after: position, selectors: selectors, limit: max(1, limit), completion: completion)
    }

    /// What retention removed of the events matching `selectors`: the largest removed id (a subscriber whose
    /// position is below it missed events of its own topics: that is a `gap`; removals from other topics never
    /// raise it) and how many transactions removed some.
    public func removals(_ selectors: SelectorSet) async throws -> RemovalMark {
        try await store.removals(selectors)
    }

    /// The position a start `since` `time` (Unix milliseconds) reads after: the largest id committed before
    /// it, 0 when none.
    public func position(since time: Int64) async throws -> Int64 {
        try await store.position(since: time)
    }

    /// The position a start `rewind` `count` reads after: the one before the `count`-th newest event matching
    /// `selectors`, 0 when fewer match.
    public func position(rewinding count: Int, selectors: SelectorSet) async throws -> Int64 {
        guard count > 0, !selectors.isEmpty else { return head }
        return try await store.position(rewinding: count, selectors: selectors)
    }

    /// True when `position` names no event of this log: a restore or an import skipped it, because the file it
    /// replaced (or the backup's own history) had issued ids up to there. A client there gets `reset`.
    public func isVoid(_ position: Int64) -> Bool {
        store.identity.voids.contains { $0.contains(position) }
    }

    /// Calls `listener` after every commit and every change that can concern subscribers, until
    /// ``removeCommitListener(_:)``. A server's event loops use it to wake the subscribers they keep.
    public func addCommitListener(_ listener: @escaping @Sendable (CommitSignal) -> Void) -> Int {
        notifier.addListener(listener)
    }

    /// Stops calling a listener added with ``addCommitListener(_:)``.
    public func removeCommitListener(_ id: Int) {
        notifier.removeListener(id)
    }

    /// Waits until an event above `position` matching `selectors` may have been committed. May
    /// return early; callers read and wait again. Throws `CancellationError` on cancellation and
    /// ``EventLogError/Code/closed`` when the log closes.
    public func waitForCommit(after position: Int64, selectors: SelectorSet) async throws {
        do {
            try await notifier.wait(after: position, selectors: selectors)
        } catch is CommitNotifier.WaitError {
            throw EventLogError.closed
        }
    }

    /// Ends every pending and future ``waitForCommit(after:selectors:)`` with
    /// ``EventLogError/Code/closed`` while appends still work. A server calls this on shutdown to
    /// end its streams before it lets the last publishes commit.
    public func endSubscriptions() {
        notifier.close()
    }

    /// The newest `count` events that match `selectors`, ascending by id (for `tail`).
    public func readLatest(_ count: Int, selectors: SelectorSet) async throws -> [Event] {
        guard count > 0, !selectors.isEmpty else { return [] }
        return try await store.latest(count, selectors: selectors)
    }

    /// Each topic with its event count and last id, in topic order.
    public func topics() async throws -> [TopicSummary] {
        try await store.topics()
    }

    /// Checks that the store accepts a write now (a no-op write transaction on the writer).
    public func checkWritable() async throws {
        try await store.checkWritable()
    }

    /// Lets queued appends commit, then closes every connection. Waits end with `closed`.
    public func close() async {
        let alreadyClosed = state.withLock { state -> Bool in
            defer { state.closed = true }
            return state.closed
        }
        guard !alreadyClosed else { return }
        notifier.close()
        await store.close()
    }
}

extension EventLog: EventStoreObserver {
    /// Called on the writer after a commit, before the appenders resume.
    func storeDidCommit(_ events: [Event], head: Int64, foreignWrites: Bool) {
        state.withLock { state in
            if foreignWrites {
                state.tail.reset(head: head)
            } else {
                state.tail.append(events, newHead: head)
            }
        }
        if foreignWrites {
            notifier.wakeAll(head: head)
        } else if !events.isEmpty {
            notifier.committed(events, head: head)
        }
    }

    /// Called on the writer with the file's bounds, after a maintenance task wrote or another process
    /// committed.
    func storeDidSync(_ bounds: StoreBounds) {
        let (earliest, head, removals) = (bounds.earliest, bounds.head, bounds.removals)
        let changed = state.withLock { state -> Bool in
            var changed = earliest > state.earliest || head != state.tail.head
            state.earliest = max(state.earliest, earliest)
            if removals != state.removals {
                // Rows were deleted (retention or compaction, perhaps in another process): stop serving
                // them from memory; reads go to the file until the tail fills again.
                state.removals = removals
                state.tail.reset(head: head)
                changed = true
            } else if head != state.tail.head {
                state.tail.reset(head: head)
            } else {
                state.tail.drop(below: state.earliest)
            }
            return changed
        }
        if changed { notifier.wakeAll(head: head) }
    }
}
