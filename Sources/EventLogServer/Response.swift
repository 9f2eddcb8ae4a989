import EventLog
import NIOHTTP1

/// A response to send.
struct Response: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: String

    static func json(_ status: HTTPResponseStatus, _ body: String, headers: [(String, String)] = []) -> Response {
        Response(status: status, headers: [("Content-Type", "application/json")] + headers, body: body)
    }

    init(status: HTTPResponseStatus, headers: [(String, String)] = [], body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The JSON error body with the error's status and headers.
    init(_ error: APIError) {
        self = .json(
            error.status,
            ErrorBody(
                error.code, message: error.message, index: error.index, selector: error.selector, lastID: error.lastID
            ).json,
            headers: error.headers
        )
    }
}
