import NIOCore
import NIOHTTP1

/// Lets only well-formed WebSocket upgrade requests on `/v1/ws` reach NIO's typed upgrade handler.
///
/// When that handler finds no upgrader for a request that carries an `Upgrade` header (another
/// protocol, another path, or a WebSocket request missing its key), it hands the connection to the
/// plain HTTP pipeline without the request it read, and the client waits for an answer that never
/// comes (swift-nio 2.101, `NIOTypedHTTPServerUpgraderStateMachine.findingUpgraderCompleted`).
/// Dropping the `Upgrade` header from such requests sends them down the ordinary path instead, where
/// they get a normal answer (`426` on `/v1/ws`).
final class UpgradeRequestFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only the first request can upgrade, and after an upgrade raw bytes flow here: pass the first
        // request head on, then step aside.
        defer { context.pipeline.syncOperations.removeHandler(self, promise: nil) }
        guard case .head(var head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") else {
            context.fireChannelRead(data)
            return
        }
        if !Self.isWebSocketUpgrade(head) {
            head.headers.remove(name: "upgrade")
            context.fireChannelRead(wrapInboundOut(.head(head)))
            return
        }
        context.fireChannelRead(data)
    }

    /// A first request that cannot be parsed has been answered 400 by NIO's error handler, but nothing
    /// closes the connection while the upgrade negotiation owns it: close it once the answer is out.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is HTTPParserError {
            let channel = context.channel
            context.eventLoop.scheduleTask(in: .milliseconds(50)) { channel.close(promise: nil) }
        }
        context.fireErrorCaught(error)
    }

    /// A GET on `/v1/ws` asking for `websocket` with a key and version 13 (RFC 6455, section 4.2.1).
    static func isWebSocketUpgrade(_ head: HTTPRequestHead) -> Bool {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let headers = head.headers
        return head.method == .GET && path == "/v1/ws"
            && headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
            && headers.first(name: "sec-websocket-version") == "13"
            && !(headers.first(name: "sec-websocket-key") ?? "").isEmpty
    }
}

@available(*, unavailable)
extension UpgradeRequestFilter: Sendable {}
