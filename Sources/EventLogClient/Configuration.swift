import Foundation
import NIOCore

extension EventLogClient {
    /// Timeouts, limits and the reconnect policy of a client.
    public struct Configuration: Sendable {
        /// How long to wait for a TCP connection.
        public var connectTimeout: Duration = .seconds(10)
        /// How long a publish, history or topics request may take, from sending to the last byte of the answer.
        public var requestTimeout: Duration = .seconds(30)
        /// A subscription that receives nothing for this long (not even a keepalive or a ping) while it is
        /// reading is treated as dropped and reconnects. `nil` waits forever.
        public var subscriptionIdleTimeout: Duration? = .seconds(60)
        /// The delay between reconnect attempts of a subscription.
        public var reconnectBackoff = Backoff()
        /// Whether an SSE subscription uses the server's `retry:` as the base delay instead of
        /// ``Backoff/initial``.
        public var honourServerRetry = true
        /// How many consecutive failed attempts a subscription makes before it ends with the last error;
        /// `nil` retries forever. The count restarts whenever a connection opens.
        public var maxReconnectAttempts: Int? = nil
        /// How many idle keep-alive connections publish and history requests keep for reuse; `0` opens one
        /// connection per request.
        public var maxIdleConnections = 8
        /// How long an idle keep-alive connection is kept before it is closed instead of reused.
        public var idleConnectionTimeout: Duration = .seconds(5)
        /// The largest answer body accepted for publish, history and topics.
        public var maxResponseBytes = 64 << 20
        /// The largest SSE event or WebSocket message accepted by a subscription.
        public var maxMessageBytes = 16 << 20
        /// How many subscription elements are read ahead of the consumer before the client stops reading from
        /// the connection.
        public var subscriptionBufferSize = 16
        /// Headers added to every request. An `Authorization` header here replaces the token: ``tokenProvider``
        /// and ``token`` are then not used.
        public var additionalHeaders: [(name: String, value: String)] = []
        /// Where the bearer token comes from: called before every publish, history, topics and
        /// ``EventLogClient/send(method:path:headers:body:)`` request and at every subscription (re)connect, SSE
        /// and WebSocket. Its value goes in `Authorization: Bearer <token>`; `nil` or `""` sends no credential
        /// (the server's anonymous grants apply). When set, ``token`` is not used.
        ///
        /// A WebSocket subscription also calls it when the server warns that the connection's token expires soon
        /// (an `error` `token_expired` without `ref`), and sends the new token on the same socket in an `auth` op.
        /// A `401 token_expired` answer is retried once at once with a new token from the provider.
        ///
        /// What it throws fails that request; a subscription treats it like a failed connection (it reconnects with
        /// backoff, within ``maxReconnectAttempts``). It should be quick (return a cached token that is still
        /// valid): a WebSocket subscription stops reading while it waits for it.
        public var tokenProvider: TokenProvider?
        /// A fixed bearer token (a JWT or an API key), when ``tokenProvider`` is `nil`.
        public var token: String?
        /// The `User-Agent` header.
        public var userAgent = "eventlog-client/1"
        /// What the client's own timers run on; tests replace it with a clock they advance themselves.
        var clock: any ClientClock = EventLoopClock()

        /// Creates the default configuration.
        public init() {}
    }

    /// Supplies the bearer token of a request or a connection; see ``Configuration/tokenProvider``.
    public typealias TokenProvider = @Sendable () async throws -> String?

    /// Exponential backoff with jitter, for subscription reconnects.
    ///
    /// Attempt `n` (from 1) waits `base × multiplier^(n-1)`, capped at `maximum` (or at `base` when that is
    /// larger), minus a random fraction of at most `jitter` of it so that many clients do not reconnect in step.
    public struct Backoff: Sendable, Hashable {
        /// The first delay when the server did not suggest one.
        public var initial: Duration = .milliseconds(100)
        /// The largest delay.
        public var maximum: Duration = .seconds(5)
        /// The growth factor between consecutive attempts.
        public var multiplier: Double = 2
        /// The largest fraction of a delay removed at random, in `0...1`.
        public var jitter: Double = 0.2

        /// Creates a backoff policy.
        public init(
            initial: Duration = .milliseconds(100),
            maximum: Duration = .seconds(5),
            multiplier: Double = 2,
            jitter: Double = 0.2
        ) {
            self.initial = initial
            self.maximum = maximum
            self.multiplier = multiplier
            self.jitter = jitter
        }

        /// The delay before reconnect attempt `attempt` (1 for the first).
        ///
        /// - Parameters:
        ///   - attempt: The number of consecutive failed attempts, from 1.
        ///   - base: The first delay suggested by the server (SSE `retry:`); ``initial`` when `nil`.
        ///   - random: A number in `0..<1`; `0` gives the delay without jitter.
        public func delay(attempt: Int, base: Duration? = nil, random: Double) -> Duration {
            let first = max((base ?? self.initial).secondsValue, 0)
            let cap = max(self.maximum.secondsValue, first)
            let exponent = Double(max(attempt, 1) - 1)
            let grown = first * pow(max(self.multiplier, 1), exponent)
            let capped = grown.isFinite ? min(grown, cap) : cap
            let jitter = min(max(self.jitter, 0), 1) * min(max(random, 0), 1)
            // Whole nanoseconds, so that equal inputs give exactly equal durations.
            let nanoseconds = (capped * (1 - jitter) * 1e9).rounded()
            return .nanoseconds(nanoseconds < 9e18 ? Int64(nanoseconds) : Int64(9e18))
        }
    }
}
