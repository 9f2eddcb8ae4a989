import EventLog
import NIOCore

/// The server writes every text of the wire with EventLogWire (``SSEEncoder``, ``EventEnvelope``,
/// ``ServerMessage``, ``PublishAnswer``, ``ErrorBody``), once for every side; this is what it adds: an SSE
/// frame straight into a `ByteBuffer`.
extension ByteBuffer {
    /// Appends the SSE frame of one event.
    mutating func writeSSEEvent(_ event: Event, envelope: Bool) {
        // The buffer moves into the output and back, so the write does not copy it.
        var output = SSEBufferOutput(buffer: self)
        self = ByteBuffer()
        SSEEncoder.writeEvent(event, envelope: envelope, into: &output)
        self = output.buffer
    }
}

/// ``SSEEncoder`` writing straight into a `ByteBuffer`, with no intermediate `String`.
private struct SSEBufferOutput: SSEOutput {
    var buffer: ByteBuffer
    mutating func writeSSEText(_ text: String) { buffer.writeString(text) }
    mutating func writeSSEText(_ text: Substring) { buffer.writeSubstring(text) }
}
