import EventLog

/// Where the cursor starts: a client's ``StartPosition`` once a resume token is resolved to its id.
enum CursorStart: Equatable, Sendable {
    /// Only events committed after the subscription opens.
    case live
    /// Everything retained. Never produces a gap.
    case earliest
    /// Events after this id (what the client saw last).
    case after(Int64)
    /// The newest event of each (topic, key), in id order, then the live tail (`snapshot=latest`).
    case snapshot
    /// The first event committed at or after this time (Unix milliseconds), then the live tail.
    case since(Int64)
    /// The last `count` matching events, then the live tail. Never produces a gap for what was removed before.
    case rewind(Int)

    /// The start of a position id: 0 is everything retained.
    init(after id: Int64) {
        self = id == 0 ? .earliest : .after(id)
    }
}

extension CursorStart {
    /// The cursor start of a client's start position; `nil` for a resume token, which the caller resolves.
    init?(_ position: StartPosition) {
        switch position {
        case .live: self = .live
        case .earliest: self = .earliest
        case .after(let id): self = CursorStart(after: id)
        case .snapshot: self = .snapshot
        case .since(let time): self = .since(time)
        case .rewind(let count): self = .rewind(count)
        case .resumeToken: return nil
        }
    }
}
