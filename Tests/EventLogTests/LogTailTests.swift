import Testing

@testable import EventLog

@Suite("The in-memory tail")
struct LogTailTests {
    static func event(_ id: Int64, bytes: Int) -> Event {
        Event(
            id: id, topic: "tail/big", type: "message", key: nil, data: .text(String(repeating: "x", count: bytes)),
            time: 0)
    }

    @Test("events dropped for the byte bound are released at once: the storage holds only the events in the tail")
    func byteBoundHoldsInMemory() {
        let size = Self.event(1, bytes: 100_000).approximateSize
        var tail = LogTail(head: 0, maxEvents: 16_384, maxBytes: 2 * size + size / 2)
        for id in Int64(1)...50 {
            tail.append([Self.event(id, bytes: 100_000)], newHead: id)
            #expect(tail.count == min(Int(id), 2))
            #expect(tail.storedBytes == tail.count * size)
        }
        #expect(tail.coveredAfter == 48)
        #expect(tail.read(after: 48, selectors: .all, limit: 10)?.events.map(\.id) == [49, 50])
        #expect(tail.read(after: 47, selectors: .all, limit: 10) == nil)
    }

    @Test("an event larger than the byte bound stays alone in the tail, and the one before it is released")
    func oversizedEvent() {
        var tail = LogTail(head: 0, maxEvents: 16_384, maxBytes: 1_000)
        tail.append([Self.event(1, bytes: 100)], newHead: 1)
        tail.append([Self.event(2, bytes: 5_000)], newHead: 2)
        #expect(tail.count == 1)
        #expect(tail.storedBytes == Self.event(2, bytes: 5_000).approximateSize)
        #expect(tail.read(after: 1, selectors: .all, limit: 10)?.events.map(\.id) == [2])
    }

    @Test("across the bulk compaction of dropped slots, reads and the stored bytes stay exact")
    func compaction() {
        let size = Self.event(1, bytes: 10).approximateSize
        var tail = LogTail(head: 0, maxEvents: 10, maxBytes: 1 << 20)
        var mostStored = 0
        for id in Int64(1)...3_000 {
            tail.append([Self.event(id, bytes: 10)], newHead: id)
            mostStored = max(mostStored, tail.storedBytes)
        }
        #expect(mostStored == 10 * size)
        #expect(tail.count == 10)
        #expect(
            tail.read(after: 2_995, selectors: .all, limit: 100)?.events.map(\.id) == [
                2_996, 2_997, 2_998, 2_999, 3_000,
            ])
        #expect(tail.read(after: 2_990, selectors: .all, limit: 3)?.events.map(\.id) == [2_991, 2_992, 2_993])
        tail.drop(below: 2_998)
        #expect(tail.count == 3)
        #expect(tail.storedBytes == 3 * size)
    }

    @Test("sealed chunks: reads are exact across chunk boundaries, and dropped events stay at most one chunk")
    func chunks() {
        let size = Self.event(1, bytes: 10).approximateSize
        var tail = LogTail(head: 0, maxEvents: 200, maxBytes: 1 << 20)
        var id: Int64 = 0
        for batch in 1...100 {
            let events = (0..<(batch % 7 + 1)).map { _ -> Event in
                id += 1
                return Self.event(id, bytes: 10)
            }
            tail.append(events, newHead: id)
            #expect(tail.count == min(Int(id), 200))
            #expect(tail.storedCount - tail.count < LogTail.chunkSize)
            #expect(tail.storedBytes - tail.count * size < LogTail.chunkSize * size)
        }
        // Batches of 1 to 7 events: 397 in all, the newest 200 in the tail.
        #expect(id == 397)
        #expect(tail.coveredAfter == 197)
        #expect(tail.read(after: 196, selectors: .all, limit: 10) == nil)
        #expect(tail.read(after: 197, selectors: .all, limit: 3)?.events.map(\.id) == [198, 199, 200])
        // Across boundaries, with the limit landing anywhere.
        for start in stride(from: Int64(197), to: 397, by: 13) {
            let page = tail.read(after: start, selectors: .all, limit: 70)
            let expected = Array((start + 1)...min(start + 70, 397))
            #expect(page?.events.map(\.id) == expected)
            #expect(page?.next == (expected.count == 70 ? expected.last : 397))
        }
        #expect(tail.read(after: 397, selectors: .all, limit: 5)?.events.isEmpty == true)
    }

    @Test("a copy is a snapshot: appends, drops and resets after it change nothing it reads")
    func snapshots() {
        var tail = LogTail(head: 0, maxEvents: 100, maxBytes: 1 << 20)
        tail.append((1...150).map { Self.event($0, bytes: 10) }, newHead: 150)
        let snapshot = tail
        tail.append((151...300).map { Self.event($0, bytes: 10) }, newHead: 300)
        #expect(snapshot.head == 150)
        #expect(snapshot.read(after: 50, selectors: .all, limit: 1_000)?.events.map(\.id) == Array(51...150))
        #expect(tail.read(after: 50, selectors: .all, limit: 1_000) == nil)
        #expect(tail.read(after: 200, selectors: .all, limit: 1_000)?.events.map(\.id) == Array(201...300))
        let second = tail
        tail.reset(head: 300)
        #expect(second.read(after: 250, selectors: .all, limit: 1_000)?.events.map(\.id) == Array(251...300))
        #expect(tail.read(after: 250, selectors: .all, limit: 1_000) == nil)
    }

    @Test("a big dropped event in a sealed chunk is released at once (past a sixteenth of the byte bound)")
    func bigDropInSealedChunk() {
        let big = Self.event(1, bytes: 200_000)
        var tail = LogTail(head: 0, maxEvents: 16_384, maxBytes: 1_000_000)
        tail.append([big] + (2...Int64(LogTail.chunkSize + 1)).map { Self.event($0, bytes: 10) }, newHead: 65)
        // The first chunk is sealed: ids 1-64.
        tail.append([Self.event(66, bytes: 850_000)], newHead: 66)
        #expect(tail.read(after: 0, selectors: .all, limit: 1) == nil)
        #expect(
            tail.storedBytes
                == (2...66).reduce(0) { total, id in
                    total + Self.event(id, bytes: id == 66 ? 850_000 : 10).approximateSize
                })
        #expect(tail.read(after: 1, selectors: .all, limit: 100)?.events.map(\.id) == Array(2...66))
    }

    @Test("selectors filter inside chunks; the next position is the head when the page is not full")
    func selectors() {
        var tail = LogTail(head: 0, maxEvents: 1_000, maxBytes: 1 << 20)
        let events = (1...300).map { id in
            Event(id: Int64(id), topic: id % 3 == 0 ? "a/x" : "b", type: "m", key: nil, data: nil, time: 0)
        }
        tail.append(events, newHead: 300)
        let page = tail.read(after: 0, selectors: SelectorSet([.prefix("a")]), limit: 1_000)
        #expect(page?.events.map(\.id) == Array(stride(from: Int64(3), through: 300, by: 3)))
        #expect(page?.next == 300)
        let limited = tail.read(after: 0, selectors: SelectorSet([.prefix("a")]), limit: 70)
        #expect(limited?.events.count == 70)
        #expect(limited?.next == 210)
    }
}
