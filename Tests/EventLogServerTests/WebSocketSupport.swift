import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A raw WebSocket test client: sends JSON ops, reads JSON messages (masked frames, as a client must).
struct TestWebSocket {
    enum UpgradeResult: Sendable {
        case webSocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case refused
    }

    /// Connects to `/v1/ws` and runs `body` with the connection; it closes when `body` returns.
    static func connect<T: Sendable>(
        port: Int,
        headers extraHeaders: [(String, String)] = [],
        _ body: (inout TestWebSocket.Connection) async throws -> T
    ) async throws -> T {
        let upgrade: EventLoopFuture<UpgradeResult> = try await ClientBootstrap(
            group: MultiThreadedEventLoopGroup.singleton
        )
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
                    maxFrameSize: 1 << 24,
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            .webSocket(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                        }
                    }
                )
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: "127.0.0.1:\(port)")
                headers.add(name: "Content-Length", value: "0")
                headers.add(contentsOf: extraHeaders)
                let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                    upgradeRequestHead: HTTPRequestHead(
                        version: .http1_1, method: .GET, uri: "/v1/ws", headers: headers),
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(.refused) }
                )
                return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                    configuration: .init(upgradeConfiguration: configuration)
                )
            }
        }
        guard case .webSocket(let channel) = try await upgrade.get() else { throw TestWebSocketError.refused }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = Connection(iterator: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&connection)
        }
    }

    /// An open connection.
    struct Connection {
        var iterator: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
        /// The close code the server sent, once it closed.
        var closeCode: UInt16?

        /// Sends a text frame.
        func send(_ text: String) async throws {
            try await outbound.write(
                WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text)))
        }

        /// Sends a JSON object.
        func send(_ object: [String: Any]) async throws {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            try await send(String(decoding: data, as: UTF8.self))
        }

        /// The next JSON message, or nil when the server closed. Pings are answered.
        mutating func next() async throws -> WSMessage? {
            while let frame = try await iterator.next() {
                switch frame.opcode {
                case .text:
                    return WSMessage(text: String(buffer: frame.unmaskedData))
                case .ping:
                    try await outbound.write(
                        WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData))
                case .connectionClose:
                    var data = frame.unmaskedData
                    closeCode = data.readInteger(as: UInt16.self)
                    return nil
                default:
                    continue
                }
            }
            return nil
        }

        /// Reads messages until one has `type`; returns everything read, that one last.
        mutating func read(until type: String) async throws -> [WSMessage] {
            var messages: [WSMessage] = []
            while let message = try await next() {
                messages.append(message)
                if message["type"] as? String == type { return messages }
            }
            return messages
        }
    }
}

enum TestWebSocketError: Error {
    case refused
}

/// One JSON message from the server, kept as text (Sendable) and parsed on access.
struct WSMessage: Sendable {
    let text: String

    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    subscript(key: String) -> Any? { json[key] }
}
