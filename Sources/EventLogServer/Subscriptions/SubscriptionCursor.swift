import EventLog
import NIOCore

/// The cursor of one subscription (ARCHITECTURE.md, "The read path"), as a state machine with no I/O.
///
/// A subscriber is `(position, selectors)`. It reads the page after its position, writes it, advances, and
/// when nothing is left waits for a commit that concerns its selectors. Replay and live are the same loop, so
/// nothing is missed or sent twice at the boundary, whatever is published meanwhile.
///
/// The driver (``Subscriber``, on its channel's event loop) feeds in what happened (bounds fetched, a page read,
/// a commit, a timer tick, shutdown) and asks ``next(now:writable:)`` what to do, one step at a time, until the
/// answer is ``Action/idle`` or a wait. Writes are handed out one output at a time and only while the channel
/// is writable, so a subscriber that stops reading holds at most one page of event references (the encoded
/// frames are shared) and whatever its channel buffered below the high-water mark.
struct SubscriptionCursor {
    /// What the subscriber is told, in order.
    enum Output: Equatable, Sendable {
        /// The first message: the log's epoch and range, and where this subscription starts.
        case opened(epoch: String, earliest: Int64, head: Int64, from: Int64)
        /// The requested position is above the head (another epoch, a restored log).
        case reset(requested: Int64, head: Int64, epoch: String)
        /// Retention removed events matching the selectors after `requested` before they were sent; the last of
        /// them was `earliest - 1`. The stream goes on with what is left after `requested`.
        case gap(requested: Int64, earliest: Int64)
        /// One event; `replayed` until the cursor has caught up once.
        case event(Event, replayed: Bool)
        /// The cursor reached the head for the first time.
        case caughtUp(position: Int64)
        /// Nothing was sent for the keepalive interval.
        case keepalive
    }

    /// Why a subscription ends.
    enum Ending: Equatable, Sendable {
        /// The channel stayed unwritable with something to send for the stall timeout.
        case stalled
        /// The server is shutting down or the log closed: end the stream cleanly.
        case shutdown
        /// The deadline passed (the caller's token expired): end the stream cleanly.
        case expired
        /// A read failed.
        case failed(EventLogError)
    }

    /// One step for the driver.
    enum Action: Equatable, Sendable {
        /// Read the log's bounds and resolve the start (``Opening``), then call ``boundsFetched(_:)``.
        case fetchBounds
        /// Write this output (the driver flushes when it next gets `idle` or a wait).
        case write(Output)
        /// Read the page after `after`, then call ``pageRead(_:)`` (or ``readFailed(_:)``).
        case read(after: Int64, limit: Int)
        /// Read the snapshot page after `after` (``EventLog/readSnapshot(after:selectors:limit:)``), then call
        /// ``pageRead(_:)`` (or ``readFailed(_:)``).
        case readSnapshot(after: Int64, limit: Int)
        /// Register for a commit above `after`; call ``committed()`` when one may concern this subscriber.
        case wait(after: Int64)
        /// Nothing to do until the next input.
        case idle
        /// Stop: the subscription is over.
        case end(Ending)
    }

    /// What the driver found out for ``Action/fetchBounds``.
    struct Opening: Equatable, Sendable {
        var epoch: String
        var earliest: Int64
        var head: Int64
        /// For `since` and `rewind`: the position the start resolves to.
        var resolved: Int64?
        /// For `earliest` and `rewind`: what retention removed of the selectors' events so far (removals before
        /// the subscription are no gap for a start that asks for whatever is retained).
        var removed = RemovalMark()
        /// For `after`: the position names no event of this log (a restore skipped it).
        var void = false
    }

    private enum Phase: Equatable {
        case needsBounds, fetchingBounds, needsRead, reading, needsWait, waiting, ended
        /// A read failed with `storage_unavailable` (the database is down): try again after ``retryInterval``.
        case backingOff
    }

    /// How long a subscriber waits before it reads again after the store could not be read.
    static let retryInterval: TimeAmount = .seconds(1)

    let start: CursorStart
    /// A position from another epoch's resume token, announced with `reset` after `opened`.
    let resetNotice: Int64?
    let pageSize: Int
    /// `nil`: no keepalive output (WebSocket pings are the socket's own).
    let keepalive: TimeAmount?
    let stallTimeout: TimeAmount
    /// When the subscription ends by itself (the caller's token expires), if it does.
    let deadline: NIODeadline?

