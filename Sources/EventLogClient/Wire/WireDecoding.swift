import NIOCore

/// The wire layer's decoding, with its failures as the client's errors: whatever the server sends that this client
/// cannot understand is a ``EventLogClientError/Code/protocolViolation`` with the wire layer's message.
enum WireDecoding {
    /// Runs a wire decoder, turning a ``WireDecodingError`` into a protocol violation.
    static func decode<Value>(
        _ body: () throws(WireDecodingError) -> Value
    ) throws(EventLogClientError) -> Value {
        do {
            return try body()
        } catch {
            throw EventLogClientError(.protocolViolation, message: error.message)
        }
    }

    /// Decodes a dispatched SSE event from an `envelope=1` stream.
    static func sseMessage(_ event: ServerSentEvent) throws(EventLogClientError) -> ServerMessage {
        try self.decode { () throws(WireDecodingError) in try ServerMessage.decodeSSE(event) }
    }

    /// Decodes one WebSocket text message.
    static func webSocketMessage(_ bytes: [UInt8]) throws(EventLogClientError) -> ServerMessage {
        try self.decode { () throws(WireDecodingError) in try ServerMessage.decodeWebSocket(bytes) }
    }

    /// Whether `message` (decoded from `bytes`) is the server's warning that the connection's token expires soon:
    /// an `error` `token_expired` without `ref`. With a `ref` it answers an `auth` op, whose token was refused.
    static func isTokenExpiryWarning(_ message: ServerMessage, _ bytes: [UInt8]) -> Bool {
        guard case .error(let code, _) = message, code == ErrorCode.tokenExpired.rawValue else {
            return false
        }
        // Only this rare message is parsed a second time, for the `ref` that ServerMessage does not keep.
        switch try? JSONObject(parsing: bytes, what: "a WebSocket message")["ref"] {
        case nil, .null?: return true
        default: return false
        }
    }
}

extension ServerSentEventParser {
    /// Parses the next chunk of the stream and returns the events it completed, in order.
    ///
    /// - Throws: ``EventLogClientError/Code/responseTooLarge`` when a line or an event is over
    ///   ``maximumEventBytes``.
    public mutating func parse(_ buffer: ByteBuffer) throws(EventLogClientError) -> [ServerSentEvent] {
        do {
            return try self.parse(buffer.readableBytesView)
        } catch {
            throw EventLogClientError(.responseTooLarge, message: error.message)
        }
    }
}
