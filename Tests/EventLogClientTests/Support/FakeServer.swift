import EventLogWire
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The commit time fake answers carry: `2026-11-25T01:07:15.123Z`.
let testTimeText = "2026-11-25T01:07:15.123Z"
/// ``testTimeText`` in milliseconds.
let testTime: Int64 = Timestamp.parseRFC3339(testTimeText)!

extension Locked {
    /// The value now, for recording what a fake server saw.
    var current: Value {
        self.withLock { $0 }
    }
}

/// A request as the fake server received it.
struct FakeRequest: Sendable {
    /// Which connection (from 0, in accept order) carried it.
    var connection: Int
    var method: HTTPMethod
    var uri: String
    var headers: HTTPHeaders
    var body: String

    var path: String {
        String(self.uri.prefix { $0 != "?" })
    }

    /// The decoded query items, in order.
    var query: [(name: String, value: String)] {
        guard let questionMark = self.uri.firstIndex(of: "?") else { return [] }
        return self.uri[self.uri.index(after: questionMark)...].split(separator: "&").map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (name, value)
        }
    }

    func header(_ name: String) -> String? {
        self.headers[name].first
    }
}

/// One HTTP exchange on the fake server. Not ending the response closes the connection when the handler returns.
final class FakeHTTPExchange {
    let request: FakeRequest
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    private let channel: any Channel
    private(set) var ended = false

    init(request: FakeRequest, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, channel: any Channel) {
        self.request = request
        self.outbound = outbound
        self.channel = channel
    }

    /// Sends a whole response with a `Content-Length`.
    func respond(status: HTTPResponseStatus, headers: [(String, String)] = [], body: String = "") async throws {
        var responseHeaders = HTTPHeaders(headers)
        responseHeaders.replaceOrAdd(name: "Content-Length", value: String(body.utf8.count))
        try await self.outbound.write(
            .head(HTTPResponseHead(version: .http1_1, status: status, headers: responseHeaders)))
        if !body.isEmpty {
            try await self.outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
        }
        try await self.outbound.write(.end(nil))
        self.ended = true
    }

    /// Starts a chunked streaming response.
    func startStream(status: HTTPResponseStatus = .ok, headers: [(String, String)]) async throws {
        var responseHeaders = HTTPHeaders(headers)
        responseHeaders.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
        try await self.outbound.write(
            .head(HTTPResponseHead(version: .http1_1, status: status, headers: responseHeaders)))
    }

    /// Writes one chunk of a streaming response.
    func write(_ text: String) async throws {
        try await self.outbound.write(.body(.byteBuffer(ByteBuffer(string: text))))
    }

    /// Ends a streaming response cleanly.
    func end() async throws {
        try await self.outbound.write(.end(nil))
        self.ended = true
    }

    /// Waits until the client closes the connection.
    func waitForClientClose() async throws {
        try await self.channel.closeFuture.get()
    }
}

/// One WebSocket connection on the fake server.
final class FakeWebSocket {
    let request: FakeRequest
    private var inbound: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    /// Every frame received, in order.
    private(set) var received: [WebSocketFrame] = []

    init(
        request: FakeRequest,
        inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
        outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    ) {
        self.request = request
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// The next frame from the client, or `nil` when the connection ended.
    func nextFrame() async throws -> WebSocketFrame? {
        let frame = try await self.inbound.next()
        if let frame {
            self.received.append(frame)
        }
        return frame
    }

    /// The next text message from the client, skipping other frames.
    func receiveText() async throws -> String? {
        while let frame = try await self.nextFrame() {
            if frame.opcode == .text {
                return String(buffer: frame.unmaskedData)
            }
        }
        return nil
    }

    func send(_ text: String) async throws {
        try await self.outbound.write(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)))
    }

    func send(_ frame: WebSocketFrame) async throws {
        try await self.outbound.write(frame)
    }

    func close(code: WebSocketErrorCode, reason: String = "") async throws {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        try await self.outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
    }
}

/// A scripted HTTP/1.1 and WebSocket server on 127.0.0.1 with an ephemeral port, for end-to-end client tests.
final class FakeServer: Sendable {
    typealias HTTPHandler = @Sendable (FakeHTTPExchange) async throws -> Void
    typealias WebSocketHandler = @Sendable (FakeWebSocket) async throws -> Void

