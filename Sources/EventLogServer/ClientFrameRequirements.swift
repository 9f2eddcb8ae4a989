import NIOCore
import NIOWebSocket

/// Closes the connection with 1002 on a client frame that breaks RFC 6455's framing rules: no mask
/// (section 5.1) or a reserved bit set without a negotiated extension (section 5.2).
///
/// It sits before `NIOWebSocketFrameAggregator`, which rebuilds fragmented messages as new,
/// unmasked frames, so the check must see each frame as it came off the wire.
final class ClientFrameRequirements: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var closing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        let problem: String
        if frame.maskKey == nil {
            problem = "client frames must be masked"
        } else if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            problem = "reserved bits set without an extension"
        } else {
            context.fireChannelRead(data)
            return
        }
        closing = true
        var payload = context.channel.allocator.buffer(capacity: 48)
        payload.writeInteger(UInt16(1002))
        payload.writeString(problem)
        let close = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        let loopBound = context.loopBound
        context.writeAndFlush(wrapOutboundOut(close)).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension ClientFrameRequirements: Sendable {}
