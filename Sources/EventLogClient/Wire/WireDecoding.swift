import Foundation

/// A message from the server on a subscription, whatever the transport.
enum ServerMessage: Sendable, Hashable {
    /// SSE `eventlog.open` or WebSocket `subscribed`; `from` is the resolved start position when the server sends it.
    case opened(epoch: String, earliest: Int64, head: Int64, from: Int64?)
    /// An event.
    case event(ReceivedEvent)
    /// The replay reached `head`; WebSocket also names that position with a resume token.
    case caughtUp(head: Int64?, resumeToken: String?)
    /// Retention removed events this subscriber never saw.
    case gap(requested: Int64, earliest: Int64)
    /// The requested position does not exist in this log; the stream continues from `head`.
    case reset(requested: Int64, head: Int64, epoch: String)
    /// A WebSocket `error` message.
    case error(code: String, message: String)
    /// Anything this client does not need (an `ack`, an unknown control event or message type).
    case ignored
}

/// Decodes the JSON the server sends, with Foundation's `JSONSerialization`.
enum WireDecoding {
    /// Parses one JSON object.
    static func object(_ data: Data, what: String) throws(EventLogClientError) -> JSONObject {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw EventLogClientError(.protocolViolation, message: "\(what) is not valid JSON")
        }
        guard let object = value as? [String: Any] else {
            throw EventLogClientError(.protocolViolation, message: "\(what) is not a JSON object")
        }
        return JSONObject(object, what: what)
    }

    /// Maps a JSON value to a payload: a string is text, `null` (or nothing) is `nil`, and any other value is its
    /// canonical JSON text (keys sorted, no insignificant whitespace).
    static func payload(_ value: Any?) -> EventPayload? {
        switch value {
        case nil, is NSNull:
            return nil
        case let text as String:
            return .text(text)
        case let value?:
            let options: JSONSerialization.WritingOptions = [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes]
            guard let data = try? JSONSerialization.data(withJSONObject: value, options: options) else {
                return nil
            }
            return .json(String(decoding: data, as: UTF8.self))
        }
    }

    /// An event envelope: `{"id","topic","type","time","data","key"?}` (SSE with `envelope=1`, and history).
    static func envelope(
        _ object: JSONObject, defaultType: String = "message"
    ) throws(EventLogClientError)
        -> ReceivedEvent
    {
        ReceivedEvent(
            id: try object.int64("id"),
            topic: try object.string("topic"),
            type: try object.optionalString("type") ?? defaultType,
            key: try object.optionalString("key"),
            time: try object.string("time"),
            data: self.payload(object["data"])
        )
    }

    /// A publish answer: `{"id","topic","time"}`.
    static func publishResult(_ object: JSONObject, replayed: Bool) throws(EventLogClientError) -> PublishResult {
        PublishResult(
            id: try object.int64("id"),
            topic: try object.string("topic"),
            time: try object.string("time"),
            replayed: try object.optionalBool("replayed") ?? replayed
        )
    }

    /// A batch publish answer: `{"events":[{"id","topic","time","replayed"}...],"ids":[...]}`.
    static func batchResults(_ data: Data, replayed: Bool) throws(EventLogClientError) -> [PublishResult] {
        let object = try self.object(data, what: "the batch publish answer")
        var results: [PublishResult] = []
        for element in try object.objects("events") {
            results.append(try self.publishResult(element, replayed: replayed))
        }
        return results
    }

    /// A history page: `{"events":[<envelope>...],"next","head","earliest"}`.
    static func historyPage(_ data: Data) throws(EventLogClientError) -> HistoryPage {
        let object = try self.object(data, what: "the history answer")
        var events: [ReceivedEvent] = []
        for element in try object.objects("events") {
            events.append(try self.envelope(element))
        }
        return HistoryPage(
            events: events,
            next: try object.int64("next"),
            head: try object.int64("head"),
            earliest: try object.int64("earliest")
        )
    }

    /// The topic list: `{"topics":[{"topic","count","lastId"}...],"head","earliest"}`.
    static func topics(_ data: Data) throws(EventLogClientError) -> [TopicInfo] {
        let object = try self.object(data, what: "the topics answer")
        var topics: [TopicInfo] = []
        for element in try object.objects("topics") {
            topics.append(
                TopicInfo(
                    topic: try element.string("topic"),
                    count: try element.int64("count"),
                    lastId: try element.int64("lastId")
                )
            )
        }
        return topics
    }

    /// The server's error body `{"error":{"code","message","index"?}}`, when the body is one.
    static func errorBody(_ data: Data) -> (code: String, message: String, index: Int?)? {
        guard let object = try? self.object(data, what: "the error body"),
            let error = try? object.optionalObject("error"),
            let code = try? error.string("code")
        else {
            return nil
        }
        let message = (try? error.optionalString("message")) ?? nil
        let index = ((try? error.optionalInt64("index")) ?? nil) ?? ((try? object.optionalInt64("index")) ?? nil)
        return (code, message ?? code, index.map { Int(truncatingIfNeeded: $0) })
    }

    /// Decodes a dispatched SSE event from an `envelope=1` stream.
    static func sseMessage(_ event: ServerSentEvent) throws(EventLogClientError) -> ServerMessage {
        let data = Data(event.data.utf8)
        switch event.type {
        case "eventlog.open":
            let object = try self.object(data, what: "the eventlog.open data")
            return .opened(
                epoch: try object.string("epoch"),
                earliest: try object.int64("earliest"),
                head: try object.int64("head"),
                from: try object.optionalInt64("from")
            )
        case "eventlog.caughtup":
            let object = try? self.object(data, what: "the eventlog.caughtup data")
            return .caughtUp(head: (try? object?.optionalInt64("head")) ?? nil, resumeToken: nil)
        case "eventlog.gap":
            let object = try self.object(data, what: "the eventlog.gap data")
            return .gap(requested: try object.int64("requested"), earliest: try object.int64("earliest"))
        case "eventlog.reset":
            let object = try self.object(data, what: "the eventlog.reset data")
            return .reset(
                requested: try object.int64("requested"),
                head: try object.int64("head"),
                epoch: try object.string("epoch")
            )
        case let type where type.hasPrefix("eventlog."):
            return .ignored
        default:
            let object = try self.object(data, what: "an event envelope")
            return .event(try self.envelope(object, defaultType: event.type))
        }
    }

    /// Decodes one WebSocket text message.
    static func webSocketMessage(_ data: Data) throws(EventLogClientError) -> ServerMessage {
        let object = try self.object(data, what: "a WebSocket message")
        switch try object.string("type") {
        case "subscribed":
            return .opened(
                epoch: try object.string("epoch"),
                earliest: try object.int64("earliest"),
                head: try object.int64("head"),
                from: try object.optionalInt64("from")
            )
        case "event":
            var event = ReceivedEvent(
                id: try object.int64("id"),
                topic: try object.string("topic"),
                type: try object.optionalString("event") ?? "message",
                key: try object.optionalString("key"),
                time: try object.string("time"),
                data: self.payload(object["data"])
            )
            event.resumeToken = try object.optionalString("resume")
            return .event(event)
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
        default:
            return .ignored
        }
    }
}

