import EventLogWire
import Foundation
import NIOCore
import NIOPosix

// The load generator's connections: raw NIO channel handlers with the least parsing that measures what
// the benchmark needs. Each handler is confined to its channel's event loop: every method that touches
// its state runs there (callers hop with `eventLoop.execute`), which is why `@unchecked Sendable` is sound.
// Nothing here goes through Swift concurrency per request, so the client stays cheap next to the server.

/// Nanoseconds on CLOCK_MONOTONIC, the clock of every latency in the bench.
func monotonicNanos() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

/// A request as bytes on the wire.
struct LoadRequest: Sendable {
    var bytes: ByteBuffer
    /// How many replies the bytes ask for (several for pipelined Redis commands; always 1 for HTTP).
    var replies = 1
    /// What a Redis connection keeps of the replies.
    var respMode = RESPMode.summary
}

/// What a Redis connection keeps of each reply: the parsed values (setup commands), the raw bytes (for
/// a reader that scans them itself), or only the count of replies and errors (the measured hot paths).
enum RESPMode: Sendable {
    case values
    case raw
    case summary
}

/// The replies to one Redis request.
struct RESPReplies: Sendable {
    var count = 0
    var errors = 0
    var firstError: String?
    /// In ``RESPMode/values`` mode.
    var values: [RESPValue] = []
    /// In ``RESPMode/raw`` mode: each reply's bytes.
    var raw: [ByteBuffer] = []
}

/// What came back for a ``LoadRequest``.
enum LoadReply: Sendable {
    case http(status: Int, body: ByteBuffer)
    case resp(RESPReplies)
    case failed(String)

    /// A 2xx answer, or Redis replies with no error among them.
    var isSuccess: Bool {
        switch self {
        case .http(let status, _): return (200..<300).contains(status)
        case .resp(let replies): return replies.errors == 0
        case .failed: return false
        }
    }

    /// A short text for error messages.
    var summary: String {
        switch self {
        case .http(let status, let body): return "HTTP \(status) \(String(buffer: body).prefix(200))"
        case .resp(let replies):
            return replies.firstError.map { "Redis error: \($0)" } ?? "\(replies.count) Redis replies"
        case .failed(let reason): return reason
        }
    }
}

/// A connection that answers requests one after another, through callbacks on its event loop.
protocol LoadConnection: AnyObject, Sendable {
    var eventLoop: any EventLoop { get }
    /// Writes `request`; `done` runs once on the event loop with the answer. Call on the event loop.
    func exchange(_ request: LoadRequest, _ done: @escaping (LoadReply) -> Void)
    /// Closes the connection (from any thread).
    func close()
}

extension LoadConnection {
    /// One exchange from async code (setup and population, not the measured hot path).
    func request(_ request: LoadRequest) async throws -> LoadReply {
        let promise = eventLoop.makePromise(of: LoadReply.self)
        eventLoop.execute { self.exchange(request) { promise.succeed($0) } }
        return try await promise.futureResult.get()
    }
}

/// The bytes of the first line end (`\r\n\r\n`) and the byte searches every parser here uses.
enum Bytes {
    static let headerEnd: [UInt8] = Array("\r\n\r\n".utf8)

