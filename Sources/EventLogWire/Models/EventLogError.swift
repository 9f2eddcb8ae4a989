/// An error from the event log, or one the server answered with. Match on ``code``; the message says what
/// was wrong, for humans.
public struct EventLogError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is: a code of the wire's catalogue.
    public typealias Code = ErrorCode

    /// What kind of failure this is.
    public let code: Code
    /// A one-line explanation for humans.
    public let message: String
    /// For a failed batch, the zero-based index of the event that caused it.
    public let index: Int?
    /// For `expected_last_id_mismatch`, the topic's newest id when the condition was checked (0: none).
    public let lastID: Int64?

    /// Creates an error.
    public init(_ code: Code, _ message: String, index: Int? = nil, lastID: Int64? = nil) {
        self.code = code
        self.message = message
        self.index = index
        self.lastID = lastID
    }

    /// The error with the index of the batch event it concerns.
    package func at(index: Int) -> EventLogError {
        EventLogError(code, "event \(index): \(message)", index: index, lastID: lastID)
    }

    package static let closed = EventLogError(.closed, "the event log is closed")

    public var description: String { "\(code): \(message)" }
}
