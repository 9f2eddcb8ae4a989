/// The JSON bodies of the HTTP API, each written and read here: the event envelope, the publish request and
/// answers, history pages, the topic list and error bodies (docs/PROTOCOL.md).

/// An event as one JSON object: `{"id":..,"topic":..,"type":..,"key":..,"time":..,"data":..}` (`key` only when
/// the event has one). History pages, `envelope=1` SSE streams and exports carry it.
public enum EventEnvelope {
    /// The envelope of `event`.
    public static func encode(_ event: Event) -> String {
        JSONWriter.object([
            "id": .int(event.id),
            "topic": .string(event.topic),
            "type": .string(event.type),
            "key": .optionalString(event.key),
            "time": .string(event.timeText),
            "data": EventData.jsonFragment(event.data),
        ])
    }

    /// Decodes one envelope; a missing `type` is `defaultType` (an SSE stream names it in `event:`).
    public static func decode(_ bytes: [UInt8], defaultType: String = "message") throws(WireDecodingError) -> Event {
        try self.decode(JSONObject(parsing: bytes, what: "an event envelope"), defaultType: defaultType)
    }

    package static func decode(_ object: JSONObject, defaultType: String = "message") throws(WireDecodingError) -> Event
    {
        Event(
            id: try object.int64("id"),
            topic: try object.string("topic"),
            type: try object.optionalString("type") ?? defaultType,
            key: try object.optionalString("key"),
            data: EventData.decoding(object["data"]),
            time: try object.time("time")
        )
    }
}

/// The answer to a publish: where the event landed. `POST /v1/events` answers `{"id","topic","time"}` for one
/// event and `{"events":[{"id","topic","time","replayed"}...],"ids":[...]}` for a batch; a WebSocket `publish`
/// is answered with an `ack`.
public struct PublishAnswer: Sendable, Hashable {
    /// The event's id (its position in the log).
    public var id: Int64
    /// The topic it was published to.
    public var topic: String
    /// The commit time in milliseconds since 1970-01-01T00:00:00Z.
    public var time: Int64
    /// `true` when an idempotency key named an event that already existed, so nothing was appended.
    public var replayed: Bool

    /// Creates a publish answer.
    public init(id: Int64, topic: String, time: Int64, replayed: Bool) {
        self.id = id
        self.topic = topic
        self.time = time
        self.replayed = replayed
    }

    /// The answer for an append.
    public init(_ result: AppendResult) {
        self.init(id: result.event.id, topic: result.event.topic, time: result.event.time, replayed: result.replayed)
    }

    /// The commit time as RFC 3339 with milliseconds, in UTC, as the server sent it.
    public var timeText: String { Timestamp.rfc3339(milliseconds: self.time) }

    /// The answer to a single publish: `{"id":N,"topic":"..","time":".."}` (replays are told by a header).
    public var json: String {
        var body = JSONWriter(capacity: 64 + topic.utf8.count)
        body.raw("{\"id\":")
        body.raw(String(id))
        body.raw(",\"topic\":")
        body.string(topic)
        body.raw(",\"time\":\"")
        body.raw(timeText)
        body.raw("\"}")
        return body.text
    }

    /// The answer to a batch: `{"events":[{"id","topic","time","replayed"}...],"ids":[...]}`.
    public static func batchJSON(_ answers: [PublishAnswer]) -> String {
        var body = JSONWriter(capacity: 32 + answers.count * 96)
        body.raw("{\"events\":[")
        // The events of a batch share one commit time: its text is made once.
        var time: (milliseconds: Int64, text: String)?
        for (offset, answer) in answers.enumerated() {
            if time?.milliseconds != answer.time { time = (answer.time, answer.timeText) }
            body.raw(offset > 0 ? ",{\"id\":" : "{\"id\":")
            body.raw(String(answer.id))
            body.raw(",\"topic\":")
            body.string(answer.topic)
            body.raw(",\"time\":\"")
            body.raw(time?.text ?? answer.timeText)
            body.raw(answer.replayed ? "\",\"replayed\":true}" : "\",\"replayed\":false}")
        }
        body.raw("],\"ids\":[")
        for (offset, answer) in answers.enumerated() {
            if offset > 0 { body.raw(",") }
            body.raw(String(answer.id))
        }
        body.raw("]}")
        return body.text
    }

    /// The WebSocket answer to a `publish`: `{"type":"ack","ref":..,"id":..,"topic":..,"time":..,"replayed":..}`.
    public func webSocketAck(ref: JSONFragment) -> String {
        JSONWriter.object([
            "type": .string("ack"), "ref": ref, "id": .int(self.id), "topic": .string(self.topic),
            "time": .string(self.timeText), "replayed": .bool(self.replayed),
        ])
    }

    /// Decodes a single publish answer; `replayed` is what the `Idempotent-Replayed` header said, unless the body
    /// says otherwise.
    public static func decode(_ bytes: [UInt8], replayed: Bool) throws(WireDecodingError) -> PublishAnswer {
        try self.decode(JSONObject(parsing: bytes, what: "the publish answer"), replayed: replayed)
    }

    /// Decodes a batch answer, one answer per event in order.
    public static func decodeBatch(_ bytes: [UInt8], replayed: Bool) throws(WireDecodingError) -> [PublishAnswer] {
        let object = try JSONObject(parsing: bytes, what: "the batch publish answer")
        var answers: [PublishAnswer] = []
        for element in try object.objects("events") {
            answers.append(try self.decode(element, replayed: replayed))
        }
        return answers
    }

