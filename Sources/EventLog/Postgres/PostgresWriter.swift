import Logging
import Synchronization

/// What a PostgreSQL writer thread runs: appends (drained into group commits), a look at what other nodes
/// committed, a move of the outbox, and maintenance tasks.
enum PostgresWriterJob: Sendable {
    case append(AppendRequest)
    case catchUp
    case outbox
    case task(DatabaseJob<PGConnection>)
}

/// The writer of a ``PostgresEventStore``: the group commit, the outbox mover and the catch-up with the other
/// nodes. Everything here runs on the one writer thread, which owns its connection.
///
/// A group commit is one transaction: it locks the counter row (`SELECT … FOR UPDATE`), reads what other nodes
/// committed since this node last looked, looks up idempotency keys and conditional appends for the whole group
/// in one query each, decides every request in memory (a refused request writes nothing, so none needs a
/// savepoint), then inserts every accepted event with ids following the counter's head, raises the head, deletes
/// the outbox rows it moved, sends `NOTIFY eventlog` with the new head, and commits. The row lock serializes
/// group commits of every node in id order.
final class PostgresWriter: @unchecked Sendable {
    // @unchecked: the vars are used only on the writer thread; `knownHead`, the flags and the observer are
    // synchronized.
    /// The head as of this writer's last commit or catch-up.
    private var head: Int64 = 0
    /// The counter's `removals` as last seen.
    private var removals: Int64 = 0
    /// The newest commit time this writer used (times never go back).
    private var lastTime: Int64 = 0
    /// True while the outbox may hold rows: set by the listener's notification, the periodic check and start.
    private let outboxPending = Atomic<Bool>(true)
    /// True while a catch-up job is queued, so a burst of notifications queues one.
    let catchUpQueued = Atomic<Bool>(false)
    /// True while an outbox job is queued, likewise.
    let outboxQueued = Atomic<Bool>(false)
    /// The last group moved a full page of outbox rows: more may wait.
    private var outboxBacklog = false
    /// `head` for other threads (the listener compares a notification's head with it).
    let knownHead = Atomic<Int64>(0)
    /// The process id of the writer connection's backend: the listener ignores the commit notifications it sent.
    let connectionPID = Atomic<Int32>(0)
    /// The most events read into the tail by one catch-up; beyond it the tail is reset instead.
    private let maxCatchUp: Int
    private let logger: Logger
    private let limits: EventLimits
    private let observer = Mutex(WeakObserver())
    private let counters = Mutex(Statistics())

    private struct WeakObserver {
        weak var value: (any EventStoreObserver)?
    }

    /// What the writer did, for diagnostics and `eventlog-bench`.
    struct Statistics: Sendable, Hashable {
        var groupCommits = 0
        var movedFromOutbox = 0
        var catchUps = 0
    }

    var statistics: Statistics { counters.withLock { $0 } }

    init(logger: Logger, limits: EventLimits, maxCatchUp: Int) {
        self.logger = logger
        self.limits = limits
        self.maxCatchUp = maxCatchUp
    }

    /// Where the writer starts: the bounds read when the store opened.
    func start(at bounds: StoreBounds) {
        head = bounds.head
        removals = bounds.removals
        knownHead.store(bounds.head, ordering: .relaxed)
    }

    func observe(_ observer: any EventStoreObserver) {
        self.observer.withLock { $0.value = observer }
    }

    private var currentObserver: (any EventStoreObserver)? { observer.withLock { $0.value } }

    /// Marks the outbox as worth a look at the next group commit.
    func outboxChanged() { outboxPending.store(true, ordering: .relaxed) }

