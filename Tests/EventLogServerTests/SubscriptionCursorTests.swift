import EventLog
import EventLogWire
import NIOCore
import Testing

@testable import EventLogServer

/// The cursor state machine alone, with a fake clock: every input and every step is the test's.
@Suite("The subscription cursor (a state machine, fake clock)")
struct SubscriptionCursorTests {
    typealias Cursor = SubscriptionCursor
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func event(_ id: Int64, _ topic: String = "orders/1") -> Event {
        Event(id: id, topic: topic, type: "message", key: nil, data: .text("e\(id)"), time: 0)
    }

    static func page(
        _ ids: [Int64], next: Int64, head: Int64, earliest: Int64 = 1, removedThrough: Int64 = 0, removals: Int64 = 0
    ) -> HistoryPage {
        HistoryPage(
            events: ids.map { event($0) }, next: next, head: head, earliest: earliest, removedThrough: removedThrough,
            removals: removals)
    }

    static func cursor(
        _ start: CursorStart, resetNotice: Int64? = nil, pageSize: Int = 3, keepalive: TimeAmount? = .seconds(15),
        deadline: NIODeadline? = nil
    ) -> Cursor {
        Cursor(
            start: start, resetNotice: resetNotice, pageSize: pageSize, keepalive: keepalive,
            stallTimeout: .seconds(60), deadline: deadline, now: t0)
    }

    /// Takes every step until the cursor has nothing to do; returns them.
    static func drain(_ cursor: inout Cursor, at now: NIODeadline = t0, writable: Bool = true) -> [Cursor.Action] {
        var actions: [Cursor.Action] = []
        while true {
            let action = cursor.next(now: now, writable: writable)
            if action == .idle { return actions }
            actions.append(action)
            if case .end = action { return actions }
            if case .read = action { return actions }
            if case .wait = action { return actions }
            if case .fetchBounds = action { return actions }
        }
    }

