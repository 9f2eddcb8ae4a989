import EventLog
import EventLogWire
import NIOCore
import PropertyBased
import Testing

@testable import EventLog
@testable import EventLogServer

/// Random interleavings of publishes, commits, retention of one topic at a time (which also empties the in-memory
/// tail, as it does in the log), tail evictions (a tail of 4 events), subscriber steps with the channel writable or
/// not, reads that complete later, waits and timer ticks, over four subscribers with different selectors and
/// starts. The model log answers reads the way ``EventLog`` does: from a real ``LogTail`` when it covers the
/// position (no removal watermark), else from the full list with the selectors' removal watermark (the largest
/// removed id of a topic they match); commits wake waiters through a real ``SelectorIndex``.
@Suite("The subscription cursor under random interleavings (property-based)")
struct SubscriptionCursorPropertyTests {
    static let topics = ["orders/1", "orders/2", "logs/a", "orders/1/items"]
    static let selectorSets: [SelectorSet] = [
        SelectorSet([.prefix("orders")]),
        SelectorSet([.topic("orders/1")]),
        SelectorSet([.all]),
        SelectorSet([.topic("logs/a"), .topic("orders/2")]),
    ]

    struct Model {
        var all: [Event] = []
        var retained: [Event] = []
        var removed: Set<Int64> = []
        /// Per topic, the largest id retention removed from it, and how many retention runs removed from it.
        var watermarks: [String: (through: Int64, count: Int64)] = [:]
        var head: Int64 = 0
        var earliest: Int64 { retained.first?.id ?? head + 1 }
        var pending: [String] = []
        var tail = LogTail(head: 0, maxEvents: 4, maxBytes: 1 << 20)
        var waiting = SelectorIndex()
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)

        func page(after position: Int64, selectors: SelectorSet, limit: Int) -> HistoryPage {
            if let found = tail.read(after: position, selectors: selectors, limit: limit) {
                return HistoryPage(events: found.events, next: found.next, head: head, earliest: earliest)
            }
            let matching = retained.filter { $0.id > position && selectors.matches($0.topic) }.prefix(limit)
            let next = matching.count == limit ? matching.last!.id : head
            return HistoryPage(
                events: Array(matching), next: next, head: head, earliest: earliest,
                removedThrough: removals(selectors).through, removals: removals(selectors).count)
        }

