/// Everything `eventlogd` lets an operator set.
public struct ServerConfiguration: Sendable {
    /// The address to bind. Loopback by default.
    public var host = "127.0.0.1"
    /// The port to bind; 0 picks a free one.
    public var port = 8080
    /// How often an idle SSE stream gets a `: keepalive` comment.
    public var keepalive: Duration = .seconds(15)
    /// The `retry:` hint sent at the start of every SSE stream, in milliseconds.
    public var sseRetryMilliseconds = 2000
    /// The largest request body accepted, in bytes.
    public var maxBodyBytes = 8 << 20
    /// The most open connections; more are answered 503 and closed.
    public var maxConnections = 10_000
    /// Origins allowed by CORS; `["*"]` allows every origin.
    public var corsOrigins: [String] = ["*"]
    /// Events per page a subscriber reads from the log at a time.
    public var pageSize = 512
    /// How long a subscriber's socket may stay unwritable before the server gives up on it.
    public var stallTimeout: Duration = .seconds(60)
    /// How long a connection may take to send a complete request (slow-loris defence), and how long
    /// an idle keep-alive connection stays open.
    public var requestTimeout: Duration = .seconds(30)
    /// How long shutdown waits for in-flight requests before closing connections by force.
    public var shutdownGracePeriod: Duration = .seconds(10)
    /// How often WebSocket connections are pinged; a connection that misses a pong is closed.
    public var webSocketPingInterval: Duration = .seconds(30)
    /// The largest WebSocket frame accepted, in bytes (close 1009 beyond).
    public var maxWebSocketFrameBytes = 1 << 20
    /// Whether a token may come as the `access_token` query parameter (it is then redacted from logs).
    public var allowQueryToken = false
    /// Error messages a WebSocket client may provoke before it is closed with 1008.
    public var maxWebSocketErrors = 20

    /// Defaults: 127.0.0.1:8080, 15 s keepalive, 2 s retry, 8 MiB bodies, 10,000 connections, CORS `*`.
    public init() {}
}
