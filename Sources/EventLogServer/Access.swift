import EventLog
import EventLogAuth
import Logging
import NIOHTTP1

/// Who a request comes from: finds its credential (`Authorization: Bearer`, the `eventlog_token` cookie, or
/// with `--allow-query-token` the `access_token` parameter), authenticates it, and logs refusals without
/// the credential.
struct Access {
    let server: EventLogServer

    /// The `WWW-Authenticate` value of every `401`.
    static let challenge = "Bearer realm=\"eventlog\", error=\"invalid_token\""
    /// The cookie a browser's EventSource sends, since it cannot set headers.
    static let cookieName = "eventlog_token"
    /// The query parameter a token may come in with `--allow-query-token`.
    static let queryName = "access_token"

    /// Where a credential came from.
    enum Source: String {
        case header, cookie, query
    }

    /// The caller of a request; throws the `401`/`403` error to answer with.
    /// `log: false` leaves the refusal unlogged (the WebSocket upgrader's check, which the HTTP path repeats).
    func principal(
        _ head: HTTPRequestHead, query: [(String, String)], log: Bool = true
    ) async throws(APIError)
        -> Principal
    {
        let auth = server.auth
        guard auth.isEnabled else { return .open }
        let found: (value: String, source: Source)?
        switch Self.credential(head, query: query, allowQuery: server.configuration.allowQueryToken) {
        case .success(let credential): found = credential
        case .failure(let failure): throw refuse(failure, head, log: log)
        }
        if let found, found.source == .cookie, let origin = head.headers.first(name: "origin"),
            !isAllowed(origin: origin, head: head)
        {
            throw refuse(
                AuthFailure(.forbidden, "a cookie credential is not accepted from origin \(Topic.quoted(origin))"),
                head,
                log: log)
        }
        switch await auth.authenticate(found?.value) {
        case .success(let principal): return principal
        case .failure(let failure): throw refuse(failure, head, log: log)
        }
    }

    /// The API error for a refusal, logged with the path only (never the query, which may hold a token).
    func refuse(
        _ failure: AuthFailure, _ head: HTTPRequestHead, principal: Principal? = nil, log: Bool = true
    )
        -> APIError
    {
        if log { logRefusal(failure, path: Self.path(of: head.uri), caller: principal) }
        return APIError(failure)
    }

    /// One `info` line per refusal: the code, the path (never the query) and the caller's name.
    func logRefusal(_ failure: AuthFailure, path: some StringProtocol, caller: Principal?) {
        server.logger.info(
            "refused",
            metadata: ["code": "\(failure.code)", "path": "\(path)", "caller": "\(caller?.name ?? "-")"])
    }

    /// The request's credential and its source, if it has one.
    static func credential(
        _ head: HTTPRequestHead, query: [(String, String)], allowQuery: Bool
    ) -> Result<(value: String, source: Source)?, AuthFailure> {
        if let authorization = head.headers.first(name: "authorization") {
            let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                return .failure(AuthFailure(.invalidToken, "use Authorization: Bearer <token>"))
            }
            return .success((parts[1].trimmingSpaces, .header))
        }
        if let cookie = cookieValue(head.headers, name: cookieName) {
            return .success((cookie, .cookie))
        }
        if let token = query.last(where: { $0.0 == queryName })?.1 {
            guard allowQuery else {
                return .failure(
                    AuthFailure(.invalidToken, "query tokens are disabled; send Authorization: Bearer or the cookie"))
            }
            return .success((token, .query))
        }
        return .success(nil)
    }

    /// The value of cookie `name` in the request's `Cookie` headers (RFC 6265, section 5.4).
    static func cookieValue(_ headers: HTTPHeaders, name: String) -> String? {
        for line in headers[canonicalForm: "cookie"] {
            for pair in line.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].trimmingSpaces == name else { continue }
                var value = parts[1].trimmingSpaces
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                return value
            }
        }
        return nil
    }

    /// Whether a browser on `origin` may use its cookie here: the origin is listed by `--cors-origin`, or is the
    /// server's own (same host and port as the request's `Host`).
    private func isAllowed(origin: String, head: HTTPRequestHead) -> Bool {
        if server.configuration.corsOrigins.contains(origin) { return true }
        guard let host = head.headers.first(name: "host") else { return false }
        return origin == "http://" + host || origin == "https://" + host
    }

    /// The path of a request target, without its query.
    static func path(of uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }

    /// The request target with the value of every `access_token` parameter replaced by `REDACTED`: what logs show.
    static func redacted(_ uri: String) -> String {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return uri }
        let query = parts[1].split(separator: "&", omittingEmptySubsequences: false).map { pair -> String in
            let name = pair.split(separator: "=", maxSplits: 1).first.map { Request.percentDecode($0) } ?? nil
            return name == queryName ? "\(queryName)=REDACTED" : String(pair)
        }
        return parts[0] + "?" + query.joined(separator: "&")
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs. Works on the UTF-8 bytes: a credential is hundreds of bytes,
    /// on every request (a Character-wise trim was a third of a publish's CPU with auth on).
    fileprivate var trimmingSpaces: String {
        let bytes = utf8
        var start = bytes.startIndex
        var end = bytes.endIndex
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
        while start < end, isSpace(bytes[start]) { start = bytes.index(after: start) }
        while start < end, isSpace(bytes[bytes.index(before: end)]) { end = bytes.index(before: end) }
        return String(self[start..<end])
    }
}
