import Testing

@testable import EventLog

@Suite("SelectorIndex: who a commit wakes")
struct SelectorIndexTests {
    static func events(_ topics: String...) -> [Event] {
        topics.enumerated().map {
            Event(id: Int64($0.offset + 1), topic: $0.element, type: "m", key: nil, data: nil, time: 0)
        }
    }

    @Test("exact, prefix at any depth and *; a matched id leaves every bucket it was in; others stay")
    func removeMatching() {
        var index = SelectorIndex()
        index.insert(1, selectors: SelectorSet([.topic("orders/1")]))
        index.insert(2, selectors: SelectorSet([.prefix("orders")]))
        index.insert(3, selectors: SelectorSet([.all]))
        index.insert(4, selectors: SelectorSet([.topic("logs/a"), .prefix("orders/1")]))
        index.insert(5, selectors: SelectorSet([.topic("logs/b")]))
        #expect(index.count == 5)
        let itemsWoken = index.removeMatching(Self.events("orders/1/items"))
        #expect(Set(itemsWoken) == [2, 3, 4])
        #expect(index.count == 2)
        // 4 is gone from its `logs/a` bucket too: a commit there wakes nobody.
        let afterLogsA = index.removeMatching(Self.events("logs/a"))
        #expect(afterLogsA.isEmpty)
        let logsAndOrders = index.removeMatching(Self.events("logs/b", "orders/1"))
        #expect(Set(logsAndOrders) == [1, 5])
        #expect(index.isEmpty)
        // `orders` itself is not below `orders/*`.
        index.insert(6, selectors: SelectorSet([.prefix("orders")]))
        let notBelowPrefix = index.removeMatching(Self.events("orders", "ordersx/1"))
        #expect(notBelowPrefix.isEmpty)
        let belowPrefix = index.removeMatching(Self.events("orders/9"))
        #expect(belowPrefix == [6])
    }

    @Test("1,000 ids on one topic are woken by one commit, and the index is empty after")
    func manyOnOneTopic() {
        var index = SelectorIndex()
        for id in 0..<1_000 { index.insert(id, selectors: SelectorSet([.topic("orders/1")])) }
        index.insert(1_000, selectors: SelectorSet([.topic("orders/2")]))
        let allOnTopic = index.removeMatching(Self.events("orders/1"))
        #expect(Set(allOnTopic) == Set(0..<1_000))
        #expect(index.count == 1)
        let again = index.removeMatching(Self.events("orders/1"))
        #expect(again.isEmpty)
        let removed = index.remove(1_000)
        #expect(removed)
        let removedTwice = index.remove(1_000)
        #expect(!removedTwice)
        #expect(index.isEmpty)
    }
}
