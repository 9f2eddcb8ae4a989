import Testing

@testable import EventLog

/// Where a read is answered from.
enum ReadSource: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// The log that wrote the events, reading from a position inside its in-memory tail.
    case tail
    /// The log that wrote the events with a 10-event tail, reading from positions long dropped from it.
    case smallTail
    /// A second read-write instance on the same file: its tail starts empty.
    case secondInstance
    /// A read-only instance on the same file.
    case readOnlyInstance

    var testDescription: String { rawValue }
}

/// A selection and the topics it must return, written out by hand rather than computed with
/// `Selector.matches`.
struct SelectionCase: Sendable, CustomTestStringConvertible {
    let selectors: [String]
    let topics: Set<String>

    var testDescription: String { selectors.joined(separator: ",") }

    static let all: [SelectionCase] = [
        SelectionCase(selectors: ["orders/1"], topics: ["orders/1"]),
        SelectionCase(selectors: ["orders"], topics: ["orders"]),
        SelectionCase(selectors: ["orders/*"], topics: ["orders/1", "orders/1/items", "orders/2"]),
        SelectionCase(selectors: ["orders/1/*"], topics: ["orders/1/items"]),
        SelectionCase(selectors: ["users/5"], topics: ["users/5"]),
        SelectionCase(selectors: ["*"], topics: ReadTests.topics),
        SelectionCase(selectors: ["nothing/*", "nothing"], topics: []),
        SelectionCase(
            selectors: ["orders/*", "users/5"], topics: ["orders/1", "orders/1/items", "orders/2", "users/5"]),
        SelectionCase(
            selectors: ["orders/*", "orders/1/items", "orders/1", "users/5", "users/5"],
            topics: ["orders/1", "orders/1/items", "orders/2", "users/5"]
        ),
        SelectionCase(
            selectors: ["orders", "orders/*"], topics: ["orders", "orders/1", "orders/1/items", "orders/2"]),
        SelectionCase(selectors: ["ordersX/1", "users/50"], topics: ["ordersX/1", "users/50"]),
        SelectionCase(selectors: ["users/*", "*"], topics: ReadTests.topics),
    ]
}

@Suite("Reading")
struct ReadTests {
    static let topics: Set<String> = [
        "orders", "orders/1", "orders/1/items", "orders/2", "ordersX/1", "orders.x", "users/5", "users/50", "users/5/x",
    ]
    static let eventCount = 90

    /// Appends `eventCount` events over `topics` in a fixed, interleaved order.
    static func fill(_ log: EventLog) async throws -> [Event] {
        let ordered = topics.sorted()
        var events: [Event] = []
        for start in stride(from: 0, to: eventCount, by: 7) {
            let batch = (start..<min(start + 7, eventCount)).map { index in
                NewEvent(topic: ordered[(index * 5) % ordered.count], data: .text("event \(index)"))
            }
            events += try await log.append(batch: batch).map(\.event)
        }
        return events
    }

    /// Opens the log to read from for `source`, fills it, and runs `body` with the reading log, the
    /// events appended and a position from which reads come from the source.
    static func withSource(
        _ source: ReadSource,
        _ body: (_ reader: EventLog, _ events: [Event], _ positions: [Int64]) async throws -> Void
    ) async throws {
        let options = EventLog.Options.with { $0.tailEvents = source == .smallTail ? 10 : 16_384 }
        try await withTemporaryLog(options: options) { log, directory in
            let events = try await fill(log)
            switch source {
            case .tail:
                try await body(log, events, [0, 1, 40, 89])
            case .smallTail:
                try await body(log, events, [0, 1, 40, 75, 85])
            case .secondInstance, .readOnlyInstance:
                let reader = try await EventLog.open(
                    path: directory.path("events.db"),
                    options: .with { $0.readOnly = source == .readOnlyInstance }
                )
                #expect(reader.head == Int64(eventCount))
                try await body(reader, events, [0, 1, 40, 89])
                await reader.close()
            }
        }
    }

    @Test(
        "reads return exactly the matching events in id order, from memory and from disk",
        arguments: ReadSource.allCases, SelectionCase.all
    )
    func readsReturnMatchingEvents(source: ReadSource, selection: SelectionCase) async throws {
        let selectors = try SelectorSet(parsing: selection.selectors)
        try await Self.withSource(source) { reader, events, positions in
            for position in positions {
                let expected = events.filter { $0.id > position && selection.topics.contains($0.topic) }
                let page = try await reader.read(after: position, selectors: selectors, limit: 1000)
                #expect(page.events == expected, "after \(position)")
                #expect(page.head == Int64(Self.eventCount))
                #expect(page.earliest == 1)
                #expect(page.next == Int64(Self.eventCount))
            }
        }
    }