    /// Where `needle` first occurs in `bytes` at or after `from`.
    static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        guard let base = bytes.baseAddress, let first = needle.first, bytes.count - from >= needle.count else {
            return nil
        }
        var start = from
        while bytes.count - start >= needle.count,
            let found = memchr(base + start, Int32(first), bytes.count - start - needle.count + 1)
        {
            let index = base.distance(to: UnsafeRawPointer(found))
            if needle.withUnsafeBytes({ memcmp(base + index, $0.baseAddress!, needle.count) }) == 0 { return index }
            start = index + 1
        }
        return nil
    }

    /// The decimal number at `from` (skipping anything before the first digit), or nil.
    static func decimal(_ bytes: UnsafeRawBufferPointer, from: Int, to end: Int) -> Int64? {
        var index = from
        while index < end, bytes[index] < 0x30 || bytes[index] > 0x39 { index += 1 }
        guard index < end else { return nil }
        var value: Int64 = 0
        while index < end, bytes[index] >= 0x30, bytes[index] <= 0x39 {
            value = value &* 10 &+ Int64(bytes[index] &- 0x30)
            index += 1
        }
        return value
    }

    private static let contentLengthName = Array("\r\ncontent-length:".utf8)

    /// The `Content-Length` of a response head that ends at `headEnd`, compared without allocating.
    static func contentLength(_ bytes: UnsafeRawBufferPointer, headEnd: Int) -> Int? {
        let name = contentLengthName
        var index = 0
        outer: while index + name.count <= headEnd {
            for offset in 0..<name.count {
                var byte = bytes[index + offset]
                if byte >= 0x41, byte <= 0x5A { byte += 0x20 }
                if byte != name[offset] {
                    index += 1
                    continue outer
                }
            }
            return Bytes.decimal(bytes, from: index + name.count, to: headEnd).map { Int($0) }
        }
        return nil
    }

    /// The value of an HTTP header in a response head, by lower-case name (`content-length`).
    static func header(_ name: String, in head: UnsafeRawBufferPointer) -> Substring? {
        let text = String(decoding: head, as: UTF8.self)
        for line in text.split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == name else { continue }
            return line[line.index(after: colon)...].drop { $0 == " " }
        }
        return nil
    }
}

// MARK: HTTP

