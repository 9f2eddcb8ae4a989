/// Writes the JSON this client sends. Written by hand so that `.json` payloads go out verbatim.
enum JSONText {
    /// A JSON string literal for `value`.
    static func string(_ value: String) -> String {
        var out = "\""
        out.reserveCapacity(value.utf8.count + 2)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{00}"..."\u{1F}":
                let hex = Array("0123456789abcdef".unicodeScalars)
                out += "\\u00"
                out.unicodeScalars.append(hex[Int(scalar.value >> 4)])
                out.unicodeScalars.append(hex[Int(scalar.value & 0x0F)])
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
        return out
    }

    /// The JSON text of a payload. Raw JSON is sent as given, except that CR and LF become spaces: in valid JSON
    /// they can only be insignificant whitespace, and removing them keeps an NDJSON line on one line.
    static func payload(_ payload: EventPayload) -> String {
        switch payload {
        case .text(let text):
            return self.string(text)
        case .json(let json):
            guard json.utf8.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else {
                return json
            }
            return String(
                decoding: json.utf8.map {
                    $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") ? UInt8(ascii: " ") : $0
                },
                as: UTF8.self
            )
        }
    }

    /// The publish body of one event: `{"topic":..,"type":..,"key":..,"data":..,"idempotencyKey":..}`.
    ///
    /// - Parameter includeIdempotencyKey: Whether the key goes in the body (a batch line) rather than a header.
    static func event(_ event: OutgoingEvent, includeIdempotencyKey: Bool) -> String {
        var out = "{\"topic\":" + self.string(event.topic)
        if let type = event.type {
            out += ",\"type\":" + self.string(type)
        }
        if let key = event.key {
            out += ",\"key\":" + self.string(key)
        }
        if let data = event.data {
            out += ",\"data\":" + self.payload(data)
        }
        if includeIdempotencyKey, let idempotencyKey = event.idempotencyKey {
            out += ",\"idempotencyKey\":" + self.string(idempotencyKey)
        }
        return out + "}"
    }

    /// The WebSocket subscribe message.
    static func subscribe(topics: [String], start: WebSocketStart) -> String {
        var out = "{\"op\":\"subscribe\",\"topics\":[" + topics.map(self.string).joined(separator: ",") + "]"
        switch start {
        case .resume(let token): out += ",\"resume\":" + self.string(token)
        case .from(let id): out += ",\"from\":\(id)"
        case .earliest: out += ",\"from\":\"earliest\""
        case .latest: out += ",\"from\":\"latest\""
        }
        return out + "}"
    }
}
