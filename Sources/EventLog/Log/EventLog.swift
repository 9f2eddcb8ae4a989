import CSQLite
import Foundation
import Logging
import Synchronization

/// A durable, append-only event log in one SQLite file.
///
/// Appends go to one writer thread that drains every queued append into one transaction (group
/// commit); each `append` returns only after its transaction committed. Reads come from the
/// in-memory ``LogTail`` when the position is recent, and from read-only WAL reader connections on
/// their own threads otherwise. No SQLite call runs on the Swift cooperative pool.
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

    private let writer: SQLiteThreads<WriterJob>?
    private let readers: SQLiteThreads<ConnectionJob>
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
    public static func open(path: String, options: Options = Options()) async throws -> EventLog {
        try await withCheckedThrowingContinuation { continuation in
            // Opening starts threads and touches the disk: keep it off the cooperative pool.
            let thread = Thread {
                continuation.resume(with: Result { try EventLog(path: path, options: options) })
            }
            thread.start()
        }
    }

    private init(path: String, options: Options) throws {
        self.path = path
        self.options = options
        let info = Locked<OpenInfo?>(nil)
        let durability = options.durability
        let busyTimeout = options.busyTimeoutMilliseconds
        if !options.readOnly {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            let maxPageCount = options.maxPageCount
            let limits = options.limits
            let logger = options.logger
            let writerContext = WriterContext()
            let checkpointerBox = Locked<Checkpointer?>(nil)
            writer = try SQLiteThreads<WriterJob>(
                name: "eventlog-writer",
                count: 1,
                maxBatch: options.maxEventsPerCommit,
                tick: .init(interval: options.foreignWritePollInterval) { connection in
                    writerContext.pollForeignWrites(connection)
                },
                open: {
                    let connection = try Connection(path: path, mode: .readWrite, busyTimeoutMilliseconds: busyTimeout)
                    // https://sqlite.org/wal.html: readers never block the writer and the writer never blocks readers.
                    guard try connection.scalarText("PRAGMA journal_mode=WAL")?.lowercased() == "wal" else {
                        throw EventLogError(.storageUnavailable, "cannot switch \(path) to WAL mode")
                    }
                    // Debian's SQLite defaults WAL databases to FULL; set the mode explicitly either way.
                    try connection.execute("PRAGMA synchronous=\(durability == .full ? "FULL" : "NORMAL")")
                    if let maxPageCount { _ = try connection.scalarInt("PRAGMA max_page_count=\(maxPageCount)") }
                    try Migrator.migrate(connection)
                    let checkpointer = try Checkpointer(path: path, busyTimeoutMilliseconds: busyTimeout)
                    try checkpointer.attach(to: connection)
                    checkpointerBox.withLock { $0 = checkpointer }
                    let loaded = try OpenInfo.load(connection)
                    info.withLock { $0 = loaded }
                    writerContext.head = loaded.head
                    writerContext.dataVersion = try connection.scalarInt("PRAGMA data_version")
                    return connection
                },
                handle: { connection, jobs in
                    writerContext.process(jobs, on: connection, limits: limits, logger: logger)
                }
            )
            self.writerContext = writerContext
            checkpointer = checkpointerBox.withLock { $0 }
        } else {
            writer = nil
            writerContext = nil
            checkpointer = nil
        }
        do {
            readers = try SQLiteThreads<ConnectionJob>(name: "eventlog-reader", count: max(options.readers, 1)) {
                let connection = try Connection(path: path, mode: .readOnly, busyTimeoutMilliseconds: busyTimeout)
                if info.withLock({ $0 }) == nil {
                    let version = try connection.scalarInt("PRAGMA user_version") ?? 0
                    guard version >= 1 && version <= Migrator.latestVersion else {
                        throw EventLogError(.corrupt, "\(path) is not an event log (schema version \(version))")
                    }
                    let loaded = try OpenInfo.load(connection)
                    info.withLock { if $0 == nil { $0 = loaded } }
                }
                return connection
            }
        } catch {
            writer?.shutdown()
            checkpointer?.stop()
            throw error
        }
        guard let loaded = info.withLock({ $0 }) else {
            throw EventLogError(.corrupt, "could not read the log's meta table")
        }
        epoch = loaded.epoch
        tokenKey = loaded.tokenKey
        state = Mutex(
            SharedState(
                tail: LogTail(head: loaded.head, maxEvents: options.tailEvents, maxBytes: options.tailBytes),
                earliest: loaded.earliest,
                removals: loaded.removals
            )
        )
        notifier = CommitNotifier(head: loaded.head)
        writerContext?.log = self
    }

    private let writerContext: WriterContext?
    private let checkpointer: Checkpointer?

    // MARK: Appending

    /// Appends one event and returns it once it is committed, or the original event when its
    /// idempotency key names one already (`replayed` is then true).
    public func append(_ event: NewEvent) async throws -> AppendResult {
        try await append(batch: [event])[0]
    }

    /// Appends a batch atomically: every event is committed, in order, or none is. A failure names
    /// the index of the event that caused it.
    public func append(batch events: [NewEvent]) async throws -> [AppendResult] {
        guard !events.isEmpty else { throw EventLogError(.emptyBatch, "the batch has no events") }
        for (index, event) in events.enumerated() {
            do {
                try options.limits.validate(event)
            } catch {
                throw events.count == 1 ? error : error.at(index: index)
            }
        }
        guard let writer else { throw EventLogError(.closed, "the log is open read-only") }
        let prepared = events.map { PreparedEvent(event: $0, hash: $0.requestHash) }
        return try await withCheckedThrowingContinuation { continuation in
            let request = AppendRequest(events: prepared, continuation: continuation)
            if !writer.submit(.append(request)) {
                continuation.resume(throwing: EventLogError.closed)
            }
        }
    }

    /// Runs `body` on the writer thread, between group commits. Maintenance uses it to write in
    /// small transactions without a second writer.
    func withWriter<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        guard let writer else { throw EventLogError(.closed, "the log is open read-only") }
        return try await withCheckedThrowingContinuation { continuation in
            let job = ConnectionJob { connection in continuation.resume(with: Result { try body(connection) }) }
            if !writer.submit(.task(job)) { continuation.resume(throwing: EventLogError.closed) }
        }
    }

    /// Runs `body` on a reader thread. Maintenance plans its work there, so the writer only deletes.
    func withReader<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try await readers.run(body)
    }

    /// Called on the writer thread after a commit.
    fileprivate func didCommit(_ events: [Event], head: Int64, foreignWrites: Bool) {
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

    // MARK: Reading

    /// The largest committed id known to this process.
    public var head: Int64 { state.withLock { $0.tail.head } }

    /// The smallest retained id known to this process (see ``refreshBounds()`` for the file's view).
    public var earliest: Int64 { state.withLock { $0.earliest } }

    /// Reads `head` and `earliest` from the database file itself, which also sees what other
    /// processes (a maintenance tool, another writer) did. When another process appended, later
    /// reads return its events and waiters are woken: a read-only log follows a server this way.
    public func refreshBounds() async throws -> (earliest: Int64, head: Int64) {
        let bounds = try await readers.run { connection in
            try (
                earliest: Self.readEarliest(connection), head: Self.readHead(connection),
                removals: Self.readRemovals(connection)
            )
        }
        if writer != nil, bounds.head > head {
            // This may be this process's own commit between its COMMIT and its tail update; only the
            // writer can tell that from another process's append. On the writer thread, after the pending
            // commits, the tail is synced with the file before this returns.
            let context = writerContext
            try await withWriter { connection in try context?.syncWithFile(connection) }
        }
        let readOnly = writer == nil
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
    /// Recent positions are answered from memory; older ones from a reader connection within one
    /// read transaction, so `head`, `earliest` and the rows are one consistent snapshot.
    public func read(after position: Int64, selectors: SelectorSet, limit: Int) async throws -> Page {
        let limit = max(1, limit)
        guard !state.withLock({ $0.closed }) else { throw EventLogError.closed }
        if selectors.isEmpty {
            let (earliest, head) = state.withLock { ($0.earliest, $0.tail.head) }
            return Page(events: [], next: max(position, head), head: head, earliest: earliest)
        }
        if let page = state.withLock({ state -> Page? in
            guard let found = state.tail.read(after: position, selectors: selectors, limit: limit) else { return nil }
            return Page(events: found.events, next: found.next, head: state.tail.head, earliest: state.earliest)
        }) {
            return page
        }
        let page = try await readers.run { connection in
            try Self.readFromDisk(connection, after: position, selectors: selectors, limit: limit)
        }
        state.withLock { $0.earliest = max($0.earliest, page.earliest) }
        return page
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
        return try await readers.run { connection in
            var found: [Event] = []
            for selector in selectors.selectors {
                let filter = SelectorFilter(selector)
                let statement = try connection.cachedStatement(
                    "SELECT \(Self.eventColumns) FROM events WHERE \(filter.sql) ORDER BY id DESC LIMIT ?")
                try statement.bind(filter.arguments + [.int(Int64(count))])
                while try statement.step() { found.append(Self.event(from: statement)) }
            }
            found.sort { $0.id < $1.id }
            return Array(found.suffix(count))
        }
    }

    /// Each topic with its event count and last id, in topic order.
    public func topics() async throws -> [TopicSummary] {
        try await readers.run { connection in
            let statement = try connection.cachedStatement(
                "SELECT topic, count(*), max(id) FROM events GROUP BY topic ORDER BY topic"
            )
            var result: [TopicSummary] = []
            while try statement.step() {
                result.append(
                    TopicSummary(topic: statement.text(0) ?? "", count: statement.int64(1), lastID: statement.int64(2))
                )
            }
            return result
        }
    }

    /// Checks that the store accepts a write now (a no-op write transaction on the writer).
    public func checkWritable() async throws {
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

    /// Lets queued appends commit, then closes every connection. Waits end with `closed`.
    public func close() async {
        let alreadyClosed = state.withLock { state -> Bool in
            defer { state.closed = true }
            return state.closed
        }
        guard !alreadyClosed else { return }
        notifier.close()
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
                writer?.shutdown()
                // After the writer: its WAL hook points at the checkpointer.
                checkpointer?.stop()
                continuation.resume()
            }.start()
        }
    }

    // MARK: SQL

    static let eventColumns = "id, topic, type, key, data, data_format, time"

    static func event(from statement: Statement) -> Event {
        let data: EventData?
        if statement.isNull(4) {
            data = nil
        } else {
            let text = statement.text(4) ?? ""
            data = statement.int64(5) == 1 ? .json(text) : .text(text)
        }
        return Event(
            id: statement.int64(0),
            topic: statement.text(1) ?? "",
            type: statement.text(2) ?? "message",
            key: statement.isNull(3) ? nil : statement.text(3),
            data: data,
            time: statement.int64(6)
        )
    }

    static func readHead(_ connection: Connection) throws -> Int64 {
        try connection.scalarInt("SELECT seq FROM sqlite_sequence WHERE name = 'events'") ?? 0
    }

    /// `meta.removals`: how many maintenance transactions have deleted events (0 when none ever did).
    static func readRemovals(_ connection: Connection) throws -> Int64 {
        Int64(try connection.scalarText("SELECT value FROM meta WHERE name = 'removals'") ?? "0") ?? 0
    }

    static func readEarliest(_ connection: Connection) throws -> Int64 {
        Int64(try connection.scalarText("SELECT value FROM meta WHERE name = 'earliest'") ?? "1") ?? 1
    }

    private static func readFromDisk(
        _ connection: Connection,
        after position: Int64,
        selectors: SelectorSet,
        limit: Int
    ) throws -> Page {
        try connection.execute("BEGIN")
        defer { try? connection.execute("COMMIT") }
        let head = try readHead(connection)
        let earliest = try readEarliest(connection)
        var merged: [Event] = []
        for selector in selectors.selectors {
            // One query per selector (SelectorFilter says how each uses the indexes), merged by id below.
            let filter = SelectorFilter(selector)
            let statement = try connection.cachedStatement(
                "SELECT \(eventColumns) FROM events WHERE id > ? AND \(filter.sql) ORDER BY id LIMIT ?"
            )
            try statement.bind([.int(position)] + filter.arguments + [.int(Int64(limit))])
            while try statement.step() {
                merged.append(event(from: statement))
            }
        }
        // The selectors of a SelectorSet match disjoint topics, so the merge has no duplicates. Each
        // query returned at most `limit` rows, so the first `limit` of the merge are exactly the
        // first `limit` matches; a full page continues after its last event, as the tail's does.
        if selectors.selectors.count > 1 { merged.sort { $0.id < $1.id } }
        if merged.count > limit { merged.removeSubrange(limit...) }
        let next = merged.count == limit ? merged[limit - 1].id : max(position, head)
        return Page(events: merged, next: next, head: head, earliest: earliest)
    }
}