/// A keep-alive HTTP/1.1 connection that writes pre-encoded requests and reads each answer's status and
/// `Content-Length` body (eventlogd always sends one outside SSE).
final class HTTPLoadConnection: ChannelInboundHandler, LoadConnection, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    private var received: ByteBuffer?
    private var waiting = CircularBuffer<(LoadReply) -> Void>()
    private var closed = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// A request with a body, as bytes.
    static func request(
        _ method: String, _ path: String, contentType: String? = nil, body: String = "", headers: String = ""
    ) -> LoadRequest {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)"
        if let contentType { text += "Content-Type: \(contentType)\r\n" }
        if method != "GET" { text += "Content-Length: \(body.utf8.count)\r\n" }
        text += "\r\n" + body
        return LoadRequest(bytes: ByteBuffer(string: text))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func exchange(_ request: LoadRequest, _ done: @escaping (LoadReply) -> Void) {
        guard let context, !closed else {
            done(.failed("connection closed"))
            return
        }
        waiting.append(done)
        context.writeAndFlush(wrapOutboundOut(request.bytes), promise: nil)
    }

    func close() {
        eventLoop.execute { self.context?.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        if received == nil {
            received = chunk
        } else {
            received!.writeBuffer(&chunk)
        }
        while let reply = nextResponse() {
            guard let done = waiting.popFirst() else { continue }
            done(reply)
        }
    }

    private func nextResponse() -> LoadReply? {
        guard var buffer = received else { return nil }
        let parsed = buffer.withUnsafeReadableBytes { bytes -> (status: Int, bodyStart: Int, length: Int)? in
            guard let end = Bytes.find(Bytes.headerEnd, in: bytes), end >= 12 else { return nil }
            let status = Int(Bytes.decimal(bytes, from: 9, to: 12) ?? 0)
            let length = Bytes.contentLength(bytes, headEnd: end) ?? 0
            return (status, end + 4, length)
        }
        guard let parsed, buffer.readableBytes >= parsed.bodyStart + parsed.length else { return nil }
        let body = buffer.getSlice(at: buffer.readerIndex + parsed.bodyStart, length: parsed.length)!
        buffer.moveReaderIndex(forwardBy: parsed.bodyStart + parsed.length)
        received = buffer.readableBytes == 0 ? nil : buffer
        return .http(status: parsed.status, body: body)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        while let done = waiting.popFirst() { done(.failed("connection closed")) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

// MARK: SSE

/// A Server-Sent Events subscriber on a raw connection: it sends one `GET`, undoes the chunked framing, and parses
/// the stream with the wire layer's SSE parser.
/// It counts events, and optionally keeps their ids (to check them) and their latency (receive time minus
/// the send time carried in the data as `t=<nanoseconds>`).
final class SSESubscriber: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What to keep per event.
    struct Options: Sendable {
        var recordIDs = false
        var recordLatency = false
    }

    /// When `eventlog.caughtup` arrived, and the head it named.
    struct CaughtUp: Sendable {
        let at: UInt64
        let head: Int64
    }

    /// What the subscriber has seen so far.
    struct Snapshot: Sendable {
        var delivered = 0
        var latencies: [UInt64] = []
        /// Ids of the events before `eventlog.caughtup` (when recording ids).
        var ids: [Int64] = []
        var caughtUp: CaughtUp?
        var lastDeliveryAt: UInt64 = 0
    }

    let eventLoop: any EventLoop
    let options: Options
    /// Succeeds when `eventlog.caughtup` arrives; fails if the stream ends or is refused first.
    let caughtUp: EventLoopPromise<CaughtUp>
    private let request: ByteBuffer
    private var context: ChannelHandlerContext?
    private var state = Snapshot()

    private enum Framing {
        case head
        case chunkSize(Int)
        case chunkExtension(Int)
        case chunkData(Int)
        case chunkEnd(Int)
        case identity
        case done
    }
    private var framing = Framing.head
    private var headBytes: [UInt8] = []
    /// The shared event-stream parser (EventLogWire): the benchmark reads streams the way the client does.
    private var parser = ServerSentEventParser(maximumEventBytes: .max)

    /// `selectors` are sent as `topic=` parameters; `lastEventID` as the `Last-Event-ID` header; `parameters`
    /// (already encoded, such as `snapshot=latest`) are added to the query.
    init(
        eventLoop: any EventLoop, selectors: [String], lastEventID: Int64?, options: Options, headers: String = "",
        parameters: [String] = []
    ) {
        self.eventLoop = eventLoop
        self.options = options
        caughtUp = eventLoop.makePromise(of: CaughtUp.self)
        let query =
            selectors.map { "topic=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" }
            + parameters
        var text = "GET /v1/events?\(query.joined(separator: "&")) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        text += "Accept: text/event-stream\r\n"
        if let lastEventID { text += "Last-Event-ID: \(lastEventID)\r\n" }
        request = ByteBuffer(string: text + headers + "\r\n")
    }

    /// What it has seen so far. Call on the event loop.
    var snapshot: Snapshot { state }

    /// Forgets the counts and latencies so far (after a warm-up). Call on the event loop.
    func resetCounts() {
        state.delivered = 0
        state.latencies.removeAll(keepingCapacity: true)
    }

    func close() {
        eventLoop.execute { self.context?.close(promise: nil) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        caughtUp.fail(BenchError("the SSE stream ended before eventlog.caughtup"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let now = monotonicNanos()
        buffer.withUnsafeReadableBytes { bytes in consume(bytes, now: now) }
    }

    private func consume(_ bytes: UnsafeRawBufferPointer, now: UInt64) {
        var index = 0
        while index < bytes.count {
            switch framing {
            case .head:
                headBytes.append(bytes[index])
                index += 1
                if headBytes.count >= 4, headBytes.suffix(4).elementsEqual(Bytes.headerEnd) { finishHead() }
            case .chunkSize(let size):
                let byte = bytes[index]
                index += 1
                if let digit = Self.hexValue(byte) {
                    framing = .chunkSize(size * 16 + digit)
                } else if byte == UInt8(ascii: "\n") {
                    framing = size == 0 ? .done : .chunkData(size)
                } else if byte != UInt8(ascii: "\r") {
                    framing = .chunkExtension(size)
                }
            case .chunkExtension(let size):
                if bytes[index] == UInt8(ascii: "\n") { framing = size == 0 ? .done : .chunkData(size) }
                index += 1
            case .chunkData(let remaining):
                let take = min(remaining, bytes.count - index)
                body(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]), now: now)
                index += take
                framing = take == remaining ? .chunkEnd(2) : .chunkData(remaining - take)
            case .chunkEnd(let remaining):
                index += 1
                framing = remaining == 1 ? .chunkSize(0) : .chunkEnd(remaining - 1)
            case .identity:
                body(UnsafeRawBufferPointer(rebasing: bytes[index...]), now: now)
                index = bytes.count
            case .done:
                index = bytes.count
            }
        }
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: return Int(byte - 0x30)
        case 0x41...0x46: return Int(byte - 0x41 + 10)
        case 0x61...0x66: return Int(byte - 0x61 + 10)
        default: return nil
        }
    }

    private func finishHead() {
        let (status, chunked, text) = headBytes.withUnsafeBytes { head -> (Int64?, Bool, String) in
            let status = Bytes.decimal(head, from: 9, to: min(12, head.count))
            let encoding = Bytes.header("transfer-encoding", in: head)?.lowercased()
            return (status, encoding == "chunked", String(decoding: head, as: UTF8.self))
        }
        headBytes = []
        guard status == 200 else {
            framing = .done
            caughtUp.fail(BenchError("SSE subscribe refused: \(text.prefix(300))"))
            context?.close(promise: nil)
            return
        }
        framing = chunked ? .chunkSize(0) : .identity
    }

    private func body(_ bytes: UnsafeRawBufferPointer, now: UInt64) {
        let events: [ServerSentEvent]
        do {
            events = try parser.parse(bytes.assumingMemoryBound(to: UInt8.self))
        } catch {
            framing = .done
            caughtUp.fail(BenchError("SSE stream: \(error)"))
            context?.close(promise: nil)
            return
        }
        for event in events { dispatch(event, now: now) }
    }

    private func dispatch(_ event: ServerSentEvent, now: UInt64) {
        if event.type == "eventlog.caughtup" {
            if state.caughtUp == nil {
                var head: Int64 = -1
                if case .caughtUp(let named, _)? = try? ServerMessage.decodeSSE(event) { head = named ?? -1 }
                let caught = CaughtUp(at: now, head: head)
                state.caughtUp = caught
                caughtUp.succeed(caught)
            }
        } else if !event.type.hasPrefix("eventlog."), let id = Int64(event.lastEventID) {
            state.delivered += 1
            state.lastDeliveryAt = now
            if options.recordIDs, state.caughtUp == nil { state.ids.append(id) }
            if options.recordLatency, let stamp = Self.sendStamp(event.data), now > stamp {
                state.latencies.append(now - stamp)
            }
        }
    }

    /// The send time a latency probe carries at the start of its data: `t=<nanoseconds>`.
    private static func sendStamp(_ data: String) -> UInt64? {
        guard data.hasPrefix("t=") else { return nil }
        var value: UInt64 = 0
        var digits = 0
        for byte in data.utf8.dropFirst(2) {
            guard byte >= 0x30, byte <= 0x39 else { break }
            value = value &* 10 &+ UInt64(byte &- 0x30)
            digits += 1
        }
        return digits > 0 && value != 0 ? value : nil
    }
}

// MARK: Redis

/// A RESP reply.
enum RESPValue: Sendable, CustomStringConvertible {
    case simple(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8]?)
    case array([RESPValue]?)

    /// An error reply, or an array (EXEC's answer) holding one.
    var isError: Bool {
        switch self {
        case .error: return true
        case .array(let items?): return items.contains { if case .error = $0 { true } else { false } }
        default: return false
        }
    }

    var text: String? {
        switch self {
        case .simple(let text), .error(let text): return text
        case .bulk(let bytes?): return String(decoding: bytes, as: UTF8.self)
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .simple(let text): return text
        case .error(let text): return "error: \(text)"
        case .integer(let value): return String(value)
        case .bulk(let bytes): return bytes.map { String(decoding: $0, as: UTF8.self) } ?? "(nil)"
        case .array(let items): return items.map { "[\($0.map(\.description).joined(separator: ", "))]" } ?? "(nil)"
        }
    }
}

/// Encoding commands and parsing replies of the Redis protocol (RESP2).
enum RESP {
    /// Appends one command (an array of bulk strings).
    static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.utf8.count)\r\n")
            buffer.writeString(argument)
            buffer.writeString("\r\n")
        }
    }

    /// One command as a request.
    static func command(_ arguments: String...) -> LoadRequest {
        command(arguments)
    }

    /// One command as a request.
    static func command(_ arguments: [String], mode: RESPMode = .summary) -> LoadRequest {
        var buffer = ByteBuffer()
        encode(arguments, into: &buffer)
        return LoadRequest(bytes: buffer, respMode: mode)
    }

    /// Steps over one complete reply without building it, counting the errors in it. False when incomplete.
    static func skip(
        _ bytes: UnsafeRawBufferPointer, _ index: inout Int, errors: inout Int, firstError: inout String?
    ) -> Bool {
        guard index < bytes.count, let lineEnd = lineEnd(bytes, from: index + 1) else { return false }
        let start = index + 1
        let next = lineEnd + 2
        switch bytes[index] {
        case UInt8(ascii: "$"):
            let length = Int(signed(bytes, start, lineEnd))
            let end = length < 0 ? next : next + length + 2
            guard end <= bytes.count else { return false }
            index = end
            return true
        case UInt8(ascii: "*"):
            let count = Int(signed(bytes, start, lineEnd))
            var position = next
            for _ in 0..<max(0, count) {
                guard skip(bytes, &position, errors: &errors, firstError: &firstError) else { return false }
            }
            index = position
            return true
        case UInt8(ascii: "-"):
            errors += 1
            if firstError == nil { firstError = String(decoding: bytes[start..<lineEnd], as: UTF8.self) }
            index = next
            return true
        default:
            index = next
            return true
        }
    }

    /// Reads a `*N` or `$N` header; nil when the next reply is not of that type.
    private static func header(_ bytes: UnsafeRawBufferPointer, _ index: inout Int, _ type: UInt8) -> Int? {
        guard index < bytes.count, bytes[index] == type, let lineEnd = lineEnd(bytes, from: index + 1) else {
            return nil
        }
        let value = Int(signed(bytes, index + 1, lineEnd))
        index = lineEnd + 2
        return value
    }

    /// Reads a bulk string and returns its bytes' range.
    private static func bulk(_ bytes: UnsafeRawBufferPointer, _ index: inout Int) -> Range<Int>? {
        guard let length = header(bytes, &index, UInt8(ascii: "$")), length >= 0 else { return nil }
        defer { index += length + 2 }
        return index..<(index + length)
    }

    /// Visits the entries of a complete XREAD reply (`fromXRead`) or XRANGE reply without building it:
    /// for each entry, the stream's name (empty for XRANGE), the entry id, and the value of field `t`.
    static func scanEntries(
        _ bytes: UnsafeRawBufferPointer, fromXRead: Bool,
        _ visit: (_ stream: UnsafeRawBufferPointer, _ id: UnsafeRawBufferPointer, _ stamp: UInt64?) -> Void
    ) {
        var index = 0
        func entries(stream: UnsafeRawBufferPointer) {
            guard let count = header(bytes, &index, UInt8(ascii: "*")) else { return }
            for _ in 0..<max(0, count) {
                guard header(bytes, &index, UInt8(ascii: "*")) == 2, let id = bulk(bytes, &index),
                    let fields = header(bytes, &index, UInt8(ascii: "*"))
                else { return }
                var stamp: UInt64?
                var field = 0
                while field + 1 < fields {
                    guard let name = bulk(bytes, &index), let value = bulk(bytes, &index) else { return }
                    if name.count == 1, bytes[name.lowerBound] == UInt8(ascii: "t") {
                        stamp = Bytes.decimal(bytes, from: value.lowerBound, to: value.upperBound).map { UInt64($0) }
                    }
                    field += 2
                }
                visit(stream, UnsafeRawBufferPointer(rebasing: bytes[id]), stamp)
            }
        }
        if fromXRead {
            guard let streams = header(bytes, &index, UInt8(ascii: "*")) else { return }
            for _ in 0..<max(0, streams) {
                guard header(bytes, &index, UInt8(ascii: "*")) == 2, let name = bulk(bytes, &index) else { return }
                entries(stream: UnsafeRawBufferPointer(rebasing: bytes[name]))
            }
        } else {
            entries(stream: UnsafeRawBufferPointer(rebasing: bytes[0..<0]))
        }
    }

    /// Parses one reply starting at `index`; on success moves `index` past it. Nil when incomplete.
    static func parse(_ bytes: UnsafeRawBufferPointer, _ index: inout Int) -> RESPValue? {
        guard index < bytes.count, let lineEnd = lineEnd(bytes, from: index + 1) else { return nil }
        let start = index + 1
        let next = lineEnd + 2
        switch bytes[index] {
        case UInt8(ascii: "+"):
            index = next
            return .simple(String(decoding: bytes[start..<lineEnd], as: UTF8.self))
        case UInt8(ascii: "-"):
            index = next
            return .error(String(decoding: bytes[start..<lineEnd], as: UTF8.self))
        case UInt8(ascii: ":"):
            index = next
            return .integer(signed(bytes, start, lineEnd))
        case UInt8(ascii: "$"):
            let length = Int(signed(bytes, start, lineEnd))
            if length < 0 {
                index = next
                return .bulk(nil)
            }
            guard next + length + 2 <= bytes.count else { return nil }
            index = next + length + 2
            return .bulk(Array(bytes[next..<(next + length)]))
        case UInt8(ascii: "*"):
            let count = Int(signed(bytes, start, lineEnd))
            if count < 0 {
                index = next
                return .array(nil)
            }
            var items: [RESPValue] = []
            items.reserveCapacity(count)
            var position = next
            for _ in 0..<count {
                guard let item = parse(bytes, &position) else { return nil }
                items.append(item)
            }
            index = position
            return .array(items)
        default:
            index = bytes.count
            return .error("unparseable reply")
        }
    }

    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < bytes.count, let found = memchr(bytes.baseAddress! + from, 0x0D, bytes.count - from) else {
            return nil
        }
        let end = bytes.baseAddress!.distance(to: UnsafeRawPointer(found))
        return end + 1 < bytes.count ? end : nil
    }

    private static func signed(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int64 {
        guard start < end else { return 0 }
        if bytes[start] == UInt8(ascii: "-") { return -(Bytes.decimal(bytes, from: start + 1, to: end) ?? 0) }
        return Bytes.decimal(bytes, from: start, to: end) ?? 0
    }
}

