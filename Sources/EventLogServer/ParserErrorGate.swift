import NIOCore
import NIOHTTP1

/// Holds back a parse error that comes while a request is still being answered, until its answer is written.
///
/// NIO's pipelining handler used to do this; the server leaves it out (``HTTPConnectionHandler`` holds
/// pipelined requests itself). Without it, bytes that cannot be parsed right after a complete request (a body
/// longer than its `Content-Length`) would make NIO's error handler answer `400` and the connection close
/// before the request's own answer, though its event was appended. With this handler right after the decoder,
/// the error (and anything the decoder reports after it) waits: the request is answered, then the `400`
/// follows and the connection closes. Removed when the connection upgrades to WebSocket.
final class ParserErrorGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests read to their end whose answer has not ended yet.
    private var unanswered = 0
    private var held: (any Error)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { unanswered += 1 }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard unanswered > 0 else {
            context.fireErrorCaught(error)
            return
        }
        if held == nil { held = error }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isEnd: Bool
        if case .end = unwrapOutboundIn(data) { isEnd = true } else { isEnd = false }
        context.write(data, promise: promise)
        guard isEnd, unanswered > 0 else { return }
        unanswered -= 1
        if unanswered == 0, let error = held.take() {
            context.flush()
            context.fireErrorCaught(error)
        }
    }
}

@available(*, unavailable)
extension ParserErrorGate: Sendable {}
