/// The newest committed events, in memory, in id order.
///
/// It holds every committed event with an id in `(coveredAfter, head]`, so a reader whose position
/// is at least `coveredAfter` is answered from memory; older positions go to the database. It is
/// bounded by a count and by approximate bytes; the oldest events are dropped first.
///
/// A `LogTail` is a value whose copies are snapshots: the log keeps one under its lock, a reader copies it
/// (two array references) and scans the copy without the lock, and the writer's next change copies only what
/// it touches. The events are kept in immutable chunks of ``chunkSize``; only the newest, unsealed chunk is
/// copied when the writer appends while a reader holds a snapshot, so the writer never waits for a reader and
/// never copies the whole tail.
struct LogTail: Sendable {
    /// Events, ascending, never changed once sealed; shared by every snapshot that holds it.
    final class Chunk: Sendable {
        let events: [Event]
        init(_ events: [Event]) { self.events = events }
    }

    /// Events per sealed chunk.
    static let chunkSize = 64

    /// Sealed chunks, oldest first. The first `firstDropped` events of the first chunk are no longer in the tail.
    private var chunks: [Chunk] = []
    private var firstDropped = 0
    /// Bytes of the dropped events the first chunk still references. Past a sixteenth of `maxBytes`, the
    /// chunk is rebuilt without them, so dropped payloads are released (a 1 MB event must not stay alive for
    /// the 63 small ones after it).
    private var droppedBytesInFirst = 0
    /// The newest events, not sealed yet (fewer than ``chunkSize``).
    private var open: [Event] = []
    private var bytes = 0
    private(set) var count = 0
    /// Every committed event after this id (up to ``head``) is in the tail.
    private(set) var coveredAfter: Int64
    /// The largest committed id.
    private(set) var head: Int64
    let maxEvents: Int
    let maxBytes: Int

    init(head: Int64, maxEvents: Int, maxBytes: Int) {
        self.head = head
        self.coveredAfter = head
        self.maxEvents = max(maxEvents, 0)
        self.maxBytes = maxBytes
    }

    /// Adds a committed batch (ids ascending, all above ``head``) and moves ``head`` to `newHead`.
    mutating func append(_ batch: [Event], newHead: Int64) {
        guard maxEvents > 0 else {
            head = newHead
            coveredAfter = newHead
            return
        }
        for event in batch {
            open.append(event)
            bytes += event.approximateSize
            count += 1
            if open.count == Self.chunkSize {
                chunks.append(Chunk(open))
                open.removeAll(keepingCapacity: false)
            }
        }
        head = max(head, newHead)
        while count > maxEvents || (bytes > maxBytes && count > 1) {
            dropFirst()
        }
    }

    /// The approximate bytes of every event the storage still references (dropped ones included), so tests
    /// can hold the storage itself to its bound.
    var storedBytes: Int {
        chunks.reduce(0) { total, chunk in total + chunk.events.reduce(0) { $0 + $1.approximateSize } }
            + open.reduce(0) { $0 + $1.approximateSize }
    }

    /// The number of events the storage still references (dropped ones included).
    var storedCount: Int { chunks.reduce(0) { $0 + $1.events.count } + open.count }

    private mutating func dropFirst() {
        guard let first = chunks.first else {
            let dropped = open.removeFirst()
            bytes -= dropped.approximateSize
            count -= 1
            coveredAfter = dropped.id
            return
        }
        let dropped = first.events[firstDropped]
        bytes -= dropped.approximateSize
        count -= 1
        coveredAfter = dropped.id
        firstDropped += 1
        droppedBytesInFirst += dropped.approximateSize
        if firstDropped == first.events.count {
            chunks.removeFirst()
            firstDropped = 0
            droppedBytesInFirst = 0
        } else if droppedBytesInFirst > maxBytes / 16 {
            chunks[0] = Chunk(Array(first.events[firstDropped...]))
            firstDropped = 0
            droppedBytesInFirst = 0
        }
    }

    /// Forgets everything: another process wrote to the log, so the tail no longer has every event.
    mutating func reset(head newHead: Int64) {
        chunks.removeAll()
        open.removeAll()
        firstDropped = 0
        droppedBytesInFirst = 0
        bytes = 0
        count = 0
        head = newHead
        coveredAfter = newHead
    }

    /// Drops events with ids below `earliest` (retention removed them from the log).
    mutating func drop(below earliest: Int64) {
        while count > 0 && firstID < earliest {
            dropFirst()
        }
        if coveredAfter < earliest - 1 && earliest - 1 <= head && count == 0 {
            coveredAfter = earliest - 1
        }
    }

    /// The oldest event's id; only for `count > 0`.
    private var firstID: Int64 {
        if let first = chunks.first { return first.events[firstDropped].id }
        return open[0].id
    }

    /// Events after `position` that match `selectors`, at most `limit`; `nil` when the tail does not
    /// cover `position`.
    func read(after position: Int64, selectors: SelectorSet, limit: Int) -> (events: [Event], next: Int64)? {
        guard position >= coveredAfter else { return nil }
        guard position < head else { return ([], max(position, head)) }
        var found: [Event] = []
        // The first sealed chunk whose last event is above `position`; the open events after every chunk.
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if chunks[middle].events[chunks[middle].events.count - 1].id <= position {
                low = middle + 1
            } else {
                high = middle
            }
        }
        for chunkIndex in low..<chunks.count {
            let events = chunks[chunkIndex].events
            let start = chunkIndex == 0 ? firstDropped : 0
            if let last = Self.collect(events, from: start, after: position, selectors, limit, into: &found) {
                return (found, last)
            }
        }
        if let last = Self.collect(open, from: 0, after: position, selectors, limit, into: &found) {
            return (found, last)
        }
        return (found, head)
    }

    /// Appends the events of `events[from...]` above `position` that match to `found`; returns the id of the
    /// event that filled `limit`, or nil when `found` is not full yet.
    private static func collect(
        _ events: [Event], from start: Int, after position: Int64, _ selectors: SelectorSet, _ limit: Int,
        into found: inout [Event]
    ) -> Int64? {
        var low = start
        var high = events.count
        while low < high {
            let middle = (low + high) / 2
            if events[middle].id <= position { low = middle + 1 } else { high = middle }
        }
        var index = low
        while index < events.count {
            let event = events[index]
            if selectors.matches(event.topic) {
                found.append(event)
                if found.count == limit { return event.id }
            }
            index += 1
        }
        return nil
    }
}