/// A Redis connection: pipelined commands, each request answered once all its replies arrived.
final class RESPConnection: ChannelInboundHandler, LoadConnection, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Waiter {
        var remaining: Int
        let mode: RESPMode
        var replies = RESPReplies()
        let done: (LoadReply) -> Void
    }

    let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    private var received: ByteBuffer?
    private var waiters = CircularBuffer<Waiter>()
    private var closed = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func exchange(_ request: LoadRequest, _ done: @escaping (LoadReply) -> Void) {
        guard let context, !closed else {
            done(.failed("connection closed"))
            return
        }
        waiters.append(Waiter(remaining: request.replies, mode: request.respMode, done: done))
        context.writeAndFlush(wrapOutboundOut(request.bytes), promise: nil)
    }

    func close() {
        eventLoop.execute { self.context?.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        if received == nil {
            received = chunk
        } else {
            received!.writeBuffer(&chunk)
        }
        // Find the complete replies first, then hand them out: a callback may send the next request.
        var finished: [Waiter] = []
        let base = received!.readerIndex
        let consumed = received!.withUnsafeReadableBytes { bytes -> Int in
            var index = 0
            while !waiters.isEmpty {
                var end = index
                var errors = 0
                var firstError: String?
                guard RESP.skip(bytes, &end, errors: &errors, firstError: &firstError) else { break }
                let head = waiters.startIndex
                waiters[head].replies.count += 1
                waiters[head].replies.errors += errors
                if waiters[head].replies.firstError == nil { waiters[head].replies.firstError = firstError }
                switch waiters[head].mode {
                case .summary:
                    break
                case .values:
                    var position = index
                    if let value = RESP.parse(bytes, &position) { waiters[head].replies.values.append(value) }
                case .raw:
                    waiters[head].replies.raw.append(received!.getSlice(at: base + index, length: end - index)!)
                }
                index = end
                waiters[head].remaining -= 1
                if waiters[head].remaining == 0 { finished.append(waiters.removeFirst()) }
            }
            return index
        }
        received!.moveReaderIndex(forwardBy: consumed)
        if received!.readableBytes == 0 {
            received = nil
        } else if consumed > 0, received!.readerIndex > 1 << 16 {
            received!.discardReadBytes()
        }
        for waiter in finished { waiter.done(.resp(waiter.replies)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        while let waiter = waiters.popFirst() { waiter.done(.failed("connection closed")) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

// MARK: Connecting

/// The load generator's event loops, and connecting handlers to a port on 127.0.0.1.
struct LoadClient: Sendable {
    let group: MultiThreadedEventLoopGroup

    /// Connects `handler` (made for `eventLoop`) to `port`. `receiveBuffer` sets `SO_RCVBUF` before the
    /// connect (so the TCP window stays small).
    func connect(
        port: Int, on eventLoop: any EventLoop, handler: some ChannelHandler & Sendable, receiveBuffer: Int? = nil
    ) async throws -> any Channel {
        var bootstrap = ClientBootstrap(group: eventLoop).channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        return
            try await bootstrap
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: "127.0.0.1", port: port).get()
    }

    /// `count` HTTP connections to `port`, all on `eventLoop` when given (else spread over the loops).
    func httpConnections(
        port: Int, count: Int, on eventLoop: (any EventLoop)? = nil
    ) async throws
        -> [HTTPLoadConnection]
    {
        try await connectMany(count: count) { _ in
            let loop = eventLoop ?? group.next()
            let connection = HTTPLoadConnection(eventLoop: loop)
            _ = try await connect(port: port, on: loop, handler: connection)
            return connection
        }
    }

    /// `count` Redis connections to `port`, all on `eventLoop` when given (else spread over the loops).
    func redisConnections(
        port: Int, count: Int, on eventLoop: (any EventLoop)? = nil
    ) async throws
        -> [RESPConnection]
    {
        try await connectMany(count: count) { _ in
            let loop = eventLoop ?? group.next()
            let connection = RESPConnection(eventLoop: loop)
            _ = try await connect(port: port, on: loop, handler: connection)
            return connection
        }
    }

    /// Runs `make` for 0..<count with at most `parallel` at a time; results in index order.
    func connectMany<T: Sendable>(
        count: Int, parallel: Int = 128, _ make: @escaping @Sendable (Int) async throws -> T
    ) async throws -> [T] {
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var results = [T?](repeating: nil, count: count)
            var next = 0
            while next < min(parallel, count) {
                let index = next
                group.addTask { (index, try await make(index)) }
                next += 1
            }
            while let (index, value) = try await group.next() {
                results[index] = value
                if next < count {
                    let index = next
                    group.addTask { (index, try await make(index)) }
                    next += 1
                }
            }
            return results.map { $0! }
        }
    }
}

/// Waits for `future`, failing with a ``BenchError`` after `seconds`.
func wait<T: Sendable>(_ future: EventLoopFuture<T>, seconds: Double, _ what: String) async throws -> T {
    let promise = future.eventLoop.makePromise(of: T.self)
    future.cascade(to: promise)
    let timer = future.eventLoop.scheduleTask(in: .nanoseconds(Int64(max(0, seconds) * 1e9))) {
        promise.fail(BenchError("timed out after \(String(format: "%.0f", seconds)) s: \(what)"))
    }
    promise.futureResult.whenComplete { _ in timer.cancel() }
    return try await promise.futureResult.get()
}

/// Runs `body` on `eventLoop` and returns its value (reading a handler's state from async code).
func onLoop<T: Sendable>(_ eventLoop: any EventLoop, _ body: @escaping @Sendable () -> T) async throws -> T {
    try await eventLoop.submit(body).get()
}
