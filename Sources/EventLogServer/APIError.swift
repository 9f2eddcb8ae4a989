import EventLog
import EventLogAuth
import NIOHTTP1

/// An API error: a wire error code, its message and, for a batch, the line it concerns.
///
/// The HTTP status comes from the code (``ErrorCode/httpStatus``), so a code is always answered
/// with the status docs/PROTOCOL.md gives it.
struct APIError: Error {
    /// The wire code, e.g. `invalid_parameter`.
    let code: ErrorCode
    /// One line for humans.
    let message: String
    /// For a batch, the zero-based index of the line that caused the error.
    var index: Int?
    /// Extra response headers (`Allow`, `Upgrade`).
    var headers: [(String, String)]
    /// The HTTP status the error is answered with.
    let status: HTTPResponseStatus
    /// For `forbidden_topic`, the refused selector or topic.
    var selector: String?
    /// For `expected_last_id_mismatch`, the topic's newest id.
    var lastID: Int64?

    init(code: ErrorCode, message: String, index: Int? = nil, headers: [(String, String)] = []) {
        self.code = code
        self.message = message
        self.index = index
        self.headers = headers
        self.status = HTTPResponseStatus(statusCode: code.httpStatus)
    }

    /// A refused credential or right: `401` answers carry `WWW-Authenticate` (RFC 6750, section 3).
    init(_ failure: AuthFailure) {
        let challenge = failure.code.httpStatus == 401 ? [("WWW-Authenticate", Access.challenge)] : []
        self.init(code: failure.code, message: failure.message, index: failure.index, headers: challenge)
        self.selector = failure.selector
    }

    /// The wire code and status for an error from the log.
    init(_ error: EventLogError) {
        switch error.code {
        case .closed:
            // A closed log is a stopping server, as far as a client can tell.
            self.init(code: .shuttingDown, message: error.message, index: error.index)
        default:
            self.init(code: error.code, message: error.message, index: error.index)
            lastID = error.lastID
        }
    }

    /// Any error of an append or a read as the client sees it.
    init(any error: any Error) {
        switch error {
        case let error as APIError: self = error
        case let error as EventLogError: self.init(error)
        default: self.init(code: .internalError, message: "\(error)")
        }
    }
}
