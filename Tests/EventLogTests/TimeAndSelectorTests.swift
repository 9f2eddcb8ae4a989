import Testing

@testable import EventLog

@Suite("Timestamps")
struct TimestampTests {
    static let examples: [(milliseconds: Int64, text: String)] = [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_208_000_050, "2024-02-29T12:00:00.050Z"),
        (1_795_568_835_123, "2026-11-25T01:07:15.123Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    ]

    @Test("rfc3339 formats exact instants in UTC with milliseconds and parses them back")
    func roundTrips() {
        for (milliseconds, text) in Self.examples {
            #expect(Timestamp.rfc3339(milliseconds: milliseconds) == text)
            #expect(Timestamp.parseRFC3339(text) == milliseconds)
        }
    }

    @Test(
        "parseRFC3339 accepts offsets, lower case, a space and any number of fraction digits",
        arguments: [
            ("2026-11-25T01:07:15Z", Int64(1_795_568_835_000)),
            ("2026-11-25T01:07:15.1Z", 1_795_568_835_100),
            ("2026-11-25T01:07:15.12Z", 1_795_568_835_120),
            ("2026-11-25T01:07:15.123456789Z", 1_795_568_835_123),
            ("2026-11-25t01:07:15.123z", 1_795_568_835_123),
            ("2026-11-25 01:07:15.123Z", 1_795_568_835_123),
            ("2026-11-25T01:07:15.123+00:00", 1_795_568_835_123),
            ("2026-11-25T01:07:15.123+02:00", 1_795_561_635_123),
            ("2026-11-25T01:07:15.123-05:30", 1_795_588_635_123),
        ]
    )
    func parsesVariants(text: String, milliseconds: Int64) {
        #expect(Timestamp.parseRFC3339(text) == milliseconds)
    }

    @Test(
        "parseRFC3339 rejects malformed text",
        arguments: [
            "", "garbage", "2026-11-25", "2026-11-25T01:07:15", "2026-11-25T01:07:15.Z", "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T01:60:00Z",
            "2026-11-25T01:07:15+0200", "2026-11-25T01:07:15Zjunk", "2026-11-25X01:07:15Z", "2026/11/25T01:07:15Z",
            "2026-11-25T01:07:15.123+02:00:00", "+026-11-25T01:07:15Z",
        ]
    )
    func rejectsMalformed(text: String) {
        #expect(Timestamp.parseRFC3339(text) == nil)
    }

    @Test("an event's timeText is its commit time in RFC 3339")
    func eventTimeText() {
        let event = Event(id: 1, topic: "a", type: "message", key: nil, data: nil, time: 1_795_568_835_123)
        #expect(event.timeText == "2026-11-25T01:07:15.123Z")
        #expect(event.compactionKey == "a")
    }
}

@Suite("Topics and selectors")
struct TopicAndSelectorTests {
    @Test("a prefix selector matches every topic below it at any depth and nothing else")
    func prefixMatching() throws {
        let selector = try Selector(parsing: "orders/*")
        #expect(selector == .prefix("orders"))
        #expect(selector.matches("orders/1"))
        #expect(selector.matches("orders/1/items"))
        #expect(!selector.matches("orders"))
        #expect(!selector.matches("ordersX/1"))
        #expect(!selector.matches("orders.x"))
        #expect(!selector.matches("order/1"))
        #expect(!selector.matches("x/orders/1"))
    }

    @Test("an exact selector matches only its topic")
    func exactMatching() throws {
        let selector = try Selector(parsing: "users/5")
        #expect(selector == .topic("users/5"))
        #expect(selector.matches("users/5"))
        #expect(!selector.matches("users/50"))
        #expect(!selector.matches("users/5/x"))
        #expect(!selector.matches("users"))
    }

    @Test("* matches every topic")
    func allMatching() throws {
        let selector = try Selector(parsing: "*")
        #expect(selector == .all)
        #expect(selector.matches("a"))
        #expect(selector.matches("orders/1/items"))
    }

    @Test("selectors print as they parse")
    func descriptions() throws {
        for text in ["*", "orders/*", "orders/1", "a/b/c/*"] {
            #expect(try Selector(parsing: text).description == text)
        }
    }

    @Test(
        "a selector set drops the selectors another one covers",
        arguments: [
            (["orders/*", "orders/1", "orders/1/items", "orders/1/*", "users/5"], ["orders/*", "users/5"]),
            (["orders/1/*", "orders/*"], ["orders/*"]),
            (["orders", "orders/*"], ["orders", "orders/*"]),
            (["users/5", "users/5", "users/50"], ["users/5", "users/50"]),
            (["a/*", "b/*", "*", "c"], ["*"]),
            (["ordersX/*", "orders/*"], ["orders/*", "ordersX/*"]),
            ([String](), [String]()),
        ]
    )
    func selectorSetReduction(texts: [String], reduced: [String]) throws {
        let set = try SelectorSet(parsing: texts)
        #expect(set.selectors.map(\.description) == reduced)
        #expect(set.isEmpty == reduced.isEmpty)
    }

    @Test("a selector set matches a topic when any of its selectors does")
    func selectorSetMatching() throws {
        let set = try SelectorSet(parsing: ["orders/*", "users/5"])
        #expect(set.matches("orders/1"))
        #expect(set.matches("users/5"))
        #expect(!set.matches("users/6"))
        #expect(!set.matches("orders"))
        #expect(set.description == "orders/*,users/5")
        #expect(SelectorSet.all.matches("anything"))
        #expect(!SelectorSet([]).matches("anything"))
    }

    @Test("topic validity follows the grammar")
    func topicValidity() {
        #expect(Topic.isValid("tenants/acme/orders/77"))
        #expect(Topic.isValid(String(repeating: "a", count: 256)))
        #expect(!Topic.isValid(String(repeating: "a", count: 257)))
        #expect(!Topic.isValid("a//b"))
        #expect(!Topic.isValid("a/"))
        #expect(!Topic.isValid("/a"))
        #expect(!Topic.isValid("a b"))
        #expect(!Topic.isValid("ü"))
    }
}
