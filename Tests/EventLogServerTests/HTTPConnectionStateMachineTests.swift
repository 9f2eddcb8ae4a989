import NIOCore
import NIOHTTP1
import Synchronization
import Testing

@testable import EventLogServer

/// A clock that moves only when a test advances it.
struct MockClock: Clock {
    struct Instant: InstantProtocol {
        var offset: Duration

        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private final class Current: Sendable {
        let instant = Mutex(Instant(offset: .zero))
    }

    private let current = Current()

    var now: Instant { current.instant.withLock { $0 } }
    var minimumResolution: Duration { .nanoseconds(1) }

    func advance(by duration: Duration) {
        current.instant.withLock { $0 = $0.advanced(by: duration) }
    }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        while now < deadline {
            try Task.checkCancellation()
            await Task.yield()
        }
    }
}

@Suite("HTTP connection state machine")
struct HTTPConnectionStateMachineTests {
    typealias Machine = HTTPConnectionStateMachine<MockClock>
    static let timeout: Duration = .seconds(30)
    static let limit = 100

    let clock = MockClock()

    func makeMachine() -> Machine {
        Machine(requestTimeout: Self.timeout, maxBodyBytes: Self.limit, clock: clock)
    }

    func instant(_ offset: Duration) -> MockClock.Instant { MockClock.Instant(offset: offset) }

