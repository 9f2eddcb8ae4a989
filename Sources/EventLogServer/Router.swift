import NIOHTTP1

/// Where a request goes: the path and method decide, before any endpoint runs.
struct Router {
    let server: EventLogServer

    /// What to do with a request.
    enum Route {
        /// A fixed answer (preflight, metrics, the browser client).
        case respond(Response)
        case publish
        case history
        case topics
        case health
        case metrics
        case subscribe(SSEStream.Subscription)
        /// A plain request on the WebSocket path (or an upgrade whose credential did not authenticate).
        case webSocketPath
    }

    /// The route for a request; throws `404 not_found`, `405 method_not_allowed` (with `Allow`), the
    /// `426 upgrade_required` of a plain request on the WebSocket path, or a bad subscription's error.
    func route(_ request: Request) throws -> Route {
        let method = request.head.method
        func only(_ allowed: [HTTPMethod], _ route: () throws -> Route) throws -> Route {
            if method == .OPTIONS { return .respond(CORS.preflight(allowed)) }
            guard allowed.contains(method) || (method == .HEAD && allowed.contains(.GET)) else {
                throw APIError(
                    code: .methodNotAllowed,
                    message: "\(method) is not allowed on \(request.path)",
                    headers: [("Allow", allowed.map(\.rawValue).joined(separator: ", "))]
                )
            }
            return try route()
        }
        switch request.path {
        case "/v1/events":
            return try only([.GET, .POST]) {
                if method == .POST { return .publish }
                let accept = request.head.headers[canonicalForm: "accept"].map { $0.lowercased() }
                if accept.contains(where: { $0.hasPrefix("text/event-stream") }) {
                    return .subscribe(try SSEStream.Subscription(request, server: server))
                }
                return .history
            }
        case "/v1/topics":
            return try only([.GET]) { .topics }
        case "/healthz":
            return try only([.GET]) { .health }
        case "/metrics":
            return try only([.GET]) { .metrics }
        case "/v1/ws":
            return try only([.GET]) { .webSocketPath }
        case "/":
            return try only([.GET]) {
                .respond(
                    Response(
                        status: .ok,
                        headers: [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")],
                        body: BrowserClient.page
                    )
                )
            }
        case "/v1/eventlog.js":
            return try only([.GET]) {
                .respond(
                    Response(
                        status: .ok,
                        headers: [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "no-cache")],
                        body: BrowserClient.script
                    )
                )
            }
        default:
            throw APIError(code: .notFound, message: "no resource at \(request.path)")
        }
    }
}