/// A parsed JSON object with typed accessors that fail with a ``EventLogClientError/Code/protocolViolation``.
struct JSONObject {
    private let storage: [String: Any]
    private let what: String

    init(_ storage: [String: Any], what: String) {
        self.storage = storage
        self.what = what
    }

    subscript(key: String) -> Any? {
        self.storage[key]
    }

    private func violation(_ key: String, _ expected: String) -> EventLogClientError {
        EventLogClientError(.protocolViolation, message: "\(self.what): \"\(key)\" is not \(expected)")
    }

    func string(_ key: String) throws(EventLogClientError) -> String {
        guard let value = try self.optionalString(key) else {
            throw self.violation(key, "a string")
        }
        return value
    }

    func optionalString(_ key: String) throws(EventLogClientError) -> String? {
        switch self.storage[key] {
        case nil, is NSNull: return nil
        case let value as String: return value
        default: throw self.violation(key, "a string")
        }
    }

    func int64(_ key: String) throws(EventLogClientError) -> Int64 {
        guard let value = try self.optionalInt64(key) else {
            throw self.violation(key, "an integer")
        }
        return value
    }

    func optionalInt64(_ key: String) throws(EventLogClientError) -> Int64? {
        switch self.storage[key] {
        case nil, is NSNull:
            return nil
        case let number as NSNumber where !Self.isBoolean(number):
            switch String(cString: number.objCType) {
            case "d", "f":
                guard let value = Int64(exactly: number.doubleValue) else {
                    throw self.violation(key, "an integer")
                }
                return value
            case "Q" where number.uint64Value > UInt64(Int64.max):
                throw self.violation(key, "a 64-bit integer")
            default:
                return number.int64Value
            }
        default:
            throw self.violation(key, "an integer")
        }
    }

    func optionalBool(_ key: String) throws(EventLogClientError) -> Bool? {
        switch self.storage[key] {
        case nil, is NSNull: return nil
        case let number as NSNumber where Self.isBoolean(number): return number.boolValue
        default: throw self.violation(key, "a boolean")
        }
    }

    func optionalObject(_ key: String) throws(EventLogClientError) -> JSONObject? {
        switch self.storage[key] {
        case nil, is NSNull: return nil
        case let value as [String: Any]: return JSONObject(value, what: "\(self.what) \"\(key)\"")
        default: throw self.violation(key, "an object")
        }
    }

    func objects(_ key: String) throws(EventLogClientError) -> [JSONObject] {
        guard let array = self.storage[key] as? [Any] else {
            throw self.violation(key, "an array")
        }
        var objects: [JSONObject] = []
        objects.reserveCapacity(array.count)
        for element in array {
            guard let object = element as? [String: Any] else {
                throw self.violation(key, "an array of objects")
            }
            objects.append(JSONObject(object, what: "\(self.what) \"\(key)\" element"))
        }
        return objects
    }

    /// `JSONSerialization` gives booleans as `NSNumber`s whose Objective-C type is `c` (on Darwin and Linux).
    private static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }
}
