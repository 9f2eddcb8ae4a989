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
///
/// With auth on, the same goes for a WebSocket upgrade whose credential does not authenticate: it becomes a
/// plain request, which the router answers `401` (NIO's upgrader would lose it too if it refused it).
final class UpgradeRequestFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// Whether an upgrade request's credential authenticates; `nil` when auth is off.
    private let authorize: (@Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<Bool>)?
    /// Parts that arrived while the credential was being checked, passed on after the head.
    private var held: [NIOAny] = []
    private var checking = false

    init(authorize: (@Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<Bool>)? = nil) {
        self.authorize = authorize
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !checking { context.fireChannelReadComplete() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if checking {
            held.append(data)
            return
        }
        guard case .head(var head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") else {
            return passOn(context: context, data)
        }
        if !Self.isWebSocketUpgrade(head) {
            head.headers.remove(name: "upgrade")
            return passOn(context: context, wrapInboundOut(.head(head)))
        }
        guard let authorize else { return passOn(context: context, data) }
        checking = true
        let loopBound = NIOLoopBound((self, context, data, head), eventLoop: context.eventLoop)
        authorize(head, context.eventLoop).whenComplete { result in
            var (filter, context, data, head) = loopBound.value
            filter.checking = false
            if case .success(true) = result {
                filter.passOn(context: context, data, late: true)
            } else {
                head.headers.remove(name: "upgrade")
                filter.passOn(context: context, filter.wrapInboundOut(.head(head)), late: true)
            }
        }
    }

    /// Only the first request can upgrade, and after an upgrade raw bytes flow here: pass the first request
    /// head on (with what arrived meanwhile), then step aside.
    /// `late` reads arrive after their read burst ended, so they end with a read-complete of their own: the
    /// handlers after this one act on reads at the end of a burst.
    private func passOn(context: ChannelHandlerContext, _ data: NIOAny, late: Bool = false) {
        context.fireChannelRead(data)
        let held = self.held
        self.held = []
        for part in held { context.fireChannelRead(part) }
        if late { context.fireChannelReadComplete() }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
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
