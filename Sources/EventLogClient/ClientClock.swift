import NIOCore

/// The time source of the client's own timers: a subscription's idle timeout and reconnect backoff, a request's
/// timeout, the age of an idle keep-alive connection, and `collect`'s timeout.
///
/// The client runs on ``EventLoopClock`` (the event loops' timers, `Task.sleep`). Tests put a clock of their own
/// behind ``ClockTimers`` so that a timeout passes when the test advances that clock, not whenever a busy machine
/// gets round to it. The TCP connect timeout stays with NIO: it only bounds a hang.
protocol ClientClock: Sendable {
    /// The time since a fixed point, to measure how long something has waited.
    var uptime: Duration { get }

    /// Calls `body` on `eventLoop` once `delay` has passed, unless the returned timer is cancelled first.
    ///
    /// Call it on `eventLoop`, and cancel the timer there: after ``ClientTimer/cancel()``, `body` never runs.
    func schedule(in delay: Duration, on eventLoop: any EventLoop, _ body: @escaping () -> Void) -> ClientTimer

    /// Suspends for `delay`; throws `CancellationError` when the task is cancelled first.
    func sleep(for delay: Duration) async throws
}

/// A pending timer from ``ClientClock/schedule(in:on:_:)``.
struct ClientTimer {
    private let cancelTimer: () -> Void

    init(cancel: @escaping () -> Void) {
        self.cancelTimer = cancel
    }

    /// Stops the timer; call it on the event loop the timer was scheduled on.
    func cancel() {
        self.cancelTimer()
    }
}

/// The client's clock outside tests: NIO's scheduled tasks on the connection's event loop, and `Task.sleep`.
struct EventLoopClock: ClientClock {
    var uptime: Duration {
        .nanoseconds(NIODeadline.now().uptimeNanoseconds)
    }

    func schedule(in delay: Duration, on eventLoop: any EventLoop, _ body: @escaping () -> Void) -> ClientTimer {
        let scheduled = eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay), body)
        return ClientTimer { scheduled.cancel() }
    }

    func sleep(for delay: Duration) async throws {
        try await Task.sleep(for: delay)
    }
}

/// The client's timers on any `Clock`, such as a test clock that moves only when the test advances it.
struct ClockTimers<C: Clock<Duration>>: ClientClock {
    let clock: C
    private let origin: C.Instant

    init(_ clock: C) {
        self.clock = clock
        self.origin = clock.now
    }

    var uptime: Duration {
        self.origin.duration(to: self.clock.now)
    }

    func schedule(in delay: Duration, on eventLoop: any EventLoop, _ body: @escaping () -> Void) -> ClientTimer {
        let body = NIOLoopBound(body, eventLoop: eventLoop)
        // The clock may wake the sleeper just as the timer is cancelled; the flag, read and written only on the
        // event loop, keeps a cancelled timer from firing all the same.
        let cancelled = NIOLoopBoundBox(false, eventLoop: eventLoop)
        let clock = self.clock
        let task = Task {
            try await clock.sleep(for: delay)
            eventLoop.execute {
                if !cancelled.value {
                    body.value()
                }
            }
        }
        return ClientTimer {
            cancelled.value = true
            task.cancel()
        }
    }

    func sleep(for delay: Duration) async throws {
        try await self.clock.sleep(for: delay)
    }
}
