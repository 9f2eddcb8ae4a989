/// Where a subscription starts, as a client asks for it.
public enum StartPosition: Sendable, Hashable {
    /// Only events published after the subscription opens.
    case live
    /// All retained history, then the live tail.
    case earliest
    /// Events with an id greater than this one.
    case after(Int64)
    /// The position named by a resume token from an earlier WebSocket subscription (WebSocket only).
    case resumeToken(String)
}

extension StartPosition {
    /// Parses SSE's `Last-Event-ID` header or `lastEventId` parameter (`source` names which, for the error):
    /// `earliest` or `0` is all retained history; another non-negative integer is "after this id". Spaces and
    /// tabs around the value are ignored.
    public init(lastEventID text: String, source: String) throws(EventLogError) {
        var trimmed = Substring(text)
        while trimmed.first == " " || trimmed.first == "\t" { trimmed.removeFirst() }
        while trimmed.last == " " || trimmed.last == "\t" { trimmed.removeLast() }
        if trimmed == "earliest" {
            self = .earliest
            return
        }
        guard let id = Int64(trimmed), id >= 0, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw EventLogError(
                .invalidLastEventID,
                "\(source) must be a non-negative integer or \"earliest\", not \"\(text.prefix(40))\""
            )
        }
        self = id == 0 ? .earliest : .after(id)
    }

    /// The value of `Last-Event-ID` for this position, or nil when it has none (live, or a resume token).
    public var lastEventID: String? {
        switch self {
        case .live, .resumeToken: return nil
        case .earliest: return "earliest"
        case .after(let id): return String(id)
        }
    }

    /// Parses the `resume` and `from` members of a WebSocket `subscribe` op: a token string wins; `from` is an
    /// id, `"earliest"` or `"latest"` (the default).
    public init(resume: JSONValue?, from: JSONValue?) throws(EventLogError) {
        switch (resume, from) {
        case (.some(.string(let token)), _):
            self = .resumeToken(token)
        case (.some, _):
            throw EventLogError(.invalidResumeToken, "\"resume\" must be a token string")
        case (nil, .some(.string("earliest"))):
            self = .earliest
        case (nil, .some(.string("latest"))), (nil, nil), (nil, .some(.null)):
            self = .live
        case (nil, .some(.number(let text))):
            guard let id = Int64(text), id >= 0 else {
                throw EventLogError(.invalidParameter, "\"from\" must be a non-negative integer id")
            }
            self = id == 0 ? .earliest : .after(id)
        case (nil, .some):
            throw EventLogError(.invalidParameter, "\"from\" must be an id, \"earliest\" or \"latest\"")
        }
    }

    /// The `resume` or `from` member of a WebSocket `subscribe` op for this position.
    public var subscribeMember: (name: String, value: JSONFragment) {
        switch self {
        case .resumeToken(let token): return ("resume", .string(token))
        case .after(let id): return ("from", .int(id))
        case .earliest: return ("from", .string("earliest"))
        case .live: return ("from", .string("latest"))
        }
    }
}
