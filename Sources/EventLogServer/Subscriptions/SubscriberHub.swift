import EventLog
import NIOCore
import Synchronization

/// The subscribers that live on one event loop, and what wakes them.
///
/// There is one hub per event loop of the server. A commit reaches a hub as one task scheduled on its loop
/// (not one continuation per subscriber); the hub then wakes the subscribers whose selectors the commit
/// concerns, from its ``SelectorIndex``. One repeated timer per hub sweeps its subscribers for keepalives,
/// stalls and deadlines, instead of a timer each. Everything here runs on the hub's loop.
final class SubscriberHub: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let sweepInterval: TimeAmount
    /// Subscribers, read from the writer thread to skip hubs that have none.
    private let population = Atomic<Int>(0)

    // Loop-bound state (the class is `@unchecked Sendable` for it: every access asserts the loop).
    private var subscribers: [Int: Subscriber] = [:]
    private var nextID = 0
    /// WebSocket connections, for pings and shutdown.
    private var sockets: [ObjectIdentifier: WebSocketSession] = [:]
    private var waiting = SelectorIndex()
    /// Subscribers a commit woke that have not run yet: a commit wakes them in slices of ``wakeSlice``, one
    /// task on the loop each, so that a publish on the same loop is read and answered between slices instead
    /// of after every subscriber of a big topic.
    private var woken: [Int] = []
    private var draining = false
    static let wakeSlice = 128
    /// The newest commit this loop heard of, and the head before it: a subscriber woken at that head reads its
    /// page from here, without the log's lock.
    /// `skipped` is ``skippedCommits`` when it was heard: a commit skipped since (no subscribers then) makes it
    /// stale, and a stale commit must not stand in for a read.
    private var lastCommit: (events: [Event], after: Int64, head: Int64, skipped: Int)?
    /// Commits not sent to this loop because it had no subscribers then (counted on the writer's thread).
    private let skippedCommits = Atomic<Int>(0)
    /// The frames of the newest commit's events, by kind and id, so that its subscribers on this loop do not
    /// take the frame cache's lock for each delivery.
    private var commitFrames: [FrameCache.Kind: [Int64: ByteBuffer]] = [:]
    /// The newest head a signal announced on this loop.
    private var head: Int64
    private var closed = false
    private var sweep: RepeatedTask?

    init(eventLoop: any EventLoop, head: Int64, sweepInterval: TimeAmount) {
        self.eventLoop = eventLoop
        self.head = head
        self.sweepInterval = sweepInterval
    }

    /// Called by the log's commit listener, on the writer: one task on this hub's loop per signal, and none
    /// when the hub has no subscribers (a subscriber added later reads what this commit wrote).
    func post(_ signal: CommitSignal) {
        if case .committed = signal, population.load(ordering: .relaxed) == 0 {
            skippedCommits.add(1, ordering: .sequentiallyConsistent)
            return
        }
        let skipped = skippedCommits.load(ordering: .sequentiallyConsistent)
        eventLoop.execute { self.handle(signal, skipped: skipped) }
    }

    private func handle(_ signal: CommitSignal, skipped: Int) {
        eventLoop.assertInEventLoop()
        switch signal {
        case .committed(let events, let newHead):
            // Only a commit whose ids run without a hole up to the new head can stand in for a read.
            if let first = events.first, let last = events.last, last.id == newHead,
                last.id - first.id + 1 == Int64(events.count)
            {
                lastCommit = (events, first.id - 1, newHead, skipped)
            } else {
                lastCommit = nil
            }
            commitFrames = [:]
            head = max(head, newHead)
            woken += waiting.removeMatching(events)
        case .changed(let newHead):
            lastCommit = nil
            commitFrames = [:]
            head = max(head, newHead)
            woken += waiting.removeAll()
        case .closed:
            guard !closed else { return }
            closed = true
            _ = waiting.removeAll()
            for subscriber in Array(subscribers.values) { subscriber.shutdown() }
            for socket in Array(sockets.values) { socket.shutdown() }
            return
        }
        wakeSlice()
    }

    /// Wakes the next slice of woken subscribers, and schedules the one after.
    private func wakeSlice() {
        let slice = woken.prefix(Self.wakeSlice)
        woken.removeFirst(slice.count)
        for id in slice { subscribers[id]?.committed() }
        guard !woken.isEmpty, !draining else { return }
        draining = true
        eventLoop.execute {
            self.draining = false
            self.wakeSlice()
        }
    }

    /// Adds a subscriber (before its first read). Returns false when subscriptions have ended (shutdown).
    func add(_ subscriber: Subscriber) -> Bool {
        eventLoop.assertInEventLoop()
        nextID += 1
        subscriber.hubID = nextID
        subscribers[nextID] = subscriber
        population.add(1, ordering: .relaxed)
        startSweeping()
        return !closed
    }

    /// Removes a subscriber that ended.
    func remove(_ subscriber: Subscriber) {
        eventLoop.assertInEventLoop()
        let id = subscriber.hubID
        waiting.remove(id)
        guard subscribers.removeValue(forKey: id) != nil else { return }
        population.subtract(1, ordering: .relaxed)
        stopSweepingIfIdle()
    }

    /// Adds a WebSocket connection. Returns false when the server is shutting down.
    func addSocket(_ socket: WebSocketSession) -> Bool {
        eventLoop.assertInEventLoop()
        sockets[ObjectIdentifier(socket)] = socket
        startSweeping()
        return !closed
    }

    func removeSocket(_ socket: WebSocketSession) {
        eventLoop.assertInEventLoop()
        guard sockets.removeValue(forKey: ObjectIdentifier(socket)) != nil else { return }
        stopSweepingIfIdle()
    }

    private func startSweeping() {
        guard sweep == nil else { return }
        sweep = eventLoop.scheduleRepeatedTask(initialDelay: sweepInterval, delay: sweepInterval) { _ in
            self.sweepMembers()
        }
    }

    private func stopSweepingIfIdle() {
        guard subscribers.isEmpty, sockets.isEmpty else { return }
        sweep?.cancel()
        sweep = nil
    }

    /// What ``wait(_:after:selectors:)`` did.
    enum Wait {
        /// The subscriber is registered; ``Subscriber/committed()`` comes with a commit that may concern it.
        case waiting
        /// A commit it may not have seen is already known here: read again now.
        case readAgain
        /// Subscriptions have ended.
        case closed
    }

    /// Registers `subscriber` for a commit above `position`.
    func wait(_ subscriber: Subscriber, after position: Int64, selectors: SelectorSet) -> Wait {
        eventLoop.assertInEventLoop()
        if closed { return .closed }
        guard head <= position else { return .readAgain }
        waiting.insert(subscriber.hubID, selectors: selectors)
        return .waiting
    }

    /// The page after `position` from the newest commit, when `position` is where that commit started (a
    /// subscriber that was at the head): no lock, no copy of the tail. `nil` otherwise.
    func pageFromLastCommit(after position: Int64, selectors: SelectorSet, limit: Int, earliest: Int64) -> HistoryPage?
    {
        guard let commit = lastCommit, commit.after == position, commit.events.count <= limit,
            commit.skipped == skippedCommits.load(ordering: .sequentiallyConsistent)
        else { return nil }
        let events = commit.events.filter { selectors.matches($0.topic) }
        return HistoryPage(events: events, next: commit.head, head: commit.head, earliest: earliest)
    }

    /// The frame of `event`: from this loop's copy for the newest commit, else the shared cache.
    func frame(_ event: Event, _ kind: FrameCache.Kind, cache: FrameCache) -> ByteBuffer {
        guard let commit = lastCommit, event.id > commit.after, event.id <= commit.head else {
            return cache.frame(event, kind)
        }
        if let frame = commitFrames[kind]?[event.id] { return frame }
        let frame = cache.frame(event, kind)
        commitFrames[kind, default: [:]][event.id] = frame
        return frame
    }

    /// Subscribers on this loop now (for tests and metrics).
    var count: Int { population.load(ordering: .relaxed) }

    private func sweepMembers() {
        let now = NIODeadline.now()
        for subscriber in Array(subscribers.values) { subscriber.tick(now: now) }
        for socket in Array(sockets.values) { socket.tick(now: now) }
    }
}

