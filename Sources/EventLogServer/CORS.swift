import NIOHTTP1

/// Cross-origin access: which origins may read answers, and the answer to a preflight request.
struct CORS: Sendable {
    /// Origins allowed; `["*"]` allows every origin, `[]` none.
    let allowedOrigins: [String]
    /// Whether listed origins may send credentials (cookies): true when auth is on. `*` never may.
    var credentials = false

    /// Whether any origin is allowed (`--cors-origin`); without one no response carries CORS headers.
    var isEnabled: Bool { !allowedOrigins.isEmpty }

    /// CORS headers for a request's `Origin`, when that origin is allowed.
    func headers(for head: HTTPRequestHead) -> [(String, String)] {
        guard !allowedOrigins.isEmpty else { return [] }
        var headers: [(String, String)] = []
        let origin = head.headers.first(name: "origin")
        if let origin, allowedOrigins.contains(origin) {
            // A listed origin gets its exact value back, and with auth on may send its cookie.
            headers.append(("Access-Control-Allow-Origin", origin))
            headers.append(("Vary", "Origin"))
            if credentials { headers.append(("Access-Control-Allow-Credentials", "true")) }
        } else if allowedOrigins.contains("*") {
            headers.append(("Access-Control-Allow-Origin", "*"))
        } else {
            return []
        }
        headers.append(("Access-Control-Expose-Headers", "Idempotent-Replayed, WWW-Authenticate"))
        return headers
    }

    /// The answer to an `OPTIONS` request on a path that takes `allowed`.
    static func preflight(_ allowed: [HTTPMethod]) -> Response {
        Response(
            status: .noContent,
            headers: [
                ("Access-Control-Allow-Methods", (allowed + [.OPTIONS]).map(\.rawValue).joined(separator: ", ")),
                ("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Idempotency-Key"),
                ("Access-Control-Max-Age", "600"),
            ],
            body: ""
        )
    }
}