    private var phase = Phase.needsBounds
    /// What the subscriber has been sent up to (the id of its last event, or where it started).
    private(set) var position: Int64 = 0
    private(set) var caughtUp = false
    /// The log's earliest id as the last page (or the bounds) said.
    private(set) var knownEarliest: Int64 = 1
    /// Reading the snapshot (`snapshot=latest`) until it reaches the head.
    private(set) var snapshotting = false
    /// The removal watermark already accounted for: a gap is due when a page's is above both it and the
    /// position.
    private var gapThrough: Int64 = 0
    /// For a start of `earliest` or `rewind`: the watermark when the stream opened. While the position is below
    /// it, a removal of the selectors' events below it would not raise the watermark, so a change of
    /// ``knownRemovals`` is taken as a gap (it may be one: the safe side).
    private var openedThrough: Int64 = 0
    /// The selectors' count of removal transactions, as the last store page (or the opening) said.
    private var knownRemovals: Int64 = 0
    private var outbox: [Output] = []
    private var sent = 0
    private var lastWrite: NIODeadline
    /// Since when the cursor has had something to do that the channel's backpressure held back.
    private var blockedSince: NIODeadline?
    private var ending: Ending?
    /// While backing off: the phase to go back to, and when (set at the first tick after the failure).
    private var retryPhase = Phase.needsRead
    private var retryAt: NIODeadline?

    init(
        start: CursorStart, resetNotice: Int64? = nil, pageSize: Int, keepalive: TimeAmount?,
        stallTimeout: TimeAmount, deadline: NIODeadline? = nil, now: NIODeadline
    ) {
        self.start = start
        self.resetNotice = resetNotice
        self.pageSize = max(1, pageSize)
        self.keepalive = keepalive
        self.stallTimeout = stallTimeout
        self.deadline = deadline
        self.lastWrite = now
    }

    /// True once the cursor has ended (``Action/end(_:)`` was handed out).
    var isEnded: Bool { phase == .ended }

    /// Outputs waiting for the channel.
    var pendingOutputs: Int { outbox.count - sent }

    /// The next step. Call it again after each `write` and `read` answered synchronously, until `idle`, a
    /// wait or the end.
    mutating func next(now: NIODeadline, writable: Bool) -> Action {
        if phase == .ended { return .idle }
        if let ending {
            phase = .ended
            outbox.removeAll()
            sent = 0
            return .end(ending)
        }
        if sent < outbox.count {
            guard writable else { return blocked(now) }
            blockedSince = nil
            let output = outbox[sent]
            sent += 1
            if sent == outbox.count {
                outbox.removeAll(keepingCapacity: outbox.count <= 64)
                sent = 0
            }
            lastWrite = now
            return .write(output)
        }
        switch phase {
        case .needsBounds:
            phase = .fetchingBounds
            return .fetchBounds
        case .needsRead:
            // Backpressure: the next page is read only once the channel takes more.
            guard writable else { return blocked(now) }
            blockedSince = nil
            phase = .reading
            return snapshotting
                ? .readSnapshot(after: position, limit: pageSize) : .read(after: position, limit: pageSize)
        case .needsWait:
            blockedSince = nil
            phase = .waiting
            return .wait(after: position)
        case .fetchingBounds, .reading, .waiting, .ended, .backingOff:
            return .idle
        }
    }

    private mutating func blocked(_ now: NIODeadline) -> Action {
        if blockedSince == nil { blockedSince = now }
        return .idle
    }

    /// The log's bounds, read when the subscription opens: decides the start position and the notices.
    mutating func boundsFetched(_ opening: Opening) {
        guard phase == .fetchingBounds, ending == nil else { return }
        let (earliest, head) = (opening.earliest, opening.head)
        var reset: Int64?
        switch start {
        case .live:
            position = head
        case .earliest:
            position = earliest - 1
            (gapThrough, openedThrough, knownRemovals) = (
                opening.removed.through, opening.removed.through, opening.removed.count
            )
        case .after(let requested):
            if requested > head || opening.void {
                reset = requested
                position = head
            } else {
                // Matching events removed after `requested` show up as the first page's gap.
                position = requested
            }
        case .snapshot:
            position = 0
            snapshotting = true
        case .since:
            position = min(opening.resolved ?? head, head)
        case .rewind:
            position = min(opening.resolved ?? head, head)
            (gapThrough, openedThrough, knownRemovals) = (
                opening.removed.through, opening.removed.through, opening.removed.count
            )
        }
        knownEarliest = earliest
        outbox.append(.opened(epoch: opening.epoch, earliest: earliest, head: head, from: position))
        if let requested = resetNotice ?? reset {
            outbox.append(.reset(requested: requested, head: head, epoch: opening.epoch))
        }
        phase = .needsRead
    }