        func removals(_ selectors: SelectorSet) -> RemovalMark {
            let matching = watermarks.filter { selectors.matches($0.key) }.values
            return RemovalMark(
                through: matching.map(\.through).max() ?? 0, count: matching.map(\.count).reduce(0, +))
        }
    }

    struct Sub {
        var cursor: SubscriptionCursor
        let selectors: SelectorSet
        let start: CursorStart
        var outputs: [SubscriptionCursor.Output] = []
        var readInFlight: (after: Int64, limit: Int)?
        var boundsInFlight = false
        /// The head when the bounds were read (for the reset rule).
        var headAtOpen: Int64?
        /// What was removed when the bounds were read: no gap for a start of `earliest` (whatever is retained).
        var removedAtOpen: Set<Int64> = []
    }

    static func start(_ code: Int) -> CursorStart {
        switch code {
        case -1: return .live
        case 0: return .earliest
        default: return .after(Int64(code))
        }
    }

    /// Runs `operations` and then lets everything settle; returns the model and the subscribers.
    static func run(_ operations: [Int], starts: [Int]) -> (Model, [Sub]) {
        var model = Model()
        var subs = (0..<4).map { index in
            Sub(
                cursor: SubscriptionCursor(
                    start: start(starts[index]), pageSize: 3, keepalive: .seconds(5), stallTimeout: .seconds(3600),
                    now: model.now),
                selectors: selectorSets[index], start: start(starts[index]))
        }

        func commit() {
            guard !model.pending.isEmpty else { return }
            var events: [Event] = []
            for topic in model.pending {
                model.head += 1
                events.append(Event(id: model.head, topic: topic, type: "m", key: nil, data: nil, time: 0))
            }
            model.pending.removeAll()
            model.all += events
            model.retained += events
            model.tail.append(events, newHead: model.head)
            for index in model.waiting.removeMatching(events) { subs[index].cursor.committed() }
        }

        /// Retention of one topic: its `count` oldest retained events go.
        func retain(_ topic: String, count: Int) {
            let going = model.retained.filter { $0.topic == topic }.prefix(count).map(\.id)
            guard let last = going.last else { return }
            model.removed.formUnion(going)
            model.retained.removeAll { going.contains($0.id) }
            let before = model.watermarks[topic] ?? (0, 0)
            model.watermarks[topic] = (max(before.through, last), before.count + 1)
            // As EventLog does when removals change: the tail forgets what it held.
            model.tail.reset(head: model.head)
            for index in model.waiting.removeAll() { subs[index].cursor.committed() }
        }

        @discardableResult
        func step(_ index: Int, writable: Bool) -> Bool {
            let action = subs[index].cursor.next(now: model.now, writable: writable)
            switch action {
            case .idle, .end: break
            case .fetchBounds: subs[index].boundsInFlight = true
            case .write(let output): subs[index].outputs.append(output)
            case .read(let after, let limit): subs[index].readInFlight = (after, limit)
            case .readSnapshot: Issue.record("no subscriber here starts with a snapshot")
            case .wait(let after):
                if model.head > after {
                    subs[index].cursor.committed()
                } else {
                    model.waiting.insert(index, selectors: subs[index].selectors)
                }
            }
            return action != .idle
        }

        func completeRead(_ index: Int) {
            guard let read = subs[index].readInFlight else { return }
            subs[index].readInFlight = nil
            subs[index].cursor.pageRead(
                model.page(after: read.after, selectors: subs[index].selectors, limit: read.limit))
        }

        func completeBounds(_ index: Int) {
            guard subs[index].boundsInFlight else { return }
            subs[index].boundsInFlight = false
            subs[index].headAtOpen = model.head
            subs[index].removedAtOpen = model.removed
            subs[index].cursor.boundsFetched(
                SubscriptionCursor.Opening(
                    epoch: "E", earliest: model.earliest, head: model.head,
                    removed: subs[index].start == .earliest ? model.removals(subs[index].selectors) : RemovalMark()))
        }

        for value in operations {
            switch value {
            case 0..<200: model.pending.append(topics[value % topics.count])
            case 200..<350: commit()
            case 350..<400: retain(topics[value % 4], count: (value / 4) % 4 + 1)
            case 400..<800: step(value % 4, writable: (value / 4) % 5 != 0)
            case 800..<900: completeRead(value % 4)
            case 900..<950: completeBounds(value % 4)
            default:
                model.now = model.now + .seconds(1)
                subs[value % 4].cursor.tick(now: model.now)
            }
        }
        // Settle: commit what is pending, then let every subscriber run until it waits.
        commit()
        for _ in 0..<10_000 {
            var progressed = false
            for index in 0..<4 {
                if subs[index].boundsInFlight || subs[index].readInFlight != nil { progressed = true }
                completeBounds(index)
                completeRead(index)
                if step(index, writable: true) { progressed = true }
            }
            if !progressed { break }
        }
        return (model, subs)
    }

    static func check(_ model: Model, _ sub: Sub) {
        guard case .opened(_, _, let head, let from)? = sub.outputs.first else {
            Issue.record("the first output is not opened: \(sub.outputs.prefix(1))")
            return
        }
        #expect(head == sub.headAtOpen)
        // Where it starts.
        switch sub.start {
        case .live: #expect(from == head)
        case .earliest: #expect(from < model.all.first(where: { !model.removed.contains($0.id) })?.id ?? Int64.max)
        case .snapshot, .since, .rewind: Issue.record("not generated")
        case .after(let requested):
            let resets = sub.outputs.filter { if case .reset = $0 { return true } else { return false } }
            if requested > head {
                #expect(from == head)
                #expect(resets == [.reset(requested: requested, head: head, epoch: "E")])
            } else {
                #expect(resets.isEmpty)
                #expect(from >= requested)
            }
        }
        var delivered: [Int64] = []
        var gaps: [(requested: Int64, earliest: Int64)] = []
        var caughtUp = 0
        for output in sub.outputs.dropFirst() {
            switch output {
            case .event(let event, let replayed):
                #expect(replayed == (caughtUp == 0))
                delivered.append(event.id)
            case .gap(let requested, let earliest): gaps.append((requested, earliest))
            case .caughtUp: caughtUp += 1
            case .opened: Issue.record("opened twice")
            case .reset, .keepalive: break
            }
        }
        #expect(caughtUp == 1)
        // In order, no duplicate, only what it selected, only after where it started.
        #expect(delivered == delivered.sorted() && Set(delivered).count == delivered.count)
        let byID = Dictionary(uniqueKeysWithValues: model.all.map { ($0.id, $0) })
        #expect(delivered.allSatisfy { sub.selectors.matches(byID[$0]!.topic) })
        let firstAfter: Int64
        if case .after(let requested) = sub.start, requested <= head {
            firstAfter = requested
        } else {
            firstAfter = from
        }
        #expect(delivered.allSatisfy { $0 > firstAfter })
        // Every matching event after the start is delivered, or was removed and a gap covers it.
        let expected = model.all.filter { $0.id > firstAfter && sub.selectors.matches($0.topic) }.map(\.id)
        let deliveredSet = Set(delivered)
        for id in expected where !deliveredSet.contains(id) {
            if sub.start == .earliest && sub.removedAtOpen.contains(id) { continue }
            #expect(model.removed.contains(id), "event \(id) is in the log but was never delivered")
            #expect(gaps.contains { $0.requested < id && id < $0.earliest }, "event \(id) was skipped without a gap")
        }
        // A gap only where events of its own selectors after the position were removed, up to `earliest - 1`.
        // Removals from other topics never make one.
        for gap in gaps {
            #expect(gap.requested < gap.earliest - 1)
            #expect(
                (gap.requested + 1...gap.earliest - 1).contains {
                    model.removed.contains($0) && sub.selectors.matches(byID[$0]!.topic)
                })
        }
        // Settled: waiting, with nothing left to write.
        #expect(sub.cursor.pendingOutputs == 0 && sub.readInFlight == nil)
    }

    @Test("every subscriber gets exactly the matching ids after its start, in order; gaps exactly where removed")
    func interleavings() async {
        await propertyCheck(
            count: 300, input: Gen.int(in: 0...999).array(of: 0...300), Gen.int(in: -1...40).array(of: 4)
        ) { operations, starts in
            let (model, subs) = Self.run(operations, starts: starts)
            for sub in subs { Self.check(model, sub) }
        }
    }

    @Test("a fixed interleaving: retention between two reads of a subscriber brings one gap, then the rest")
    func fixedInterleaving() {
        // (Steps of subscriber 1 are 405: 405 % 4 == 1, and (405 / 4) % 5 != 0 says writable.)
        // Ten publishes of orders/1 and a commit; subscriber 1 (orders/1, from the earliest) opens, reads and
        // writes ids 1-3 and starts its next read; retention removes ids 1-4 of orders/1 (and empties the tail); then
        // everything settles.
        // (364: retention of topics[364 % 4] = orders/1, its (364 / 4) % 4 + 1 = 4 oldest events.)
        let operations =
            Array(repeating: 0, count: 10) + [200, 405, 901, 405, 405, 801, 405, 405, 405, 405] + [364]
        let (model, subs) = Self.run(operations, starts: [-1, 0, -1, -1])
        #expect(model.earliest == 5)
        #expect(
            subs[1].outputs.map { output -> String in
                switch output {
                case .event(let event, _): return "\(event.id)"
                case .gap(let requested, let earliest): return "gap \(requested)<\(earliest)"
                case .caughtUp(let position): return "caughtup \(position)"
                case .opened(_, _, _, let from): return "opened \(from)"
                case .reset: return "reset"
                case .keepalive: return "keepalive"
                }
            } == ["opened 0", "1", "2", "3", "gap 3<5", "5", "6", "7", "8", "9", "10", "caughtup 10"])
        Self.check(model, subs[1])
    }
}
