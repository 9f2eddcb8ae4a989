import NIOHTTP1

/// Cross-origin access: which origins may read answers, and the answer to a preflight request.
struct CORS: Sendable {
    /// Origins allowed; `["*"]` allows every origin, `[]` none.
    let allowedOrigins: [String]

    /// CORS headers for a request's `Origin`, when that origin is allowed.
    func headers(for head: HTTPRequestHead) -> [(String, String)] {
        guard !allowedOrigins.isEmpty else { return [] }
        var headers: [(String, String)] = []
        if allowedOrigins.contains("*") {
            headers.append(("Access-Control-Allow-Origin", "*"))
        } else if let origin = head.headers.first(name: "origin"), allowedOrigins.contains(origin) {
            headers.append(("Access-Control-Allow-Origin", origin))
            headers.append(("Vary", "Origin"))
        } else {
            return []
        }
        headers.append(("Access-Control-Expose-Headers", "Idempotent-Replayed"))
        return headers
    }

    /// The answer to an `OPTIONS` request on a path that takes `allowed`.
    static func preflight(_ allowed: [HTTPMethod]) -> Response {
        Response(
            status: .noContent,
            headers: [
                ("Access-Control-Allow-Methods", (allowed + [.OPTIONS]).map(\.rawValue).joined(separator: ", ")),
                ("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Idempotency-Key"),
                ("Access-Control-Max-Age", "600"),
            ],
            body: ""
        )
    }
}