    package static func decode(_ object: JSONObject, replayed: Bool) throws(WireDecodingError) -> PublishAnswer {
        PublishAnswer(
            id: try object.int64("id"),
            topic: try object.string("topic"),
            time: try object.time("time"),
            replayed: try object.optionalBool("replayed") ?? replayed
        )
    }
}

extension HistoryPage {
    /// The history answer: `{"events":[<envelope>...],"next":N,"head":H,"earliest":E}`.
    public var json: String { json(requested: nil) }

    /// The history answer for a read after `requested`, with
    /// `"gap":{"requested":N,"earliest":E,"reason":"retention"}` when ``removedThrough`` is above it: retention
    /// removed matching events after `requested` (`E` is the id after the last of them).
    public func json(requested: Int64?) -> String {
        var body = JSONWriter()
        body.raw("{\"events\":[")
        for (offset, event) in self.events.enumerated() {
            if offset > 0 { body.raw(",") }
            body.raw(EventEnvelope.encode(event))
        }
        body.raw("],\"next\":\(self.next),\"head\":\(self.head),\"earliest\":\(self.earliest)")
        if let requested, self.removedThrough > requested {
            body.raw(
                ",\"gap\":{\"requested\":\(requested),\"earliest\":\(self.removedThrough + 1),\"reason\":\"retention\"}"
            )
        }
        body.raw("}")
        return body.text
    }

    /// Decodes a history answer, keeping JSON data exactly as the server sent it.
    public init(decoding bytes: [UInt8]) throws(WireDecodingError) {
        let object = try JSONObject(parsing: bytes, what: "the history answer")
        var events: [Event] = []
        for element in try object.objects("events") {
            events.append(try EventEnvelope.decode(element))
        }
        var removedThrough: Int64 = 0
        if let gap = try object.optionalObject("gap") { removedThrough = try gap.int64("earliest") - 1 }
        self.init(
            events: events,
            next: try object.int64("next"),
            head: try object.int64("head"),
            earliest: try object.int64("earliest"),
            removedThrough: removedThrough
        )
    }
}

extension TopicSummary {
    /// The topic list: `{"topics":[{"topic","count","lastId"}...],"head":H,"earliest":E}`.
    public static func listJSON(_ topics: [TopicSummary], head: Int64, earliest: Int64) -> String {
        var body = JSONWriter()
        body.raw("{\"topics\":[")
        for (offset, topic) in topics.enumerated() {
            if offset > 0 { body.raw(",") }
            body.raw(
                JSONWriter.object([
                    "topic": .string(topic.topic), "count": .int(topic.count), "lastId": .int(topic.lastID),
                ])
            )
        }
        body.raw("],\"head\":\(head),\"earliest\":\(earliest)}")
        return body.text
    }

    /// Decodes the topic list.
    public static func decodeList(_ bytes: [UInt8]) throws(WireDecodingError) -> [TopicSummary] {
        let object = try JSONObject(parsing: bytes, what: "the topics answer")
        var topics: [TopicSummary] = []
        for element in try object.objects("topics") {
            topics.append(
                TopicSummary(
                    topic: try element.string("topic"),
                    count: try element.int64("count"),
                    lastID: try element.int64("lastId")
                )
            )
        }
        return topics
    }
}

/// The body of every failed request: `{"error":{"code":..,"message":..,"index":..,"lastId":..}}`.
public struct ErrorBody: Sendable, Hashable {
    /// The error code as sent; a newer server may send one this catalogue does not know.
    public var code: String
    /// A one-line explanation.
    public var message: String
    /// For a failed batch, the zero-based line that caused it.
    public var index: Int?
    /// For `forbidden_topic`, the selector (or, on publish, the topic) that was refused.
    public var selector: String?
    /// For `expected_last_id_mismatch`, the topic's newest id when the condition was checked (0: none).
    public var lastID: Int64?

    /// Creates an error body.
    public init(code: String, message: String, index: Int? = nil, selector: String? = nil, lastID: Int64? = nil) {
        self.code = code
        self.message = message
        self.index = index
        self.selector = selector
        self.lastID = lastID
    }

    /// Creates the error body of a code of the catalogue.
    public init(_ code: ErrorCode, message: String, index: Int? = nil, selector: String? = nil, lastID: Int64? = nil) {
        self.init(code: code.rawValue, message: message, index: index, selector: selector, lastID: lastID)
    }

    /// The code in the catalogue, or `nil` for a code this version does not know.
    public var errorCode: ErrorCode? { ErrorCode(rawValue: self.code) }

    /// The body's JSON text.
    public var json: String {
        let inner = JSONWriter.object([
            "code": .string(self.code),
            "message": .string(self.message),
            "index": self.index.map { .int(Int64($0)) } ?? .omitted,
            "selector": .optionalString(self.selector),
            "lastId": self.lastID.map { .int($0) } ?? .omitted,
        ])
        return JSONWriter.object(["error": .raw(inner)])
    }

    /// Decodes an error body, or `nil` when `bytes` is not one. A missing message is the code itself; the index
    /// may also sit next to `error`.
    public init?(decoding bytes: [UInt8]) {
        guard let object = try? JSONObject(parsing: bytes, what: "the error body"),
            let error = try? object.optionalObject("error"),
            let code = try? error.string("code")
        else {
            return nil
        }
        let message = (try? error.optionalString("message")) ?? nil
        let index = ((try? error.optionalInt64("index")) ?? nil) ?? ((try? object.optionalInt64("index")) ?? nil)
        let selector = (try? error.optionalString("selector")) ?? nil
        let lastID = (try? error.optionalInt64("lastId")) ?? nil
        self.init(
            code: code, message: message ?? code, index: index.map { Int(truncatingIfNeeded: $0) }, selector: selector,
            lastID: lastID)
    }
}
