import EventLog
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// One subscription on its channel's event loop: the driver of a ``SubscriptionCursor``.
///
/// It performs what the cursor asks: reads from the in-memory tail on the loop, from the store on a reader
/// thread (the page is handed back to the loop), writes one output at a time while the channel is writable,
/// and waits for commits through its loop's ``SubscriberHub``. No Swift task is kept per subscriber. Everything
/// here runs on `channel.eventLoop`.
final class Subscriber: @unchecked Sendable {
    /// How outputs become bytes on the channel.
    enum Transport {
        /// An SSE response body (its head is given to ``start(responseHead:)``).
        case sse(envelope: Bool, retryMilliseconds: Int)
        /// WebSocket text messages on a session's socket.
        case webSocket(WebSocketSession)
    }

    let channel: any Channel
    let selectors: SelectorSet
    /// Its id in its hub (set by ``SubscriberHub/add(_:)``).
    var hubID = 0
    private let hub: SubscriberHub
    private let server: EventLogServer
    private let transport: Transport
    private var cursor: SubscriptionCursor
    private let ended: EventLoopPromise<SubscriptionCursor.Ending?>
    /// SSE frames of consecutive events, copied together so that a replay is written in pieces of up to
    /// ``coalescedBytes`` instead of one write (and one chunk) per event. The only bytes a subscriber holds
    /// of its own.
    private var coalesced: ByteBuffer?
    static let coalescedBytes = 16 * 1024
    /// A store page read ahead while the one before it is written, so that a replay reads and writes at the
    /// same time: the position it was read after, and its result once it arrived. Started only while the
    /// channel is writable, so a subscriber that stops reading holds at most this page and its current one.
    private var readAhead: (after: Int64, result: Result<HistoryPage, EventLogError>?)?
    /// The cursor asked for the page being read ahead before it arrived.
    private var awaitingReadAhead = false

    /// Completes when the subscription is over: with its ending, or `nil` when it was stopped (the channel
    /// closed, or a WebSocket subscription was replaced).
    var finished: EventLoopFuture<SubscriptionCursor.Ending?> { ended.futureResult }

    init(
        server: EventLogServer, channel: any Channel, selectors: SelectorSet, transport: Transport,
        cursor: SubscriptionCursor
    ) {
        self.server = server
        self.channel = channel
        self.selectors = selectors
        self.transport = transport
        self.cursor = cursor
        self.hub = server.hubs.hub(for: channel.eventLoop)
        self.ended = channel.eventLoop.makePromise()
    }

    /// Starts the subscription, writing `responseHead` first (SSE). On the channel's loop.
    func start(responseHead: HTTPResponseHead? = nil) {
        channel.eventLoop.assertInEventLoop()
        guard channel.isActive else {
            cursor.cancel()
            ended.succeed(nil)
            return
        }
        if let responseHead {
            server.metrics.responded(status: 200)
            channel.write(HTTPServerResponsePart.head(responseHead), promise: nil)
            // A WebSocket session stops its subscriptions itself; one hook per subscription would pile up on a
            // socket that subscribes again and again.
            channel.closeFuture.whenComplete { _ in self.stop() }
        }
        if !hub.add(self) { cursor.shutdown() }
        pump()
    }

    /// Ends the subscription without a word: the channel closed, or the socket subscribes anew.
    func stop() {
        channel.eventLoop.assertInEventLoop()
        guard !cursor.isEnded else { return }
        cursor.cancel()
        hub.remove(self)
        ended.succeed(nil)
    }

    // MARK: Inputs

    func committed() {
        cursor.committed()
        pump()
    }

    func tick(now: NIODeadline) {
        cursor.tick(now: now)
        pump()
    }

    func shutdown() {
        cursor.shutdown()
        pump()
    }

    /// The channel takes writes again (from its connection handler's `channelWritabilityChanged`): the
    /// backpressure of the cursor.
    func writable() {
        pump()
    }

    // MARK: Driving the cursor

