import EventLog
import NIOCore
import NIOHTTP1
import Synchronization

/// An SSE subscription (`GET /v1/events` with `Accept: text/event-stream`).
struct SSEStream {
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>

    /// What the request asks for, validated before the stream opens (a bad request gets a 400).
    struct Subscription: Sendable {
        let selectors: SelectorSet
        let start: CursorStart
        let envelope: Bool

        init(_ request: Request, server: EventLogServer) throws {
            let texts = request.queryValues("topic")
            guard !texts.isEmpty else {
                throw APIError(code: .invalidParameter, message: "subscribe with at least one topic=<selector>")
            }
            selectors = try HistoryEndpoint.selectors(texts)
            let headerValue = request.head.headers.first(name: "last-event-id")
            let requested: StartPosition
            do {
                if let headerValue, !headerValue.isEmpty {
                    requested = try StartPosition(lastEventID: headerValue, source: "Last-Event-ID")
                } else if let queryValue = request.queryValue("lastEventId") {
                    requested = try StartPosition(lastEventID: queryValue, source: "lastEventId")
                } else {
                    requested = .live
                }
            } catch {
                throw APIError(error)
            }
            switch requested {
            case .earliest: start = .earliest
            case .after(let id): start = .after(id)
            case .live, .resumeToken: start = .live  // Last-Event-ID never names a token
            }
            switch request.queryValue("envelope") {
            case nil, "0", "false": envelope = false
            case "1", "true": envelope = true
            case let other?:
                throw APIError(code: .invalidParameter, message: "envelope must be 1 or 0, not \"\(other.prefix(40))\"")
            }
        }
    }

    let server: EventLogServer
    let channel: any Channel
    let outbound: Outbound

    /// Streams until the client leaves, the server stops, or `until` (Unix milliseconds: when the caller's token
    /// stops being accepted) passes; then the response ends cleanly and the client reconnects with a fresh
    /// token and its Last-Event-ID.
    func run(
        _ subscription: Subscription, head: HTTPRequestHead, corsHeaders: [(String, String)], until: Int64? = nil
    ) async throws {
        var headers = HTTPHeaders([
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
            ("Connection", "close"),
        ])
        headers.add(contentsOf: corsHeaders)
        server.metrics.responded(status: 200)
        try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers)))
        server.metrics.sseOpened()
        defer { server.metrics.sseClosed() }
        let sink = SSESink(
            outbound: outbound,
            channel: channel,
            envelope: subscription.envelope,
            frames: server.frames,
            retryMilliseconds: server.configuration.sseRetryMilliseconds,
            stallTimeout: server.configuration.stallTimeout
        )
        let loop = SubscriptionLoop(
            log: server.log,
            selectors: subscription.selectors,
            start: subscription.start,
            pageSize: server.configuration.pageSize,
            keepalive: server.configuration.keepalive,
            metrics: server.metrics
        )
        let ended = await runUntilClosed(channel, until: until) {
            try await loop.run(sink)
        }
        if ended {
            // The server is shutting down (or the log closed): end the stream cleanly so the
            // client reconnects elsewhere with its Last-Event-ID.
            try? await outbound.write(.end(nil))
        }
    }
}

/// Runs `body` until it finishes, `channel` closes (the client went away) or `until` (Unix milliseconds)
/// passes, whichever is first; the others are cancelled. Returns true when `body` ended by itself with the
/// log's `closed` error (shutdown) or the deadline passed, false when the channel closed or `body` failed
/// otherwise.
func runUntilClosed(
    _ channel: any Channel, until: Int64? = nil, _ body: @escaping @Sendable () async throws -> Void
) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        if let until {
            group.addTask {
                let remaining = max(0, until - Timestamp.nowMilliseconds())
                do {
                    try await Task.sleep(for: .milliseconds(remaining))
                } catch {
                    return false
                }
                return true
            }
        }
        group.addTask {
            do {
                try await body()
                return true
            } catch let error as EventLogError where error.code == .closed {
                return true
            } catch {
                return false
            }
        }
        group.addTask {
            await waitForClose(channel)
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
}

/// Returns when `channel` closes or the task is cancelled.
func waitForClose(_ channel: any Channel) async {
    let once = OnceContinuation()
    await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            once.set(continuation)
            channel.closeFuture.whenComplete { _ in once.resume() }
        }
    } onCancel: {
        once.resume()
    }
}

/// A continuation resumed exactly once, by whichever comes first; a resume before `set` wins too.
final class OnceContinuation: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Void, Never>?
        var fired = false
    }
    private let state = Mutex(State())

    func set(_ continuation: CheckedContinuation<Void, Never>) {
        let fireNow = state.withLock { state -> Bool in
            if state.fired { return true }
            state.continuation = continuation
            return false
        }
        if fireNow { continuation.resume() }
    }

    func resume() {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.fired = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume()
    }
}

/// Writes SSE frames for a subscription, waiting for the socket to drain (backpressure).
struct SSESink: SubscriptionSink {
    typealias Outbound = NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    let outbound: Outbound
    let channel: any Channel
    let envelope: Bool
    let frames: FrameCache
    let retryMilliseconds: Int
    let stallTimeout: Duration

    func open(epoch: String, earliest: Int64, head: Int64, from: Int64) async throws {
        var text = ""
        SSEEncoder.writeRetry(milliseconds: retryMilliseconds, into: &text)
        let opened = ServerMessage.opened(epoch: epoch, earliest: earliest, head: head, from: from).sseControl
        if let opened { SSEEncoder.writeControl(opened.event, json: opened.data, into: &text) }
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        try await send(buffer)
    }

    func gap(requested: Int64, earliest: Int64) async throws {
        try await control(.gap(requested: requested, earliest: earliest))
    }

    func reset(requested: Int64, head: Int64, epoch: String) async throws {
        try await control(.reset(requested: requested, head: head, epoch: epoch))
    }

    func deliver(_ events: [Event], position: Int64, replayed: Bool) async throws {
        var buffer = channel.allocator.buffer(capacity: events.count * 128)
        frames.write(events, envelope: envelope, into: &buffer)
        try await send(buffer)
    }

    func caughtUp(position: Int64) async throws {
        try await control(.caughtUp(head: position))
    }

    func keepalive() async throws {
        var buffer = channel.allocator.buffer(capacity: 16)
        buffer.writeString(SSEEncoder.keepalive)
        try await send(buffer)
    }

    private func control(_ message: ServerMessage) async throws {
        guard let text = message.sseFrame(envelope: envelope) else { return }
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        try await send(buffer)
    }

    /// Writes and waits until the channel takes more. A subscriber that has not drained its socket
    /// for the stall timeout is disconnected; it can resume with Last-Event-ID.
    private func send(_ buffer: ByteBuffer) async throws {
        try await writeWithStallTimeout(channel: channel, timeout: stallTimeout) {
            try await outbound.write(.body(.byteBuffer(buffer)))
        }
    }
}

/// Runs `write`; if the channel stays unwritable for `timeout`, closes it.
func writeWithStallTimeout(
    channel: any Channel,
    timeout: Duration,
    _ write: @escaping @Sendable () async throws -> Void
) async throws {
    // A writable channel takes the write at once; only a backed-up one needs the watchdog.
    guard !channel.isWritable else {
        try await write()
        return
    }
    let watchdog = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
        if !channel.isWritable { channel.close(promise: nil) }
    }
    defer { watchdog.cancel() }
    try await write()
}
