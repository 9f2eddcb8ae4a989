import Synchronization

/// Wakes the subscribers that wait for a commit touching their selectors.
///
/// Waiters are indexed by exact topic, by prefix and for `*`, so a commit wakes only the waiters it
/// concerns. The notifier keeps its own `head` under the same lock as the waiters: a waiter whose
/// position is already below it returns at once, so a commit that lands between a reader's last
/// read and its wait is never missed.
final class CommitNotifier: Sendable {
    /// Why a wait ended without a matching commit.
    enum WaitError: Error {
        /// The log is closing; the subscriber should end its stream.
        case closed
    }

    private struct Waiter {
        let continuation: CheckedContinuation<Void, Error>
        let selectors: SelectorSet
    }

    private struct State {
        var head: Int64
        var closed = false
        var nextID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var exact: [String: Set<UInt64>] = [:]
        var prefix: [String: Set<UInt64>] = [:]
        var all: Set<UInt64> = []
        var cancelledBeforeRegistration: Set<UInt64> = []

        mutating func remove(_ id: UInt64) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            for selector in waiter.selectors.selectors {
                switch selector {
                case .all: all.remove(id)
                case .topic(let topic): exact.removeEntry(id, for: topic)
                case .prefix(let value): prefix.removeEntry(id, for: value)
                }
            }
            return waiter
        }
    }

    private let state: Mutex<State>

    init(head: Int64) {
        state = Mutex(State(head: head))
    }

    /// Number of subscribers waiting now.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Returns when an event with an id above `position` that matches `selectors` may have been
    /// committed. It can return early (after any commit the notifier cannot rule out); callers read
    /// and wait again. Throws `CancellationError` when the task is cancelled and
    /// ``WaitError/closed`` when the log closes.
    func wait(after position: Int64, selectors: SelectorSet) async throws {
        let id = state.withLock { state -> UInt64 in
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
                    state.waiters[id] = Waiter(continuation: continuation, selectors: selectors)
                    for selector in selectors.selectors {
                        switch selector {
                        case .all: state.all.insert(id)
                        case .topic(let topic): state.exact[topic, default: []].insert(id)
                        case .prefix(let prefix): state.prefix[prefix, default: []].insert(id)
                        }
                    }
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
            let waiter = state.withLock { state -> Waiter? in
                if let waiter = state.remove(id) { return waiter }
                state.cancelledBeforeRegistration.insert(id)
                return nil
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
        // A cancellation that raced with a wake-up leaves a stale mark behind; clear it.
        _ = state.withLock { $0.cancelledBeforeRegistration.remove(id) }
    }

    /// Records a commit of `events` (ids ascending) up to `head` and wakes the waiters they concern.
    func committed(_ events: [Event], head: Int64) {
        let woken = state.withLock { state -> [Waiter] in
            state.head = max(state.head, head)
            guard !state.waiters.isEmpty else { return [] }
            var ids: Set<UInt64> = state.all
            var seenTopics: Set<String> = []
            for event in events where seenTopics.insert(event.topic).inserted {
                if let exact = state.exact[event.topic] { ids.formUnion(exact) }
                guard !state.prefix.isEmpty else { continue }
                // Every proper prefix of the topic that ends before a '/'.
                let utf8 = event.topic.utf8
                var index = utf8.startIndex
                while index != utf8.endIndex {
                    if utf8[index] == UInt8(ascii: "/") {
                        let prefix = String(event.topic[..<index])
                        if let matched = state.prefix[prefix] { ids.formUnion(matched) }
                    }
                    index = utf8.index(after: index)
                }
            }
            return ids.compactMap { state.remove($0) }
        }
        for waiter in woken { waiter.continuation.resume() }
    }

    /// Wakes every waiter, for changes that can concern anyone (another process wrote, retention ran).
    func wakeAll(head: Int64) {
        let woken = state.withLock { state -> [Waiter] in
            state.head = max(state.head, head)
            return Array(state.waiters.keys).compactMap { state.remove($0) }
        }
        for waiter in woken { waiter.continuation.resume() }
    }

    /// Ends every wait with ``WaitError/closed``, now and from now on.
    func close() {
        let woken = state.withLock { state -> [Waiter] in
            state.closed = true
            return Array(state.waiters.keys).compactMap { state.remove($0) }
        }
        for waiter in woken { waiter.continuation.resume(throwing: WaitError.closed) }
    }

    /// Lets waits start again after ``close()`` (used when a server reopens streams); not normally needed.
    var isClosed: Bool { state.withLock { $0.closed } }
}

extension Dictionary where Value == Set<UInt64> {
    fileprivate mutating func removeEntry(_ id: UInt64, for key: Key) {
        guard var set = self[key] else { return }
        set.remove(id)
        self[key] = set.isEmpty ? nil : set
    }
}