    @Test("replay from a position: opened, pages of events marked replayed, caughtup at the head, then a wait")
    func replayThenLive() {
        var cursor = Self.cursor(.after(2))
        #expect(Self.drain(&cursor) == [.fetchBounds])
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 6)
        #expect(
            Self.drain(&cursor) == [
                .write(.opened(epoch: "E", earliest: 1, head: 6, from: 2)), .read(after: 2, limit: 3),
            ])
        cursor.pageRead(Self.page([3, 4, 5], next: 5, head: 6))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(3), replayed: true)), .write(.event(Self.event(4), replayed: true)),
                .write(.event(Self.event(5), replayed: true)), .read(after: 5, limit: 3),
            ])
        // A commit landed meanwhile: the page says head 7.
        cursor.pageRead(Self.page([6, 7], next: 7, head: 7))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(6), replayed: true)), .write(.event(Self.event(7), replayed: true)),
                .write(.caughtUp(position: 7)), .wait(after: 7),
            ])
        #expect(Self.drain(&cursor) == [])
        cursor.committed()
        #expect(Self.drain(&cursor) == [.read(after: 7, limit: 3)])
        cursor.pageRead(Self.page([8], next: 8, head: 8))
        #expect(Self.drain(&cursor) == [.write(.event(Self.event(8), replayed: false)), .wait(after: 8)])
    }

    @Test("live: starts at the head; a commit of other topics moves the position without output")
    func liveStart() {
        var cursor = Self.cursor(.live)
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 40)
        #expect(
            Self.drain(&cursor) == [
                .write(.opened(epoch: "E", earliest: 1, head: 40, from: 40)), .read(after: 40, limit: 3),
            ])
        cursor.pageRead(Self.page([], next: 40, head: 40))
        #expect(Self.drain(&cursor) == [.write(.caughtUp(position: 40)), .wait(after: 40)])
        cursor.committed()
        _ = Self.drain(&cursor)
        cursor.pageRead(Self.page([], next: 42, head: 42))
        #expect(Self.drain(&cursor) == [.wait(after: 42)])
        #expect(cursor.position == 42)
    }

    @Test("keepalive only while waiting and idle for the interval; a write restarts the interval")
    func keepalive() {
        var cursor = Self.cursor(.live, keepalive: .seconds(15))
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 0)
        _ = Self.drain(&cursor)
        cursor.pageRead(Self.page([], next: 0, head: 0))
        #expect(Self.drain(&cursor) == [.write(.caughtUp(position: 0)), .wait(after: 0)])
        cursor.tick(now: Self.t0 + .seconds(14))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(14)) == [])
        cursor.tick(now: Self.t0 + .seconds(15))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(15)) == [.write(.keepalive)])
        cursor.tick(now: Self.t0 + .seconds(29))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(29)) == [])
        cursor.committed()
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(29)) == [.read(after: 0, limit: 3)])
        // Not while reading.
        cursor.tick(now: Self.t0 + .seconds(60))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(60)) == [])
        cursor.pageRead(Self.page([1], next: 1, head: 1))
        #expect(
            Self.drain(&cursor, at: Self.t0 + .seconds(61)) == [
                .write(.event(Self.event(1), replayed: false)), .wait(after: 1),
            ])
        cursor.tick(now: Self.t0 + .seconds(75))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(75)) == [])
        cursor.tick(now: Self.t0 + .seconds(76))
        #expect(Self.drain(&cursor, at: Self.t0 + .seconds(76)) == [.write(.keepalive)])
        // A WebSocket cursor has no keepalive of its own.
        var socket = Self.cursor(.live, keepalive: nil)
        _ = Self.drain(&socket)
        socket.boundsFetched(epoch: "E", earliest: 1, head: 0)
        _ = Self.drain(&socket)
        socket.pageRead(Self.page([], next: 0, head: 0))
        _ = Self.drain(&socket)
        socket.tick(now: Self.t0 + .seconds(3600))
        #expect(Self.drain(&socket, at: Self.t0 + .seconds(3600)) == [])
    }

    @Test("backpressure: nothing is written or read while unwritable; stalled for the timeout ends it")
    func stall() {
        var cursor = Self.cursor(.earliest, pageSize: 3)
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 10)
        #expect(
            cursor.next(now: Self.t0, writable: true) == .write(.opened(epoch: "E", earliest: 1, head: 10, from: 0)))
        #expect(cursor.next(now: Self.t0, writable: true) == .read(after: 0, limit: 3))
        cursor.pageRead(Self.page([1, 2, 3], next: 3, head: 10))
        #expect(cursor.next(now: Self.t0, writable: true) == .write(.event(Self.event(1), replayed: true)))
        // The channel fills: the rest of the page waits, one output each time it is writable again.
        #expect(cursor.next(now: Self.t0 + .seconds(1), writable: false) == .idle)
        #expect(cursor.pendingOutputs == 2)
        cursor.tick(now: Self.t0 + .seconds(60))
        #expect(cursor.next(now: Self.t0 + .seconds(60), writable: false) == .idle)
        #expect(
            cursor.next(now: Self.t0 + .seconds(60), writable: true) == .write(.event(Self.event(2), replayed: true)))
        #expect(
            cursor.next(now: Self.t0 + .seconds(60), writable: true) == .write(.event(Self.event(3), replayed: true)))
        // Nothing left to write, but the next page is not read while the channel is full.
        #expect(cursor.next(now: Self.t0 + .seconds(61), writable: false) == .idle)
        cursor.tick(now: Self.t0 + .seconds(120))
        #expect(cursor.next(now: Self.t0 + .seconds(120), writable: false) == .idle)
        cursor.tick(now: Self.t0 + .seconds(121))
        #expect(cursor.next(now: Self.t0 + .seconds(121), writable: false) == .end(.stalled))
        #expect(cursor.isEnded)
        #expect(cursor.next(now: Self.t0 + .seconds(121), writable: true) == .idle)
    }

    @Test("a gap mid-stream: retention removed matching events after the position before they were read")
    func gapMidStream() {
        var cursor = Self.cursor(.after(0), pageSize: 2)
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 9)
        _ = Self.drain(&cursor)
        cursor.pageRead(Self.page([1, 2], next: 2, head: 9))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(1), replayed: true)), .write(.event(Self.event(2), replayed: true)),
                .read(after: 2, limit: 2),
            ])
        // Meanwhile retention removed this subscriber's events up to 5: the page says so, and holds what is left
        // after 2 (another topic of its selectors kept 4). The gap comes first, then the page, once.
        cursor.pageRead(Self.page([4, 6], next: 6, head: 9, earliest: 4, removedThrough: 5))
        #expect(
            Self.drain(&cursor) == [
                .write(.gap(requested: 2, earliest: 6)), .write(.event(Self.event(4), replayed: true)),
                .write(.event(Self.event(6), replayed: true)), .read(after: 6, limit: 2),
            ])
        cursor.pageRead(Self.page([7], next: 9, head: 9, earliest: 4, removedThrough: 5))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(7), replayed: true)), .write(.caughtUp(position: 9)), .wait(after: 9),
            ])
        // Removals at or below the position are no gap.
        var exact = Self.cursor(.after(5))
        _ = Self.drain(&exact)
        exact.boundsFetched(epoch: "E", earliest: 6, head: 9)
        _ = Self.drain(&exact)
        exact.pageRead(Self.page([6], next: 9, head: 9, earliest: 6, removedThrough: 5))
        #expect(
            Self.drain(&exact) == [
                .write(.event(Self.event(6), replayed: true)), .write(.caughtUp(position: 9)), .wait(after: 9),
            ])
        // A start of earliest takes what was removed before it opened as no gap; a removal after it opened is one.
        var earliest = Self.cursor(.earliest)
        _ = Self.drain(&earliest)
        earliest.boundsFetched(.init(epoch: "E", earliest: 3, head: 9, removed: RemovalMark(through: 7, count: 1)))
        #expect(
            Self.drain(&earliest) == [
                .write(.opened(epoch: "E", earliest: 3, head: 9, from: 2)), .read(after: 2, limit: 3),
            ])
        earliest.pageRead(Self.page([3], next: 3, head: 9, earliest: 3, removedThrough: 7, removals: 1))
        #expect(Self.drain(&earliest) == [.write(.event(Self.event(3), replayed: true)), .read(after: 3, limit: 3)])
        // Meanwhile retention removed 5, below the watermark of 7 it opened with: the watermark stays, the count
        // moves, and the position (3) is below 7, so this may be a gap of its own, and it is reported.
        earliest.pageRead(Self.page([8], next: 9, head: 9, earliest: 3, removedThrough: 7, removals: 2))
        #expect(
            Self.drain(&earliest) == [
                .write(.gap(requested: 3, earliest: 8)), .write(.event(Self.event(8), replayed: true)),
                .write(.caughtUp(position: 9)), .wait(after: 9),
            ])
    }

    @Test("snapshot: pages of the snapshot read until one reaches the head, then caughtup and the live tail")
    func snapshot() {
        var cursor = Self.cursor(.snapshot, pageSize: 2)
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 9)
        #expect(
            Self.drain(&cursor) == [
                .write(.opened(epoch: "E", earliest: 1, head: 9, from: 0)), .readSnapshot(after: 0, limit: 2),
            ])
        cursor.pageRead(Self.page([2, 5], next: 5, head: 9))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(2), replayed: true)), .write(.event(Self.event(5), replayed: true)),
                .readSnapshot(after: 5, limit: 2),
            ])
        // Meanwhile 10 and 11 were committed: the last snapshot page ends at its head, 11; the tail follows.
        cursor.pageRead(Self.page([11], next: 11, head: 11))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(11), replayed: true)), .write(.caughtUp(position: 11)), .wait(after: 11),
            ])
        cursor.committed()
        #expect(Self.drain(&cursor) == [.read(after: 11, limit: 2)])
    }

    @Test("since and rewind start at the position the driver resolved; rewind takes earlier removals as no gap")
    func sinceAndRewind() {
        var since = Self.cursor(.since(1_000))
        _ = Self.drain(&since)
        since.boundsFetched(.init(epoch: "E", earliest: 1, head: 9, resolved: 4))
        #expect(
            Self.drain(&since) == [
                .write(.opened(epoch: "E", earliest: 1, head: 9, from: 4)), .read(after: 4, limit: 3),
            ])
        var rewind = Self.cursor(.rewind(2))
        _ = Self.drain(&rewind)
        rewind.boundsFetched(.init(epoch: "E", earliest: 1, head: 9, resolved: 6, removed: RemovalMark(through: 8)))
        _ = Self.drain(&rewind)
        rewind.pageRead(Self.page([7, 9], next: 9, head: 9, removedThrough: 8))
        #expect(
            Self.drain(&rewind) == [
                .write(.event(Self.event(7), replayed: true)), .write(.event(Self.event(9), replayed: true)),
                .write(.caughtUp(position: 9)), .wait(after: 9),
            ])
        // A void position (a restore skipped it) is a reset, as one above the head is.
        var void = Self.cursor(.after(5))
        _ = Self.drain(&void)
        void.boundsFetched(.init(epoch: "E", earliest: 1, head: 9, void: true))
        #expect(
            Self.drain(&void) == [
                .write(.opened(epoch: "E", earliest: 1, head: 9, from: 9)),
                .write(.reset(requested: 5, head: 9, epoch: "E")), .read(after: 9, limit: 3),
            ])
    }

    @Test("reset: a position above the head, or a resume token of another epoch, opens at the head")
    func reset() {
        var cursor = Self.cursor(.after(500))
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E2", earliest: 1, head: 20)
        #expect(
            Self.drain(&cursor) == [
                .write(.opened(epoch: "E2", earliest: 1, head: 20, from: 20)),
                .write(.reset(requested: 500, head: 20, epoch: "E2")), .read(after: 20, limit: 3),
            ])
        var token = Self.cursor(.live, resetNotice: 7)
        _ = Self.drain(&token)
        token.boundsFetched(epoch: "E2", earliest: 1, head: 20)
        #expect(
            Self.drain(&token) == [
                .write(.opened(epoch: "E2", earliest: 1, head: 20, from: 20)),
                .write(.reset(requested: 7, head: 20, epoch: "E2")), .read(after: 20, limit: 3),
            ])
    }

    @Test("shutdown mid-replay ends at once: the rest of the page and the pending read are dropped")
    func shutdownMidReplay() {
        var cursor = Self.cursor(.earliest)
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 1_000)
        _ = Self.drain(&cursor)
        cursor.pageRead(Self.page([1, 2, 3], next: 3, head: 1_000))
        #expect(cursor.next(now: Self.t0, writable: true) == .write(.event(Self.event(1), replayed: true)))
        cursor.shutdown()
        #expect(cursor.next(now: Self.t0, writable: false) == .end(.shutdown))
        #expect(cursor.pendingOutputs == 0)
        // A page that arrives after the end changes nothing.
        cursor.pageRead(Self.page([4], next: 4, head: 1_000))
        #expect(cursor.next(now: Self.t0, writable: true) == .idle)
        // While a disk read is in flight.
        var reading = Self.cursor(.earliest)
        _ = Self.drain(&reading)
        reading.boundsFetched(epoch: "E", earliest: 1, head: 1_000)
        #expect(Self.drain(&reading).last == .read(after: 0, limit: 3))
        reading.shutdown()
        #expect(reading.next(now: Self.t0, writable: true) == .end(.shutdown))
        // A closed log reads as shutdown too; another failure ends it as failed.
        var closed = Self.cursor(.earliest)
        _ = Self.drain(&closed)
        closed.readFailed(.closed)
        #expect(closed.next(now: Self.t0, writable: true) == .end(.shutdown))
        var failed = Self.cursor(.earliest)
        _ = Self.drain(&failed)
        let error = EventLogError(.corrupt, "not an event log")
        failed.readFailed(error)
        #expect(failed.next(now: Self.t0, writable: true) == .end(.failed(error)))
    }

    @Test("an unavailable store (a database outage) keeps the stream open with keepalives and reads again after it")
    func storageUnavailableRetries() {
        var cursor = Self.cursor(.earliest, keepalive: .seconds(15))
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 10)
        #expect(Self.drain(&cursor).last == .read(after: 0, limit: 3))
        cursor.pageRead(Self.page([1, 2, 3], next: 3, head: 10))
        #expect(Self.drain(&cursor).last == .read(after: 3, limit: 3))
        cursor.readFailed(EventLogError(.storageUnavailable, "PostgreSQL: connection refused"))
        #expect(cursor.next(now: Self.t0, writable: true) == .idle)
        // The first tick starts the wait; the read comes back one retry interval later, from the same position.
        cursor.tick(now: Self.t0 + .seconds(1))
        #expect(cursor.next(now: Self.t0 + .seconds(1), writable: true) == .idle)
        cursor.tick(now: Self.t0 + .milliseconds(1_999))
        #expect(cursor.next(now: Self.t0 + .milliseconds(1_999), writable: true) == .idle)
        cursor.tick(now: Self.t0 + .seconds(2))
        #expect(cursor.next(now: Self.t0 + .seconds(2), writable: true) == .read(after: 3, limit: 3))
        // Failing again and again: keepalives go out while it waits.
        cursor.readFailed(EventLogError(.storageUnavailable, "PostgreSQL: connection refused"))
        cursor.tick(now: Self.t0 + .seconds(17))
        #expect(cursor.next(now: Self.t0 + .seconds(17), writable: true) == .write(.keepalive))
        cursor.tick(now: Self.t0 + .seconds(18))
        #expect(cursor.next(now: Self.t0 + .seconds(18), writable: true) == .read(after: 3, limit: 3))
        cursor.pageRead(Self.page([4], next: 10, head: 10))
        #expect(
            Self.drain(&cursor) == [
                .write(.event(Self.event(4), replayed: true)), .write(.caughtUp(position: 10)), .wait(after: 10),
            ])
    }

    @Test("the deadline (a token's expiry) ends the stream at the first tick after it")
    func deadline() {
        var cursor = Self.cursor(.live, keepalive: nil, deadline: Self.t0 + .seconds(30))
        _ = Self.drain(&cursor)
        cursor.boundsFetched(epoch: "E", earliest: 1, head: 0)
        _ = Self.drain(&cursor)
        cursor.pageRead(Self.page([], next: 0, head: 0))
        _ = Self.drain(&cursor)
        cursor.tick(now: Self.t0 + .milliseconds(29_999))
        #expect(Self.drain(&cursor) == [])
        cursor.tick(now: Self.t0 + .seconds(30))
        #expect(Self.drain(&cursor) == [.end(.expired)])
    }
}
