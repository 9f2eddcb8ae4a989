#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html): the one
/// encoder of every frame a subscriber receives, used by the server and by `eventlog replay --format sse`.
public enum SSEEncoder {
    /// Appends one event: `id:`, `event:`, one `data:` line per line of the payload (or of the envelope),
    /// then a blank line.
    ///
    /// The payload is split on CRLF, LF and CR, the three line ends an SSE parser splits on, so no
    /// payload can start a new field. Topic, type and id never hold CR, LF or NUL (validated on append).
    public static func writeEvent(_ event: Event, envelope: Bool, into text: inout String) {
        text += "id: "
        text += String(event.id)
        text += "\nevent: "
        text += event.type
        text += "\n"
        if envelope {
            writeData(EventEnvelope.encode(event), into: &text)
        } else {
            writeData(event.data?.text ?? "", into: &text)
        }
        text += "\n"
    }

    /// The frame of one event.
    public static func event(_ event: Event, envelope: Bool) -> String {
        var text = ""
        writeEvent(event, envelope: envelope, into: &text)
        return text
    }

    /// Appends a control event: `event: <name>` and one data line, with no `id:` line so it never
    /// moves the client's Last-Event-ID.
    public static func writeControl(_ name: String, json: String, into text: inout String) {
        text += "event: "
        text += name
        text += "\n"
        writeData(json, into: &text)
        text += "\n"
    }

    /// `retry: <ms>` and a blank line.
    public static func writeRetry(milliseconds: Int, into text: inout String) {
        text += "retry: "
        text += String(milliseconds)
        text += "\n\n"
    }

    /// A comment, ignored by parsers; keeps proxies from closing an idle stream.
    public static let keepalive = ": keepalive\n\n"

    private static func writeData(_ payload: String, into text: inout String) {
        let utf8 = payload.utf8
        // The common case, one line, found with memchr over the contiguous UTF-8 (the hot path of a replay).
        let hasLineBreak =
            utf8.withContiguousStorageIfAvailable { bytes in
                guard let base = bytes.baseAddress else { return false }
                return memchr(base, 0x0A, bytes.count) != nil || memchr(base, 0x0D, bytes.count) != nil
            } ?? utf8.contains(where: { $0 == 0x0A || $0 == 0x0D })
        if !hasLineBreak {
            text += "data: "
            text += payload
            text += "\n"
            return
        }
        var lineStart = utf8.startIndex
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == 0x0A || byte == 0x0D {
                text += "data: "
                text += payload[lineStart..<index]
                text += "\n"
                var next = utf8.index(after: index)
                if byte == 0x0D, next != utf8.endIndex, utf8[next] == 0x0A { next = utf8.index(after: next) }
                lineStart = next
                index = next
            } else {
                index = utf8.index(after: index)
            }
        }
        text += "data: "
        text += payload[lineStart..<utf8.endIndex]
        text += "\n"
    }
}
