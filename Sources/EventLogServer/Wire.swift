import EventLog
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How events and control messages look on the wire. Each format is written here once and used by
/// SSE, WebSocket and the history endpoint alike.
enum Wire {
    /// The event's data as a JSON value: JSON data as is, text as a JSON string, a tombstone as null.
    static func dataJSON(_ data: EventData?) -> JSONFragment {
        switch data {
        case .none: return .null
        case .text(let text): return .string(text)
        case .json(let json): return .raw(json)
        }
    }

    /// `{"id":..,"topic":..,"type":..,"time":..,"data":..}` plus `"key"` when the event has one.
    static func envelope(_ event: Event) -> String {
        JSONWriter.object([
            "id": .int(event.id),
            "topic": .string(event.topic),
            "type": .string(event.type),
            "key": .optionalString(event.key),
            "time": .string(event.timeText),
            "data": dataJSON(event.data),
        ])
    }

    /// The error body of every failed request: `{"error":{"code":..,"message":..}}`.
    static func errorBody(code: ErrorCode, message: String, index: Int? = nil) -> String {
        let inner = JSONWriter.object([
            "code": .string(code.rawValue),
            "message": .string(message),
            "index": index.map { .int(Int64($0)) } ?? .omitted,
        ])
        return JSONWriter.object(["error": .raw(inner)])
    }
}

/// Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).
enum SSEFrame {
    /// Appends one event: `id:`, `event:`, one `data:` line per line of the payload, blank line.
    ///
    /// The payload is split on CRLF, LF and CR, the three line ends an SSE parser splits on, so no
    /// payload can start a new field. Topic, type and id never hold CR, LF or NUL (validated on append).
    static func writeEvent(_ event: Event, envelope: Bool, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("id: ")
        buffer.writeString(String(event.id))
        buffer.writeStaticString("\nevent: ")
        buffer.writeString(event.type)
        buffer.writeStaticString("\n")
        if envelope {
            writeData(Wire.envelope(event), into: &buffer)
        } else {
            writeData(event.data?.text ?? "", into: &buffer)
        }
        buffer.writeStaticString("\n")
    }

    /// Appends a control event: `event: <name>` and one data line, with no `id:` line so it never
    /// moves the client's Last-Event-ID.
    static func writeControl(_ name: String, json: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("event: ")
        buffer.writeString(name)
        buffer.writeStaticString("\n")
        writeData(json, into: &buffer)
        buffer.writeStaticString("\n")
    }

    /// `retry: <ms>`.
    static func writeRetry(milliseconds: Int, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("retry: ")
        buffer.writeString(String(milliseconds))
        buffer.writeStaticString("\n\n")
    }

    /// A comment line, ignored by parsers; keeps proxies from closing an idle stream.
    static func writeKeepalive(into buffer: inout ByteBuffer) {
        buffer.writeStaticString(": keepalive\n\n")
    }

    private static func writeData(_ text: String, into buffer: inout ByteBuffer) {
        let utf8 = text.utf8
        // The common case, one line, found with memchr over the contiguous UTF-8 (the hot path of a replay).
        let hasLineBreak =
            utf8.withContiguousStorageIfAvailable { bytes in
                guard let base = bytes.baseAddress else { return false }
                return memchr(base, 0x0A, bytes.count) != nil || memchr(base, 0x0D, bytes.count) != nil
            } ?? utf8.contains(where: { $0 == 0x0A || $0 == 0x0D })
        if !hasLineBreak {
            buffer.writeStaticString("data: ")
            buffer.writeString(text)
            buffer.writeStaticString("\n")
            return
        }
        var lineStart = utf8.startIndex
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == 0x0A || byte == 0x0D {
                buffer.writeStaticString("data: ")
                buffer.writeSubstring(text[lineStart..<index])
                buffer.writeStaticString("\n")
                var next = utf8.index(after: index)
                if byte == 0x0D, next != utf8.endIndex, utf8[next] == 0x0A { next = utf8.index(after: next) }
                lineStart = next
                index = next
            } else {
                index = utf8.index(after: index)
            }
        }
        buffer.writeStaticString("data: ")
        buffer.writeSubstring(text[lineStart..<utf8.endIndex])
        buffer.writeStaticString("\n")
    }
}

