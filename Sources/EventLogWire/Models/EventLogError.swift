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

    /// Creates an error.
    public init(_ code: Code, _ message: String, index: Int? = nil) {
        self.code = code
        self.message = message
        self.index = index
    }

    /// The error with the index of the batch event it concerns.
    package func at(index: Int) -> EventLogError {
        EventLogError(code, "event \(index): \(message)", index: index)
    }

    package static let closed = EventLogError(.closed, "the event log is closed")

    public var description: String { "\(code): \(message)" }
}
