import NIOCore

/// A WebSocket subscriber on a raw connection: it upgrades `GET /v1/ws`, sends one `subscribe` op, and
/// reads the server's frames (docs/PROTOCOL.md, "WebSocket"). It answers pings, counts `event` messages,
/// and succeeds `caughtUp` at the `caughtup` message. Enough for idle-memory measurements, not a client.
final class WebSocketSubscriber: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let eventLoop: any EventLoop
    /// Succeeds when `caughtup` arrives; fails if the upgrade is refused or the socket closes first.
    let caughtUp: EventLoopPromise<Void>
    private let subscribe: String
    private var context: ChannelHandlerContext?
    private var received = ByteBuffer()
    private var upgraded = false
    private(set) var delivered = 0

    private static let caughtUpMarker = Array("\"type\":\"caughtup\"".utf8)
    private static let eventMarker = Array("\"type\":\"event\"".utf8)

    /// Subscribes to `topics` from `latest` (live only).
    init(eventLoop: any EventLoop, topics: [String]) {
        self.eventLoop = eventLoop
        caughtUp = eventLoop.makePromise(of: Void.self)
        let list = topics.map { "\"\($0)\"" }.joined(separator: ",")
        subscribe = "{\"op\":\"subscribe\",\"topics\":[\(list)],\"from\":\"latest\"}"
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        let request =
            "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: ZXZlbnRsb2ctYmVuY2gtd3M=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        caughtUp.fail(BenchError("the WebSocket closed before caughtup"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        received.writeBuffer(&chunk)
        if !upgraded {
            let headEnd = received.withUnsafeReadableBytes { Bytes.find(Bytes.headerEnd, in: $0) }
            guard let headEnd else { return }
            let status = received.withUnsafeReadableBytes { Bytes.decimal($0, from: 9, to: min(12, $0.count)) }
            guard status == 101 else {
                let text = received.getString(at: received.readerIndex, length: headEnd) ?? ""
                caughtUp.fail(BenchError("WebSocket upgrade refused: \(text.prefix(300))"))
                context.close(promise: nil)
                return
            }
            received.moveReaderIndex(forwardBy: headEnd + 4)
            upgraded = true
            send(opcode: 0x1, payload: ByteBuffer(string: subscribe))
        }
        while let (opcode, payload) = nextFrame() {
            switch opcode {
            case 0x1, 0x2:
                payload.withUnsafeReadableBytes { bytes in
                    if Bytes.find(Self.eventMarker, in: bytes) != nil {
                        delivered += 1
                    } else if Bytes.find(Self.caughtUpMarker, in: bytes) != nil {
                        caughtUp.succeed(())
                    }
                }
            case 0x9:
                send(opcode: 0xA, payload: payload)
            case 0x8:
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        if received.readableBytes == 0 {
            received.clear()
        } else if received.readerIndex > 1 << 16 {
            received.discardReadBytes()
        }
    }

    /// The next complete (unmasked, unfragmented: the server sends each message as one frame) frame.
    private func nextFrame() -> (UInt8, ByteBuffer)? {
        guard let first = received.getInteger(at: received.readerIndex, as: UInt8.self),
            let second = received.getInteger(at: received.readerIndex + 1, as: UInt8.self)
        else { return nil }
        var headerLength = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let extended = received.getInteger(at: received.readerIndex + 2, as: UInt16.self) else { return nil }
            length = Int(extended)
            headerLength = 4
        } else if length == 127 {
            guard let extended = received.getInteger(at: received.readerIndex + 2, as: UInt64.self) else { return nil }
            length = Int(extended)
            headerLength = 10
        }
        let masked = second & 0x80 != 0
        let maskLength = masked ? 4 : 0
        guard received.readableBytes >= headerLength + maskLength + length else { return nil }
        var payload = received.getSlice(at: received.readerIndex + headerLength + maskLength, length: length)!
        if masked {
            let key = received.getBytes(at: received.readerIndex + headerLength, length: 4)!
            var bytes = payload.readBytes(length: length)!
            for index in bytes.indices { bytes[index] ^= key[index % 4] }
            payload = ByteBuffer(bytes: bytes)
        }
        received.moveReaderIndex(forwardBy: headerLength + maskLength + length)
        return (first & 0x0F, payload)
    }

    /// Writes one final frame, masked as a client must.
    private func send(opcode: UInt8, payload: ByteBuffer) {
        guard let context else { return }
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        let length = payload.readableBytes
        if length < 126 {
            frame.writeInteger(UInt8(0x80 | length))
        } else if length <= 0xFFFF {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(0x80 | 127))
            frame.writeInteger(UInt64(length))
        }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame.writeBytes(key)
        var index = 0
        for byte in payload.readableBytesView {
            frame.writeInteger(byte ^ key[index % 4])
            index += 1
        }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }
}
