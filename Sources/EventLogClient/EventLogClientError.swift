/// An error from ``EventLogClient``.
///
/// Match on ``code``; for HTTP errors, ``status`` holds the status code and ``serverCode`` / ``message`` hold the
/// server's `{"error":{"code","message"}}` body.
public struct EventLogClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case invalidURL
            case invalidArgument
            case connectionFailed
            case connectionClosed
            case timeout
            case http
            case protocolViolation
            case server
            case invalidResumeToken
            case responseTooLarge
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// The base URL is not a plain `http://host[:port][/prefix]` URL.
        public static let invalidURL = Code(.invalidURL)
        /// An argument cannot be sent as asked (e.g. a resume token with the SSE transport).
        public static let invalidArgument = Code(.invalidArgument)
        /// The client could not connect, or the connection failed before an answer.
        public static let connectionFailed = Code(.connectionFailed)
        /// The server closed the connection before a complete answer.
        public static let connectionClosed = Code(.connectionClosed)
        /// No answer within the configured time.
        public static let timeout = Code(.timeout)
        /// The server answered with an unexpected HTTP status; see ``EventLogClientError/status``.
        public static let http = Code(.http)
        /// The server sent something this client cannot understand.
        public static let protocolViolation = Code(.protocolViolation)
        /// The server sent an error message on a WebSocket subscription; see ``EventLogClientError/serverCode``.
        public static let server = Code(.server)
        /// The server rejected a resume token (tampered, foreign, or from another log).
        public static let invalidResumeToken = Code(.invalidResumeToken)
        /// An answer or a message was larger than the configured limit.
        public static let responseTooLarge = Code(.responseTooLarge)

        /// The code's name.
        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// The HTTP status, for ``Code/http`` errors.
    public let status: Int?
    /// The server's error code (`invalid_topic`, `idempotency_conflict`, ...), when it sent one.
    public let serverCode: String?
    /// A one-line explanation: the server's message when it sent one.
    public let message: String
    /// The zero-based line of a batch that caused the error, when the server named one.
    public let index: Int?

    init(_ code: Code, status: Int? = nil, serverCode: String? = nil, message: String, index: Int? = nil) {
        self.code = code
        self.status = status
        self.serverCode = serverCode
        self.message = message
        self.index = index
    }

    /// A readable summary, e.g. `http 409 idempotency_conflict: the key names another event`.
    public var description: String {
        var text = self.code.description
        if let status = self.status {
            text += " \(status)"
        }
        if let serverCode = self.serverCode {
            text += " \(serverCode)"
        }
        if let index = self.index {
            text += " (line \(index))"
        }
        return text + ": " + self.message
    }
}

extension EventLogClientError {
    /// Server error codes that describe a passing condition: a subscription retries after them.
    static let transientServerCodes: Set<String> = [
        "shutting_down", "too_many_connections", "storage_unavailable", "slow_consumer", "internal_error",
    ]

    /// Whether a subscription should reconnect after this error rather than end.
    ///
    /// Errors that would repeat on every attempt (a bad request, a rejected token, a server this client does not
    /// understand) end the subscription; a server that is unavailable for now does not.
    var isRetryableForSubscription: Bool {
        switch self.code {
        case .connectionFailed, .connectionClosed, .timeout:
            return true
        case .http:
            guard let status = self.status else { return true }
            return status >= 500 || status == 408 || status == 429
        case .server:
            return self.serverCode.map { Self.transientServerCodes.contains($0) } ?? false
        default:
            return false
        }
    }
}
