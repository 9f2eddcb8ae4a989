extension Event {
    /// Decodes an event envelope (`{"id","topic","type","time","data","key"?}`), keeping JSON data exactly as
    /// sent. `defaultType` is used when the envelope has no `type` (an SSE envelope carries it in `event:`).
    public init(envelope value: JSONValue, defaultType: String = "message") throws(EventLogError) {
        guard case .number(let idText) = value["id"], let id = Int64(idText), case .string(let topic) = value["topic"]
        else { throw EventLogError(.malformedJSON, "an event envelope lacks id or topic") }
        var type = defaultType
        if case .string(let text) = value["type"] { type = text }
        var key: String?
        if case .string(let text) = value["key"] { key = text }
        var time: Int64 = 0
        if case .string(let text) = value["time"] {
            guard let parsed = Timestamp.parseRFC3339(text) else {
                throw EventLogError(.malformedJSON, "an event envelope's time is not RFC 3339")
            }
            time = parsed
        }
        self.init(
            id: id, topic: topic, type: type, key: key, data: value["data"].flatMap { EventData(json: $0) }, time: time)
    }
}

extension HistoryPage {
    /// The history answer's JSON: `{"events":[<envelope>...],"next":N,"head":H,"earliest":E}`.
    public var json: String {
        var text = "{\"events\":["
        for (offset, event) in events.enumerated() {
            if offset > 0 { text += "," }
            text += event.envelopeJSON
        }
        text += "],\"next\":\(next),\"head\":\(head),\"earliest\":\(earliest)}"
        return text
    }

    /// Decodes a history answer, keeping JSON data exactly as the server sent it.
    public init(json bytes: [UInt8]) throws(EventLogError) {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw EventLogError(.malformedJSON, "the history answer is not valid JSON: \(error)")
        }
        func integer(_ name: String) throws(EventLogError) -> Int64 {
            guard case .number(let lexeme) = value[name], let number = Int64(lexeme) else {
                throw EventLogError(.malformedJSON, "the history answer has no integer \"\(name)\"")
            }
            return number
        }
        guard case .array(let items) = value["events"] else {
            throw EventLogError(.malformedJSON, "the history answer has no \"events\" array")
        }
        var events: [Event] = []
        events.reserveCapacity(items.count)
        for item in items { events.append(try Event(envelope: item)) }
        self.init(
            events: events, next: try integer("next"), head: try integer("head"), earliest: try integer("earliest"))
    }
}
