import Testing

@testable import EventLogClient

private func event(_ id: Int64) -> Event {
    Event(id: id, topic: "t", type: "message", key: nil, data: .text("\(id)"), time: testTime)
}

@Suite("Backoff")
struct BackoffTests {
    @Test("delays double from the initial delay up to the maximum")
    func growth() {
        let backoff = EventLogClient.Backoff()
        let delays = (1...9).map { backoff.delay(attempt: $0, random: 0) }
        #expect(
            delays == [
                .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600),
                .milliseconds(3200), .seconds(5), .seconds(5), .seconds(5),
            ]
        )
    }

    @Test("jitter only shortens a delay, by at most the jitter fraction")
    func jitterBounds() {
        let backoff = EventLogClient.Backoff(initial: .seconds(1), maximum: .seconds(10), jitter: 0.2)
        for attempt in 1...12 {
            let full = backoff.delay(attempt: attempt, random: 0)
            for random in stride(from: 0.0, to: 1.0, by: 0.05) {
                let delay = backoff.delay(attempt: attempt, random: random)
                #expect(delay <= full)
                #expect(delay >= full * 0.8)
                #expect(delay <= .seconds(10))
            }
        }
        #expect(backoff.delay(attempt: 1, random: 0.5) == .milliseconds(900))
    }

    @Test("the server's retry is the base delay, and may exceed the maximum")
    func serverBase() {
        let backoff = EventLogClient.Backoff()
        #expect(backoff.delay(attempt: 1, base: .seconds(2), random: 0) == .seconds(2))
        #expect(backoff.delay(attempt: 2, base: .seconds(2), random: 0) == .seconds(4))
        #expect(backoff.delay(attempt: 3, base: .seconds(2), random: 0) == .seconds(5))
        #expect(backoff.delay(attempt: 3, base: .seconds(8), random: 0) == .seconds(8))
    }

    @Test("out-of-range inputs stay within bounds")
    func extremes() {
        let backoff = EventLogClient.Backoff()
        #expect(backoff.delay(attempt: 0, random: 0) == .milliseconds(100))
        #expect(backoff.delay(attempt: -3, random: 0) == .milliseconds(100))
        #expect(backoff.delay(attempt: 100_000, random: 0) == .seconds(5))
        #expect(backoff.delay(attempt: 1, random: 7) == .milliseconds(80))
        #expect(backoff.delay(attempt: 1, random: -1) == .milliseconds(100))
    }
}