    /// Runs the jobs the writer thread drained: consecutive appends (and outbox moves) commit as one group; a
    /// catch-up or a task runs between groups.
    func process(_ jobs: [PostgresWriterJob], on connection: PGConnection) {
        var group: [AppendRequest] = []
        var wantsOutbox = false
        func flush() {
            if !group.isEmpty || wantsOutbox || outboxPending.load(ordering: .relaxed) {
                commit(group, on: connection)
            }
            group.removeAll()
            wantsOutbox = false
            // A backlog in the outbox (eventlogd was down while applications published) moves a page per group
            // now, not a page per wake-up.
            while outboxBacklog {
                outboxPending.store(true, ordering: .relaxed)
                commit([], on: connection)
            }
        }
        for job in jobs {
            switch job {
            case .append(let request):
                group.append(request)
            case .outbox:
                outboxQueued.store(false, ordering: .relaxed)
                outboxPending.store(true, ordering: .relaxed)
                wantsOutbox = true
            case .catchUp:
                flush()
                catchUpQueued.store(false, ordering: .relaxed)
                catchUp(on: connection)
            case .task(let task):
                flush()
                task.body(connection)
                // A task may have deleted events (retention, compaction): pick up the bounds it left.
                catchUp(on: connection)
            }
        }
        flush()
    }

    /// Every second between jobs: what other nodes committed (in case a notification was lost) and whether the
    /// outbox holds rows.
    func tick(_ connection: PGConnection) {
        catchUp(on: connection)
        if let waiting = try? connection.scalarInt("SELECT 1 FROM eventlog.outbox LIMIT 1"), waiting == 1 {
            outboxPending.store(true, ordering: .relaxed)
            commit([], on: connection)
        }
    }

    // MARK: Catching up with other nodes

    /// Reads what other nodes committed (or deleted) since this writer last looked, and tells the log: new
    /// events go into its tail, a deletion resets the tail.
    func catchUp(on connection: PGConnection) {
        do {
            let (bounds, events) = try connection.transaction("ISOLATION LEVEL REPEATABLE READ READ ONLY") {
                () throws -> (StoreBounds, [Event]?) in
                let bounds = try PostgresEventStore.readBounds(connection)
                guard bounds.head > head, bounds.removals == removals else { return (bounds, nil) }
                return (bounds, try foreignEvents(after: head, on: connection))
            }
            counters.withLock { $0.catchUps += 1 }
            let moved = bounds.head > head
            if bounds.removals == removals, moved, let events {
                head = bounds.head
                knownHead.store(head, ordering: .relaxed)
                currentObserver?.storeDidCommit(events, head: head, foreignWrites: false)
            } else if moved || bounds.removals != removals {
                head = max(head, bounds.head)
                removals = bounds.removals
                knownHead.store(head, ordering: .relaxed)
                var seen = bounds
                seen.head = head
                currentObserver?.storeDidSync(seen)
            }
        } catch {
            logger.debug("catch-up failed", metadata: ["error": "\(error)"])
        }
    }

