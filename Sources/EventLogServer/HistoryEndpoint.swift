import EventLog
import EventLogAuth
import NIOHTTP1

/// `GET /v1/events` as JSON pages, `GET /v1/topics` and `GET /healthz`.
struct HistoryEndpoint {
    let server: EventLogServer

    /// The largest `limit` a history page may ask for.
    static let maxLimit = 1000

    func history(_ request: Request, caller: Principal) async throws -> Response {
        // Picks up what other processes did to the file (eventlog-maint retention or compaction): the
        // current earliest, and no deleted events served from memory.
        _ = try await server.log.refreshBounds()
        let texts = request.queryValues("topic")
        let selectors = try HistoryEndpoint.selectors(texts.isEmpty ? ["*"] : texts)
        if let failure = caller.authorizeSubscribe(selectors) {
            throw Access(server: server).refuse(failure, request.head, principal: caller)
        }
        let limit = try HistoryEndpoint.integer(
            request.queryValue("limit"), name: "limit", default: 100, range: 1...Int64(HistoryEndpoint.maxLimit))
        let starts = ["last", "rewind", "since", "snapshot"].filter { request.queryValue($0) != nil }
        guard starts.count <= 1, starts.isEmpty || starts == ["snapshot"] || request.queryValue("after") == nil else {
            let given = (request.queryValue("after") == nil ? [] : ["after"]) + starts
            throw APIError(
                code: .invalidParameter,
                message:
                    "give one start: \(given.joined(separator: ", ")) do not go together (snapshot continues with after)"
            )
        }
        var after = try HistoryEndpoint.integer(
            request.queryValue("after"), name: "after", default: 0, range: 0...Int64.max)
        let page: EventLog.Page
        // After 0 means everything retained: what retention removed before is no gap (as for SSE's `earliest`).
        var gapAfter: Int64? = after > 0 ? after : nil
        if let countText = request.queryValue("last") ?? request.queryValue("rewind") {
            let name = request.queryValue("last") != nil ? "last" : "rewind"
            let count = try HistoryEndpoint.integer(
                countText, name: name, default: 1, range: 1...Int64(HistoryEndpoint.maxLimit))
            let (head, earliest) = (server.log.head, server.log.earliest)
            let events = try await server.log.readLatest(Int(count), selectors: selectors)
            page = EventLog.Page(events: events, next: events.last?.id ?? head, head: head, earliest: earliest)
            gapAfter = nil
        } else if let value = request.queryValue("snapshot") {
            guard value == "latest" else {
                throw APIError(
                    code: .invalidParameter, message: "snapshot must be \"latest\", not \"\(value.prefix(40))\"")
            }
            page = try await server.log.readSnapshot(after: after, selectors: selectors, limit: Int(limit))
            gapAfter = nil
        } else {
            if let text = request.queryValue("since") {
                do {
                    after = try await server.log.position(
                        since: try StartPosition.parseSince(text, now: Timestamp.nowMilliseconds()))
                } catch let error as EventLogError {
                    throw APIError(error)
                }
                gapAfter = after
            }
            page = try await server.log.read(after: after, selectors: selectors, limit: Int(limit))
        }
        return .json(.ok, page.json(requested: gapAfter))
    }

    /// The topics the caller may read.
    func topics(caller: Principal) async throws -> Response {
        _ = try await server.log.refreshBounds()
        let topics = try await server.log.topics().filter { caller.grants.mayRead($0.topic) }
        return .json(.ok, TopicSummary.listJSON(topics, head: server.log.head, earliest: server.log.earliest))
    }

    func health() async -> Response {
        do {
            try await server.log.checkWritable()
            _ = try await server.log.refreshBounds()
            return .json(
                .ok,
                JSONWriter.object([
                    "status": .string("ok"), "head": .int(server.log.head), "earliest": .int(server.log.earliest),
                    "epoch": .string(server.log.epoch),
                ])
            )
        } catch let error as EventLogError {
            return Response(APIError(error))
        } catch {
            return Response(
                APIError(code: .storageUnavailable, message: "\(error)")
            )
        }
    }

    /// Parses `topic` parameters; `400 invalid_selector` on a bad one.
    static func selectors(_ texts: [String]) throws(APIError) -> SelectorSet {
        do {
            return try SelectorSet(parsing: texts)
        } catch {
            throw APIError(code: error.code, message: error.message)
        }
    }

    /// An integer query parameter within `range`; `400 invalid_parameter` otherwise.
    static func integer(
        _ text: String?, name: String, default value: Int64, range: ClosedRange<Int64>
    )
        throws(APIError) -> Int64
    {
        guard let text else { return value }
        guard let number = Int64(text), range.contains(number) else {
            throw APIError(
                code: .invalidParameter,
                message:
                    "\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), not \"\(text.prefix(40))\""
            )
        }
        return number
    }
}