    private enum Connection: Sendable {
        case http(NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>)
        case webSocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, HTTPRequestHead)
    }

    let port: Int
    private let requests: Locked<[FakeRequest]>
    private let connectionCount: Locked<Int>
    private let closedConnectionCount: Locked<Int>
    private let serverChannel: any Channel
    private let acceptTask: Task<Void, Never>

    var baseURL: String { "http://127.0.0.1:\(self.port)" }

    /// Every HTTP request and WebSocket upgrade request, in order of arrival.
    var recordedRequests: [FakeRequest] { self.requests.current }
    /// How many connections were accepted.
    var acceptedConnections: Int { self.connectionCount.current }
    /// How many connections ended.
    var endedConnections: Int { self.closedConnectionCount.current }

    private init(
        port: Int,
        serverChannel: any Channel,
        acceptTask: Task<Void, Never>,
        requests: Locked<[FakeRequest]>,
        connectionCount: Locked<Int>,
        closedConnectionCount: Locked<Int>
    ) {
        self.port = port
        self.serverChannel = serverChannel
        self.acceptTask = acceptTask
        self.requests = requests
        self.connectionCount = connectionCount
        self.closedConnectionCount = closedConnectionCount
    }

    static func start(
        http: @escaping HTTPHandler = { try await $0.respond(status: .notFound) },
        webSocket: WebSocketHandler? = nil
    ) async throws -> FakeServer {
        let server: NIOAsyncChannel<EventLoopFuture<Connection>, Never> = try await ServerBootstrap(
            group: MultiThreadedEventLoopGroup.singleton
        )
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .bind(host: "127.0.0.1", port: 0) { channel in
            channel.eventLoop.makeCompletedFuture {
                guard webSocket != nil else {
                    // Without a WebSocket handler, an upgrade request is an ordinary request.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return channel.eventLoop.makeSucceededFuture(
                        .http(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                    )
                }
                let upgrader = NIOTypedWebSocketServerUpgrader<Connection>(
                    maxFrameSize: 1 << 24,
                    shouldUpgrade: { channel, _ in
                        channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                    },
                    upgradePipelineHandler: { channel, head in
                        channel.eventLoop.makeCompletedFuture {
                            .webSocket(try NIOAsyncChannel(wrappingChannelSynchronously: channel), head)
                        }
                    }
                )
                let configuration = NIOTypedHTTPServerUpgradeConfiguration<Connection>(
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeCompletedFuture {
                            .http(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                        }
                    }
                )
                return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                    configuration: .init(upgradeConfiguration: configuration)
                )
            }
        }
        let port = server.channel.localAddress!.port!
        let requests = Locked<[FakeRequest]>([])
        let connectionCount = Locked(0)
        let closedConnectionCount = Locked(0)
        let acceptTask = Task<Void, Never> {
            try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        let index = connectionCount.withLock { count in
                            defer { count += 1 }
                            return count
                        }
                        group.addTask {
                            defer { closedConnectionCount.withLock { $0 += 1 } }
                            do {
                                switch try await connection.get() {
                                case .http(let channel):
                                    try await Self.serveHTTP(channel, index: index, requests: requests, handler: http)
                                case .webSocket(let channel, let head):
                                    let request = FakeRequest(
                                        connection: index,
                                        method: head.method,
                                        uri: head.uri,
                                        headers: head.headers,
                                        body: ""
                                    )
                                    requests.withLock { $0.append(request) }
                                    try await channel.executeThenClose { inbound, outbound in
                                        let socket = FakeWebSocket(
                                            request: request, inbound: inbound, outbound: outbound)
                                        try await webSocket?(socket)
                                    }
                                }
                            } catch {
                                // A connection's failure is part of what the tests provoke.
                            }
                        }
                    }
                }
            }
        }
        return FakeServer(
            port: port,
            serverChannel: server.channel,
            acceptTask: acceptTask,
            requests: requests,
            connectionCount: connectionCount,
            closedConnectionCount: closedConnectionCount
        )
    }

    private static func serveHTTP(
        _ channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
        index: Int,
        requests: Locked<[FakeRequest]>,
        handler: HTTPHandler
    ) async throws {
        try await channel.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ""
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                    body = ""
                case .body(let chunk):
                    body += String(buffer: chunk)
                case .end:
                    guard let requestHead = head else { return }
                    let request = FakeRequest(
                        connection: index,
                        method: requestHead.method,
                        uri: requestHead.uri,
                        headers: requestHead.headers,
                        body: body
                    )
                    requests.withLock { $0.append(request) }
                    let exchange = FakeHTTPExchange(request: request, outbound: outbound, channel: channel.channel)
                    try await handler(exchange)
                    guard exchange.ended, requestHead.isKeepAlive else { return }
                }
            }
        }
    }

    /// Stops accepting and ends every connection.
    func stop() async {
        self.acceptTask.cancel()
        try? await self.serverChannel.close()
        await self.acceptTask.value
    }
}
