/// An error from the event log. Match on ``code``; the message says what was wrong, for humans.
///
/// The codes are open-ended static values rather than an enum, so new ones can be added without
/// breaking callers.
public struct EventLogError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidTopic = "invalid_topic"
            case invalidSelector = "invalid_selector"
            case invalidType = "invalid_type"
            case invalidKey = "invalid_key"
            case invalidIdempotencyKey = "invalid_idempotency_key"
            case eventTooLarge = "event_too_large"
            case emptyBatch = "empty_batch"
            case idempotencyConflict = "idempotency_conflict"
            case storageUnavailable = "storage_unavailable"
            case closed = "closed"
            case corrupt = "corrupt"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The topic does not follow the topic grammar.
        public static let invalidTopic = Code(.invalidTopic)
        /// The selector is neither a topic, a `prefix/*` nor `*`.
        public static let invalidSelector = Code(.invalidSelector)
        /// The type is empty, too long, reserved, or holds CR, LF or NUL.
        public static let invalidType = Code(.invalidType)
        /// The key is empty, too long, or holds CR, LF or NUL.
        public static let invalidKey = Code(.invalidKey)
        /// The idempotency key is empty, too long, or holds control characters.
        public static let invalidIdempotencyKey = Code(.invalidIdempotencyKey)
        /// The event's data is over the size limit.
        public static let eventTooLarge = Code(.eventTooLarge)
        /// A batch with no events.
        public static let emptyBatch = Code(.emptyBatch)
        /// The idempotency key exists for this topic with a different request.
        public static let idempotencyConflict = Code(.idempotencyConflict)
        /// The store cannot write now (disk full, read-only, I/O error, locked); nothing was written.
        public static let storageUnavailable = Code(.storageUnavailable)
        /// The log is closed.
        public static let closed = Code(.closed)
        /// The database is not a valid event log.
        public static let corrupt = Code(.corrupt)

        /// The stable snake_case name used on the wire, e.g. `invalid_topic`.
        public var description: String { base.rawValue }
    }

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
    func at(index: Int) -> EventLogError {
        EventLogError(code, "event \(index): \(message)", index: index)
    }

    static let closed = EventLogError(.closed, "the event log is closed")

    static func storage(_ error: SQLiteError) -> EventLogError {
        EventLogError(.storageUnavailable, "the store cannot write: \(error.message)")
    }

    public var description: String { "\(code): \(message)" }
}