    /// Does what the cursor asks until it has nothing to do now.
    private func pump() {
        var wrote = false
        defer {
            writeCoalesced()
            if wrote { channel.flush() }
        }
        while true {
            switch cursor.next(now: .now(), writable: channel.isWritable) {
            case .idle:
                return
            case .write(let output):
                write(output)
                wrote = true
            case .fetchBounds:
                fetchBounds()
            case .read(let position, let limit):
                if let ahead = readAhead {
                    if ahead.after == position {
                        if let result = ahead.result {
                            readAhead = nil
                            pageArrived(result, limit: limit)
                        } else {
                            awaitingReadAhead = true
                        }
                        continue
                    }
                    // Not the page the cursor wants (it cannot happen today): its result is dropped.
                    readAhead = nil
                    awaitingReadAhead = false
                }
                if let page = hub.pageFromLastCommit(
                    after: position, selectors: selectors, limit: limit, earliest: cursor.knownEarliest)
                {
                    cursor.pageRead(page)
                    continue
                }
                do {
                    if let page = try server.log.readTail(after: position, selectors: selectors, limit: limit) {
                        cursor.pageRead(page)
                    } else {
                        readFromStore(after: position, limit: limit)
                    }
                } catch {
                    cursor.readFailed(error)
                }
            case .readSnapshot(let position, let limit):
                let eventLoop = channel.eventLoop
                server.log.readSnapshot(after: position, selectors: selectors, limit: limit) { result in
                    eventLoop.execute {
                        self.pageArrived(result, limit: limit)
                        self.pump()
                    }
                }
            case .wait(let position):
                switch hub.wait(self, after: position, selectors: selectors) {
                case .waiting: break
                case .readAgain: cursor.committed()
                case .closed: cursor.shutdown()
                }
            case .end(let ending):
                writeCoalesced()
                if wrote { channel.flush() }
                wrote = false
                hub.remove(self)
                let ended = self.ended
                if let written = finish(ending) {
                    written.whenComplete { _ in ended.succeed(ending) }
                } else {
                    ended.succeed(ending)
                }
                return
            }
        }
    }

    private func fetchBounds() {
        let (log, selectors, start) = (server.log, selectors, cursor.start)
        channel.eventLoop.makeFutureWithTask { () async throws -> SubscriptionCursor.Opening in
            let bounds = try await log.refreshBounds()
            var opening = SubscriptionCursor.Opening(epoch: log.epoch, earliest: bounds.earliest, head: bounds.head)
            switch start {
            case .live, .snapshot: break
            case .earliest:
                opening.removed = try await log.removals(selectors)
            case .after(let position):
                opening.void = log.isVoid(position)
            case .since(let time):
                opening.resolved = try await log.position(since: time)
            case .rewind(let count):
                opening.removed = try await log.removals(selectors)
                opening.resolved = try await log.position(rewinding: count, selectors: selectors)
            }
            return opening
        }.whenComplete { result in
            switch result {
            case .success(let opening):
                self.cursor.boundsFetched(opening)
            case .failure(let error as EventLogError):
                self.cursor.readFailed(error)
            case .failure(let error):
                self.cursor.readFailed(EventLogError(.storageUnavailable, "the store cannot read: \(error)"))
            }
            self.pump()
        }
    }

    /// Reads the page after `position` on a reader thread; with `ahead`, as the read-ahead of the next page.
    private func readFromStore(after position: Int64, limit: Int, ahead: Bool = false) {
        let eventLoop = channel.eventLoop
        server.log.read(after: position, selectors: selectors, limit: limit) { result in
            eventLoop.execute {
                if ahead {
                    guard let current = self.readAhead, current.after == position, current.result == nil else {
                        return  // dropped meanwhile
                    }
                    guard self.awaitingReadAhead else {
                        self.readAhead = (position, result)
                        return
                    }
                    self.readAhead = nil
                    self.awaitingReadAhead = false
                }
                self.pageArrived(result, limit: limit)
                self.pump()
            }
        }
    }

    /// Gives a store page to the cursor; if the cursor will want the next one and the channel takes writes,
    /// starts reading it now.
    private func pageArrived(_ result: Result<HistoryPage, EventLogError>, limit: Int) {
        switch result {
        case .success(let page): cursor.pageRead(page)
        case .failure(let error): cursor.readFailed(error)
        }
        guard case .success = result, readAhead == nil, channel.isWritable, let next = cursor.nextRead else { return }
        readAhead = (next, nil)
        readFromStore(after: next, limit: limit, ahead: true)
    }

    // MARK: Writing

    private func write(_ output: SubscriptionCursor.Output) {
        switch transport {
        case .sse(let envelope, let retryMilliseconds):
            writeSSE(output, envelope: envelope, retryMilliseconds: retryMilliseconds)
        case .webSocket(let session):
            writeWebSocket(output, session: session)
        }
    }

