import Synchronization

/// What the log tells its commit listeners (``EventLog/addCommitListener(_:)``). Listeners are called on the
/// writer (or the caller of ``EventLog/refreshBounds()``), after the tail holds the events, so a read made once
/// the signal arrives sees them.
public enum CommitSignal: Sendable {
    /// These events (ids ascending) were committed; the head is now `head`.
    case committed([Event], head: Int64)
    /// Something that can concern any subscriber changed (another process wrote, maintenance removed rows).
    case changed(head: Int64)
    /// Subscriptions end: the server is shutting down or the log closed.
    case closed
}

/// Wakes the subscribers that wait for a commit touching their selectors.
///
/// Two kinds of subscribers: awaiting readers (``wait(after:selectors:)``, used by followers such as the CLI),
/// indexed by selector so a commit wakes only those it concerns, and listeners (a server's event loops), each
/// called once per commit to wake the subscribers it keeps itself. The notifier keeps its own `head` under the
/// same lock as the waiters: a waiter whose position is already below it returns at once, so a commit that
/// lands between a reader's last read and its wait is never missed.
final class CommitNotifier: Sendable {
    /// Why a wait ended without a matching commit.
    enum WaitError: Error {
        /// The log is closing; the subscriber should end its stream.
        case closed
    }

    private struct State {
        var head: Int64
        var closed = false
        var nextID = 0
        var continuations: [Int: CheckedContinuation<Void, Error>] = [:]
        var index = SelectorIndex()
        var cancelledBeforeRegistration: Set<Int> = []
        var listeners: [Int: @Sendable (CommitSignal) -> Void] = [:]

        mutating func remove(_ id: Int) -> CheckedContinuation<Void, Error>? {
            index.remove(id)
            return continuations.removeValue(forKey: id)
        }

        mutating func removeAllWaiters() -> [CheckedContinuation<Void, Error>] {
            _ = index.removeAll()
            defer { continuations.removeAll() }
            return Array(continuations.values)
        }
    }

    private let state: Mutex<State>

    init(head: Int64) {
        state = Mutex(State(head: head))
    }

    /// Number of awaiting readers now.
    var waiterCount: Int { state.withLock { $0.continuations.count } }

    /// Calls `listener` with every later signal until ``removeListener(_:)``; a listener added after
    /// ``close()`` is told `closed` at once.
    func addListener(_ listener: @escaping @Sendable (CommitSignal) -> Void) -> Int {
        let (id, closed) = state.withLock { state -> (Int, Bool) in
            state.nextID += 1
            state.listeners[state.nextID] = listener
            return (state.nextID, state.closed)
        }
        if closed { listener(.closed) }
        return id
    }

    func removeListener(_ id: Int) {
        _ = state.withLock { $0.listeners.removeValue(forKey: id) }
    }

    /// Returns when an event with an id above `position` that matches `selectors` may have been
    /// committed. It can return early (after any commit the notifier cannot rule out); callers read
    /// and wait again. Throws `CancellationError` when the task is cancelled and
    /// ``WaitError/closed`` when the log closes.
    func wait(after position: Int64, selectors: SelectorSet) async throws {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                enum Outcome { case wait, ready, cancelled, closed }
                let outcome = state.withLock { state -> Outcome in
                    if state.cancelledBeforeRegistration.remove(id) != nil { return .cancelled }
                    if state.closed { return .closed }
                    if state.head > position { return .ready }
                    state.continuations[id] = continuation
                    state.index.insert(id, selectors: selectors)
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .ready: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .closed: continuation.resume(throwing: WaitError.closed)
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Error>? in
                if let waiter = state.remove(id) { return waiter }
                state.cancelledBeforeRegistration.insert(id)
                return nil
            }
            waiter?.resume(throwing: CancellationError())
        }
        // A cancellation that raced with a wake-up leaves a stale mark behind; clear it.
        _ = state.withLock { $0.cancelledBeforeRegistration.remove(id) }
    }

    /// Records a commit of `events` (ids ascending) up to `head` and wakes the waiters they concern.
    func committed(_ events: [Event], head: Int64) {
        let (woken, listeners) = state.withLock { state in
            state.head = max(state.head, head)
            let woken = state.index.removeMatching(events).compactMap { state.continuations.removeValue(forKey: $0) }
            return (woken, Array(state.listeners.values))
        }
        for waiter in woken { waiter.resume() }
        for listener in listeners { listener(.committed(events, head: head)) }
    }

    /// Wakes every waiter, for changes that can concern anyone (another process wrote, retention ran).
    func wakeAll(head: Int64) {
        let (woken, listeners) = state.withLock { state in
            state.head = max(state.head, head)
            return (state.removeAllWaiters(), Array(state.listeners.values))
        }
        for waiter in woken { waiter.resume() }
        for listener in listeners { listener(.changed(head: head)) }
    }

    /// Ends every wait with ``WaitError/closed``, now and from now on.
    func close() {
        let (woken, listeners) = state.withLock { state in
            state.closed = true
            return (state.removeAllWaiters(), Array(state.listeners.values))
        }
        for waiter in woken { waiter.resume(throwing: WaitError.closed) }
        for listener in listeners { listener(.closed) }
    }

    /// True once ``close()`` ran.
    var isClosed: Bool { state.withLock { $0.closed } }
}
