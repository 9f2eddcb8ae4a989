import Synchronization
import Testing

@testable import EventLog

/// A subscription, topics that must not wake it, and one that must.
struct WakeCase: Sendable, CustomTestStringConvertible {
    let selectors: [String]
    let ignored: [String]
    let wakes: String

    var testDescription: String { selectors.joined(separator: ",") + " woken by " + wakes }

    static let all: [WakeCase] = [
        WakeCase(selectors: ["users/5"], ignored: ["users/50", "users/5/x", "users", "orders/1"], wakes: "users/5"),
        WakeCase(selectors: ["orders/*"], ignored: ["orders", "ordersX/1", "orders.x", "users/5"], wakes: "orders/1"),
        WakeCase(selectors: ["orders/*"], ignored: ["orders"], wakes: "orders/1/items"),
        WakeCase(selectors: ["a/b/*", "users/5"], ignored: ["a/b", "a/c/d", "a", "users/6"], wakes: "a/b/c/d"),
        WakeCase(selectors: ["*"], ignored: [], wakes: "anything"),
    ]
}

@Suite("Waiting for commits")
struct WaitTests {
    /// Starts a task that waits for a commit after the current head and records when it ends.
    static func startWaiter(
        _ log: EventLog,
        _ selectors: SelectorSet
    ) async throws -> (task: Task<Void, Error>, ended: Flag) {
        let ended = Flag()
        let position = log.head
        let waiters = log.notifier.waiterCount
        let task = Task {
            defer { ended.set() }
            try await log.waitForCommit(after: position, selectors: selectors)
        }
        // Only append once the waiter is registered, so the test proves what wakes it.
        #expect(try await eventually { log.notifier.waiterCount == waiters + 1 })
        return (task, ended)
    }

    @Test("a waiter wakes for a matching commit and not for a non-matching one", arguments: WakeCase.all)
    func waiterWakesOnlyForMatchingCommits(wake: WakeCase) async throws {
        try await withTemporaryLog { log, _ in
            _ = try await log.append(NewEvent(topic: "before", data: .text("0")))
            let (task, ended) = try await Self.startWaiter(log, try SelectorSet(parsing: wake.selectors))
            for topic in wake.ignored {
                _ = try await log.append(NewEvent(topic: topic, data: .text("ignored")))
            }
            // An append returns after the notifier handled its commit, and a woken waiter leaves the notifier
            // then: still registered now means not woken, with no need to wait and see.
            #expect(ended.value == false, "a commit on \(wake.ignored) woke a waiter on \(wake.selectors)")
            #expect(log.notifier.waiterCount == 1)

            _ = try await log.append(NewEvent(topic: wake.wakes, data: .text("wakes")))
            let result: Void? = try await withTimeout(.seconds(60)) { try await task.value }
            #expect(result != nil, "a commit on \(wake.wakes) did not wake a waiter on \(wake.selectors)")
            #expect(log.notifier.waiterCount == 0)
        }
    }

    @Test("one commit wakes every waiter it concerns and only those")
    func commitWakesAllConcernedWaiters() async throws {
        try await withTemporaryLog { log, _ in
            var orders: [(task: Task<Void, Error>, ended: Flag)] = []
            for _ in 0..<5 { orders.append(try await Self.startWaiter(log, try SelectorSet(parsing: ["orders/*"]))) }
            let users = try await Self.startWaiter(log, try SelectorSet(parsing: ["users/*"]))
            let everything = try await Self.startWaiter(log, .all)
            _ = try await log.append(batch: [
                NewEvent(topic: "misc", data: .text("1")),
                NewEvent(topic: "orders/7", data: .text("2")),
            ])
            for waiter in orders + [everything] {
                let result: Void? = try await withTimeout(.seconds(60)) { try await waiter.task.value }
                #expect(result != nil)
            }
            // The commit's waiters left the notifier before the append returned; the one still there was not woken.
            #expect(users.ended.value == false)
            #expect(log.notifier.waiterCount == 1)
            users.task.cancel()
        }
    }

    @Test("a wait from a position below the head returns at once, whatever the topic")
    func waitBelowHeadReturnsAtOnce() async throws {
        try await withTemporaryLog { log, _ in
            _ = try await log.append(NewEvent(topic: "orders/1", data: .text("1")))
            let selectors = try SelectorSet(parsing: ["users/5"])
            let result: Void? = try await withTimeout(.seconds(60)) {
                try await log.waitForCommit(after: 0, selectors: selectors)
            }
            #expect(result != nil)
        }
    }

    @Test("cancelling the waiting task ends the wait promptly with CancellationError")
    func cancellationEndsWait() async throws {
        try await withTemporaryLog { log, _ in
            let (task, _) = try await Self.startWaiter(log, .all)
            let start = ContinuousClock.now
            task.cancel()
            // Bounded generously: the point is that cancellation ends the wait (no commit will ever come),
            // not how fast a loaded machine schedules it.
            let outcome = try await withTimeout(.seconds(30)) { () -> Bool in
                do {
                    try await task.value
                    return false
                } catch is CancellationError {
                    return true
                }
            }
            #expect(outcome == true)
            #expect(ContinuousClock.now - start < .seconds(30))
            #expect(log.notifier.waiterCount == 0)
        }
    }

    @Test("a wait started in an already cancelled task ends at once")
    func waitInCancelledTask() async throws {
        try await withTemporaryLog { log, _ in
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                try await log.waitForCommit(after: log.head, selectors: .all)
            }
            let outcome = try await withTimeout(.seconds(60)) { () -> Bool in
                do {
                    try await task.value
                    return false
                } catch is CancellationError {
                    return true
                }
            }
            #expect(outcome == true)
            #expect(log.notifier.waiterCount == 0)
        }
    }

    @Test("endSubscriptions ends pending and later waits with closed while appends still work")
    func endSubscriptionsEndsWaits() async throws {
        try await withTemporaryLog { log, _ in
            let (task, _) = try await Self.startWaiter(log, .all)
            log.endSubscriptions()
            let error = await #expect(throws: EventLogError.self) { try await task.value }
            #expect(error?.code == .closed)
            let later = await #expect(throws: EventLogError.self) {
                try await log.waitForCommit(after: log.head, selectors: .all)
            }
            #expect(later?.code == .closed)
            #expect(try await log.append(NewEvent(topic: "a", data: .text("x"))).event.id == 1)
        }
    }

    @Test("closing the log ends pending waits with closed")
    func closeEndsWaits() async throws {
        try await withTemporaryDirectory { directory in
            let log = try await EventLog.open(path: directory.path("events.db"))
            let (task, _) = try await Self.startWaiter(log, try SelectorSet(parsing: ["orders/*"]))
            await log.close()
            let error = await #expect(throws: EventLogError.self) { try await task.value }
            #expect(error?.code == .closed)
        }
    }
}

/// A flag that one task sets and another reads.
final class Flag: Sendable {
    private let mutex = Mutex(false)
    var value: Bool { mutex.withLock { $0 } }
    func set() { mutex.withLock { $0 = true } }
}
