import EventLog
import EventLogAuth
import EventLogWire
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

@testable import EventLogServer

/// A temporary directory, removed by `remove()`.
struct TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("eventlog-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var databasePath: String { url.appendingPathComponent("eventlog.db").path }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// A real server on 127.0.0.1 with an ephemeral port, over a real database in a temp directory.
final class TestServer: Sendable {
    let directory: TemporaryDirectory
    let log: EventLog
    let server: EventLogServer
    let port: Int

    static func start(
        configure: (inout ServerConfiguration) -> Void = { _ in },
        options: (inout EventLog.Options) -> Void = { _ in },
        authenticator: Authenticator = Authenticator()
    ) async throws -> TestServer {
        let directory = try TemporaryDirectory()
        var logOptions = EventLog.Options()
        options(&logOptions)
        let log: EventLog
        do {
            log = try await EventLog.open(path: directory.databasePath, options: logOptions)
        } catch {
            directory.remove()
            throw error
        }
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.keepalive = .seconds(1)
        configure(&configuration)
        var logger = Logger(label: "test-server")
        logger.logLevel = .warning
        let server = EventLogServer(
            log: log, configuration: configuration, logger: logger, authenticator: authenticator)
        do {
            let port = try await server.start()
            return TestServer(directory: directory, log: log, server: server, port: port)
        } catch {
            await log.close()
            directory.remove()
            throw error
        }
    }

    private init(directory: TemporaryDirectory, log: EventLog, server: EventLogServer, port: Int) {
        self.directory = directory
        self.log = log
        self.server = server
        self.port = port
    }

    var client: TestHTTPClient { TestHTTPClient(port: port) }

    func stop() async {
        await server.shutdown()
        await log.close()
        directory.remove()
    }
}

/// Starts a ``TestServer``, runs `body` with it, and stops it (shutting the server down, closing the
/// log and removing its directory) whether `body` returns or throws.
func withTestServer<Result>(
    configure: (inout ServerConfiguration) -> Void = { _ in },
    options: (inout EventLog.Options) -> Void = { _ in },
    authenticator: Authenticator = Authenticator(),
    _ body: (TestServer) async throws -> Result
) async throws -> Result {
    let server = try await TestServer.start(configure: configure, options: options, authenticator: authenticator)
    let result: Result
    do {
        result = try await body(server)
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
    return result
}

/// A response read in full.
struct TestResponse: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: String

    /// The body parsed as a JSON object.
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
    }

    /// `error.code` of an error body.
    var errorCode: String? {
        (json["error"] as? [String: Any])?["code"] as? String
    }
}

/// A small HTTP/1.1 client on NIO for tests: one connection per request.
struct TestHTTPClient: Sendable {
    let port: Int

    func request(
        _ method: HTTPMethod,
        _ uri: String,
        headers: [(String, String)] = [],
        body: String? = nil
    ) async throws -> TestResponse {
        let channel = try await connect()
        return try await channel.executeThenClose { inbound, outbound in
            var requestHeaders = HTTPHeaders(headers)
            requestHeaders.replaceOrAdd(name: "Host", value: "127.0.0.1:\(port)")
            if let body { requestHeaders.replaceOrAdd(name: "Content-Length", value: String(body.utf8.count)) }
            requestHeaders.replaceOrAdd(name: "Connection", value: "close")
            // The server may answer and close before this task gets to its last write (the `.end` of a body
            // with a Content-Length sends nothing, and a refused body is answered early): the answer is then
            // already in the inbound stream, so a failed write only counts when no answer follows.
            var writeError: (any Error)?
            do {
                try await outbound.write(
                    .head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: requestHeaders))
                )
                if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body)))) }
                try await outbound.write(.end(nil))
            } catch {
                writeError = error
            }
            var status = 0
            var responseHeaders = HTTPHeaders()
            var buffer = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let head):
                    if head.status == .continue { continue }
                    status = Int(head.status.code)
                    responseHeaders = head.headers
                case .body(var chunk):
                    buffer.writeBuffer(&chunk)
                case .end:
                    return TestResponse(status: status, headers: responseHeaders, body: String(buffer: buffer))
                }
            }
            if let writeError, status == 0 { throw writeError }
            return TestResponse(status: status, headers: responseHeaders, body: String(buffer: buffer))
        }
    }

    /// Publishes one event and returns the response.
    func publish(
        topic: String,
        type: String? = nil,
        data: String = "\"x\"",
        idempotencyKey: String? = nil
    ) async throws -> TestResponse {
        var fields = "\"topic\":\"\(topic)\",\"data\":\(data)"
        if let type { fields += ",\"type\":\"\(type)\"" }
        var headers = [("Content-Type", "application/json")]
        if let idempotencyKey { headers.append(("Idempotency-Key", idempotencyKey)) }
        return try await request(.POST, "/v1/events", headers: headers, body: "{\(fields)}")
    }

    /// Opens an SSE stream and hands it to `body`; the connection closes when `body` returns.
    func sse<T: Sendable>(
        _ uri: String,
        headers: [(String, String)] = [],
        _ body: (inout SSEReader) async throws -> T
    ) async throws -> T {
        let channel = try await connect()
        return try await channel.executeThenClose { inbound, outbound in
            var requestHeaders = HTTPHeaders(headers)
            requestHeaders.replaceOrAdd(name: "Host", value: "127.0.0.1:\(port)")
            requestHeaders.replaceOrAdd(name: "Accept", value: "text/event-stream")
            try await outbound.write(
                .head(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: requestHeaders))
            )
            try await outbound.write(.end(nil))
            var reader = SSEReader(iterator: inbound.makeAsyncIterator())
            return try await body(&reader)
        }
    }

    func connect() async throws -> NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
    }
}

