import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Runs a subscription: connects, streams, and reconnects with backoff until the consumer leaves or an error that
/// would repeat ends it.
struct SubscriptionConnector: Sendable {
    let client: EventLogClient
    let topics: [String]
    let start: StartPosition
    let transport: Transport
    let sink: SubscriptionSink

    var configuration: EventLogClient.Configuration { self.client.configuration }

    /// Connects and reconnects until cancelled or failed.
    ///
    /// A connection refused with `token_expired` is tried again at once, with a new token from the provider, before
    /// the refusal counts: a second one in a row ends the subscription.
    func run() async throws {
        var state = SubscriptionState(start: self.start)
        var retriedExpiredToken = false
        while true {
            try Task.checkCancellation()
            let reason: String
            do {
                switch self.transport {
                case .sse: reason = try await self.streamSSE(&state)
                case .webSocket: reason = try await self.streamWebSocket(&state)
                }
            } catch {
                if Task.isCancelled || error is CancellationError {
                    throw CancellationError()
                }
                if !retriedExpiredToken, self.configuration.tokenProvider != nil,
                    (error as? EventLogClientError)?.isTokenExpired == true
                {
                    retriedExpiredToken = true
                    continue
                }
                let failure = Self.classify(error)
                guard let retryReason = failure.retryReason else {
                    throw failure.error
                }
                reason = retryReason
            }
            retriedExpiredToken = false
            try Task.checkCancellation()
            let attempt = state.connectionFailed()
            if let limit = self.configuration.maxReconnectAttempts, attempt > limit {
                throw EventLogClientError(
                    .connectionFailed,
                    message: "gave up after \(limit) reconnect attempts; last: \(reason)"
                )
            }
            try await self.sink.yield(.reconnecting(attempt: attempt, reason: reason))
            let base = self.configuration.honourServerRetry ? state.serverRetry : nil
            let delay = self.configuration.reconnectBackoff.delay(
                attempt: attempt,
                base: base,
                random: Double.random(in: 0..<1)
            )
            try await self.configuration.clock.sleep(for: delay)
        }
    }

    /// Whether an error ends the subscription, or the reason to show when reconnecting after it.
    static func classify(_ error: any Error) -> (error: any Error, retryReason: String?) {
        switch error {
        case let error as EventLogClientError:
            return (error, error.isRetryableForSubscription ? error.description : nil)
        case is ReadIdleTimeoutError:
            return (error, "nothing received within the idle timeout")
        case is NIOHTTPClientUpgradeError:
            let violation = EventLogClientError(
                .protocolViolation,
                message: "the server did not accept the WebSocket upgrade: \(error)"
            )
            return (violation, nil)
        default:
            return (error, String(describing: error))
        }
    }

    /// Opens a connection with an idle timeout first in the pipeline, then `initializer`'s handlers.
    func connect<Output: Sendable>(
        _ initializer: @escaping @Sendable (any Channel) throws -> Output
    ) async throws -> Output {
        let address = try self.client.resolvedAddress()
        let idleTimeout = self.configuration.subscriptionIdleTimeout
        let clock = self.configuration.clock
        do {
            return try await ClientBootstrap(group: self.client.eventLoopGroup)
                .connectTimeout(TimeAmount(self.configuration.connectTimeout))
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let idleTimeout {
                            try channel.pipeline.syncOperations.addHandler(
                                ReadIdleTimeoutHandler(timeout: idleTimeout, clock: clock)
                            )
                        }
                        return try initializer(channel)
                    }
                }
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw EventLogClientError.cannotConnect(to: self.client.baseURL, error)
        }
    }

    /// Yields what one server message means to the consumer.
    func deliver(_ message: ServerMessage, state: inout SubscriptionState) async throws {
        for element in try state.receive(message) {
            try await self.sink.yield(element)
        }
    }
}

extension SubscriptionConnector {
    /// Reads an error answer's body (up to 64 KiB) after its head.
    static func errorBody(
        _ parts: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    ) async throws -> ByteBuffer {
        var body = ByteBuffer()
        while let part = try await parts.next() {
            switch part {
            case .head:
                continue
            case .body(var chunk):
                if body.readableBytes < 64 << 10 {
                    body.writeBuffer(&chunk)
                }
            case .end:
                return body
            }
        }
        return body
    }
}
