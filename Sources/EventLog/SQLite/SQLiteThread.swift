import Foundation

/// Dedicated OS threads that own database connections (SQLite, PostgreSQL) and run jobs against them.
///
/// SQLite calls block, so they never run on the Swift cooperative pool (two threads on a two-core
/// machine) or on a NIO event loop. Each thread opens its own ``Connection`` and is its only user.
/// With one thread this is a serial executor; callers hand work over with ``SQLiteThreads/run(_:)``
/// and await the result.
///
/// `handle` receives every job that is pending when the thread wakes, up to `maxBatch`. The writer
/// uses this to drain all queued appends into one transaction (group commit).
///
/// With a `tick`, each thread also runs `tick.body` about every `tick.interval`, whether or not jobs
/// arrive: the writer uses it to notice other processes' commits (`PRAGMA data_version`).
final class DatabaseThreads<Handle: ThreadConnection, Job: Sendable>: @unchecked Sendable {
    // @unchecked: `pending`, `stopping` and `running` are only touched under `condition`.
    private let condition = NSCondition()
    private var pending: [Job] = []
    private var pendingStart = 0
    private var stopping = false
    private var running = 0
    private let maxBatch: Int
    private let exited = DispatchGroup()

    /// Work a thread runs on its connection every `interval`, between jobs.
    struct Tick: Sendable {
        /// How often.
        let interval: Duration
        /// What to run.
        let body: @Sendable (Handle) -> Void
    }

    /// Starts `count` threads. Each opens its connection with `open` before it takes any job, and
    /// the initializer fails if any of them cannot open.
    init(
        name: String,
        count: Int,
        maxBatch: Int,
        tick: Tick? = nil,
        open: @escaping @Sendable () throws -> Handle,
        handle: @escaping @Sendable (Handle, [Job]) -> Void
    ) throws {
        self.maxBatch = maxBatch
        let opened = OpenResults(count: count)
        for index in 0..<count {
            exited.enter()
            let thread = Thread { [self] in
                let connection: Handle
                do {
                    connection = try open()
                    opened.report(nil)
                } catch {
                    opened.report(error)
                    self.exited.leave()
                    return
                }
                self.loop(connection: connection, tick: tick, handle: handle)
                connection.close()
                self.exited.leave()
            }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
        if let error = opened.wait() {
            shutdown()
            throw error
        }
    }

    /// Queues a job. Returns false when the threads are shutting down.
    @discardableResult
    func submit(_ job: Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return false }
        pending.append(job)
        condition.signal()
        return true
    }

    /// Jobs queued and not yet taken by a thread. Tests use it to queue several appends for one group commit.
    var pendingCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return pending.count - pendingStart
    }

    /// Finishes the jobs already queued, closes the connections and waits for the threads to exit.
    func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        exited.wait()
    }

    private func loop(connection: Handle, tick: Tick?, handle: (Handle, [Job]) -> Void) {
        let tickSeconds = tick.map { Double($0.interval.wholeMilliseconds) / 1000 }
        var nextTick = tickSeconds.map { Date(timeIntervalSinceNow: $0) }
        while true {
            condition.lock()
            while pendingStart == pending.count && !stopping {
                if let deadline = nextTick {
                    if !condition.wait(until: deadline) { break }
                } else {
                    condition.wait()
                }
            }
            if pendingStart == pending.count && stopping {
                condition.unlock()
                return
            }
            var jobs: [Job] = []
            if pendingStart < pending.count {
                let end = min(pending.count, pendingStart + maxBatch)
                jobs = Array(pending[pendingStart..<end])
                pendingStart = end
                if pendingStart == pending.count {
                    pending.removeAll(keepingCapacity: pending.count < 4096)
                    pendingStart = 0
                } else if pendingStart > 4096 {
                    pending.removeFirst(pendingStart)
                    pendingStart = 0
                }
            }
            condition.unlock()
            if !jobs.isEmpty { handle(connection, jobs) }
            if let tick, let tickSeconds, let deadline = nextTick, deadline.timeIntervalSinceNow <= 0 {
                tick.body(connection)
                nextTick = Date(timeIntervalSinceNow: tickSeconds)
            }
        }
    }
}