    /// The events after `position` (through `last`, when given), in id order, for the tail; nil when there are
    /// more than the tail takes in one catch-up (`maxCatchUp`), and the tail is to be reset instead.
    private func foreignEvents(
        after position: Int64, through last: Int64? = nil, on connection: PGConnection
    ) throws
        -> [Event]?
    {
        let result = try connection.query(
            "SELECT \(PostgresSQL.eventColumns) FROM eventlog.events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            [String(position), String(last ?? .max), String(maxCatchUp + 1)])
        return result.rowCount > maxCatchUp ? nil : PostgresSQL.events(result)
    }

    // MARK: The group commit

    /// An accepted event with the columns `Event` does not carry.
    private struct Row {
        let event: Event
        let idempotencyKey: String?
        let hash: Int64
    }

    /// An idempotency key known in this group: from the database, or inserted by an earlier request.
    private struct KnownKey {
        let event: Event
        let hash: Int64
    }

    private struct KeyID: Hashable {
        let topic: String
        let key: String
    }

    private func commit(_ requests: [AppendRequest], on connection: PGConnection) {
        let moveOutbox = outboxPending.exchange(false, ordering: .relaxed)
        let plain = requests.allSatisfy {
            $0.events.allSatisfy { $0.event.idempotencyKey == nil && $0.event.expectedLastID == nil }
        }
        if !moveOutbox, !requests.isEmpty, plain {
            commitPlain(requests, on: connection)
        } else {
            commitLocked(requests, moveOutbox: moveOutbox, on: connection)
        }
    }

    /// A group that looks up idempotency keys or topic heads, or moves the outbox: those reads must see what
    /// every earlier commit wrote, so the counter row is locked first.
    private func commitLocked(_ requests: [AppendRequest], moveOutbox: Bool, on connection: PGConnection) {
        outboxBacklog = false
        var decisions: [Result<[AppendResult], Error>] = []
        var inserted: [Event] = []
        var caughtUp: [Event] = []
        var foreignWrites = false
        var newHead = head
        var movedCount = 0
        do {
            // One round trip: BEGIN and the counter row's lock, held until COMMIT.
            let counter = try connection.begin(then: "SELECT head, time, removals FROM eventlog.counter FOR UPDATE")
            connectionPID.store(connection.backendPID, ordering: .relaxed)
            let databaseHead = counter.int64(0, 0)
            let databaseTime = counter.int64(0, 1)
            let databaseRemovals = counter.int64(0, 2)
            if databaseRemovals != removals {
                foreignWrites = true
            } else if databaseHead > head {
                // Other nodes committed since this node last looked: their events go into the tail first.
                if let events = try foreignEvents(after: head, on: connection) {
                    caughtUp = events
                } else {
                    foreignWrites = true
                }
            }
            var outbox: [(seq: Int64, event: PreparedEvent)] = []
            var outboxThrough: Int64 = 0
            if moveOutbox {
                (outbox, outboxThrough, outboxBacklog) = try readOutbox(connection)
            }
            let all = requests.map(\.events) + outbox.map { [$0.event] }
            let time = max(Timestamp.nowMilliseconds(), databaseTime, lastTime)
            var nextID = databaseHead
            let rows: [Row]
            (decisions, rows) = try decide(all, time: time, nextID: &nextID, on: connection)
            inserted = rows.map(\.event)
            movedCount = outbox.count
            if !inserted.isEmpty || outboxThrough > 0 {
                try insertAndCommit(rows, head: nextID, time: time, outboxThrough: outboxThrough, on: connection)
            } else {
                try connection.execute("COMMIT")
            }
            lastTime = time
            newHead = nextID
            removals = databaseRemovals
        } catch {
            outboxBacklog = false
            if moveOutbox { outboxPending.store(true, ordering: .relaxed) }
            return fail(requests, error, on: connection)
        }
        finish(
            requests, decisions.prefix(requests.count), events: caughtUp + inserted, head: newHead,
            foreignWrites: foreignWrites, moved: movedCount)
        for case .failure(let error) in decisions.dropFirst(requests.count) {
            // An outbox row refused in the group (its idempotency key names a different event): its transaction
            // committed, so nobody can be told but the log.
            logger.error("dropped an outbox row", metadata: ["error": "\(error)"])
        }
    }

    /// Decides every request of the group in order, with the database's idempotency keys and topic heads looked up
    /// in one query each: a request's events are all accepted (ids from `nextID + 1`) or it is refused whole.
    private func decide(
        _ requests: [[PreparedEvent]], time: Int64, nextID: inout Int64, on connection: PGConnection
    ) throws -> ([Result<[AppendResult], Error>], [Row]) {
        var keys = try lookUpKeys(requests, on: connection)
        var lastIDs = try lookUpLastIDs(requests, on: connection)
        var decisions: [Result<[AppendResult], Error>] = []
        decisions.reserveCapacity(requests.count)
        var inserted: [Row] = []
        for events in requests {
            var results: [AppendResult] = []
            var mine: [Row] = []
            var newKeys: [(KeyID, KnownKey)] = []
            var newLast: [String: Int64] = [:]
            var id = nextID
            do {
                for (index, prepared) in events.enumerated() {
                    do {
                        let event = prepared.event
                        let keyID = event.idempotencyKey.map { KeyID(topic: event.topic, key: $0) }
                        if let keyID, let known = newKeys.last(where: { $0.0 == keyID })?.1 ?? keys[keyID] {
                            guard known.hash == prepared.hash else {
                                throw EventLogError(
                                    .idempotencyConflict,
                                    "idempotency key \(Topic.quoted(keyID.key)) was used for a different event (id \(known.event.id)) on topic \(event.topic)"
                                )
                            }
                            results.append(AppendResult(event: known.event, replayed: true))
                            continue
                        }
                        if let expected = event.expectedLastID {
                            let last = newLast[event.topic] ?? lastIDs[event.topic] ?? 0
                            guard last == expected else {
                                throw EventLogError(
                                    .expectedLastIDMismatch,
                                    "topic \(event.topic)'s last id is \(last), not the expected \(expected); nothing was appended",
                                    lastID: last)
                            }
                        }
                        try Self.checkStorable(event)
                        id += 1
                        let stored = Event(
                            id: id, topic: event.topic, type: event.type, key: event.key, data: event.data, time: time)
                        results.append(AppendResult(event: stored, replayed: false))
                        mine.append(Row(event: stored, idempotencyKey: event.idempotencyKey, hash: prepared.hash))
                        newLast[event.topic] = id
                        if let keyID { newKeys.append((keyID, KnownKey(event: stored, hash: prepared.hash))) }
                    } catch let error as EventLogError where events.count > 1 {
                        throw error.at(index: index)
                    }
                }
            } catch {
                decisions.append(.failure(error))
                continue
            }
            nextID = id
            for (keyID, known) in newKeys { keys[keyID] = known }
            for (topic, last) in newLast { lastIDs[topic] = last }
            inserted += mine
            decisions.append(.success(results))
        }
        return (decisions, inserted)
    }

    /// PostgreSQL's `text` cannot hold NUL, which SQLite's can: such an event is refused rather than failing the
    /// group.
    private static func checkStorable(_ event: NewEvent) throws {
        if let data = event.data, data.text.utf8.contains(0) {
            throw EventLogError(.invalidField, "data holds a NUL character, which the PostgreSQL store cannot keep")
        }
    }

    /// The events the group's idempotency keys already name, in one query.
    private func lookUpKeys(_ requests: [[PreparedEvent]], on connection: PGConnection) throws -> [KeyID: KnownKey] {
        var topics: [String?] = []
        var names: [String?] = []
        for events in requests {
            for prepared in events {
                guard let key = prepared.event.idempotencyKey else { continue }
                topics.append(prepared.event.topic)
                names.append(key)
            }
        }
        guard !topics.isEmpty else { return [:] }
        let result = try connection.query(
            """
            SELECT \(PostgresSQL.eventColumns.split(separator: ", ").map { "e." + $0 }.joined(separator: ", ")), \
            e.idempotency_key, e.request_hash
            FROM unnest($1::text[], $2::text[]) AS k(topic, name)
            JOIN eventlog.events e ON e.topic = k.topic AND e.idempotency_key = k.name
            """,
            [PostgresSQL.array(topics), PostgresSQL.array(names)])
        var found: [KeyID: KnownKey] = [:]
        for row in 0..<result.rowCount {
            let event = PostgresSQL.event(result, row)
            found[KeyID(topic: event.topic, key: result.text(row, 7) ?? "")] = KnownKey(
                event: event, hash: result.int64(row, 8))
        }
        return found
    }

    /// The last id of each topic a conditional append of the group names, in one query (one seek per topic).
    private func lookUpLastIDs(_ requests: [[PreparedEvent]], on connection: PGConnection) throws -> [String: Int64] {
        var topics = Set<String>()
        for events in requests {
            for prepared in events where prepared.event.expectedLastID != nil { topics.insert(prepared.event.topic) }
        }
        guard !topics.isEmpty else { return [:] }
        let result = try connection.query(
            """
            SELECT t, (SELECT max(id) FROM eventlog.events WHERE topic = t) FROM unnest($1::text[]) AS t
            """,
            [PostgresSQL.array(topics.map { $0 })])
        var found: [String: Int64] = [:]
        for row in 0..<result.rowCount { found[result.text(row, 0) ?? ""] = result.int64(row, 1) }
        return found
    }

    /// Inserts accepted events, raises the counter to `head`, deletes the moved outbox rows, notifies the
    /// nodes and commits: one statement of one text for any number of events (arrays, ``PostgresSQL/insertEvents(firstParameter:)``),
    /// the counter's update, the outbox's delete and `pg_notify` riding along as data-modifying CTEs, pipelined
    /// with `COMMIT`.
    private func insertAndCommit(
        _ rows: [Row], head: Int64, time: Int64, outboxThrough: Int64, on connection: PGConnection
    ) throws {
        try connection.queryThenCommit(
            """
            WITH c AS (UPDATE eventlog.counter SET head = $1::bigint, time = $2::bigint),
            d AS (DELETE FROM eventlog.outbox WHERE seq <= $3::bigint),
            i AS (\(PostgresSQL.insertEvents(firstParameter: 4)))
            SELECT pg_notify('eventlog', $1::bigint::text)
            """,
            [String(head), String(time), String(outboxThrough)]
                + PostgresSQL.insertParameters(
                    rows.map {
                        PostgresSQL.EventRow(
                            event: $0.event, idempotencyKey: $0.idempotencyKey,
                            requestHash: $0.idempotencyKey == nil ? nil : $0.hash)
                    }))
    }

    // MARK: Plain groups

    /// A group of plain appends (no idempotency key, no condition) with no outbox to move: nothing needs reading
    /// before the ids are taken, so one statement takes them from the counter row and inserts the events, and it
    /// goes with `COMMIT` in one round trip. The counter row is locked only while PostgreSQL runs that statement and
    /// the commit, never while a round trip to this node is in flight. What other nodes committed before the
    /// group (ids between this node's head and the group's first) is read afterwards, outside the lock.
    private func commitPlain(_ requests: [AppendRequest], on connection: PGConnection) {
        // Decided with ids relative to the group (1…n) and no time yet: only a NUL in text data refuses a request.
        var relative: Int64 = 0
        let decided = Result { try decide(requests.map(\.events), time: 0, nextID: &relative, on: connection) }
        guard case .success(let (decisions, rows)) = decided, !rows.isEmpty else {
            let outcome = decided.map(\.0)
            for (index, request) in requests.enumerated() {
                request.completion(outcome.flatMap { $0[index] })
            }
            return
        }
        let count = Int64(rows.count)
        let newHead: Int64
        let time: Int64
        let databaseRemovals: Int64
        do {
            try connection.begin()
            connectionPID.store(connection.backendPID, ordering: .relaxed)
            let data = rows.map { PostgresSQL.dataColumns($0.event.data) }
            let result = try connection.queryThenCommit(
                """
                WITH c AS (
                    UPDATE eventlog.counter SET head = head + $1::bigint, time = greatest(time, $2::bigint)
                    RETURNING head, time, removals),
                i AS (
                    INSERT INTO eventlog.events (id, topic, type, key, data, data_format, time)
                    SELECT c.head - $1::bigint + u.n, u.topic, u.type, u.key, u.data, u.format, c.time
                    FROM c, unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::smallint[])
                        WITH ORDINALITY AS u(topic, type, key, data, format, n))
                SELECT head, time, removals, pg_notify('eventlog', head::text) FROM c
                """,
                [
                    String(count), String(max(Timestamp.nowMilliseconds(), lastTime)),
                    PostgresSQL.array(rows.map(\.event.topic)), PostgresSQL.array(rows.map(\.event.type)),
                    PostgresSQL.array(rows.map(\.event.key)), PostgresSQL.array(data.map(\.text)),
                    PostgresSQL.array(data.map(\.format)),
                ])
            newHead = result.int64(0, 0)
            time = result.int64(0, 1)
            databaseRemovals = result.int64(0, 2)
        } catch {
            return fail(requests, error, on: connection)
        }
        let base = newHead - count
        var foreignWrites = databaseRemovals != removals
        var caughtUp: [Event] = []
        if !foreignWrites && base > head {
            // Committed before this group took the counter row, so all there; a failed read resets the tail.
            if let events = try? foreignEvents(after: head, through: base, on: connection) {
                caughtUp = events
            } else {
                foreignWrites = true
            }
        }
        lastTime = time
        removals = databaseRemovals
        func stored(_ event: Event) -> Event {
            Event(
                id: base + event.id, topic: event.topic, type: event.type, key: event.key, data: event.data, time: time)
        }
        finish(
            requests, decisions.map { $0.map { $0.map { AppendResult(event: stored($0.event), replayed: false) } } },
            events: caughtUp + rows.map { stored($0.event) }, head: newHead, foreignWrites: foreignWrites, moved: 0)
    }

    /// A group commit that failed: nothing of it was written; every request fails with it.
    private func fail(_ requests: [AppendRequest], _ error: any Error, on connection: PGConnection) {
        connection.rollback()
        logger.error("group commit failed", metadata: ["error": "\(error)", "requests": "\(requests.count)"])
        let mapped = Self.publicError(error)
        for request in requests { request.completion(.failure(mapped)) }
    }

    /// A group commit that committed: the writer's head moves, the log gets `events` (other nodes' first, then
    /// the group's) before the appenders hear their outcome.
    private func finish(
        _ requests: [AppendRequest], _ decisions: some Collection<Result<[AppendResult], Error>>, events: [Event],
        head newHead: Int64, foreignWrites: Bool, moved: Int
    ) {
        counters.withLock {
            $0.groupCommits += 1
            $0.movedFromOutbox += moved
        }
        head = newHead
        knownHead.store(head, ordering: .relaxed)
        if foreignWrites || !events.isEmpty {
            currentObserver?.storeDidCommit(events, head: head, foreignWrites: foreignWrites)
        }
        for (request, decision) in zip(requests, decisions) {
            request.completion(decision)
        }
    }

    // MARK: The outbox

    /// Reads up to 1,000 outbox rows in `seq` order, as events to append. A row that is not a valid event (its
    /// topic, type, key or size break the limits) is logged and dropped: it cannot be refused to a caller whose
    /// transaction already committed. Returns the rows, the largest `seq` read (0 when none), and whether the page
    /// was full.
    private func readOutbox(
        _ connection: PGConnection
    ) throws -> ([(seq: Int64, event: PreparedEvent)], Int64, Bool) {
        let result = try connection.query(
            "SELECT seq, topic, type, key, data::text, idempotency_key FROM eventlog.outbox ORDER BY seq LIMIT $1",
            [String(Self.outboxPage)])
        var rows: [(seq: Int64, event: PreparedEvent)] = []
        var through: Int64 = 0
        for row in 0..<result.rowCount {
            let seq = result.int64(row, 0)
            through = seq
            do {
                let data = try result.text(row, 4).map { try PublishRequest.decodeData($0) } ?? nil
                let event = NewEvent(
                    topic: result.text(row, 1) ?? "", type: result.text(row, 2) ?? "message", key: result.text(row, 3),
                    data: data, idempotencyKey: result.text(row, 5))
                try limits.validate(event)
                rows.append(
                    (seq, PreparedEvent(event: event, hash: event.idempotencyKey == nil ? 0 : event.requestHash)))
            } catch {
                logger.error(
                    "dropped an outbox row that is not a valid event",
                    metadata: ["seq": "\(seq)", "error": "\(error)"])
            }
        }
        return (rows, through, result.rowCount == Self.outboxPage)
    }

    /// The most outbox rows one group commit moves.
    static let outboxPage = 1000

    static func publicError(_ error: Error) -> Error {
        if let error = error as? PGError { return EventLogError.storage(error) }
        return error
    }
}
