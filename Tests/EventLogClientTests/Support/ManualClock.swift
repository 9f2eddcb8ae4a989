import Synchronization
import Testing

/// A clock that moves only when the test advances it, so a timer fires exactly when the test says and never
/// because a busy machine was slow.
///
/// Sleepers wait until ``advance(by:)`` moves the time to or past their deadline. ``deadlines`` shows who is
/// waiting, so a test can check that a timer is armed for exactly the configured time before it lets it fire.
final class ManualClock: Clock {
    struct Instant: InstantProtocol {
        /// The time since the clock was created.
        var offset: Duration

        func advanced(by duration: Duration) -> Instant {
            Instant(offset: self.offset + duration)
        }

        func duration(to other: Instant) -> Duration {
            other.offset - self.offset
        }

        static func < (lhs: Instant, rhs: Instant) -> Bool {
            lhs.offset < rhs.offset
        }
    }

    private struct Sleeper {
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [UInt64: Sleeper] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    var now: Instant {
        self.state.withLock { $0.now }
    }

    var minimumResolution: Duration { .nanoseconds(1) }

    /// The deadlines of the pending sleepers, as offsets from the clock's start, earliest first.
    var deadlines: [Duration] {
        self.state.withLock { $0.sleepers.values.map(\.deadline.offset).sorted() }
    }

    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = self.state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Registering under the lock that cancellation takes, after checking for it, means a cancelled
                // sleeper either never registers or is found and woken by the cancellation handler.
                let outcome: Result<Void, any Error>? = self.state.withLock { state in
                    if Task.isCancelled {
                        return .failure(CancellationError())
                    }
                    if deadline <= state.now {
                        return .success(())
                    }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return nil
                }
                if let outcome {
                    continuation.resume(with: outcome)
                }
            }
        } onCancel: {
            let sleeper = self.state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the time forward and wakes every sleeper whose deadline it reached.
    func advance(by duration: Duration) {
        let due = self.state.withLock { state in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.value.deadline <= now }
            for id in due.keys {
                state.sleepers[id] = nil
            }
            return due.values.map(\.continuation)
        }
        for continuation in due {
            continuation.resume()
        }
    }

    /// Waits until `count` sleepers are pending and returns their deadlines, earliest first.
    ///
    /// The code under test arms its timers on other threads; this waits for that to happen. The bound only keeps
    /// a broken test from hanging: it is not part of what any test measures.
    func waitForSleepers(_ count: Int, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [Duration] {
        let bound = ContinuousClock.now + .seconds(60)
        while true {
            let deadlines = self.deadlines
            if deadlines.count >= count {
                return deadlines
            }
            guard ContinuousClock.now < bound else {
                Issue.record("\(count) sleepers never arrived; pending: \(deadlines)", sourceLocation: sourceLocation)
                throw SleepersMissing()
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}

/// Thrown when the sleepers a test waits for never arrive.
struct SleepersMissing: Error {}
