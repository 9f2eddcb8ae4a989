import EventLog
import NIOCore

/// The server's side of the wire formats that need NIO: an SSE frame into a `ByteBuffer`. The texts themselves
/// are written by EventLogWire (``SSEEncoder``, ``EventEnvelope``, ``ServerMessage``), once for every side.
enum Wire {
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

extension ByteBuffer {
    /// Appends the SSE frame of one event.
    mutating func writeSSEEvent(_ event: Event, envelope: Bool) {
        var text = ""
        SSEEncoder.writeEvent(event, envelope: envelope, into: &text)
        writeString(text)
    }

    /// Appends an SSE control event (`eventlog.open`, ...), which has no `id:` line.
    mutating func writeSSEControl(_ name: String, json: String) {
        var text = ""
        SSEEncoder.writeControl(name, json: json, into: &text)
        writeString(text)
    }
}
