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

    /// One group commit: every request in one transaction, each inside its own savepoint so one
    /// failed request (an idempotency conflict) does not fail the others.
    private func commit(_ requests: [AppendRequest], on connection: Connection) {
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
            let fileHead = try SQLiteEventStore.readHead(connection)
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
        currentObserver?.storeDidCommit(inserted, head: head, foreignWrites: foreignWrites)
        for (request, outcome) in zip(requests, outcomes) {
            request.completion(outcome.mapError(Self.publicError))
        }
    }

    private func append(_ prepared: PreparedEvent, time: Int64, on connection: Connection) throws -> AppendResult {
        let event = prepared.event
        if let idempotencyKey = event.idempotencyKey {
            let lookup = try connection.cachedStatement(
                "SELECT \(SQLiteEventStore.eventColumns), request_hash FROM events WHERE topic = ? AND idempotency_key = ?"
            )
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
        for request in requests { request.completion(.failure(mapped)) }
    }

    private static func publicError(_ error: Error) -> Error {
        if let error = error as? SQLiteError { return EventLogError.storage(error) }
        return error
    }
}
