import CSQLite
import Foundation

/// A busy handler that polls the writer lock every 100 µs, on the server's writer connection and on the
/// maintenance tool's.
///
/// SQLite has no queue for its writer lock: a connection that finds it taken sleeps in its busy handler
/// and tries again. The default handler (`sqlite3_busy_timeout`) sleeps 1, 2, 5, 10 ... up to 100 ms between
/// tries. A server that appends all the time holds the lock for nearly all of each group commit, freeing
/// it for a few microseconds between two: sleeping that long, the tool would almost never try at the right
/// moment and would fail after the timeout; polling often, it gets in within milliseconds. The other way
/// round, a group commit that finds a maintenance transaction in the lock would sleep up to 8 ms past the
/// moment it is free (1 + 2 + 5); polling, the publishes it carries wait only as long as the lock is held.
/// See https://sqlite.org/c3ref/busy_handler.html.
final class BusyPoller {
    private let timeout: Duration
    private var firstBusy: ContinuousClock.Instant?

    /// Installs a poller on `connection` that gives up after `timeout`. Keep it alive as long as the
    /// connection is open.
    init(connection: Connection, timeout: Duration) {
        self.timeout = timeout
        let handler: @convention(c) (UnsafeMutableRawPointer?, Int32) -> Int32 = { context, attempts in
            guard let context else { return 0 }
            return Unmanaged<BusyPoller>.fromOpaque(context).takeUnretainedValue().retry(attempts: attempts)
        }
        sqlite3_busy_handler(connection.handle, handler, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Called by SQLite on the connection's thread; `attempts` is 0 on the first call for one lock.
    private func retry(attempts: Int32) -> Int32 {
        let now = ContinuousClock.now
        if attempts == 0 { firstBusy = now }
        guard let firstBusy, now - firstBusy < timeout else { return 0 }
        usleep(100)
        return 1
    }
}

@available(*, unavailable)
extension BusyPoller: Sendable {}
