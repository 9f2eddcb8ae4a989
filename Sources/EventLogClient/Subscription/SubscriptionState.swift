/// The resume logic of a subscription, independent of the transport and of I/O.
///
/// It remembers the position of the last delivered event (and, for WebSocket, the newest resume token), turns server
/// messages into the elements the consumer sees, and says where the next connection starts. Its rules:
/// - an event at or before the last delivered id is dropped, so the consumer sees each event once, in order;
/// - before any event, a reconnect resumes from the position the server resolved (`from`), so a `.live` subscriber
///   does not lose what was published while it was reconnecting (and `.since` / `.rewind` resume where they
///   resolved to, not at a later time or a later last-N);
/// - a `.snapshot` is the exception: its `from` is 0, not a position (the snapshot reads the newest event of each
///   key; "after 0" would replay all history), so before its first event or `caughtup` a reconnect asks for the
///   snapshot again; after `caughtup` without an event it resumes after the head the snapshot reached, and after
///   an event after that event, as for any start;
/// - a new epoch on a reconnect is reported as `.reset` even if the server could not tell (SSE sends only a number).
struct SubscriptionState: Sendable {
    /// Where the subscription was asked to start.
    let start: StartPosition
    /// The id of the last delivered event, or the position a reset moved to.
    private(set) var lastEventID: Int64?
    /// The newest resume token (WebSocket), from an event or a `caughtup`.
    private(set) var resumeToken: String?
    /// The start position the server resolved for the latest connection (`from`), when it sent one and it is a
    /// position (a snapshot's is not).
    private(set) var openedFrom: Int64?
    /// The position of the latest `caughtup` of a snapshot connection: everything up to it was delivered.
    private(set) var snapshotCaughtUp: Int64?
    /// The epoch of the log the latest connection opened on.
    private(set) var epoch: String?
    /// The server's SSE `retry:` suggestion.
    var serverRetry: Duration?
    /// Consecutive failed connection attempts; reset when a connection opens.
    private(set) var failures = 0

    /// The numeric position the current connection asked for, for a synthesized `.reset`.
    private var requestedPosition: Int64?
    /// Whether the current connection asked for the snapshot, whose `from` is not a position.
    private var requestedSnapshot = false
    /// Set after a synthesized `.reset`, so that a server `reset` right after it is not reported twice.
    private var suppressNextReset = false

    init(start: StartPosition) {
        self.start = start
    }

    /// Where a reconnect resumes after, or `nil` to ask for the original start again.
    private var resumePosition: Int64? {
        self.lastEventID ?? self.snapshotCaughtUp ?? self.openedFrom
    }

    /// The start of the next SSE connection: never a resume token.
    mutating func nextSSEStart() throws(EventLogClientError) -> StartPosition {
        let start: StartPosition
        if let id = self.resumePosition {
            start = .after(id)
        } else {
            switch self.start {
            case .live, .earliest, .after, .snapshot, .since, .rewind: start = self.start
            case .resumeToken:
                throw EventLogClientError(
                    .invalidArgument,
                    message: "a resume token can only start a WebSocket subscription"
                )
            }
        }
        switch start {
        case .after(let id): self.requestedPosition = id
        case .earliest: self.requestedPosition = 0
        case .live, .resumeToken, .snapshot, .since, .rewind: self.requestedPosition = nil
        }
        self.requestedSnapshot = start == .snapshot
        return start
    }

    /// The start of the next WebSocket connection.
    mutating func nextWebSocketStart() -> StartPosition {
        let start: StartPosition
        if let token = self.resumeToken {
            start = .resumeToken(token)
        } else if let id = self.resumePosition {
            start = .after(id)
        } else {
            start = self.start
        }
        switch start {
        case .after(let id): self.requestedPosition = id
        case .earliest: self.requestedPosition = 0
        case .resumeToken, .live, .snapshot, .since, .rewind:
            self.requestedPosition = self.resumePosition
        }
        self.requestedSnapshot = start == .snapshot
        return start
    }

    /// Records a failed or ended connection; returns the attempt number of the reconnect that follows.
    mutating func connectionFailed() -> Int {
        self.failures += 1
        self.suppressNextReset = false
        return self.failures
    }

    /// Applies one server message and returns what the consumer sees, in order.
    ///
    /// - Throws: ``EventLogClientError`` for a server `error` message (``EventLogClientError/Code/invalidResumeToken``
    ///   for `invalid_resume_token`).
    mutating func receive(_ message: ServerMessage) throws(EventLogClientError) -> [SubscriptionElement] {
        let suppressReset = self.suppressNextReset
        self.suppressNextReset = false
        switch message {
        case .opened(let epoch, let earliest, let head, let from, _):
            self.failures = 0
            // A snapshot's `from` (0) is where its reading starts, not a position to resume after.
            let position = self.requestedSnapshot ? nil : from
            if let position {
                self.openedFrom = position
            }
            var elements: [SubscriptionElement] = [.opened(epoch: epoch, earliest: earliest, head: head)]
            if let previous = self.epoch, previous != epoch {
                let requested = self.requestedPosition ?? head
                elements.append(.reset(requested: requested, head: head, epoch: epoch))
                // The server resumed at the number we sent, in its own log: continue from where it says it starts
                // (a snapshot of the new log starts over).
                self.moveTo(self.requestedSnapshot ? nil : position ?? self.requestedPosition)
                self.suppressNextReset = true
            }
            self.epoch = epoch
            return elements

        case .event(let event, let resumeToken):
            if let last = self.lastEventID, event.id <= last {
                return []
            }
            self.lastEventID = event.id
            // A token always names the newest position; an event without one makes an older token stale.
            self.resumeToken = resumeToken
            return [.event(event)]

        case .caughtUp(let head, let token):
            if let token {
                self.resumeToken = token
            }
            if self.requestedSnapshot, let head {
                self.snapshotCaughtUp = head
            }
            return [.caughtUp]

        case .gap(let requested, let earliest):
            return [.gap(requested: requested, earliest: earliest)]

        case .reset(let requested, let head, let epoch):
            self.epoch = epoch
            self.moveTo(head)
            return suppressReset ? [] : [.reset(requested: requested, head: head, epoch: epoch)]

        case .error(let code, let message):
            if code == ErrorCode.invalidResumeToken.rawValue {
                throw EventLogClientError(.invalidResumeToken, serverCode: code, message: message)
            }
            throw EventLogClientError(.server, serverCode: code, message: message)

        case .ignored, .authenticated:
            self.suppressNextReset = suppressReset
            return []
        }
    }

    /// Moves the position after a reset: positions and tokens of the old log mean nothing in the new one.
    private mutating func moveTo(_ position: Int64?) {
        self.lastEventID = position
        if position == nil {
            self.openedFrom = nil
        }
        self.resumeToken = nil
        self.snapshotCaughtUp = nil
    }
}