    static func head(
        _ method: HTTPMethod = .POST,
        version: HTTPVersion = .http1_1,
        _ headers: [(String, String)] = []
    ) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/v1/events", headers: HTTPHeaders(headers))
    }

    /// A machine that has answered one keep-alive request and waits for the next.
    func machineAfterOneRequest() -> Machine {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.GET))
        _ = machine.bodyEnded()
        _ = machine.responseWritten(reusable: true)
        return machine
    }

    @Test("opening a connection arms the request timer one timeout ahead")
    func openingArmsTheTimer() {
        var machine = makeMachine()
        clock.advance(by: .seconds(5))
        #expect(machine.connectionOpened() == [.startTimer(deadline: instant(.seconds(35)))])
        #expect(machine.state == .idle(deadline: instant(.seconds(35))))
    }

    @Test("the request timeout closes the connection exactly at the deadline and not before")
    func timeoutFiresAtTheDeadline() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        clock.advance(by: Self.timeout - .nanoseconds(1))
        #expect(machine.timerFired() == [])
        #expect(machine.state == .idle(deadline: instant(Self.timeout)))
        clock.advance(by: .nanoseconds(1))
        #expect(machine.timerFired() == [.close])
        #expect(machine.state == .closing)
    }

    @Test("a sub-second timeout keeps its fraction: 1.5 s is 1.5 s")
    func subSecondTimeout() {
        var machine = Machine(requestTimeout: .milliseconds(1500), maxBodyBytes: Self.limit, clock: clock)
        #expect(machine.connectionOpened() == [.startTimer(deadline: instant(.milliseconds(1500)))])
        clock.advance(by: .milliseconds(1499))
        #expect(machine.timerFired() == [])
        clock.advance(by: .milliseconds(1))
        #expect(machine.timerFired() == [.close])
    }

    @Test("a request sent slowly is timed from the idle start, not from its head (slow-loris)")
    func slowRequestTimesOut() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        clock.advance(by: .seconds(20))
        #expect(machine.headReceived(Self.head(.POST, [("Content-Length", "10")])) == [.markBusy])
        clock.advance(by: .seconds(9))
        #expect(machine.bodyReceived(byteCount: 5) == [.acceptBody])
        #expect(machine.timerFired() == [])
        clock.advance(by: .seconds(1))
        #expect(machine.timerFired() == [.close])
        #expect(machine.bodyReceived(byteCount: 5) == [])
        #expect(machine.bodyEnded() == [])
    }

    @Test("a complete keep-alive request cancels the timer, is answered, and re-arms the timer when idle")
    func keepAliveRequest() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        clock.advance(by: .seconds(1))
        #expect(machine.headReceived(Self.head(.POST, [("Content-Length", "3")])) == [.markBusy])
        #expect(machine.bodyReceived(byteCount: 3) == [.acceptBody])
        #expect(machine.bodyEnded() == [.cancelTimer, .respond(keepAlive: true)])
        #expect(machine.state == .responding(keepAlive: true))
        // No timer runs while answering, however long it takes.
        clock.advance(by: .seconds(100))
        #expect(machine.timerFired() == [])
        #expect(machine.responseWritten(reusable: true) == [.markIdle, .startTimer(deadline: instant(.seconds(131)))])
        #expect(machine.state == .idle(deadline: instant(.seconds(131))))
    }

    @Test("a request that asked for an upgrade it did not get is answered, then the connection closes")
    func refusedUpgradeCloses() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        let upgrade = Self.head(.GET, [("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")])
        #expect(machine.headReceived(upgrade) == [.markBusy])
        #expect(machine.bodyEnded() == [.cancelTimer, .respond(keepAlive: false)])
        #expect(machine.state == .responding(keepAlive: false))
    }

    @Test("a timer armed for an earlier request that fires late changes nothing")
    func staleTimerIsIgnored() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        clock.advance(by: .seconds(29))
        _ = machine.headReceived(Self.head(.GET))
        _ = machine.bodyEnded()
        _ = machine.responseWritten(reusable: true)
        // The first timer was cancelled, but raced its cancellation and runs at its old deadline.
        clock.advance(by: .seconds(1))
        #expect(machine.timerFired() == [])
        #expect(machine.state == .idle(deadline: instant(.seconds(59))))
    }

    @Test("Connection: close, HTTP/1.0 without keep-alive and a stream that took the connection over all close")
    func closingAnswers() {
        let heads = [
            Self.head(.GET, [("Connection", "close")]),
            Self.head(.GET, version: .http1_0),
        ]
        for head in heads {
            var machine = makeMachine()
            _ = machine.connectionOpened()
            _ = machine.headReceived(head)
            #expect(machine.bodyEnded() == [.cancelTimer, .respond(keepAlive: false)])
            #expect(machine.responseWritten(reusable: true) == [.close])
            #expect(machine.state == .closing)
        }
        var stream = makeMachine()
        _ = stream.connectionOpened()
        _ = stream.headReceived(Self.head(.GET, [("Accept", "text/event-stream")]))
        #expect(stream.bodyEnded() == [.cancelTimer, .respond(keepAlive: true)])
        #expect(stream.responseWritten(reusable: false) == [.close])
    }

    @Test("HTTP/1.0 with Connection: keep-alive stays open")
    func http10KeepAlive() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.GET, version: .http1_0, [("Connection", "keep-alive")]))
        #expect(machine.bodyEnded() == [.cancelTimer, .respond(keepAlive: true)])
        #expect(machine.responseWritten(reusable: true) == [.markIdle, .startTimer(deadline: instant(Self.timeout))])
    }

    @Test("the client hanging up between requests cancels the timer and closes")
    func clientEOFBetweenRequests() {
        var machine = machineAfterOneRequest()
        #expect(machine.inboundClosed() == [.cancelTimer, .close])
        #expect(machine.state == .closing)
        #expect(machine.timerFired() == [])
    }

    @Test("the client hanging up before its first request cancels the timer and closes")
    func clientEOFBeforeARequest() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        #expect(machine.inboundClosed() == [.cancelTimer, .close])
    }

    @Test("the client hanging up in the middle of a body cancels the timer and closes")
    func clientEOFMidBody() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.POST, [("Content-Length", "100")]))
        _ = machine.bodyReceived(byteCount: 9)
        #expect(machine.inboundClosed() == [.cancelTimer, .close])
        #expect(machine.bodyEnded() == [])
    }

    @Test("garbage after a keep-alive request (a decoder error) cancels the timer and closes")
    func garbageAfterARequest() {
        // HTTPConnection reports an error thrown by the decoder as the inbound side closing.
        var machine = machineAfterOneRequest()
        #expect(machine.state == .idle(deadline: instant(Self.timeout)))
        #expect(machine.inboundClosed() == [.cancelTimer, .close])
        #expect(machine.inboundClosed() == [])
    }

    @Test("a body declared over the limit is refused before it is read, and the connection closes")
    func bodyOverTheLimitByContentLength() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        #expect(
            machine.headReceived(Self.head(.POST, [("Content-Length", "101")]))
                == [.markBusy, .cancelTimer, .refuseBody(limit: 100), .close]
        )
        #expect(machine.state == .closing)
        #expect(machine.bodyReceived(byteCount: 1) == [])

        var atTheLimit = makeMachine()
        _ = atTheLimit.connectionOpened()
        #expect(atTheLimit.headReceived(Self.head(.POST, [("Content-Length", "100")])) == [.markBusy])
    }

    @Test("a streamed body is refused as soon as it passes the limit, not before")
    func bodyOverTheLimitByStreaming() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        #expect(machine.headReceived(Self.head(.POST, [("Transfer-Encoding", "chunked")])) == [.markBusy])
        #expect(machine.bodyReceived(byteCount: 60) == [.acceptBody])
        #expect(machine.bodyReceived(byteCount: 40) == [.acceptBody])
        #expect(machine.bodyReceived(byteCount: 1) == [.cancelTimer, .refuseBody(limit: 100), .close])
        #expect(machine.state == .closing)
        #expect(machine.bodyEnded() == [])
    }

    @Test("Expect: 100-continue is answered before the body is read")
    func expectContinue() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        #expect(
            machine.headReceived(Self.head(.POST, [("Content-Length", "5"), ("Expect", "100-Continue")]))
                == [.markBusy, .sendContinue]
        )
    }

    @Test("CONNECT is refused with a bodiless 405 and the connection closes")
    func connectIsRefused() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.CONNECT))
        #expect(machine.bodyEnded() == [.cancelTimer, .refuseConnect, .close])
        #expect(machine.state == .closing)
    }

    @Test("shutdown closes an idle connection at once and cancels its timer")
    func shutdownWhileIdle() {
        var machine = machineAfterOneRequest()
        #expect(machine.shutdownBegan() == [.cancelTimer, .close])
        #expect(machine.state == .closing)
        #expect(machine.headReceived(Self.head(.GET)) == [])
    }

    @Test("shutdown lets the request in progress finish, then closes instead of keeping the connection alive")
    func shutdownMidRequest() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.POST, [("Content-Length", "2")]))
        #expect(machine.shutdownBegan() == [])
        #expect(machine.bodyReceived(byteCount: 2) == [.acceptBody])
        #expect(machine.bodyEnded() == [.cancelTimer, .respond(keepAlive: true)])
        #expect(machine.responseWritten(reusable: true) == [.close])
        #expect(machine.state == .closing)
    }

    @Test("shutdown while a request is answered closes after the answer")
    func shutdownWhileResponding() {
        var machine = makeMachine()
        _ = machine.connectionOpened()
        _ = machine.headReceived(Self.head(.GET))
        _ = machine.bodyEnded()
        #expect(machine.shutdownBegan() == [])
        #expect(machine.responseWritten(reusable: true) == [.close])
    }
}