    /// ``boundsFetched(_:)`` for a start that needs nothing resolved (live, earliest on a log without removals,
    /// after).
    mutating func boundsFetched(epoch: String, earliest: Int64, head: Int64) {
        boundsFetched(Opening(epoch: epoch, earliest: earliest, head: head))
    }

    /// Where the next read will start, when the cursor's next step is a read (after its outputs are written).
    var nextRead: Int64? {
        phase == .needsRead && ending == nil && !snapshotting ? position : nil
    }

    /// The page after ``position`` (from the tail or the store).
    mutating func pageRead(_ page: HistoryPage) {
        guard phase == .reading, ending == nil else { return }
        knownEarliest = max(knownEarliest, page.earliest)
        if page.removedThrough > max(position, gapThrough) {
            // Retention removed events of this subscriber's selectors that it had not read yet. What is left
            // after its position follows (another topic under the same prefix may have lost nothing).
            outbox.append(.gap(requested: position, earliest: page.removedThrough + 1))
            gapThrough = page.removedThrough
        } else if position < openedThrough && page.removals > knownRemovals {
            // Retention removed some of its events since it opened, below the watermark it opened with: whether
            // above the position the watermark cannot tell, so the subscriber is told (at most up to it).
            outbox.append(.gap(requested: position, earliest: max(page.removedThrough, openedThrough) + 1))
        }
        knownRemovals = max(knownRemovals, page.removals)
        if !page.events.isEmpty {
            for event in page.events { outbox.append(.event(event, replayed: !caughtUp)) }
            position = page.next
        } else {
            position = max(position, page.next)
        }
        guard position >= page.head else {
            phase = .needsRead
            return
        }
        // A snapshot that reached the head has sent the newest event of every key as of it: the tail follows.
        snapshotting = false
        if !caughtUp {
            caughtUp = true
            outbox.append(.caughtUp(position: position))
        }
        phase = .needsWait
    }

    /// A read (or the bounds) failed. When the store is unavailable (a database restart or outage), the
    /// subscription stays open, sends its keepalives, and reads again from where it was after
    /// ``retryInterval``: nothing is skipped or sent twice. Any other failure ends it.
    mutating func readFailed(_ error: EventLogError) {
        guard ending == nil else { return }
        if error.code == .storageUnavailable, phase == .reading || phase == .fetchingBounds {
            retryPhase = phase == .reading ? .needsRead : .needsBounds
            phase = .backingOff
            retryAt = nil
            return
        }
        ending = error.code == .closed ? .shutdown : .failed(error)
    }

    /// A commit that may concern this subscriber (or any change of the log): read again.
    mutating func committed() {
        guard phase == .waiting else { return }
        phase = .needsRead
    }

    /// The event loop's sweep: keepalive when idle, the stall timeout, the deadline.
    mutating func tick(now: NIODeadline) {
        guard phase != .ended, ending == nil else { return }
        if phase == .backingOff {
            if let retryAt, now >= retryAt {
                phase = retryPhase
                self.retryAt = nil
            } else if retryAt == nil {
                retryAt = now + Self.retryInterval
            }
        }
        if let deadline, now >= deadline {
            ending = .expired
        } else if let blockedSince, now - blockedSince >= stallTimeout {
            ending = .stalled
        } else if let keepalive, phase == .waiting || phase == .backingOff, pendingOutputs == 0,
            now - lastWrite >= keepalive
        {
            outbox.append(.keepalive)
        }
    }

    /// The subscription was stopped from outside (the channel closed, or it was replaced): no more actions.
    mutating func cancel() {
        phase = .ended
        outbox.removeAll()
        sent = 0
    }

    /// The server is shutting down: end now, even in the middle of a replay.
    mutating func shutdown() {
        guard phase != .ended, ending == nil else { return }
        ending = .shutdown
    }
}
