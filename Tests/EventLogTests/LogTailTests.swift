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
}
