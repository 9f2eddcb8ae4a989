/// What a client sends on a WebSocket (`/v1/ws`): one JSON text message per op, with an optional `ref` that
/// the server echoes in its answer. Encoded (by clients) and decoded (by the server) here only.
public enum ClientOp: Sendable, Hashable {
    /// `{"op":"subscribe","topics":[..],"from":..|"resume":..}`: replaces the connection's subscription.
    case subscribe(Subscription)
    /// `{"op":"publish","topic":..,...}`: the publish object with `op` (and `ref`).
    case publish(NewEvent)
    /// `{"op":"auth","token":..}`: authenticates the connection, or replaces its credential (a renewal).
    case auth(token: String)

    /// A subscribe op's selectors and start.
    public struct Subscription: Sendable, Hashable {
        /// The selector texts, as sent.
        public let topics: [String]
        /// The parsed selectors.
        public let selectors: SelectorSet
        /// Where the subscription starts.
        public let start: StartPosition

        /// Validates the selectors (`invalid_parameter` for none, `invalid_selector` for a bad one).
        public init(topics: [String], start: StartPosition) throws(EventLogError) {
            guard !topics.isEmpty else {
                throw EventLogError(.invalidParameter, "subscribe needs \"topics\": a non-empty array of selectors")
            }
            self.init(topics: topics, selectors: try SelectorSet(parsing: topics), start: start)
        }

        init(topics: [String], selectors: SelectorSet, start: StartPosition) {
            self.topics = topics
            self.selectors = selectors
            self.start = start
        }
    }

    /// A decoded message: its `ref` (a string or number, echoed as it came; anything else is dropped) and the op,
    /// or what was wrong with it.
    public struct Message: Sendable {
        /// The `ref` member, when it is a string or a number.
        public let ref: JSONValue?
        /// The op, or the error to answer with.
        public let op: Result<ClientOp, EventLogError>
    }

    /// Decodes one text message. Never throws: a bad message is an `error` answer, not the end of a connection.
    public static func decode(_ bytes: [UInt8]) -> Message {
        let message: JSONValue
        do {
            message = try JSONParser.parse(bytes)
        } catch {
            return Message(ref: nil, op: .failure(EventLogError(.malformedJSON, "invalid JSON: \(error)")))
        }
        let ref: JSONValue?
        switch message["ref"] {
        case .some(.string(let text)): ref = .string(text)
        case .some(.number(let lexeme)): ref = .number(lexeme)
        default: ref = nil
        }
        return Message(ref: ref, op: Result { () throws(EventLogError) -> ClientOp in try op(of: message) })
    }

    private static func op(of message: JSONValue) throws(EventLogError) -> ClientOp {
        guard case .string(let op) = message["op"] else {
            throw EventLogError(.invalidOp, "a message needs \"op\": subscribe, publish or auth")
        }
        switch op {
        case "subscribe":
            guard case .array(let values) = message["topics"], !values.isEmpty else {
                throw EventLogError(.invalidParameter, "subscribe needs \"topics\": a non-empty array of selectors")
            }
            var topics: [String] = []
            for value in values {
                guard case .string(let text) = value else {
                    throw EventLogError(.invalidSelector, "every topic selector must be a string")
                }
                topics.append(text)
            }
            // The selectors are checked before the start, so a bad selector is the error reported first.
            let selectors = try SelectorSet(parsing: topics)
            let start = try StartPosition(resume: message["resume"], from: message["from"])
            return .subscribe(Subscription(topics: topics, selectors: selectors, start: start))
        case "publish":
            return .publish(try PublishRequest.event(from: message, extraFields: ["op", "ref"]))
        case "auth":
            guard case .string(let token) = message["token"] else {
                throw EventLogError(.invalidField, "auth needs \"token\": a string")
            }
            return .auth(token: token)
        default:
            throw EventLogError(.invalidOp, "unknown op \"\(op.prefix(40))\"")
        }
    }

    /// The text of a `subscribe` op: `{"op":"subscribe","topics":[..],"resume":..}` or `..,"from":..}`. The
    /// selectors are sent as given; the server checks them.
    public static func subscribeText(topics: [String], start: StartPosition, ref: JSONValue? = nil) -> String {
        var topicsText = JSONWriter()
        topicsText.writeCanonical(.array(topics.map { .string($0) }))
        let member = start.subscribeMember
        return JSONWriter.object([
            "op": .string("subscribe"), "topics": .raw(topicsText.text),
            "resume": member.name == "resume" ? member.value : .omitted,
            "from": member.name == "from" ? member.value : .omitted,
            "ref": ref.map { .raw($0.canonicalText) } ?? .omitted,
        ])
    }

    /// The message's JSON text, with `ref` when given.
    public func encode(ref: JSONValue? = nil) -> String {
        switch self {
        case .subscribe(let subscription):
            return Self.subscribeText(topics: subscription.topics, start: subscription.start, ref: ref)
        case .publish(let event):
            let body = PublishRequest.encode(event, includeIdempotencyKey: true)
            // `{"op":"publish",` then the publish object's members.
            var text = "{\"op\":\"publish\"," + body.dropFirst()
            if let ref {
                text.removeLast()
                text += ",\"ref\":" + ref.canonicalText + "}"
            }
            return text
        case .auth(let token):
            return JSONWriter.object([
                "op": .string("auth"), "token": .string(token), "ref": ref.map { .raw($0.canonicalText) } ?? .omitted,
            ])
        }
    }
}
