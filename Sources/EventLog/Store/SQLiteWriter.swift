import Logging
import Synchronization

/// One caller's `append`: its events, and what the writer calls (on its thread) after the commit.
struct AppendRequest: Sendable {
    let events: [PreparedEvent]
    let completion: @Sendable (Result<[AppendResult], any Error>) -> Void
}

/// What the writer thread runs: appends, which it drains into group commits, and maintenance tasks.
enum WriterJob: Sendable {
    case append(AppendRequest)
    case task(ConnectionJob)
}

/// The writer of a ``SQLiteEventStore``: the group commit, and the watch for other processes' commits.
///
/// Everything here runs on the one writer thread (``SQLiteThreads`` with one thread), which owns the
/// read-write connection.
final class SQLiteWriter: @unchecked Sendable {
    // @unchecked: `head` and `dataVersion` are used only on the writer thread; the observer is behind a lock.
    /// The head as of this writer's last commit or look at the file.
    var head: Int64 = 0
    /// `PRAGMA data_version` at the last look (``pollForeignWrites(_:)``).
    var dataVersion: Int64?
    /// The commit time of this writer's last group (0 before the first): times never go back, even when the
    /// clock does, so `since` can bisect ids on them.
    private var lastTime: Int64 = 0
    private let logger: Logger
    private let observer = Mutex(WeakObserver())

    private struct WeakObserver {
        weak var value: (any EventStoreObserver)?
    }

    init(logger: Logger) {
        self.logger = logger
    }

    /// Sets who hears about commits; until then they are heard by nobody.
    func observe(_ observer: any EventStoreObserver) {
        self.observer.withLock { $0.value = observer }
    }

    private var currentObserver: (any EventStoreObserver)? { observer.withLock { $0.value } }

    /// Runs the jobs the writer thread drained: consecutive appends commit as one group; a task runs
    /// alone between two groups.
    func process(_ jobs: [WriterJob], on connection: Connection) {
        var group: [AppendRequest] = []
        for job in jobs {
            switch job {
            case .append(let request):
                group.append(request)
            case .task(let task):
                if !group.isEmpty {
                    commit(group, on: connection)
                    group.removeAll()
                }
                task.body(connection)
                // A task may have written (retention): pick up the head and earliest it left.
                _ = try? syncWithFile(connection)
            }
        }
        if !group.isEmpty { commit(group, on: connection) }
    }

    /// Brings the log's memory in line with the file: another process, or a maintenance task on this
    /// writer, may have appended or deleted events since this writer's last commit.
    /// Returns the bounds it told the observer.
    @discardableResult
    func syncWithFile(_ connection: Connection) throws -> StoreBounds {
        var bounds = try SQLiteEventStore.readBounds(connection)
        head = max(head, bounds.head)
        bounds.head = head
        currentObserver?.storeDidSync(bounds)
        return bounds
    }

    /// Runs on the writer thread between jobs: when another connection committed since the last
    /// look, its events are read into the log's view, and waiting subscribers wake.
    func pollForeignWrites(_ connection: Connection) {
        guard let version = try? connection.scalarInt("PRAGMA data_version") else { return }
        guard version != dataVersion else { return }
        dataVersion = version
        _ = try? syncWithFile(connection)
    }

    /// What the group commits did, counted for tests and diagnostics.
    struct Statistics: Sendable, Hashable {
        /// Transactions committed by ``commit(_:on:)``.
        var groupCommits = 0
        /// Groups that ran again with savepoints after a request failed with rows of its own written.
        var savepointRetries = 0
        /// `SAVEPOINT` statements run.
        var savepoints = 0
    }

    private let counters = Mutex(Statistics())

    /// What the group commits did so far.
    var statistics: Statistics { counters.withLock { $0 } }

    /// A request failed after it had written rows of its own, in a run without savepoints: only a
    /// rollback of the whole transaction removes them.
    private struct NeedsSavepoints: Error {}

    /// The outcome of one run of a group inside the open transaction.
    private struct GroupRun {
        var outcomes: [Result<[AppendResult], Error>] = []
        var inserted: [Event] = []
        var savepoints = 0
    }

    /// One group commit: every request in one transaction, in queue order.
    ///
    /// Each request commits or fails alone, and a request of several events is atomic. The group first
    /// runs without savepoints. A request that fails before it inserted a row of its own needs none: an
    /// idempotency conflict is found by the lookup before the event's INSERT, and an INSERT that fails
    /// leaves nothing (SQLite makes each statement atomic), so such a request fails alone and the others
    /// go on. Only a batch that fails after some of its events were inserted (an idempotency conflict at
    /// event 3 of 4) needs an undo of its own: then the whole transaction rolls back and the group runs
    /// again with a savepoint around each request of several events (the slow path, as rare as such
    /// conflicts). When SQLite rolled the whole transaction back by itself, every request fails: it does
    /// so for SQLITE_FULL and I/O errors in a one-row INSERT, which has no statement journal, savepoint or
    /// not.
    ///
    /// BEGIN, COMMIT, ROLLBACK and the savepoint statements are cached prepared statements.
    private func commit(_ requests: [AppendRequest], on connection: Connection) {
        var foreignWrites = false
        var run: GroupRun
        do {
            do {
                run = try runGroup(requests, savepoints: false, foreignWrites: &foreignWrites, on: connection)
            } catch is NeedsSavepoints {
                try connection.runCached("ROLLBACK")
                counters.withLock { $0.savepointRetries += 1 }
                run = try runGroup(requests, savepoints: true, foreignWrites: &foreignWrites, on: connection)
            }
            try connection.runCached("COMMIT")
        } catch {
            if !connection.isAutocommit { try? connection.runCached("ROLLBACK") }
            logger.error("group commit failed", metadata: ["error": "\(error)", "requests": "\(requests.count)"])
            fail(requests, with: error)
            return
        }
        counters.withLock {
            $0.groupCommits += 1
            $0.savepoints += run.savepoints
        }
        if let last = run.inserted.last { head = max(head, last.id) }
        currentObserver?.storeDidCommit(run.inserted, head: head, foreignWrites: foreignWrites)
        for (request, outcome) in zip(requests, run.outcomes) {
            request.completion(outcome.mapError(Self.publicError))
        }
    }

