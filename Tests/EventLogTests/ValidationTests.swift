import Testing

@testable import EventLog

/// An event that must be refused, and the code it must be refused with.
struct InvalidEvent: Sendable, CustomTestStringConvertible {
    let name: String
    let event: NewEvent
    let code: EventLogError.Code

    var testDescription: String { name }

    init(
        _ name: String, _ code: EventLogError.Code, topic: String = "orders/1", type: String = "message",
        key: String? = nil, data: EventData? = .text("x"), idempotencyKey: String? = nil
    ) {
        self.name = name
        self.code = code
        event = NewEvent(topic: topic, type: type, key: key, data: data, idempotencyKey: idempotencyKey)
    }

    static let maxDataBytes = 16

    static let all: [InvalidEvent] = [
        InvalidEvent("empty topic", .invalidTopic, topic: ""),
        InvalidEvent("topic over 256 bytes", .invalidTopic, topic: String(repeating: "a", count: 257)),
        InvalidEvent("topic with an empty segment", .invalidTopic, topic: "a//b"),
        InvalidEvent("topic with a leading slash", .invalidTopic, topic: "/a"),
        InvalidEvent("topic with a trailing slash", .invalidTopic, topic: "a/"),
        InvalidEvent("topic that is a slash", .invalidTopic, topic: "/"),
        InvalidEvent("topic with a space", .invalidTopic, topic: "orders 1"),
        InvalidEvent("topic with a hash", .invalidTopic, topic: "orders/#1"),
        InvalidEvent("topic with a star", .invalidTopic, topic: "orders/*"),
        InvalidEvent("topic that is a star", .invalidTopic, topic: "*"),
        InvalidEvent("topic with a question mark", .invalidTopic, topic: "orders?x=1"),
        InvalidEvent("topic with a percent", .invalidTopic, topic: "orders%2F1"),
        InvalidEvent("topic with unicode", .invalidTopic, topic: "bestellungen/größe"),
        InvalidEvent("topic with an emoji", .invalidTopic, topic: "✓"),
        InvalidEvent("topic with a newline", .invalidTopic, topic: "orders\n1"),
        InvalidEvent("topic with NUL", .invalidTopic, topic: "orders\u{0}1"),
        InvalidEvent("topic with a backslash", .invalidTopic, topic: "orders\\1"),
        InvalidEvent("empty type", .invalidType, type: ""),
        InvalidEvent("type with CR", .invalidType, type: "created\r"),
        InvalidEvent("type with LF", .invalidType, type: "created\ndata: forged"),
        InvalidEvent("type with CRLF", .invalidType, type: "a\r\nb"),
        InvalidEvent("type with NUL", .invalidType, type: "a\u{0}b"),
        InvalidEvent("type over 128 bytes", .invalidType, type: String(repeating: "t", count: 129)),
        InvalidEvent("reserved type eventlog.x", .invalidType, type: "eventlog.x"),
        InvalidEvent("reserved type eventlog.gap", .invalidType, type: "eventlog.gap"),
        InvalidEvent("reserved type eventlog.", .invalidType, type: "eventlog."),
        InvalidEvent("empty key", .invalidKey, key: ""),
        InvalidEvent("key with CR", .invalidKey, key: "k\r"),
        InvalidEvent("key with LF", .invalidKey, key: "k\n"),
        InvalidEvent("key with NUL", .invalidKey, key: "\u{0}"),
        InvalidEvent("key over 1 KiB", .invalidKey, key: String(repeating: "k", count: 1025)),
        InvalidEvent("empty idempotency key", .invalidIdempotencyKey, idempotencyKey: ""),
        InvalidEvent("idempotency key with LF", .invalidIdempotencyKey, idempotencyKey: "a\nb"),
        InvalidEvent("idempotency key with a tab", .invalidIdempotencyKey, idempotencyKey: "a\tb"),
        InvalidEvent("idempotency key with DEL", .invalidIdempotencyKey, idempotencyKey: "a\u{7F}b"),
        InvalidEvent("idempotency key with NUL", .invalidIdempotencyKey, idempotencyKey: "\u{0}"),
        InvalidEvent(
            "idempotency key over 256 bytes", .invalidIdempotencyKey, idempotencyKey: String(repeating: "i", count: 257)
        ),
        InvalidEvent("text data over the limit", .eventTooLarge, data: .text(String(repeating: "d", count: 17))),
        InvalidEvent(
            "JSON data over the limit", .eventTooLarge, data: .json("[" + String(repeating: "1,", count: 8) + "1]")),
        InvalidEvent(
            "data over the limit in bytes but not characters", .eventTooLarge,
            data: .text(String(repeating: "é", count: 9))),
    ]
}

/// An event on the edge of each limit, which must be accepted.
struct ValidEvent: Sendable, CustomTestStringConvertible {
    let name: String
    let event: NewEvent

    var testDescription: String { name }

