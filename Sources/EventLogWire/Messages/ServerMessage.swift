/// What the server sends on a subscription, whatever the transport, with both its encodings and their decoding:
/// WebSocket JSON text messages (`{"type":"subscribed",...}`) and SSE events (`eventlog.open`, `eventlog.caughtup`,
/// `eventlog.gap`, `eventlog.reset` control events and the events themselves).
public enum ServerMessage: Sendable, Hashable {
    /// SSE `eventlog.open` or WebSocket `subscribed`: the log's epoch and retained range, the start position the
    /// server resolved (`from`), and on WebSocket a resume token naming that position.
    case opened(epoch: String, earliest: Int64, head: Int64, from: Int64?, resumeToken: String? = nil)
    /// An event; on WebSocket with the resume token naming the position right after it.
    case event(Event, resumeToken: String? = nil)
    /// The replay reached `head`; WebSocket also names that position with a resume token.
    case caughtUp(head: Int64?, resumeToken: String? = nil)
    /// Retention removed the events after `requested` and before `earliest` before this subscriber saw them.
    case gap(requested: Int64, earliest: Int64)
    /// The requested position does not exist in this log; the stream continues from `head`.
    case reset(requested: Int64, head: Int64, epoch: String)
    /// A WebSocket `error` message; `code` is kept as sent, since a newer server may send a code this catalogue
    /// does not know (``ErrorCode(rawValue:)`` maps it).
    case error(code: String, message: String)
    /// WebSocket `authenticated`: the answer to an `auth` op, with the token's subject and when it stops being
    /// accepted (Unix milliseconds; `nil` for a credential that does not expire).
    case authenticated(subject: String, expiresAt: Int64?)
    /// Anything a subscriber does not need: an `ack`, an unknown control event or message type.
    case ignored
}

// MARK: WebSocket

extension ServerMessage {
    /// The WebSocket text message, or `nil` for ``ignored``.
    public var webSocketText: String? {
        switch self {
        case .opened(let epoch, let earliest, let head, let from, let resumeToken):
            return JSONWriter.object([
                "type": .string("subscribed"), "epoch": .string(epoch), "earliest": .int(earliest),
                "head": .int(head), "from": from.map { .int($0) } ?? .omitted,
                "resume": .optionalString(resumeToken),
            ])
        case .event(let event, let resumeToken):
            return JSONWriter.object([
                "type": .string("event"), "id": .int(event.id), "topic": .string(event.topic),
                "event": .string(event.type), "key": .optionalString(event.key),
                "time": .string(event.timeText), "data": EventData.jsonFragment(event.data),
                "resume": .optionalString(resumeToken),
            ])
        case .caughtUp(let head, let resumeToken):
            return JSONWriter.object([
                "type": .string("caughtup"), "head": head.map { .int($0) } ?? .omitted,
                "resume": .optionalString(resumeToken),
            ])
        case .gap(let requested, let earliest):
            return JSONWriter.object([
                "type": .string("gap"), "requested": .int(requested), "earliest": .int(earliest),
                "reason": .string("retention"),
            ])
        case .reset(let requested, let head, let epoch):
            return JSONWriter.object([
                "type": .string("reset"), "requested": .int(requested), "head": .int(head), "epoch": .string(epoch),
            ])
        case .error(let code, let message):
            return Self.webSocketError(codeText: code, message: message)
        case .authenticated(let subject, let expiresAt):
            return Self.authenticatedText(subject: subject, expiresAt: expiresAt)
        case .ignored:
            return nil
        }
    }

    /// The answer to an `auth` op: `{"type":"authenticated","subject":..,"expiresAt":"<RFC 3339>"|null,"ref":..}`.
    public static func authenticatedText(subject: String, expiresAt: Int64?, ref: JSONFragment = .omitted) -> String {
        JSONWriter.object([
            "type": .string("authenticated"), "subject": .string(subject),
            "expiresAt": expiresAt.map { .string(Timestamp.rfc3339(milliseconds: $0)) } ?? .raw("null"),
            "ref": ref,
        ])
    }

    /// A WebSocket `error` message: `{"type":"error","code":..,"message":..,"ref":..}`, where `ref` echoes the
    /// client message's `ref` (left out when ``JSONFragment/omitted``).
    /// `selector` names the selector or topic a `forbidden_topic` refused.
    /// `lastID` is the topic's newest id of an `expected_last_id_mismatch`, `index` the batch line of an error.
    public static func webSocketError(
        code: ErrorCode, message: String, ref: JSONFragment = .omitted, selector: String? = nil,
        lastID: Int64? = nil
    ) -> String {
        webSocketError(codeText: code.rawValue, message: message, ref: ref, selector: selector, lastID: lastID)
    }

    private static func webSocketError(
        codeText code: String, message: String, ref: JSONFragment = .omitted, selector: String? = nil,
        lastID: Int64? = nil
    ) -> String {
        JSONWriter.object([
            "type": .string("error"), "code": .string(code), "message": .string(message),
            "selector": .optionalString(selector), "lastId": lastID.map { .int($0) } ?? .omitted, "ref": ref,
        ])
    }

    /// Decodes one WebSocket text message.
    public static func decodeWebSocket(_ text: String) throws(WireDecodingError) -> ServerMessage {
        try self.decodeWebSocket(Array(text.utf8))
    }