    /// Begins the transaction and runs every request of the group in it; the caller commits or rolls back.
    /// With `savepoints`, each request of more than one event runs inside its own savepoint; without,
    /// a request that fails after inserting a row throws ``NeedsSavepoints`` with the transaction open.
    private func runGroup(
        _ requests: [AppendRequest],
        savepoints: Bool,
        foreignWrites: inout Bool,
        on connection: Connection
    ) throws -> GroupRun {
        try connection.runCached("BEGIN IMMEDIATE")
        let fileHead = try SQLiteEventStore.readHead(connection)
        if fileHead != head {
            // Another process appended since our last commit: the in-memory tail is stale.
            foreignWrites = true
            head = fileHead
        }
        if lastTime == 0 {
            lastTime = try connection.scalarInt("SELECT time FROM events ORDER BY id DESC LIMIT 1") ?? 0
        }
        let time = max(Timestamp.nowMilliseconds(), lastTime)
        lastTime = time
        // Taken from the connection's cache once per group, not once per event (the cache hashes the SQL).
        let statements = try Statements(connection)
        var run = GroupRun()
        run.outcomes.reserveCapacity(requests.count)
        for request in requests {
            // A single event needs no savepoint: it fails before its INSERT or inside it, and a failed
            // statement leaves nothing (https://sqlite.org/lang_transaction.html#response_to_errors_within_a_transaction).
            let guarded = savepoints && request.events.count > 1
            if guarded {
                try connection.runCached("SAVEPOINT request")
                run.savepoints += 1
            }
            var results: [AppendResult] = []
            results.reserveCapacity(request.events.count)
            var events: [Event] = []
            do {
                for (index, prepared) in request.events.enumerated() {
                    do {
                        let result = try append(prepared, time: time, statements: statements, on: connection)
                        results.append(result)
                        if !result.replayed { events.append(result.event) }
                    } catch let error as EventLogError where request.events.count > 1 {
                        throw error.at(index: index)
                    }
                }
                if guarded { try connection.runCached("RELEASE request") }
                run.outcomes.append(.success(results))
                run.inserted.append(contentsOf: events)
            } catch {
                if connection.isAutocommit {
                    // SQLite rolled the whole transaction back by itself (disk full, I/O error).
                    throw error
                }
                if guarded {
                    try connection.runCached("ROLLBACK TO request")
                    try connection.runCached("RELEASE request")
                } else if !events.isEmpty {
                    // Rows of this request are in the transaction and no savepoint can take them out.
                    throw NeedsSavepoints()
                }
                run.outcomes.append(.failure(error))
            }
        }
        return run
    }

    /// The writer's per-event statements, from the connection's cache. Used only within one group.
    private struct Statements {
        let lookup: Statement
        let insert: Statement
        /// The topic's newest id, for a conditional append (`events_topic_id`: one seek).
        let lastID: Statement

        init(_ connection: Connection) throws {
            lastID = try connection.cachedStatement("SELECT max(id) FROM events WHERE topic = ?")
            lookup = try connection.cachedStatement(
                "SELECT \(SQLiteEventStore.eventColumns), request_hash FROM events WHERE topic = ? AND idempotency_key = ?"
            )
            insert = try connection.cachedStatement(
                """
                INSERT INTO events (topic, type, key, data, data_format, time, idempotency_key, request_hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """
            )
        }
    }

    private func append(
        _ prepared: PreparedEvent,
        time: Int64,
        statements: Statements,
        on connection: Connection
    ) throws -> AppendResult {
        let event = prepared.event
        if let idempotencyKey = event.idempotencyKey {
            let lookup = statements.lookup
            lookup.reset()
            try lookup.bind([.text(event.topic), .text(idempotencyKey)])
            if try lookup.step() {
                let original = SQLiteEventStore.event(from: lookup)
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
        if let expected = event.expectedLastID {
            // After the idempotency lookup: a retry of an append that won returns it, though the topic moved on.
            let check = statements.lastID
            check.reset()
            try check.bind([.text(event.topic)])
            let last = try check.step() && !check.isNull(0) ? check.int64(0) : 0
            check.reset()
            guard last == expected else {
                throw EventLogError(
                    .expectedLastIDMismatch,
                    "topic \(event.topic)'s last id is \(last), not the expected \(expected); nothing was appended",
                    lastID: last)
            }
        }
        let insert = statements.insert
        insert.reset()
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
        for request in requests { request.completion(.failure(mapped)) }
    }

    private static func publicError(_ error: Error) -> Error {
        if let error = error as? SQLiteError { return EventLogError.storage(error) }
        return error
    }
}