/// Collects whether each thread opened its connection.
private final class OpenResults: @unchecked Sendable {
    private let condition = NSCondition()
    private var remaining: Int
    private var firstError: Error?

    init(count: Int) { remaining = count }

    func report(_ error: Error?) {
        condition.lock()
        remaining -= 1
        if let error, firstError == nil { firstError = error }
        condition.broadcast()
        condition.unlock()
    }

    func wait() -> Error? {
        condition.lock()
        defer { condition.unlock() }
        while remaining > 0 { condition.wait() }
        return firstError
    }
}

/// A connection that one of ``DatabaseThreads`` owns: opened on the thread, closed there when it stops.
protocol ThreadConnection: SendableMetatype {
    func close()
    /// How a failed read names its cause in the `storage_unavailable` it becomes.
    static func describe(_ error: any Error) -> String
    /// True when a read that failed with `error` should run once more: the connection was lost under it (a
    /// server restarted since the connection's last use) and the next call reconnects. Reads only, which can run
    /// twice; never for a connection that could not be made.
    func shouldRetryRead(after error: any Error) -> Bool
}

extension ThreadConnection {
    func shouldRetryRead(after error: any Error) -> Bool { false }
}

extension Connection: ThreadConnection {
    static func describe(_ error: any Error) -> String { (error as? SQLiteError)?.message ?? "\(error)" }
}

/// The threads of a ``SQLiteEventStore``, each with its own SQLite ``Connection``.
typealias SQLiteThreads<Job: Sendable> = DatabaseThreads<Connection, Job>

/// A job for a reader thread: a closure run against the thread's connection.
struct DatabaseJob<Handle>: Sendable {
    let body: @Sendable (Handle) -> Void
}

/// A job for a SQLite reader thread.
typealias ConnectionJob = DatabaseJob<Connection>

extension DatabaseThreads where Job == DatabaseJob<Handle> {
    /// Threads that run each closure against their connection.
    convenience init(name: String, count: Int, open: @escaping @Sendable () throws -> Handle) throws {
        try self.init(name: name, count: count, maxBatch: 1, open: open) { connection, jobs in
            for job in jobs { job.body(connection) }
        }
    }

    /// Runs `body` on one of the threads and hands its result to `completion` there: a failure other than the
    /// log's own errors is `storage_unavailable`, threads that shut down `closed`.
    func read<T: Sendable>(
        _ completion: @escaping @Sendable (Result<T, EventLogError>) -> Void,
        _ body: @escaping @Sendable (Handle) throws -> T
    ) {
        let accepted = submit(
            DatabaseJob { connection in
                completion(
                    Result { () throws(EventLogError) -> T in
                        do {
                            return try Self.reading(connection, body)
                        } catch let error as EventLogError {
                            throw error
                        } catch {
                            throw EventLogError(.storageUnavailable, "the store cannot read: \(Handle.describe(error))")
                        }
                    })
            })
        if !accepted { completion(.failure(.closed)) }
    }

    /// Runs the read `body`, once more when its connection was lost under it (see
    /// ``ThreadConnection/shouldRetryRead(after:)``).
    private static func reading<T>(_ connection: Handle, _ body: (Handle) throws -> T) throws -> T {
        do {
            return try body(connection)
        } catch  where connection.shouldRetryRead(after: error) {
            return try body(connection)
        }
    }

    /// Runs `body` on one of the threads and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (Handle) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = submit(
                DatabaseJob { connection in
                    continuation.resume(with: Result { try Self.reading(connection, body) })
                }
            )
            if !accepted { continuation.resume(throwing: EventLogError.closed) }
        }
    }
}