    /// Decodes one WebSocket text message.
    public static func decodeWebSocket(_ bytes: [UInt8]) throws(WireDecodingError) -> ServerMessage {
        let object = try JSONObject(parsing: bytes, what: "a WebSocket message")
        switch try object.string("type") {
        case "subscribed":
            return .opened(
                epoch: try object.string("epoch"),
                earliest: try object.int64("earliest"),
                head: try object.int64("head"),
                from: try object.optionalInt64("from"),
                resumeToken: try object.optionalString("resume")
            )
        case "event":
            let event = Event(
                id: try object.int64("id"),
                topic: try object.string("topic"),
                type: try object.optionalString("event") ?? "message",
                key: try object.optionalString("key"),
                data: EventData.decoding(object["data"]),
                time: try object.time("time")
            )
            return .event(event, resumeToken: try object.optionalString("resume"))
        case "caughtup":
            return .caughtUp(head: try object.optionalInt64("head"), resumeToken: try object.optionalString("resume"))
        case "gap":
            return .gap(requested: try object.int64("requested"), earliest: try object.int64("earliest"))
        case "reset":
            return .reset(
                requested: try object.int64("requested"),
                head: try object.int64("head"),
                epoch: try object.string("epoch")
            )
        case "error":
            if let nested = try object.optionalObject("error") {
                return .error(code: try nested.string("code"), message: try nested.optionalString("message") ?? "")
            }
            return .error(code: try object.string("code"), message: try object.optionalString("message") ?? "")
        case "authenticated":
            let expiresAt: Int64?
            if let text = try object.optionalString("expiresAt") {
                guard let milliseconds = Timestamp.parseRFC3339(text) else {
                    throw WireDecodingError("authenticated: \"expiresAt\" is not an RFC 3339 time")
                }
                expiresAt = milliseconds
            } else {
                expiresAt = nil
            }
            return .authenticated(subject: try object.optionalString("subject") ?? "", expiresAt: expiresAt)
        default:
            return .ignored
        }
    }
}

// MARK: Server-Sent Events

extension ServerMessage {
    /// The SSE control event of this message: its `event:` name and its one `data:` line, or `nil` for a message
    /// that is not a control event (an event, an error, ``ignored``). Control events have no `id:` line, so they never
    /// move the client's Last-Event-ID.
    public var sseControl: (event: String, data: String)? {
        switch self {
        case .opened(let epoch, let earliest, let head, let from, _):
            return (
                "eventlog.open",
                JSONWriter.object([
                    "epoch": .string(epoch), "earliest": .int(earliest), "head": .int(head),
                    "from": from.map { .int($0) } ?? .omitted,
                ])
            )
        case .caughtUp(let head, _):
            return ("eventlog.caughtup", JSONWriter.object(["head": head.map { .int($0) } ?? .omitted]))
        case .gap(let requested, let earliest):
            return (
                "eventlog.gap",
                JSONWriter.object([
                    "requested": .int(requested), "earliest": .int(earliest), "reason": .string("retention"),
                ])
            )
        case .reset(let requested, let head, let epoch):
            return (
                "eventlog.reset",
                JSONWriter.object(["requested": .int(requested), "head": .int(head), "epoch": .string(epoch)])
            )
        case .event, .error, .authenticated, .ignored:
            return nil
        }
    }

    /// The whole SSE frame of this message as text: `id:` and `event:` lines for an event, `event:` for a control
    /// event, one `data:` line per line of the data, and the blank line; `nil` for messages SSE does not carry.
    public func sseFrame(envelope: Bool) -> String? {
        var text = ""
        switch self {
        case .event(let event, _):
            SSEEncoder.writeEvent(event, envelope: envelope, into: &text)
        default:
            guard let control = self.sseControl else { return nil }
            SSEEncoder.writeControl(control.event, json: control.data, into: &text)
        }
        return text
    }

    /// Decodes a dispatched SSE event of an `envelope=1` stream.
    public static func decodeSSE(_ event: ServerSentEvent) throws(WireDecodingError) -> ServerMessage {
        let data = Array(event.data.utf8)
        switch event.type {
        case "eventlog.open":
            let object = try JSONObject(parsing: data, what: "the eventlog.open data")
            return .opened(
                epoch: try object.string("epoch"),
                earliest: try object.int64("earliest"),
                head: try object.int64("head"),
                from: try object.optionalInt64("from")
            )
        case "eventlog.caughtup":
            let object = try? JSONObject(parsing: data, what: "the eventlog.caughtup data")
            return .caughtUp(head: (try? object?.optionalInt64("head")) ?? nil)
        case "eventlog.gap":
            let object = try JSONObject(parsing: data, what: "the eventlog.gap data")
            return .gap(requested: try object.int64("requested"), earliest: try object.int64("earliest"))
        case "eventlog.reset":
            let object = try JSONObject(parsing: data, what: "the eventlog.reset data")
            return .reset(
                requested: try object.int64("requested"),
                head: try object.int64("head"),
                epoch: try object.string("epoch")
            )
        case let type where type.hasPrefix("eventlog."):
            return .ignored
        default:
            let object = try JSONObject(parsing: data, what: "an event envelope")
            return .event(try EventEnvelope.decode(object, defaultType: event.type))
        }
    }
}
