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
        let after = try HistoryEndpoint.integer(
            request.queryValue("after"), name: "after", default: 0, range: 0...Int64.max)
        let limit = try HistoryEndpoint.integer(
            request.queryValue("limit"), name: "limit", default: 100, range: 1...Int64(HistoryEndpoint.maxLimit))
        let page: EventLog.Page
        if let lastText = request.queryValue("last") {
            guard request.queryValue("after") == nil else {
                throw APIError(code: .invalidParameter, message: "give either after or last, not both")
            }
            let last = try HistoryEndpoint.integer(
                lastText, name: "last", default: 1, range: 1...Int64(HistoryEndpoint.maxLimit))
            let (head, earliest) = (server.log.head, server.log.earliest)
            let events = try await server.log.readLatest(Int(last), selectors: selectors)
            page = EventLog.Page(events: events, next: events.last?.id ?? head, head: head, earliest: earliest)
        } else {
            page = try await server.log.read(after: after, selectors: selectors, limit: Int(limit))
        }
        return .json(.ok, page.json)
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
