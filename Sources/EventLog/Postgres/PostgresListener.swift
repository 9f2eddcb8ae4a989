import Foundation
import Logging
import Synchronization

/// A thread with its own connection that `LISTEN`s for the other nodes' commits (`eventlog`, payload the new
/// head) and for `eventlog.publish` (`eventlog_outbox`), and hands each notification to `onNotify` with the
/// process id of the backend that sent it.
///
/// When the connection is lost it reconnects, every half second until PostgreSQL answers, and then reports
/// ``reconnectedChannel``: the store catches up from its last known head, so a notification lost meanwhile only
/// delays delivery.
final class PostgresListener: Sendable {
    static let commitChannel = "eventlog"
    static let outboxChannel = "eventlog_outbox"
    /// Not a PostgreSQL channel: reported after every (re)connection.
    static let reconnectedChannel = ""

    private final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    private let stopping = Flag()
    private let exited = DispatchSemaphore(value: 0)

    init(url: String, logger: Logger, onNotify: @escaping @Sendable (String, String, Int32) -> Void) {
        let thread = Thread { [stopping, exited] in
            Self.run(url: url, logger: logger, stopping: stopping, onNotify: onNotify)
            exited.signal()
        }
        thread.name = "eventlog-pg-listener"
        thread.start()
    }

    /// Stops listening and waits for the thread to end.
    func stop() {
        stopping.raised.store(true, ordering: .relaxed)
        exited.wait()
    }

    private static func run(
        url: String, logger: Logger, stopping: Flag,
        onNotify: @Sendable (String, String, Int32) -> Void
    ) {
        var connection: PGConnection?
        var lostSince: ContinuousClock.Instant?
        while !stopping.raised.load(ordering: .relaxed) {
            if connection == nil {
                do {
                    let opened = try PGConnection(url: url)
                    try opened.execute("LISTEN \(commitChannel); LISTEN \(outboxChannel)")
                    connection = opened
                    if lostSince != nil {
                        logger.info("listening again for other nodes' commits")
                        lostSince = nil
                    }
                    onNotify(reconnectedChannel, "", 0)
                } catch {
                    if lostSince == nil {
                        logger.warning("cannot listen for other nodes' commits", metadata: ["error": "\(error)"])
                        lostSince = .now
                    }
                    Thread.sleep(forTimeInterval: 0.5)
                    continue
                }
            }
            guard let current = connection else { continue }
            var descriptor = pollfd(fd: current.socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 200)
            if ready < 0 && errno == EINTR { continue }
            do {
                // Also with nothing ready: notifications may already sit in libpq's buffer.
                for (channel, payload, sender) in try current.notifications() { onNotify(channel, payload, sender) }
            } catch {
                logger.warning(
                    "lost the connection that listens for other nodes' commits", metadata: ["error": "\(error)"])
                lostSince = .now
                current.close()
                connection = nil
            }
        }
        connection?.close()
    }
}
