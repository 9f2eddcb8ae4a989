import EventLog

/// Where the cursor starts: a client's ``StartPosition`` once a resume token is resolved to its id.
enum CursorStart: Equatable, Sendable {
    /// Only events committed after the subscription opens.
    case live
    /// Everything retained. Never produces a gap.
    case earliest
    /// Events after this id (what the client saw last).
    case after(Int64)

    /// The start of a position id: 0 is everything retained.
    init(after id: Int64) {
        self = id == 0 ? .earliest : .after(id)
    }
}

/// What a subscription's transport (SSE or WebSocket) does with each step of the cursor loop.
/// Every method awaits the transport's writability: that is the backpressure.
protocol SubscriptionSink: Sendable {
    func open(epoch: String, earliest: Int64, head: Int64, from: Int64) async throws
    func gap(requested: Int64, earliest: Int64) async throws
    func reset(requested: Int64, head: Int64, epoch: String) async throws
    /// A page of events, in id order; `position` is where the subscriber now stands.
    func deliver(_ events: [Event], position: Int64, replayed: Bool) async throws
    func caughtUp(position: Int64) async throws
    func keepalive() async throws
}

/// The one cursor loop for replay and live tail (ARCHITECTURE.md, "The read path").
///
/// A subscriber is `(position, selectors)`. It reads the page after its position (from the
/// in-memory tail or from disk), writes it, advances, and when nothing is left waits for a commit
/// that concerns its selectors. Replay and live are the same loop, so nothing is missed or sent twice
/// at the boundary, whatever is published meanwhile.
struct SubscriptionLoop: Sendable {
    let log: EventLog
    let selectors: SelectorSet
    let start: CursorStart
    let pageSize: Int
    let keepalive: Duration
    let metrics: Metrics

    /// Runs until the sink throws, the task is cancelled, or the log stops subscriptions.
    func run(_ sink: some SubscriptionSink) async throws {
        let bounds = try await log.refreshBounds()
        var position: Int64
        var notice: (gap: Int64?, reset: Int64?) = (nil, nil)
        switch start {
        case .live:
            position = bounds.head
        case .earliest:
            position = bounds.earliest - 1
        case .after(let requested):
            if requested > bounds.head {
                notice.reset = requested
                position = bounds.head
            } else if requested < bounds.earliest - 1 {
                notice.gap = requested
                position = bounds.earliest - 1
            } else {
                position = requested
            }
        }
        try await sink.open(epoch: log.epoch, earliest: bounds.earliest, head: bounds.head, from: position)
        if let requested = notice.reset {
            try await sink.reset(requested: requested, head: bounds.head, epoch: log.epoch)
        }
        if let requested = notice.gap {
            try await sink.gap(requested: requested, earliest: bounds.earliest)
        }
        var caughtUp = false
        while true {
            try Task.checkCancellation()
            let page = try await log.read(after: position, selectors: selectors, limit: pageSize)
            if position < page.earliest - 1 {
                // Retention removed events this subscriber had not read yet.
                try await sink.gap(requested: position, earliest: page.earliest)
                position = page.earliest - 1
                continue
            }
            if !page.events.isEmpty {
                position = page.next
                try await sink.deliver(page.events, position: position, replayed: !caughtUp)
                metrics.delivered(page.events.count, replayed: !caughtUp)
            } else {
                position = max(position, page.next)
            }
            guard position >= page.head else { continue }
            if !caughtUp {
                caughtUp = true
                try await sink.caughtUp(position: position)
            }
            if try await waitForCommit(after: position) == .timedOut {
                try await sink.keepalive()
            }
        }
    }

    private enum WaitOutcome: Sendable { case committed, timedOut }

    private func waitForCommit(after position: Int64) async throws -> WaitOutcome {
        let log = self.log
        let selectors = self.selectors
        let keepalive = self.keepalive
        return try await withThrowingTaskGroup(of: WaitOutcome.self) { group in
            group.addTask {
                try await log.waitForCommit(after: position, selectors: selectors)
                return .committed
            }
            group.addTask {
                try await Task.sleep(for: keepalive)
                return .timedOut
            }
            defer { group.cancelAll() }
            return try await group.next() ?? .committed
        }
    }
}
