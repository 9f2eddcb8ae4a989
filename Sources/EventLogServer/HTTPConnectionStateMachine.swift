import NIOHTTP1

/// What one HTTP/1.1 connection does next, decided without any I/O.
///
/// ``HTTPConnection`` feeds it what happens on the connection (a request head, body parts, the end of
/// a body, the response written, the client hanging up, the request timer firing, shutdown) and
/// performs the actions it returns, in order. Time comes from a `Clock`, so unit tests drive the
/// request timeout with a fake one.
///
/// The request timer runs from the moment a connection is idle (opened, or done with its last
/// response) until a request is complete: a client that takes longer to send one request is closed
/// (slow-loris defence), and so is a keep-alive connection left idle that long. Every way out of a
/// state with a running timer cancels it: until it fires, a scheduled close holds the channel.
struct HTTPConnectionStateMachine<C: Clock>: Sendable where C.Duration == Duration {
    /// Where the connection is.
    enum State: Equatable, Sendable {
        /// Not yet started.
        case initial
        /// Waiting for the next request head; the request timer runs. NIO's decoder delivers a head
        /// whole, so reading a head is part of this state.
        case idle(deadline: C.Instant)
        /// A head arrived; its body is being read, and the request timer still runs.
        case readingBody(deadline: C.Instant, received: Int, keepAlive: Bool, isConnect: Bool)
        /// The request is complete and being answered; no timer runs.
        case responding(keepAlive: Bool)
        /// The connection is going away; nothing more happens on it.
        case closing
    }

    /// What the connection must do, in the order given.
    enum Action: Equatable, Sendable {
        /// Arm the request timer to fire at `deadline`.
        case startTimer(deadline: C.Instant)
        /// Cancel the request timer.
        case cancelTimer
        /// The connection is handling a request: shutdown must let it finish.
        case markBusy
        /// The connection is between requests: shutdown may close it at once.
        case markIdle
        /// Answer `100 Continue` to a client that waits for it before sending the body.
        case sendContinue
        /// Keep the body part just received.
        case acceptBody
        /// Answer `413 body_too_large` with `Connection: close`, then read and drop what is left of
        /// the body for a moment, so the client reads the answer rather than a reset.
        case refuseBody(limit: Int)
        /// Answer a `CONNECT` with a bodiless `405`: the client may be expecting a tunnel.
        case refuseConnect
        /// Route and answer the complete request; `keepAlive` is what the request asked for.
        case respond(keepAlive: Bool)
        /// Close the connection.
        case close
    }

    /// How long a connection may take to send a complete request, or stay idle.
    let requestTimeout: Duration
    /// The largest request body accepted, in bytes.
    let maxBodyBytes: Int
    let clock: C
    private(set) var state: State = .initial
    /// Shutdown has begun: the request in progress is the connection's last.
    private(set) var isShuttingDown = false

    init(requestTimeout: Duration, maxBodyBytes: Int, clock: C) {
        self.requestTimeout = requestTimeout
        self.maxBodyBytes = maxBodyBytes
        self.clock = clock
    }

    /// The connection is open and waits for its first request.
    mutating func connectionOpened() -> [Action] {
        guard case .initial = state else { return [] }
        let deadline = clock.now.advanced(by: requestTimeout)
        state = .idle(deadline: deadline)
        return [.startTimer(deadline: deadline)]
    }

    /// A request head arrived. A body declared over the limit is refused before it is read.
    mutating func headReceived(_ head: HTTPRequestHead) -> [Action] {
        guard case .idle(let deadline) = state else { return [] }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
            state = .closing
            return [.markBusy, .cancelTimer, .refuseBody(limit: maxBodyBytes), .close]
        }
        // A request that asked to switch protocols (`Connection: upgrade`) and was not upgraded is answered, and
        // the connection closes: NIO's decoder parses nothing after such a request, so a next one would hang.
        let asksForUpgrade = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        state = .readingBody(
            deadline: deadline, received: 0, keepAlive: head.isKeepAlive && !asksForUpgrade,
            isConnect: head.method == .CONNECT)
        let expectsContinue = head.headers[canonicalForm: "expect"].contains {
            $0.lowercased() == "100-continue"
        }
        return expectsContinue ? [.markBusy, .sendContinue] : [.markBusy]
    }

    /// A part of the body arrived. A body is refused as soon as it passes the limit.
    mutating func bodyReceived(byteCount: Int) -> [Action] {
        guard case .readingBody(let deadline, let received, let keepAlive, let isConnect) = state else { return [] }
        guard received + byteCount <= maxBodyBytes else {
            state = .closing
            return [.cancelTimer, .refuseBody(limit: maxBodyBytes), .close]
        }
        state = .readingBody(
            deadline: deadline, received: received + byteCount, keepAlive: keepAlive, isConnect: isConnect)
        return [.acceptBody]
    }

    /// The request is complete: the timer stops, and the request is answered.
    mutating func bodyEnded() -> [Action] {
        guard case .readingBody(_, _, let keepAlive, let isConnect) = state else { return [] }
        if isConnect {
            state = .closing
            return [.cancelTimer, .refuseConnect, .close]
        }
        state = .responding(keepAlive: keepAlive)
        return [.cancelTimer, .respond(keepAlive: keepAlive)]
    }

    /// The answer is written. `reusable` is false when the answer took the connection over (an SSE
    /// stream) or said `Connection: close`.
    mutating func responseWritten(reusable: Bool) -> [Action] {
        guard case .responding(let keepAlive) = state else { return [] }
        guard keepAlive, reusable, !isShuttingDown else {
            state = .closing
            return [.close]
        }
        let deadline = clock.now.advanced(by: requestTimeout)
        state = .idle(deadline: deadline)
        return [.markIdle, .startTimer(deadline: deadline)]
    }

    /// The client hung up (or its bytes could not be parsed), between requests or in the middle of one.
    mutating func inboundClosed() -> [Action] {
        switch state {
        case .initial, .responding:
            state = .closing
            return [.close]
        case .idle, .readingBody:
            state = .closing
            return [.cancelTimer, .close]
        case .closing:
            return []
        }
    }

    /// The request timer fired. It closes the connection only once the current deadline has passed:
    /// a timer armed for an earlier request, firing late, changes nothing.
    mutating func timerFired() -> [Action] {
        let deadline: C.Instant
        switch state {
        case .idle(let current), .readingBody(let current, _, _, _): deadline = current
        case .initial, .responding, .closing: return []
        }
        guard clock.now >= deadline else { return [] }
        state = .closing
        return [.close]
    }

    /// The server began shutting down: an idle connection closes now, a busy one after its answer.
    mutating func shutdownBegan() -> [Action] {
        isShuttingDown = true
        switch state {
        case .initial:
            state = .closing
            return [.close]
        case .idle:
            state = .closing
            return [.cancelTimer, .close]
        case .readingBody, .responding, .closing:
            return []
        }
    }
}