/// One SSE message as a client sees it: one frame (a block up to a blank line) with its fields as written.
struct SSEMessage: Sendable, Equatable {
    var id: String?
    var event: String?
    var data: [String] = []
    var retry: String?
    var comment = false

    var dataText: String { data.joined(separator: "\n") }
    var idValue: Int64? { id.flatMap { Int64($0) } }

    init(_ frame: ServerSentEventFrame) {
        id = frame.id
        event = frame.event
        data = frame.data
        retry = frame.retry
        comment = !frame.comments.isEmpty
    }
}

/// Reads SSE messages from a response, with the wire layer's parser (the one the client uses).
struct SSEReader {
    var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    var status = 0
    var headers = HTTPHeaders()
    private var parser = ServerSentEventParser(maximumEventBytes: .max)
    private var frames: [SSEMessage] = []
    private var nextFrame = 0
    /// Body bytes read with the head, not yet parsed.
    private var unparsed: [UInt8] = []
    private(set) var ended = false

    init(iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator) {
        self.iterator = iterator
    }

    /// The next message (blank-line terminated block), or nil when the stream ends.
    mutating func next() async throws -> SSEMessage? {
        while true {
            if nextFrame < frames.count {
                let frame = frames[nextFrame]
                nextFrame += 1
                if nextFrame == frames.count {
                    frames.removeAll(keepingCapacity: true)
                    nextFrame = 0
                }
                return frame
            }
            if !unparsed.isEmpty {
                try feed(unparsed)
                unparsed = []
                continue
            }
            guard !ended, let part = try await iterator.next() else {
                ended = true
                return nil
            }
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                headers = head.headers
            case .body(let buffer):
                try feed(buffer.readableBytesView)
            case .end:
                ended = true
            }
        }
    }

    private mutating func feed(_ bytes: some Collection<UInt8>) throws {
        frames += try parser.parseFrames(bytes).map(SSEMessage.init)
    }

    /// The next message that is not a keepalive comment.
    mutating func nextMessage() async throws -> SSEMessage? {
        while let message = try await next() {
            if message.comment { continue }
            return message
        }
        return nil
    }

    /// Reads the response head (status and headers) without consuming messages.
    mutating func readHead() async throws {
        while status == 0, let part = try await iterator.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                headers = head.headers
            case .body(let buffer):
                unparsed.append(contentsOf: buffer.readableBytesView)
            case .end:
                ended = true
                return
            }
        }
    }

    /// The rest of the body as text (for error responses).
    mutating func readRest() async throws -> String {
        while !ended, let part = try await iterator.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                headers = head.headers
            case .body(let buffer): unparsed.append(contentsOf: buffer.readableBytesView)
            case .end: ended = true
            }
        }
        defer { unparsed = [] }
        return String(decoding: unparsed, as: UTF8.self)
    }
}

/// Runs `body` with a deadline; throws `TimedOut` if it does not finish in time.
func withTimeout<T: Sendable>(
    _ duration: Duration,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: duration)
            throw TimedOut()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

struct TimedOut: Error {}

/// The JSON text of an SSE `data:` line as a dictionary.
func jsonObject(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// Resident set size of a process, in bytes, from /proc.
func residentBytes(pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").compactMap { Int($0) }
        return digits.first.map { $0 * 1024 }
    }
    return nil
}
