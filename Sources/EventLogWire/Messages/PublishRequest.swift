/// The publish object, `{"topic":..,"type":..,"key":..,"data":..,"idempotencyKey":..,"expectedLastId":N}`: the body of
/// `POST /v1/events`, one NDJSON line of a batch, and the WebSocket `publish` op. Encoded and decoded here only.
public enum PublishRequest {
    /// Fields a publish object may have.
    public static let allowedFields: Set<String> = ["topic", "type", "key", "data", "idempotencyKey", "expectedLastId"]

    /// The event described by one JSON object. `extraFields` are tolerated (the WebSocket op's `op`, `ref`).
    /// A header's idempotency key wins over the body's.
    public static func event(
        from value: JSONValue,
        idempotencyKey headerKey: String? = nil,
        extraFields: Set<String> = []
    ) throws(EventLogError) -> NewEvent {
        guard case .object(let members) = value else {
            throw EventLogError(.malformedJSON, "an event must be a JSON object")
        }
        for (name, _) in members where !allowedFields.contains(name) && !extraFields.contains(name) {
            throw EventLogError(.invalidField, "unknown field \"\(name)\"")
        }
        guard case .string(let topic) = value["topic"] else {
            if value["topic"] == nil { throw EventLogError(.invalidTopic, "the event has no topic") }
            throw EventLogError(.invalidField, "\"topic\" must be a string")
        }
        let type = try optionalString(value, "type") ?? "message"
        let key = try optionalString(value, "key")
        let bodyKey = try optionalString(value, "idempotencyKey")
        let data = EventData.decoding(value["data"])
        let expected: Int64?
        switch value["expectedLastId"] {
        case .none, .some(.null): expected = nil
        case .some(.number(let text)):
            expected = try parseExpectedLastID(text, source: "\"expectedLastId\"")
        default: throw EventLogError(.invalidField, "\"expectedLastId\" must be a non-negative integer id")
        }
        return NewEvent(
            topic: topic, type: type, key: key, data: data, idempotencyKey: headerKey ?? bodyKey,
            expectedLastID: expected)
    }

    /// Parses an expected last id (the `Expected-Last-Id` header, the `expectedLastId` field): a non-negative
    /// integer, `0` for a topic with no event. `source` names where it came from, for the error.
    public static func parseExpectedLastID(_ text: String, source: String) throws(EventLogError) -> Int64 {
        guard let id = Int64(text), id >= 0, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw EventLogError(
                .invalidField, "\(source) must be a non-negative integer id, not \"\(text.prefix(40))\"")
        }
        return id
    }

    private static func optionalString(_ value: JSONValue, _ name: String) throws(EventLogError) -> String? {
        switch value[name] {
        case .none, .some(.null): return nil
        case .some(.string(let text)): return text
        default: throw EventLogError(.invalidField, "\"\(name)\" must be a string")
        }
    }

    /// Parses JSON text; a syntax error is `malformed_json`, with the zero-based `line` of a batch as its index.
    public static func parse(_ bytes: [UInt8], line: Int? = nil) throws(EventLogError) -> JSONValue {
        do {
            return try JSONParser.parse(bytes)
        } catch {
            let place = line.map { "line \($0 + 1): " } ?? ""
            throw EventLogError(.malformedJSON, "\(place)invalid JSON: \(error)", index: line)
        }
    }

    /// Decodes one publish object from JSON text, the way `POST /v1/events` does.
    public static func decode(_ json: String, idempotencyKey: String? = nil) throws(EventLogError) -> NewEvent {
        try event(from: parse(Array(json.utf8)), idempotencyKey: idempotencyKey)
    }

    /// The payload for a `--data` argument: a JSON string becomes text, any other JSON value is kept as
    /// canonical JSON, `null` is a tombstone.
    public static func decodeData(_ json: String) throws(EventLogError) -> EventData? {
        EventData.decoding(try parse(Array(json.utf8)))
    }

    /// The publish object of `event`: `{"topic":..,"type":..,"key":..,"data":..,"idempotencyKey":..}`.
    ///
    /// `type` is left out when it is the default `message` and `data` when the event is a tombstone; the server
    /// reads both absences the same way. JSON data is sent as given, except that CR and LF become spaces: in valid
    /// JSON they can only be insignificant whitespace, and replacing them keeps an NDJSON line on one line.
    ///
    /// - Parameter includeIdempotencyKey: Whether the key goes in the body (a batch line) rather than a header.
    public static func encode(_ event: NewEvent, includeIdempotencyKey: Bool) -> String {
        let data: JSONFragment
        switch event.data {
        case .none: data = .omitted
        case .text(let text): data = .string(text)
        case .json(let json): data = .raw(singleLine(json))
        }
        return JSONWriter.object([
            "topic": .string(event.topic),
            "type": event.type == "message" ? .omitted : .string(event.type),
            "key": .optionalString(event.key),
            "data": data,
            "idempotencyKey": includeIdempotencyKey ? .optionalString(event.idempotencyKey) : .omitted,
            "expectedLastId": event.expectedLastID.map { .int($0) } ?? .omitted,
        ])
    }

    private static func singleLine(_ json: String) -> String {
        guard json.utf8.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else {
            return json
        }
        return String(
            decoding: json.utf8.map { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") ? UInt8(ascii: " ") : $0 },
            as: UTF8.self
        )
    }
}