    private func writeSSE(_ output: SubscriptionCursor.Output, envelope: Bool, retryMilliseconds: Int) {
        let buffer: ByteBuffer
        switch output {
        case .event(let event, let replayed):
            server.metrics.delivered(1, replayed: replayed)
            if replayed, !server.frames.mayHold(event.id) {
                // Old history, read for this subscriber alone: encoded straight into its coalesced write.
                var pending = coalesced.take() ?? channel.allocator.buffer(capacity: Self.coalescedBytes)
                pending.writeSSEEvent(event, envelope: envelope)
                coalesced = pending
                if pending.readableBytes >= Self.coalescedBytes { writeCoalesced() }
                return
            }
            var frame = hub.frame(event, envelope ? .sseEnvelope : .sse, cache: server.frames)
            if var pending = coalesced.take() {
                pending.writeBuffer(&frame)
                coalesced = pending
            } else if !replayed {
                // Live: usually one event per wake; the shared frame is written as it is.
                channel.write(HTTPServerResponsePart.body(.byteBuffer(frame)), promise: nil)
                return
            } else {
                var pending = channel.allocator.buffer(capacity: Self.coalescedBytes)
                pending.writeBuffer(&frame)
                coalesced = pending
            }
            if let pending = coalesced, pending.readableBytes >= Self.coalescedBytes { writeCoalesced() }
            return
        case .keepalive:
            buffer = Self.sseKeepalive
        case .opened(let epoch, let earliest, let head, let from):
            var text = ""
            SSEEncoder.writeRetry(milliseconds: retryMilliseconds, into: &text)
            if let opened = ServerMessage.opened(epoch: epoch, earliest: earliest, head: head, from: from).sseControl {
                SSEEncoder.writeControl(opened.event, json: opened.data, into: &text)
            }
            buffer = ByteBuffer(string: text)
        case .reset(let requested, let head, let epoch):
            buffer = Self.sseControl(.reset(requested: requested, head: head, epoch: epoch), envelope: envelope)
        case .gap(let requested, let earliest):
            buffer = Self.sseControl(.gap(requested: requested, earliest: earliest), envelope: envelope)
        case .caughtUp(let position):
            buffer = Self.sseControl(.caughtUp(head: position), envelope: envelope)
        }
        guard buffer.readableBytes > 0 else { return }
        writeCoalesced()
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
    }

    /// Writes the coalesced frames, if any.
    private func writeCoalesced() {
        guard let pending = coalesced.take(), pending.readableBytes > 0 else { return }
        channel.write(HTTPServerResponsePart.body(.byteBuffer(pending)), promise: nil)
    }

    private static let sseKeepalive = ByteBuffer(string: SSEEncoder.keepalive)

    private static func sseControl(_ message: ServerMessage, envelope: Bool) -> ByteBuffer {
        ByteBuffer(string: message.sseFrame(envelope: envelope) ?? "")
    }

    private func writeWebSocket(_ output: SubscriptionCursor.Output, session: WebSocketSession) {
        let tokens = server.tokens
        let buffer: ByteBuffer
        switch output {
        case .event(let event, let replayed):
            buffer = hub.frame(event, .webSocket, cache: server.frames)
            server.metrics.delivered(1, replayed: replayed)
            server.metrics.webSocketDelivered(1)
        case .keepalive:
            return
        case .opened(let epoch, let earliest, let head, let from):
            buffer = Self.text(
                .opened(
                    epoch: epoch, earliest: earliest, head: head, from: from,
                    resumeToken: tokens.encode(position: from)))
        case .reset(let requested, let head, let epoch):
            buffer = Self.text(.reset(requested: requested, head: head, epoch: epoch))
        case .gap(let requested, let earliest):
            buffer = Self.text(.gap(requested: requested, earliest: earliest))
        case .caughtUp(let position):
            buffer = Self.text(.caughtUp(head: position, resumeToken: tokens.encode(position: position)))
        }
        channel.write(WebSocketFrame(fin: true, opcode: .text, data: buffer), promise: nil)
    }

    private static func text(_ message: ServerMessage) -> ByteBuffer {
        ByteBuffer(string: message.webSocketText ?? "")
    }

    /// What the transport does at the end; returns the write to wait for, if any.
    private func finish(_ ending: SubscriptionCursor.Ending) -> EventLoopFuture<Void>? {
        switch (transport, ending) {
        case (.sse, .shutdown), (.sse, .expired):
            // End the response cleanly: the client reconnects (elsewhere, or with a fresh token) with its
            // Last-Event-ID.
            return channel.writeAndFlush(HTTPServerResponsePart.end(nil))
        case (_, .stalled):
            // A subscriber that has not drained its socket for the stall timeout; it can resume.
            channel.close(promise: nil)
        case (.sse, .failed):
            channel.close(promise: nil)
        case (.webSocket(let session), .shutdown):
            session.close(.goingAway, "the server is shutting down")
        case (.webSocket, .expired), (.webSocket, .failed):
            // The session watches its token itself; a failed read stops only the subscription.
            break
        }
        return nil
    }
}
