import NIOCore
import NIOHTTP1

/// One HTTP request with everything needed to send it.
struct HTTPRequest: Sendable {
    var method: HTTPMethod
    var target: String
    var headers: HTTPHeaders
    var body: ByteBuffer?

    /// Whether the request may be sent again after a connection failed before any answer: the method is safe, or
    /// every event it carries has an idempotency key (the rule Go's `net/http` uses).
    var isReplayable: Bool
}

/// A complete HTTP answer.
struct HTTPResponse: Sendable {
    var head: HTTPResponseHead
    var body: ByteBuffer

    var status: Int { Int(self.head.status.code) }
}

/// The internal failure of one exchange, before it is mapped to an ``EventLogClientError``.
enum HTTPExchangeError: Error {
    /// The connection closed before any byte of the answer arrived (a reused connection may have been closed by the
    /// server while idle).
    case closedBeforeResponse
    /// The connection closed in the middle of the answer.
    case closedDuringResponse
    /// The answer took longer than the request timeout.
    case timedOut
    /// The answer body is larger than allowed.
    case bodyTooLarge(Int)
    /// A request was written while another one was still waiting for its answer.
    case busy
}

/// What the exchange handler is asked to write: a request, and the promise its answer completes.
struct HTTPExchangeRequest: Sendable {
    var request: HTTPRequest
    var timeout: Duration
    var promise: EventLoopPromise<HTTPResponse>
}

/// Sends one request at a time on a keep-alive HTTP/1.1 connection and completes its promise with the whole answer.
///
/// Everything runs on the channel's event loop, so the timeout, the answer and the connection's end cannot race:
/// whichever comes first completes the promise, and the others find nothing to complete.
final class HTTPExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPExchangeRequest
    typealias OutboundOut = HTTPClientRequestPart

    private struct Pending {
        var promise: EventLoopPromise<HTTPResponse>
        var timer: ClientTimer?
        var head: HTTPResponseHead?
        var body: ByteBuffer?
    }

    private let maximumBodyBytes: Int
    private let clock: any ClientClock
    private var pending: Pending?

    init(maximumBodyBytes: Int, clock: any ClientClock) {
        self.maximumBodyBytes = maximumBodyBytes
        self.clock = clock
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = Self.unwrapOutboundIn(data)
        guard self.pending == nil else {
            exchange.promise.fail(HTTPExchangeError.busy)
            promise?.fail(HTTPExchangeError.busy)
            return
        }
        let timer = self.clock.schedule(in: exchange.timeout, on: context.eventLoop) {
            self.fail(HTTPExchangeError.timedOut)
            context.close(promise: nil)
        }
        self.pending = Pending(promise: exchange.promise, timer: timer)
        let request = exchange.request
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.target)
        head.headers = request.headers
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if let body = request.body, body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard var pending = self.pending else {
            // An answer nobody asked for: the connection is out of step, so it must not be reused.
            context.close(promise: nil)
            return
        }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            pending.head = head
            self.pending = pending
        case .body(var part):
            let size = (pending.body?.readableBytes ?? 0) + part.readableBytes
            guard size <= self.maximumBodyBytes else {
                self.fail(HTTPExchangeError.bodyTooLarge(self.maximumBodyBytes))
                context.close(promise: nil)
                return
            }
            if pending.body == nil {
                pending.body = part
            } else {
                pending.body!.writeBuffer(&part)
            }
            self.pending = pending
        case .end:
            self.pending = nil
            pending.timer?.cancel()
            guard let head = pending.head else {
                pending.promise.fail(HTTPExchangeError.closedBeforeResponse)
                context.close(promise: nil)
                return
            }
            pending.promise.succeed(HTTPResponse(head: head, body: pending.body ?? ByteBuffer()))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let pending = self.pending {
            self.fail(pending.head == nil ? HTTPExchangeError.closedBeforeResponse : .closedDuringResponse)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        guard let pending = self.pending else { return }
        self.pending = nil
        pending.timer?.cancel()
        pending.promise.fail(error)
    }
}

@available(*, unavailable)
extension HTTPExchangeHandler: Sendable {}