@Suite("Resume logic")
struct SubscriptionStateTests {
    @Test("an SSE subscription starts as asked, then resumes after the last delivered event")
    func sseResume() throws {
        var state = SubscriptionState(start: .earliest)
        #expect(try state.nextSSEStart() == .earliest)
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 10, from: 0))
        #expect(try state.receive(.event(event(1))) == [.event(event(1))])
        #expect(try state.receive(.event(event(2))) == [.event(event(2))])
        #expect(state.connectionFailed() == 1)
        #expect(try state.nextSSEStart() == .after(2))
    }

    @Test("a live subscription that saw no event resumes from the position the server opened at")
    func liveResumesFromOpenedPosition() throws {
        var state = SubscriptionState(start: .live)
        #expect(try state.nextSSEStart() == .live)
        #expect(state.nextWebSocketStart() == .live)
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 42, from: 42))
        #expect(try state.nextSSEStart() == .after(42))
        #expect(state.nextWebSocketStart() == .after(42))
    }

    @Test("the original start is used until the server names a position")
    func originalStart() throws {
        var state = SubscriptionState(start: .after(17))
        #expect(try state.nextSSEStart() == .after(17))
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .after(17))
        #expect(SubscriptionState(start: .resumeToken("t")).nextWebSocketStartCopy() == .resumeToken("t"))
        var sse = SubscriptionState(start: .resumeToken("t"))
        #expect(throws: EventLogClientError.self) { try sse.nextSSEStart() }
    }

    @Test("events at or before the last delivered id are dropped")
    func duplicatesDropped() throws {
        var state = SubscriptionState(start: .earliest)
        _ = try state.receive(.event(event(5)))
        #expect(try state.receive(.event(event(5))) == [])
        #expect(try state.receive(.event(event(3))) == [])
        #expect(try state.receive(.event(event(6))) == [.event(event(6))])
        #expect(state.lastEventID == 6)
    }

    @Test("WebSocket resumes from the newest token: an event's or caughtup's")
    func webSocketTokens() throws {
        var state = SubscriptionState(start: .earliest)
        #expect(state.nextWebSocketStart() == .earliest)
        _ = try state.receive(.opened(epoch: "e", earliest: 1, head: 3, from: 0))
        _ = try state.receive(.event(event(1), resumeToken: "t1"))
        #expect(state.nextWebSocketStart() == .resumeToken("t1"))
        #expect(try state.receive(.caughtUp(head: 3, resumeToken: "t3")) == [.caughtUp])
        #expect(state.nextWebSocketStart() == .resumeToken("t3"))
        // An event without a token makes the older token stale: fall back to the id.
        _ = try state.receive(.event(event(4)))
        #expect(state.nextWebSocketStart() == .after(4))
    }

    @Test("a server reset moves the position to the new head and drops the old token")
    func serverReset() throws {
        var state = SubscriptionState(start: .after(500))
        _ = state.nextWebSocketStart()
        _ = try state.receive(.opened(epoch: "e2", earliest: 1, head: 10, from: 10))
        #expect(
            try state.receive(.reset(requested: 500, head: 10, epoch: "e2"))
                == [.reset(requested: 500, head: 10, epoch: "e2")]
        )
        #expect(try state.receive(.event(event(11))) == [.event(event(11))])
        #expect(state.lastEventID == 11)
    }

    @Test("a new epoch on reconnect is reported as a reset once, even when the server also says so")
    func epochChange() throws {
        var state = SubscriptionState(start: .earliest)
        _ = try state.nextSSEStart()
        _ = try state.receive(.opened(epoch: "old", earliest: 1, head: 100, from: 0))
        _ = try state.receive(.event(event(100)))
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .after(100))

        // The restored log is shorter: the server says reset, and we say it only once.
        #expect(
            try state.receive(.opened(epoch: "new", earliest: 1, head: 40, from: 40))
                == [.opened(epoch: "new", earliest: 1, head: 40), .reset(requested: 100, head: 40, epoch: "new")]
        )
        #expect(try state.receive(.reset(requested: 100, head: 40, epoch: "new")) == [])
        #expect(try state.receive(.event(event(41))) == [.event(event(41))])

        // The log changed again but is long enough that the server replays: only we can tell.
        _ = state.connectionFailed()
        #expect(try state.nextSSEStart() == .after(41))
        #expect(
            try state.receive(.opened(epoch: "newer", earliest: 1, head: 90, from: 41))
                == [.opened(epoch: "newer", earliest: 1, head: 90), .reset(requested: 41, head: 90, epoch: "newer")]
        )
        #expect(try state.receive(.event(event(42))) == [.event(event(42))])
    }

    @Test("a server error ends the subscription; a rejected token has its own code")
    func errors() throws {
        var state = SubscriptionState(start: .resumeToken("forged"))
        do {
            _ = try state.receive(.error(code: "invalid_resume_token", message: "bad signature"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidResumeToken)
            #expect(error.serverCode == .invalidResumeToken)
            #expect(error.isRetryableForSubscription == false)
        }
        do {
            _ = try state.receive(.error(code: "shutting_down", message: "bye"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .server)
            #expect(error.isRetryableForSubscription)
        }
    }

    @Test("the failure count restarts when a connection opens")
    func failureCount() throws {
        var state = SubscriptionState(start: .live)
        #expect(state.connectionFailed() == 1)
        #expect(state.connectionFailed() == 2)
        _ = try state.receive(.opened(epoch: "e", earliest: 0, head: 0, from: 0))
        #expect(state.connectionFailed() == 1)
    }
}

extension SubscriptionState {
    fileprivate func nextWebSocketStartCopy() -> StartPosition {
        var copy = self
        return copy.nextWebSocketStart()
    }
}
