extension EventData {
    /// The payload as a JSON value's text: JSON data as is, text as a JSON string.
    public var jsonText: String {
        switch self {
        case .json(let json): return json
        case .text(let text):
            var writer = JSONWriter()
            writer.string(text)
            return writer.text
        }
    }

    /// The payload of a JSON value: a string is text, `null` is a tombstone (`nil`), and any other value is
    /// kept as its canonical JSON text, every number lexeme exactly as written.
    public init?(json value: JSONValue) {
        switch value {
        case .null: return nil
        case .string(let text): self = .text(text)
        default: self = .json(value.canonicalText)
        }
    }
}

extension JSONFragment {
    /// An event's data as an envelope member: JSON data as is, text as a JSON string, a tombstone as null.
    public static func data(_ data: EventData?) -> JSONFragment {
        switch data {
        case .none: return .null
        case .text(let text): return .string(text)
        case .json(let json): return .raw(json)
        }
    }
}

extension Event {
    /// `{"id":..,"topic":..,"type":..,"time":..,"data":..}` plus `"key"` when the event has one: an event in
    /// history pages and in `envelope=1` streams.
    public var envelopeJSON: String {
        JSONWriter.object([
            "id": .int(id),
            "topic": .string(topic),
            "type": .string(type),
            "key": .optionalString(key),
            "time": .string(timeText),
            "data": .data(data),
        ])
    }
}
