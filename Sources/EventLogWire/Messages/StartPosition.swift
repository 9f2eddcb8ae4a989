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
    /// The newest event of each (topic, key) the selectors match, in id order, then the live tail
    /// (`snapshot=latest`, `"from":"snapshot"`).
    case snapshot
    /// The first event committed at or after this time (Unix milliseconds), then the live tail
    /// (`since=`, `"from":{"since":..}`).
    case since(Int64)
    /// The last `count` matching events, then the live tail (`rewind=N`, `"from":{"rewind":N}`).
    case rewind(Int)
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

    /// The most events `rewind` may ask for.
    public static let maxRewind = 1_000_000

    /// Parses a `since` value: an RFC 3339 time (`2026-11-28T04:00:00Z`, with or without milliseconds and
    /// with any offset), or a duration before `now` (`15m`, `1h30m`, see ``DurationText``). Unix milliseconds.
    public static func parseSince(_ text: String, now: Int64) throws(EventLogError) -> Int64 {
        if let time = Timestamp.parseRFC3339(text) { return time }
        do {
            let duration = try DurationText.parse(text)
            let (value, overflow) = now.subtractingReportingOverflow(duration.wholeMilliseconds)
            return overflow ? 0 : max(0, value)
        } catch {
            throw EventLogError(
                .invalidParameter,
                "since must be an RFC 3339 time (2026-11-28T04:00:00Z) or a duration such as 15m, not \"\(text.prefix(40))\""
            )
        }
    }

    /// Parses a `rewind` count: an integer in 1...``maxRewind``.
    public static func parseRewind(_ text: String) throws(EventLogError) -> Int {
        guard let count = Int(text), (1...maxRewind).contains(count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else {
            throw EventLogError(
                .invalidParameter, "rewind must be an integer in 1...\(maxRewind), not \"\(text.prefix(40))\"")
        }
        return count
    }

    /// The value of `Last-Event-ID` for this position, or nil when it has none (live, a resume token, or a
    /// start that is not a position: snapshot, since, rewind).
    public var lastEventID: String? {
        switch self {
        case .live, .resumeToken, .snapshot, .since, .rewind: return nil
        case .earliest: return "earliest"
        case .after(let id): return String(id)
        }
    }

    /// Parses the `resume` and `from` members of a WebSocket `subscribe` op: a token string wins; `from` is an
    /// id, `"earliest"`, `"latest"` (the default), `"snapshot"`, `{"since":"<RFC 3339 or duration>"}` or
    /// `{"rewind":N}`. A relative `since` counts back from `now` (Unix milliseconds).
    public init(resume: JSONValue?, from: JSONValue?, now: Int64 = Timestamp.nowMilliseconds()) throws(EventLogError) {
        switch (resume, from) {
        case (.some(.string(let token)), _):
            self = .resumeToken(token)
        case (.some, _):
            throw EventLogError(.invalidResumeToken, "\"resume\" must be a token string")
        case (nil, .some(.string("earliest"))):
            self = .earliest
        case (nil, .some(.string("snapshot"))):
            self = .snapshot
        case (nil, .some(.object(let members))) where members.count == 1:
            switch (members[0].0, members[0].1) {
            case ("since", .string(let text)):
                self = .since(try Self.parseSince(text, now: now))
            case ("rewind", .number(let text)):
                self = .rewind(try Self.parseRewind(text))
            default:
                throw EventLogError(
                    .invalidParameter,
                    "\"from\" as an object is {\"since\":\"<RFC 3339 time or duration>\"} or {\"rewind\":N}")
            }
        case (nil, .some(.string("latest"))), (nil, nil), (nil, .some(.null)):
            self = .live
        case (nil, .some(.number(let text))):
            guard let id = Int64(text), id >= 0 else {
                throw EventLogError(.invalidParameter, "\"from\" must be a non-negative integer id")
            }
            self = id == 0 ? .earliest : .after(id)
        case (nil, .some):
            throw EventLogError(
                .invalidParameter,
                "\"from\" must be an id, \"earliest\", \"latest\", \"snapshot\", {\"since\":..} or {\"rewind\":N}")
        }
    }

    /// The `resume` or `from` member of a WebSocket `subscribe` op for this position.
    public var subscribeMember: (name: String, value: JSONFragment) {
        switch self {
        case .resumeToken(let token): return ("resume", .string(token))
        case .after(let id): return ("from", .int(id))
        case .earliest: return ("from", .string("earliest"))
        case .live: return ("from", .string("latest"))
        case .snapshot: return ("from", .string("snapshot"))
        case .since(let time):
            return ("from", .raw(JSONWriter.object(["since": .string(Timestamp.rfc3339(milliseconds: time))])))
        case .rewind(let count): return ("from", .raw(JSONWriter.object(["rewind": .int(Int64(count))])))
        }
    }
}
