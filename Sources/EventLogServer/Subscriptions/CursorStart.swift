/// Where the cursor starts: a client's ``StartPosition`` once a resume token is resolved to its id.
enum CursorStart: Equatable, Sendable {
    /// Only events committed after the subscription opens.
    case live
    /// Everything retained. Never produces a gap.
    case earliest
    /// Events after this id (what the client saw last).
    case after(Int64)

    /// The start of a position id: 0 is everything retained.
    init(after id: Int64) {
        self = id == 0 ? .earliest : .after(id)
    }
}