    @Test(
        "paging with limit and next continues with no gap and no duplicate",
        arguments: ReadSource.allCases, [1, 3, 10, 89, 90, 91]
    )
    func pagingContinues(source: ReadSource, limit: Int) async throws {
        let selectionCases = [
            ["*"], ["orders/*"], ["orders/*", "users/5"], ["orders", "users/5", "users/50"], ["users/5/x"], ["nothing"],
        ]
        try await Self.withSource(source) { reader, events, positions in
            for texts in selectionCases {
                let selectors = try SelectorSet(parsing: texts)
                try #require(positions.count >= 3)
                let start = positions[2]
                let expected = events.filter { $0.id > start && selectors.matches($0.topic) }
                var collected: [Event] = []
                var position = start
                var pages = 0
                while true {
                    let page = try await reader.read(after: position, selectors: selectors, limit: limit)
                    pages += 1
                    #expect(page.events.count <= limit)
                    if page.events.count == limit {
                        #expect(page.next == page.events.last?.id, "a full page continues after its last event")
                    } else {
                        #expect(page.next == page.head, "a short page means the reader caught up")
                    }
                    collected += page.events
                    if page.events.count < limit { break }
                    position = page.next
                    #expect(pages <= Self.eventCount + 1)
                }
                #expect(collected == expected, "\(texts) with limit \(limit)")
            }
        }
    }

    @Test("a read at the head returns nothing and next stays at the head")
    func readAtHead() async throws {
        try await Self.withSource(.secondInstance) { reader, _, _ in
            let head = Int64(Self.eventCount)
            let page = try await reader.read(after: head, selectors: .all, limit: 10)
            #expect(page.events == [])
            #expect(page.next == head)
            #expect(page.head == head)
            let ahead = try await reader.read(after: head + 10, selectors: .all, limit: 10)
            #expect(ahead.events == [])
            #expect(ahead.next == head + 10)
        }
    }

    @Test("an empty selector set reads nothing")
    func emptySelectorSet() async throws {
        try await Self.withSource(.tail) { reader, _, _ in
            let page = try await reader.read(after: 0, selectors: SelectorSet([]), limit: 10)
            #expect(page.events == [])
            #expect(page.next == Int64(Self.eventCount))
        }
    }

    @Test("another instance on the file reads the appends made after it opened once it refreshes its bounds")
    func otherInstanceSeesLaterAppendsAfterRefresh() async throws {
        try await withTemporaryLog { log, directory in
            _ = try await log.append(NewEvent(topic: "a", data: .text("1")))
            let follower = try await EventLog.open(
                path: directory.path("events.db"), options: .with { $0.readOnly = true })
            let second = try await EventLog.open(path: directory.path("events.db"))
            let late = try await log.append(NewEvent(topic: "a", data: .text("2")))

            // A waiter on the read-only follower is woken by the refresh that finds the new event.
            let selectors = try SelectorSet(parsing: ["a"])
            let waiter = Task { try await follower.waitForCommit(after: 1, selectors: selectors) }
            #expect(try await eventually { follower.notifier.waiterCount == 1 })
            let bounds = try await follower.refreshBounds()
            #expect(bounds.earliest == 1)
            #expect(bounds.head == 2)
            #expect(try await withTimeout(.seconds(60)) { try await waiter.value } != nil)
            #expect(follower.head == 2)
            #expect(try await follower.readAll(after: 1) == [late.event])
            #expect(try await follower.readAll() == [try #require(try await log.readAll().first), late.event])

            #expect(try await second.refreshBounds().head == 2)
            #expect(try await second.readAll(after: 1) == [late.event])
            // Its own append lands after the first instance's, and the first instance sees it.
            let own = try await second.append(NewEvent(topic: "b", data: .text("3")))
            #expect(own.event.id == 3)
            #expect(try await log.refreshBounds().head == 3)
            #expect(try await log.readAll(after: 2) == [own.event])
            // The first instance's next append follows it.
            #expect(try await log.append(NewEvent(topic: "a", data: .text("4"))).event.id == 4)
            #expect(try await second.refreshBounds().head == 4)
            #expect(try await second.readAll().map(\.id) == [1, 2, 3, 4])
            await second.close()
            await follower.close()
        }
    }

    @Test("topics lists every topic with its count and last id")
    func topicSummaries() async throws {
        try await Self.withSource(.tail) { reader, events, _ in
            let summaries = try await reader.topics()
            let expected = Self.topics.sorted().map { topic in
                let matching = events.filter { $0.topic == topic }
                return TopicSummary(topic: topic, count: Int64(matching.count), lastID: matching.last?.id ?? 0)
            }
            #expect(summaries == expected)
        }
    }
}
