import EventLog
import NIOCore

/// The server writes every text of the wire with EventLogWire (``SSEEncoder``, ``EventEnvelope``,
/// ``ServerMessage``, ``PublishAnswer``, ``ErrorBody``), once for every side; this is what it adds: an SSE
/// frame straight into a `ByteBuffer`.
extension ByteBuffer {
    /// Appends the SSE frame of one event.
    mutating func writeSSEEvent(_ event: Event, envelope: Bool) {
        var text = ""
        SSEEncoder.writeEvent(event, envelope: envelope, into: &text)
        writeString(text)
    }
}
