/// The newest committed events, in memory, in id order.
///
/// It holds every committed event with an id in `(coveredAfter, head]`, so a reader whose position
/// is at least `coveredAfter` is answered from memory; older positions go to the database. It is
/// bounded by a count and by approximate bytes; the oldest events are dropped first.
struct LogTail {
    /// The events from `start` on; the slots before it are empty. A dropped event's slot is emptied at
    /// once, so its payload is released even while the slots ahead of `start` wait for a bulk compaction
    /// (keeping up to 1024 dropped 1 MB events alive would put the memory far past `maxBytes`).
    private var events: [Event?] = []
    private var start = 0
    private var bytes = 0
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

    var count: Int { events.count - start }

    /// Adds a committed batch (ids ascending, all above ``head``) and moves ``head`` to `newHead`.
    mutating func append(_ batch: [Event], newHead: Int64) {
        guard maxEvents > 0 else {
            head = newHead
            coveredAfter = newHead
            return
        }
        for event in batch {
            events.append(event)
            bytes += event.approximateSize
        }
        head = max(head, newHead)
        while count > maxEvents || (bytes > maxBytes && count > 1) {
            dropFirst()
        }
        if start > 1024 && start * 2 > events.count {
            events.removeFirst(start)
            start = 0
        }
    }

    /// The event in the slot at `index`, at or after `start`.
    private func event(at index: Int) -> Event {
        guard let event = events[index] else { preconditionFailure("LogTail: an empty slot at or after start") }
        return event
    }

    /// The oldest event in the tail; only for `count > 0`.
    private var first: Event { event(at: start) }

    /// The approximate bytes of every event the storage still references, counted slot by slot (O(n)),
    /// so tests can hold the storage itself to the `maxBytes` bound.
    var storedBytes: Int { events.reduce(0) { $0 + ($1?.approximateSize ?? 0) } }

    private mutating func dropFirst() {
        let dropped = first
        bytes -= dropped.approximateSize
        coveredAfter = dropped.id
        events[start] = nil
        start += 1
    }

    /// Forgets everything: another process wrote to the log, so the tail no longer has every event.
    mutating func reset(head newHead: Int64) {
        events.removeAll()
        start = 0
        bytes = 0
        head = newHead
        coveredAfter = newHead
    }

    /// Drops events with ids below `earliest` (retention removed them from the log).
    mutating func drop(below earliest: Int64) {
        while count > 0 && first.id < earliest {
            dropFirst()
        }
        if coveredAfter < earliest - 1 && earliest - 1 <= head && count == 0 {
            coveredAfter = earliest - 1
        }
    }

    /// Events after `position` that match `selectors`, at most `limit`; `nil` when the tail does not
    /// cover `position`.
    func read(after position: Int64, selectors: SelectorSet, limit: Int) -> (events: [Event], next: Int64)? {
        guard position >= coveredAfter else { return nil }
        guard position < head else { return ([], max(position, head)) }
        // Binary search for the first event with id > position.
        var low = start
        var high = events.count
        while low < high {
            let middle = (low + high) / 2
            if event(at: middle).id <= position { low = middle + 1 } else { high = middle }
        }
        var found: [Event] = []
        var index = low
        while index < events.count {
            let event = event(at: index)
            if selectors.matches(event.topic) {
                found.append(event)
                if found.count == limit { return (found, event.id) }
            }
            index += 1
        }
        return (found, head)
    }
}
