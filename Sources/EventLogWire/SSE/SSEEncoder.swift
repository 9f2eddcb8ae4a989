#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where ``SSEEncoder`` writes: a `String`, or (in the server) a `ByteBuffer` that goes to the socket as it is.
public protocol SSEOutput {
    mutating func writeSSEText(_ text: String)
    mutating func writeSSEText(_ text: Substring)
}

extension String: SSEOutput {
    public mutating func writeSSEText(_ text: String) { self += text }
    public mutating func writeSSEText(_ text: Substring) { self += text }
}

/// Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html): the one
/// encoder of every frame a subscriber receives, used by the server and by `eventlog replay --format sse`.
public enum SSEEncoder {
    /// Appends one event: `id:`, `event:`, one `data:` line per line of the payload (or of the envelope),
    /// then a blank line.
    ///
    /// The payload is split on CRLF, LF and CR, the three line ends an SSE parser splits on, so no
    /// payload can start a new field. Topic, type and id never hold CR, LF or NUL (validated on append).
    @inlinable
    public static func writeEvent(_ event: Event, envelope: Bool, into output: inout some SSEOutput) {
        output.writeSSEText("id: ")
        output.writeSSEText(String(event.id))
        output.writeSSEText("\nevent: ")
        output.writeSSEText(event.type)
        output.writeSSEText("\n")
        if envelope {
            writeData(EventEnvelope.encode(event), into: &output)
        } else {
            writeData(event.data?.text ?? "", into: &output)
        }
        output.writeSSEText("\n")
    }

    /// The frame of one event.
    public static func event(_ event: Event, envelope: Bool) -> String {
        var text = ""
        writeEvent(event, envelope: envelope, into: &text)
        return text
    }

    /// Appends a control event: `event: <name>` and one data line, with no `id:` line so it never
    /// moves the client's Last-Event-ID.
    @inlinable
    public static func writeControl(_ name: String, json: String, into output: inout some SSEOutput) {
        output.writeSSEText("event: ")
        output.writeSSEText(name)
        output.writeSSEText("\n")
        writeData(json, into: &output)
        output.writeSSEText("\n")
    }

    /// `retry: <ms>` and a blank line.
    @inlinable
    public static func writeRetry(milliseconds: Int, into output: inout some SSEOutput) {
        output.writeSSEText("retry: ")
        output.writeSSEText(String(milliseconds))
        output.writeSSEText("\n\n")
    }

    /// A comment, ignored by parsers; keeps proxies from closing an idle stream.
    public static let keepalive = ": keepalive\n\n"

    /// Whether `payload` holds a line break (LF or CR); memchr over the contiguous UTF-8 in the common case.
    @usableFromInline
    static func hasLineBreak(_ payload: String) -> Bool {
        let utf8 = payload.utf8
        return utf8.withContiguousStorageIfAvailable { bytes in
            guard let base = bytes.baseAddress else { return false }
            return memchr(base, 0x0A, bytes.count) != nil || memchr(base, 0x0D, bytes.count) != nil
        } ?? utf8.contains(where: { $0 == 0x0A || $0 == 0x0D })
    }

    @inlinable
    static func writeData(_ payload: String, into output: inout some SSEOutput) {
        // The common case, one line (the hot path of a replay).
        if !hasLineBreak(payload) {
            output.writeSSEText("data: ")
            output.writeSSEText(payload)
            output.writeSSEText("\n")
            return
        }
        let utf8 = payload.utf8
        var lineStart = utf8.startIndex
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == 0x0A || byte == 0x0D {
                output.writeSSEText("data: ")
                output.writeSSEText(payload[lineStart..<index])
                output.writeSSEText("\n")
                var next = utf8.index(after: index)
                if byte == 0x0D, next != utf8.endIndex, utf8[next] == 0x0A { next = utf8.index(after: next) }
                lineStart = next
                index = next
            } else {
                index = utf8.index(after: index)
            }
        }
        output.writeSSEText("data: ")
        output.writeSSEText(payload[lineStart..<utf8.endIndex])
        output.writeSSEText("\n")
    }
}