/// What is read from the meta table when a log opens.
struct OpenInfo: Sendable {
    let epoch: String
    let tokenKey: [UInt8]
    let earliest: Int64
    let head: Int64
    let removals: Int64

    static func load(_ connection: Connection) throws -> OpenInfo {
        guard let epoch = try connection.scalarText("SELECT value FROM meta WHERE name = 'epoch'"),
            let keyHex = try connection.scalarText("SELECT value FROM meta WHERE name = 'token_key'"),
            let tokenKey = [UInt8](hex: keyHex)
        else {
            throw EventLogError(.corrupt, "\(connection.path): the meta table lacks the epoch or the token key")
        }
        return OpenInfo(
            epoch: epoch,
            tokenKey: tokenKey,
            earliest: try EventLog.readEarliest(connection),
            head: try EventLog.readHead(connection),
            removals: try EventLog.readRemovals(connection)
        )
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

// MARK: The writer

struct PreparedEvent: Sendable {
    let event: NewEvent
    let hash: Int64
}

struct AppendRequest: Sendable {
    let events: [PreparedEvent]
    let continuation: CheckedContinuation<[AppendResult], Error>
}

enum WriterJob: Sendable {
    case append(AppendRequest)
    case task(ConnectionJob)
}

/// State that only the writer thread touches (plus `log`, set once before the first job).
final class WriterContext: @unchecked Sendable {
    // @unchecked: `head` is used only on the writer thread; `log` is set once during EventLog.init,
    // before any append can be submitted.
    var head: Int64 = 0
    /// `PRAGMA data_version` at the last look (``pollForeignWrites(_:)``).
    var dataVersion: Int64?
    weak var log: EventLog?

    func process(_ jobs: [WriterJob], on connection: Connection, limits: EventLimits, logger: Logger) {
        var group: [AppendRequest] = []
        for job in jobs {
            switch job {
            case .append(let request):
                group.append(request)
            case .task(let task):
                if !group.isEmpty {
                    commit(group, on: connection, logger: logger)
                    group.removeAll()
                }
                task.body(connection)
                // A task may have written (retention): pick up the head and earliest it left.
                try? syncWithFile(connection)
            }
        }
        if !group.isEmpty { commit(group, on: connection, logger: logger) }
    }

    /// Brings the log's memory in line with the file: another process, or a maintenance task on this
    /// writer, may have appended or deleted events since this writer's last commit.
    func syncWithFile(_ connection: Connection) throws {
        // One read transaction, so the three values are one snapshot.
        let ownTransaction = connection.isAutocommit
        if ownTransaction { try connection.execute("BEGIN") }
        defer { if ownTransaction { try? connection.execute("COMMIT") } }
        let fileHead = try EventLog.readHead(connection)
        let earliest = try EventLog.readEarliest(connection)
        let removals = try EventLog.readRemovals(connection)
        head = max(head, fileHead)
        log?.didMaintain(earliest: earliest, head: head, removals: removals)
    }

    /// Runs on the writer thread between jobs: when another connection committed since the last
    /// look, its events are read into the log's view, and waiting subscribers wake.
    func pollForeignWrites(_ connection: Connection) {
        guard let version = try? connection.scalarInt("PRAGMA data_version") else { return }
        guard version != dataVersion else { return }
        dataVersion = version
        try? syncWithFile(connection)
    }

    /// One group commit: every request in one transaction, each inside its own savepoint so one
    /// failed request (an idempotency conflict) does not fail the others.
    private func commit(_ requests: [AppendRequest], on connection: Connection, logger: Logger) {
        var outcomes: [Result<[AppendResult], Error>] = []
        outcomes.reserveCapacity(requests.count)
        var inserted: [Event] = []
        var foreignWrites = false
        do {
            try connection.execute("BEGIN IMMEDIATE")
        } catch {
            fail(requests, with: error)
            return
        }
        do {
            let fileHead = try EventLog.readHead(connection)
            if fileHead != head {
                // Another process appended since our last commit: the in-memory tail is stale.
                foreignWrites = true
                head = fileHead
            }
            let now = Timestamp.nowMilliseconds()
            for request in requests {
                try connection.execute("SAVEPOINT request")
                do {
                    var results: [AppendResult] = []
                    var events: [Event] = []
                    for (index, prepared) in request.events.enumerated() {
                        do {
                            let result = try append(prepared, time: now, on: connection)
                            results.append(result)
                            if !result.replayed { events.append(result.event) }
                        } catch let error as EventLogError where request.events.count > 1 {
                            throw error.at(index: index)
                        }
                    }
                    try connection.execute("RELEASE request")
                    outcomes.append(.success(results))
                    inserted.append(contentsOf: events)
                } catch {
                    if connection.isAutocommit {
                        // SQLite rolled the whole transaction back by itself (disk full, I/O error).
                        throw error
                    }
                    try connection.execute("ROLLBACK TO request")
                    try connection.execute("RELEASE request")
                    outcomes.append(.failure(error))
                }
            }
            try connection.execute("COMMIT")
        } catch {
            if !connection.isAutocommit { try? connection.execute("ROLLBACK") }
            logger.error("group commit failed", metadata: ["error": "\(error)", "requests": "\(requests.count)"])
            fail(requests, with: error)
            return
        }
        if let last = inserted.last { head = max(head, last.id) }
        log?.didCommit(inserted, head: head, foreignWrites: foreignWrites)
        for (request, outcome) in zip(requests, outcomes) {
            request.continuation.resume(with: outcome.mapError(Self.publicError))
        }
    }

    private func append(_ prepared: PreparedEvent, time: Int64, on connection: Connection) throws -> AppendResult {
        let event = prepared.event
        if let idempotencyKey = event.idempotencyKey {
            let lookup = try connection.cachedStatement(
                "SELECT \(EventLog.eventColumns), request_hash FROM events WHERE topic = ? AND idempotency_key = ?"
            )
            try lookup.bind([.text(event.topic), .text(idempotencyKey)])
            if try lookup.step() {
                let original = EventLog.event(from: lookup)
                let hash = lookup.int64(7)
                lookup.reset()
                guard hash == prepared.hash else {
                    throw EventLogError(
                        .idempotencyConflict,
                        "idempotency key \(Topic.quoted(idempotencyKey)) was used for a different event (id \(original.id)) on topic \(event.topic)"
                    )
                }
                return AppendResult(event: original, replayed: true)
            }
        }
        let insert = try connection.cachedStatement(
            """
            INSERT INTO events (topic, type, key, data, data_format, time, idempotency_key, request_hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """
        )
        let dataValue: SQLValue
        let format: Int64
        switch event.data {
        case .none:
            dataValue = .null
            format = 0
        case .text(let text):
            dataValue = .text(text)
            format = 0
        case .json(let text):
            dataValue = .text(text)
            format = 1
        }
        try insert.bind([
            .text(event.topic), .text(event.type), event.key.map { .text($0) } ?? .null, dataValue, .int(format),
            .int(time), event.idempotencyKey.map { .text($0) } ?? .null,
            event.idempotencyKey == nil ? .null : .int(prepared.hash),
        ])
        while try insert.step() {}
        let id = connection.lastInsertRowID
        return AppendResult(
            event: Event(id: id, topic: event.topic, type: event.type, key: event.key, data: event.data, time: time),
            replayed: false
        )
    }

    private func fail(_ requests: [AppendRequest], with error: Error) {
        let mapped = Self.publicError(error)
        for request in requests { request.continuation.resume(throwing: mapped) }
    }

    private static func publicError(_ error: Error) -> Error {
        if let error = error as? SQLiteError { return EventLogError.storage(error) }
        return error
    }
}

extension EventLog {
    /// Called on the writer thread with the file's bounds, after a maintenance task wrote or another
    /// process committed.
    fileprivate func didMaintain(earliest: Int64, head: Int64, removals: Int64) {
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
