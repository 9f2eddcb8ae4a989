import NIOCore
import NIOWebSocket

/// Closes the connection with 1002 on a client frame without a mask (RFC 6455, section 5.1).
///
/// It sits before `NIOWebSocketFrameAggregator`, which rebuilds fragmented messages as new,
/// unmasked frames, so the check must see each frame as it came off the wire.
final class MaskedFrameRequirement: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var closing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        guard frame.maskKey == nil else {
            context.fireChannelRead(data)
            return
        }
        closing = true
        var payload = context.channel.allocator.buffer(capacity: 32)
        payload.writeInteger(UInt16(1002))
        payload.writeString("client frames must be masked")
        let close = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        let loopBound = context.loopBound
        context.writeAndFlush(wrapOutboundOut(close)).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension MaskedFrameRequirement: Sendable {}