    static let all: [ValidEvent] = [
        ValidEvent(name: "one-byte topic", event: NewEvent(topic: "a", data: .text("x"))),
        ValidEvent(name: "256-byte topic", event: NewEvent(topic: String(repeating: "a", count: 256), data: nil)),
        ValidEvent(
            name: "every allowed topic character",
            event: NewEvent(topic: "AZaz09._~:@!$+=-/x", data: .text("x"))
        ),
        ValidEvent(name: "deep topic", event: NewEvent(topic: "a/b/c/d/e/f/g", data: .text("x"))),
        ValidEvent(
            name: "128-byte type", event: NewEvent(topic: "a", type: String(repeating: "t", count: 128), data: nil)),
        ValidEvent(name: "type eventlog without a dot", event: NewEvent(topic: "a", type: "eventlog", data: nil)),
        ValidEvent(name: "type with spaces and unicode", event: NewEvent(topic: "a", type: "order créé ✓", data: nil)),
        ValidEvent(name: "1 KiB key", event: NewEvent(topic: "a", key: String(repeating: "k", count: 1024), data: nil)),
        ValidEvent(
            name: "256-byte idempotency key",
            event: NewEvent(topic: "a", data: nil, idempotencyKey: String(repeating: "i", count: 256))
        ),
        ValidEvent(
            name: "data at the limit", event: NewEvent(topic: "a", data: .text(String(repeating: "d", count: 16)))),
        ValidEvent(name: "multi-line data with NUL", event: NewEvent(topic: "a", data: .text("a\r\nb\u{0}c"))),
        ValidEvent(
            name: "key and idempotency key with unicode",
            event: NewEvent(topic: "a", key: "clé ✓", data: .text("é"), idempotencyKey: "Schlüssel")
        ),
        ValidEvent(name: "empty data", event: NewEvent(topic: "a", data: .text(""))),
    ]
}

@Suite("Validation")
struct ValidationTests {
    static let options = EventLog.Options.with { $0.limits.maxDataBytes = InvalidEvent.maxDataBytes }

    @Test("an invalid event is rejected with a typed error and nothing is appended", arguments: InvalidEvent.all)
    func invalidEventIsRejected(invalid: InvalidEvent) async throws {
        try await withTemporaryLog(options: Self.options) { log, _ in
            let error = await #expect(throws: EventLogError.self) { try await log.append(invalid.event) }
            #expect(error?.code == invalid.code)
            #expect(error?.index == nil)
            // The same check is available without a log, and a batch names the failing line.
            #expect(throws: EventLogError.self) { try Self.options.limits.validate(invalid.event) }
            let batchError = await #expect(throws: EventLogError.self) {
                try await log.append(batch: [NewEvent(topic: "ok", data: nil), invalid.event])
            }
            #expect(batchError?.code == invalid.code)
            #expect(batchError?.index == 1)
            #expect(log.head == 0)
            let events = try await log.readAll()
            #expect(events.isEmpty)
        }
    }

    @Test("an event on the edge of every limit is accepted and read back unchanged", arguments: ValidEvent.all)
    func edgeEventIsAccepted(valid: ValidEvent) async throws {
        try await withTemporaryLog(options: Self.options) { log, directory in
            let result = try await log.append(valid.event)
            #expect(result.event.id == 1)
            // Read back from memory and, through a second instance, from the file.
            let reopened = try await EventLog.open(path: directory.path("events.db"), options: Self.options)
            for reader in [log, reopened] {
                let read = try #require(try await reader.readAll().first)
                #expect(read.topic == valid.event.topic)
                #expect(read.type == valid.event.type)
                #expect(read.key == valid.event.key)
                #expect(read.data == valid.event.data)
                #expect(read == result.event)
            }
            await reopened.close()
        }
    }

    @Test("an empty batch is rejected with empty_batch")
    func emptyBatchIsRejected() async throws {
        try await withTemporaryLog { log, _ in
            let error = await #expect(throws: EventLogError.self) { try await log.append(batch: []) }
            #expect(error?.code == .emptyBatch)
            #expect(error?.code.description == "empty_batch")
        }
    }

    @Test(
        "an invalid selector is rejected with invalid_selector",
        arguments: [
            "", "/", "/*", "**", "*/", "*/x", "orders/", "/orders", "orders//1", "orders*", "orders/**", "orders/*/x",
            "orders/*/*", "orders/ *", "orders /*", "or ders", "größe/*", "orders/#", "orders\n",
            String(repeating: "a", count: 257), String(repeating: "a", count: 257) + "/*",
        ]
    )
    func invalidSelectorIsRejected(text: String) throws {
        let error = #expect(throws: EventLogError.self) { try Selector(parsing: text) }
        #expect(error?.code == .invalidSelector)
        let setError = #expect(throws: EventLogError.self) { try SelectorSet(parsing: ["orders/*", text]) }
        #expect(setError?.code == .invalidSelector)
    }

    @Test("error codes have their wire names")
    func errorCodeNames() {
        let codes: [EventLogError.Code] = [
            .invalidTopic, .invalidSelector, .invalidType, .invalidKey, .invalidIdempotencyKey, .eventTooLarge,
            .emptyBatch, .idempotencyConflict, .storageUnavailable, .closed, .corrupt,
        ]
        #expect(
            codes.map(\.description) == [
                "invalid_topic", "invalid_selector", "invalid_type", "invalid_key", "invalid_idempotency_key",
                "event_too_large", "empty_batch", "idempotency_conflict", "storage_unavailable", "closed", "corrupt",
            ]
        )
    }
}