/// The wire formats, for tools that print what a client would receive (`eventlog replay`).
public enum WireFormat {
    /// The JSON envelope of an event, as in history pages and `envelope=1` streams.
    public static func envelope(_ event: Event) -> String {
        Wire.envelope(event)
    }

    /// The exact SSE frame a subscriber gets for `event`.
    public static func sseFrame(_ event: Event, envelope: Bool = false) -> String {
        var buffer = ByteBuffer()
        SSEFrame.writeEvent(event, envelope: envelope, into: &buffer)
        return String(buffer: buffer)
    }

    /// The JSON value of an event's data, as the envelope carries it.
    public static func dataJSON(_ data: EventData?) -> String {
        var writer = JSONWriter()
        writer.fragment(Wire.dataJSON(data))
        return writer.text
    }

    /// Decodes one publish object (`{"topic":..,"type":..,"key":..,"data":..,"idempotencyKey":..}`) the
    /// way `POST /v1/events` does. Throws ``WireFormatError`` with the same code the server answers.
    public static func decodeEvent(_ json: String, idempotencyKey: String? = nil) throws(WireFormatError) -> NewEvent {
        do {
            return try PublishDecoder.event(
                from: PublishDecoder.parse(Array(json.utf8)), idempotencyKey: idempotencyKey)
        } catch {
            throw WireFormatError(code: error.code, message: error.message)
        }
    }

    /// The payload for a `--data` argument: a JSON string becomes text, any other JSON value is
    /// kept as canonical JSON, `null` is a tombstone.
    public static func decodeData(_ json: String) throws(WireFormatError) -> EventData? {
        let value: JSONValue
        do {
            value = try PublishDecoder.parse(Array(json.utf8))
        } catch {
            throw WireFormatError(code: error.code, message: error.message)
        }
        switch value {
        case .null: return nil
        case .string(let text): return .text(text)
        default: return .json(value.canonicalText)
        }
    }
}

extension WireFormat {
    /// Decodes a history answer (`{"events":[<envelope>...],"next":N,"head":H,"earliest":E}`), keeping
    /// JSON data exactly as the server sent it.
    public static func decodeHistoryPage(_ body: [UInt8]) throws(WireFormatError) -> EventLog.Page {
        let value: JSONValue
        do {
            value = try PublishDecoder.parse(body)
        } catch {
            throw WireFormatError(code: error.code, message: error.message)
        }
        func integer(_ value: JSONValue?) -> Int64? {
            if case .number(let lexeme) = value { return Int64(lexeme) }
            return nil
        }
        func string(_ value: JSONValue?) -> String? {
            if case .string(let text) = value { return text }
            return nil
        }
        guard case .array(let items) = value["events"], let next = integer(value["next"]),
            let head = integer(value["head"]), let earliest = integer(value["earliest"])
        else { throw WireFormatError(code: .malformedJSON, message: "not a history page") }
        var events: [Event] = []
        for item in items {
            guard let id = integer(item["id"]), let topic = string(item["topic"]) else {
                throw WireFormatError(code: .malformedJSON, message: "an event in the page lacks id or topic")
            }
            let data: EventData?
            switch item["data"] {
            case .none, .some(.null): data = nil
            case .some(.string(let text)): data = .text(text)
            case .some(let other): data = .json(other.canonicalText)
            }
            events.append(
                Event(
                    id: id, topic: topic, type: string(item["type"]) ?? "message", key: string(item["key"]),
                    data: data, time: string(item["time"]).flatMap(Timestamp.parseRFC3339) ?? 0))
        }
        return EventLog.Page(events: events, next: next, head: head, earliest: earliest)
    }
}

/// A decoding failure from ``WireFormat``, with the wire error code (e.g. `malformed_json`).
public struct WireFormatError: Error, CustomStringConvertible, Sendable {
    /// The error code the server would answer.
    public let code: ErrorCode
    /// What was wrong.
    public let message: String
    public var description: String { message }
}
