import Foundation
import NIOCore
import NIOPosix

/// An error from ``EventLogClient``.
///
/// Match on ``code``; for HTTP errors, ``status`` holds the status code and ``serverCode`` / ``message`` hold the
/// server's `{"error":{"code","message"}}` body.
///
/// A conditional publish (``NewEvent/expectedLastID``) that found the topic elsewhere fails with ``serverCode``
/// ``ErrorCode/expectedLastIDMismatch`` (HTTP 409) and the topic's newest id in ``lastID``;
/// ``expectedLastIDMismatch`` reads both at once.
///
/// The server's code is typed (``ErrorCode``, the catalogue the server answers from). A code this version does not
/// know (from a newer server) is `nil` in ``serverCode`` and kept as sent in ``serverCodeText``, which
/// ``description`` shows.
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
    /// The server's error code (`.invalidTopic`, `.idempotencyConflict`, ...), when it sent one this version knows.
    public var serverCode: ErrorCode? { self.serverCodeText.flatMap(ErrorCode.init(rawValue:)) }
    /// The server's error code as it sent it (`invalid_topic`), known to this version or not.
    public let serverCodeText: String?
    /// A one-line explanation: the server's message when it sent one.
    public let message: String
    /// The zero-based line of a batch that caused the error, when the server named one.
    public let index: Int?
    /// For `expected_last_id_mismatch`: the topic's newest id when the server checked the condition (`0`: the
    /// topic has no event).
    public let lastID: Int64?
    /// Whether ``message`` says everything on its own (`cannot connect to ...`), without the code in front.
    private let isSelfContained: Bool

    init(
        _ code: Code,
        status: Int? = nil,
        serverCode: String? = nil,
        message: String,
        index: Int? = nil,
        lastID: Int64? = nil
    ) {
        self.init(
            code,
            status: status,
            serverCode: serverCode,
            message: message,
            index: index,
            lastID: lastID,
            selfContained: false
        )
    }

    init(_ code: Code, status: Int? = nil, serverCode: ErrorCode, message: String, index: Int? = nil) {
        self.init(code, status: status, serverCode: serverCode.rawValue, message: message, index: index)
    }

    private init(
        _ code: Code,
        status: Int?,
        serverCode: String?,
        message: String,
        index: Int?,
        lastID: Int64?,
        selfContained: Bool
    ) {
        self.code = code
        self.status = status
        self.serverCodeText = serverCode
        self.message = message
        self.index = index
        self.lastID = lastID
        self.isSelfContained = selfContained
    }

    /// For a conditional publish refused because the topic moved on (`409 expected_last_id_mismatch`): the
    /// topic's newest id (`0`: it has no event), to read the events after the one expected and decide again.
    /// `nil` for any other error.
    ///
    /// ```swift
    /// do {
    ///     _ = try await client.publish(NewEvent(topic: "orders/1", data: .json("2"), expectedLastID: seen))
    /// } catch let error as EventLogClientError {
    ///     guard let current = error.expectedLastIDMismatch else { throw error }
    ///     // Someone else appended after `seen`: catch up to `current`, then decide again.
    /// }
    /// ```
    public var expectedLastIDMismatch: Int64? {
        guard self.serverCode == .expectedLastIDMismatch else {
            return nil
        }
        return self.lastID
    }

    /// A readable summary, e.g. `http 409 idempotency_conflict: the key names another event`, or
    /// `cannot connect to http://127.0.0.1:8080: connection refused`.
    public var description: String {
        if self.isSelfContained {
            return self.message
        }
        var text = self.code.description
        if let status = self.status {
            text += " \(status)"
        }
        if let serverCode = self.serverCodeText {
            text += " \(serverCode)"
        }
        if let index = self.index {
            text += " (line \(index))"
        }
        return text + ": " + self.message
    }
}

extension EventLogClientError {
    /// The error for a connection that could not be opened: `cannot connect to <base URL>: <reason>`, where the
    /// reason is a plain phrase rather than NIO's account of every address it tried.
    ///
    /// A connect timeout keeps the ``Code/timeout`` code; every other failure is ``Code/connectionFailed``.
    static func cannotConnect(to baseURL: String, _ error: any Error) -> EventLogClientError {
        let code: Code
        if case ChannelError.connectTimeout = error {
            code = .timeout
        } else {
            code = .connectionFailed
        }
        return EventLogClientError(
            code,
            status: nil,
            serverCode: nil,
            message: "cannot connect to \(baseURL): \(Self.connectFailureReason(error))",
            index: nil,
            lastID: nil,
            selfContained: true
        )
    }

    /// Why a connection could not be opened, as a plain phrase.
    static func connectFailureReason(_ error: any Error) -> String {
        switch error {
        case ChannelError.connectTimeout:
            return "connection timed out"
        case let error as NIOConnectionError:
            // NIO tries every address of the host: each distinct way they failed, once.
            var reasons: [String] = []
            for failure in error.connectionErrors {
                let reason = Self.connectFailureReason(failure.error)
                if !reasons.contains(reason) {
                    reasons.append(reason)
                }
            }
            if !reasons.isEmpty {
                return reasons.joined(separator: ", ")
            }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return "host not found"
            }
            return "the host has no address"
        case is SocketAddressError.UnknownHost:
            return "host not found"
        case let error as IOError:
            return Self.phrase(errno: error.errnoCode)
        default:
            return String(describing: error)
        }
    }

    /// A short lowercase phrase for a socket `errno`.
    private static func phrase(errno code: CInt) -> String {
        switch code {
        case ECONNREFUSED: return "connection refused"
        case ETIMEDOUT: return "connection timed out"
        case EHOSTUNREACH: return "host unreachable"
        case ENETUNREACH: return "network unreachable"
        case ECONNRESET: return "connection reset"
        case EADDRNOTAVAIL: return "address not available"
        case EACCES, EPERM: return "permission denied"
        default: return String(cString: strerror(code)).lowercased()
        }
    }

    /// Whether the server refused the credential because it expired (`token_expired`): a new token may help.
    var isTokenExpired: Bool {
        self.serverCode == .tokenExpired
    }

    /// Whether a subscription should reconnect after this error rather than end.
    ///
    /// Errors that would repeat on every attempt (a bad request, a rejected token, a server this client does not
    /// understand) end the subscription; a server that is unavailable for now does not (``ErrorCode/isTransient``;
    /// a code this version does not know is not transient).
    var isRetryableForSubscription: Bool {
        switch self.code {
        case .connectionFailed, .connectionClosed, .timeout:
            return true
        case .http:
            guard let status = self.status else { return true }
            return status >= 500 || status == 408 || status == 429
        case .server:
            return self.serverCode?.isTransient ?? false
        default:
            return false
        }
    }
}