/// Every hub of a server, one per event loop of its group, fed by one commit listener on the log.
final class SubscriberHubs: Sendable {
    private let hubs: [ObjectIdentifier: SubscriberHub]
    private let listener: Int
    private let log: EventLog

    /// Hubs for `group`'s loops; the commit listener also moves `frames` along with the log's head.
    init(group: any EventLoopGroup, log: EventLog, frames: FrameCache, sweepInterval: TimeAmount) {
        var hubs: [ObjectIdentifier: SubscriberHub] = [:]
        for loop in group.makeIterator() {
            hubs[ObjectIdentifier(loop)] = SubscriberHub(eventLoop: loop, head: log.head, sweepInterval: sweepInterval)
        }
        let all = Array(hubs.values)
        self.hubs = hubs
        self.log = log
        listener = log.addCommitListener { signal in
            switch signal {
            case .committed(_, let head), .changed(let head): frames.advance(to: head)
            case .closed: break
            }
            for hub in all { hub.post(signal) }
        }
    }

    deinit {
        log.removeCommitListener(listener)
    }

    /// The hub of `eventLoop`.
    func hub(for eventLoop: any EventLoop) -> SubscriberHub {
        guard let hub = hubs[ObjectIdentifier(eventLoop)] else {
            preconditionFailure("a channel on an event loop outside the server's group")
        }
        return hub
    }

    /// Subscribers on every loop.
    var count: Int { hubs.values.reduce(0) { $0 + $1.count } }
}
