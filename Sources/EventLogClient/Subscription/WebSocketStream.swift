import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The outcome of the WebSocket upgrade request.
enum WebSocketUpgradeResult: Sendable {
    /// `101 Switching Protocols`: frames from here on.
    case upgraded(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
    /// Any other answer, still HTTP: its head is the next inbound part.
    case refused(NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>)
}

/// A connection whose upgrade is under way, kept with its channel so that a failed upgrade can close it.
struct PendingWebSocketUpgrade: Sendable {
    var channel: any Channel
    var result: EventLoopFuture<WebSocketUpgradeResult>
}

extension SubscriptionConnector {
    /// One WebSocket connection: upgrade `GET /v1/ws`, send `subscribe`, then read JSON text messages.
    ///
    /// - Returns: Why the stream ended when the server ended it.
    func streamWebSocket(_ state: inout SubscriptionState) async throws -> String {
        let address = try self.client.resolvedAddress()
        var headers = try self.client.headers()
        try await self.client.authorize(&headers)
        headers.add(name: "Content-Length", value: "0")
        let requestHead = HTTPRequestHead(
            version: .http1_1,
            method: .GET,
            uri: address.target("/v1/ws"),
            headers: headers
        )
        let maximumMessageBytes = self.configuration.maxMessageBytes

        let pending = try await self.connect { channel in
            let upgrader = NIOTypedWebSocketClientUpgrader<WebSocketUpgradeResult>(
                maxFrameSize: maximumMessageBytes,
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0,
                                maxAccumulatedFrameCount: 1 << 16,
                                maxAccumulatedFrameSize: maximumMessageBytes
                            )
                        )
                        return .upgraded(
                            try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel)
                        )
                    }
                }
            )
            let upgradeConfiguration = NIOTypedHTTPClientUpgradeConfiguration(
                upgradeRequestHead: requestHead,
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        .refused(
                            try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                                wrappingChannelSynchronously: channel
                            )
                        )
                    }
                }
            )
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                configuration: .init(upgradeConfiguration: upgradeConfiguration)
            )
            return PendingWebSocketUpgrade(channel: channel, result: result)
        }

        let upgrade: WebSocketUpgradeResult
        do {
            upgrade = try await withTaskCancellationHandler {
                try await pending.result.get()
            } onCancel: {
                pending.channel.close(promise: nil)
            }
        } catch {
            pending.channel.close(promise: nil)
            throw error
        }

        switch upgrade {
        case .refused(let channel):
            return try await channel.executeThenClose { inbound, _ in
                var parts = inbound.makeAsyncIterator()
                guard case .head(let response)? = try await parts.next() else {
                    return "the server closed the connection before answering"
                }
                let body = try await Self.errorBody(&parts)
                throw EventLogClient.httpError(status: response.status, body: body)
            }
        case .upgraded(let channel):
            let subscribe = ClientOp.subscribeText(topics: self.topics, start: state.nextWebSocketStart())
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(Self.frame(.text, ByteBuffer(string: subscribe)))
                for try await frame in inbound {
                    switch frame.opcode {
                    case .text:
                        let bytes = Array(frame.unmaskedData.readableBytesView)
                        let message = try WireDecoding.webSocketMessage(bytes)
                        if WireDecoding.isTokenExpiryWarning(message, bytes) {
                            try await self.renewToken(outbound)
                        } else {
                            try await self.deliver(message, state: &state)
                        }
                    case .ping:
                        try await outbound.write(Self.frame(.pong, frame.unmaskedData))
                    case .connectionClose:
                        return try await Self.closed(by: frame, outbound: outbound)
                    default:
                        // Binary frames are not part of the protocol, and pongs answer nothing we sent.
                        continue
                    }
                }
                return "the connection closed without a close frame"
            }
        }
    }

    /// The `ref` of the `auth` ops this client sends: the server's answer to one carries it, and so tells a refused
    /// renewal (closed by the server) from its warning, which has no `ref`.
    static let authRef = "auth"

    /// Answers the server's warning that the connection's token expires soon: the provider's new token, sent in an
    /// `auth` op on the same socket (`{"op":"auth","token":..,"ref":"auth"}`). The server answers `authenticated`.
    ///
    /// Without a provider, or when it fails or has no token, nothing is sent: the server closes the connection at the
    /// expiry, and the reconnect asks the provider again.
    func renewToken(_ outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>) async throws {
        guard let provider = self.configuration.tokenProvider else {
            return
        }
        let token: String?
        do {
            token = try await provider()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return
        }
        guard let token, !token.isEmpty else {
            return
        }
        let op = ClientOp.auth(token: token).encode(ref: .string(Self.authRef))
        try await outbound.write(Self.frame(.text, ByteBuffer(string: op)))
    }

    /// A client frame: final and masked, as RFC 6455 requires of a client.
    static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }

    /// Answers the server's close frame and decides whether to reconnect.
    ///
    /// Close codes that blame this client's messages (1002 protocol error, 1003 unsupported data, 1007 invalid
    /// payload, 1009 too big, 1010 missing extension) would repeat, so they end the subscription; the others
    /// (going away, restart, try again later, policy violation such as a slow consumer) reconnect.
    static func closed(
        by frame: WebSocketFrame,
        outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    ) async throws -> String {
        var data = frame.unmaskedData
        let code = data.readWebSocketErrorCode()
        let reason = data.readString(length: data.readableBytes) ?? ""
        var reply = ByteBuffer()
        reply.write(webSocketErrorCode: code ?? .normalClosure)
        // The server may already have closed the TCP connection; nothing more to say then.
        try? await outbound.write(Self.frame(.connectionClose, reply))

        let number = code.map { Int(UInt16(webSocketErrorCode: $0)) }
        let description =
            "the server closed the WebSocket" + (number.map { " (\($0))" } ?? "")
            + (reason.isEmpty ? "" : ": \(reason)")
        switch number {
        case 1002, 1003, 1007, 1009, 1010:
            throw EventLogClientError(.protocolViolation, message: description)
        default:
            return description
        }
    }
}
