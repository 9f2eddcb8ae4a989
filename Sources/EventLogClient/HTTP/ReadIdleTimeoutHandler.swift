import NIOCore

/// Raised through the pipeline when a connection that wants to read receives nothing for too long.
struct ReadIdleTimeoutError: Error, CustomStringConvertible {
    var description: String { "nothing received within the idle timeout" }
}

/// Closes a connection that receives nothing for `timeout` while it is waiting for data.
///
/// The clock runs only between a `read` request and the data that answers it. A subscriber whose consumer is slow
/// stops asking to read (backpressure), so it is never mistaken for a dead connection; a half-open connection that
/// never delivers the server's keepalives is. Put it first in the pipeline, where it sees raw bytes.
final class ReadIdleTimeoutHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: Duration
    private let clock: any ClientClock
    private var timer: ClientTimer?

    init(timeout: Duration, clock: any ClientClock) {
        self.timeout = timeout
        self.clock = clock
    }

    func read(context: ChannelHandlerContext) {
        if self.timer == nil, context.channel.isActive {
            self.timer = self.clock.schedule(in: self.timeout, on: context.eventLoop) {
                self.timer = nil
                context.fireErrorCaught(ReadIdleTimeoutError())
                context.close(promise: nil)
            }
        }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }
}

@available(*, unavailable)
extension ReadIdleTimeoutHandler: Sendable {}
