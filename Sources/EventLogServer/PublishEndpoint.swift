import EventLog
import EventLogAuth
import NIOCore
import NIOHTTP1

/// The wire's publish decoding, with its errors as API errors.
enum PublishDecoder {
    static func event(from bytes: [UInt8], idempotencyKey: String? = nil, line: Int? = nil) throws(APIError) -> NewEvent
    {
        do {
            return try PublishRequest.event(
                from: PublishRequest.parse(bytes, line: line), idempotencyKey: idempotencyKey)
        } catch {
            throw APIError(error)
        }
    }
}

/// `POST /v1/events`: JSON for one event, NDJSON for an atomic batch.
///
/// The body is decoded on the connection's event loop and handed to the writer with a completion; no Swift
/// task is involved between the request and its answer.
struct PublishEndpoint {
    let server: EventLogServer

    /// Decodes and checks `request` now, then appends; `completion` gets the answer on `eventLoop` (at once, for
    /// a request refused before the append). The answer is made there, not on the writer's thread, which every
    /// publish of the server shares.
    func handle(
        _ request: Request, caller: Principal, on eventLoop: any EventLoop,
        completion: @escaping @Sendable (Result<Response, APIError>) -> Void
    ) {
        let decoded: (events: [NewEvent], batch: Bool)
        do {
            decoded = try decode(request, caller: caller)
        } catch {
            return completion(.failure(error))
        }
        let started = ContinuousClock.now
        let metrics = server.metrics
        server.log.append(batch: decoded.events) { result in
            let latency = ContinuousClock.now - started
            eventLoop.execute {
                completion(
                    result.map { results in
                        let appended = results.count { !$0.replayed }
                        if appended > 0 { metrics.appended(appended, latency: latency) }
                        let allReplayed = appended == 0
                        return Response.json(
                            allReplayed ? .ok : .created,
                            decoded.batch
                                ? PublishAnswer.batchJSON(results.map(PublishAnswer.init))
                                : PublishAnswer(results[0]).json,
                            headers: allReplayed ? [("Idempotent-Replayed", "true")] : []
                        )
                    }.mapError(APIError.init(any:)))
            }
        }
    }

    /// The events of a request, checked against the caller's rights; `batch` for NDJSON.
    private func decode(_ request: Request, caller: Principal) throws(APIError) -> (events: [NewEvent], batch: Bool) {
        if server.isShuttingDown {
            throw APIError(code: .shuttingDown, message: "the server is shutting down")
        }
        let contentType = request.head.headers.first(name: "content-type").map(Self.mediaType) ?? []
        let headerKey = request.head.headers.first(name: "idempotency-key")
        let expectedHeader = request.head.headers.first(name: "expected-last-id")
        let bytes = Array(request.body.readableBytesView)
        switch contentType {
        case Self.json:
            var event = try PublishDecoder.event(from: bytes, idempotencyKey: headerKey)
            if let expectedHeader {
                let expected: Int64
                do {
                    expected = try PublishRequest.parseExpectedLastID(expectedHeader, source: "Expected-Last-Id")
                } catch {
                    throw APIError(code: .invalidParameter, message: error.message)
                }
                if let inBody = event.expectedLastID, inBody != expected {
                    throw APIError(
                        code: .invalidParameter,
                        message: "Expected-Last-Id \(expected) and the body's \"expectedLastId\" \(inBody) differ")
                }
                event.expectedLastID = expected
            }
            try authorize([event.topic], batch: false, caller: caller, request)
            return ([event], false)
        case Self.ndjson:
            if headerKey != nil {
                throw APIError(
                    code: .invalidParameter,
                    message: "Idempotency-Key applies to one event; give each NDJSON line its own \"idempotencyKey\""
                )
            }
            if expectedHeader != nil {
                throw APIError(
                    code: .invalidParameter,
                    message: "Expected-Last-Id applies to one event; give NDJSON lines their own \"expectedLastId\""
                )
            }
            var events: [NewEvent] = []
            for (index, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                .enumerated()
            {
                let trimmed = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
                if trimmed.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                do {
                    events.append(try PublishDecoder.event(from: Array(trimmed), line: index))
                } catch {
                    var indexed = error
                    if indexed.index == nil {
                        indexed = APIError(
                            code: error.code, message: "line \(index + 1): \(error.message)", index: index)
                    }
                    throw indexed
                }
            }
            if events.isEmpty {
                throw APIError(EventLogError(.emptyBatch, "the batch has no events"))
            }
            // A batch with one event its caller may not publish is refused whole, naming that event.
            try authorize(events.map(\.topic), batch: true, caller: caller, request)
            return (events, true)
        default:
            throw APIError(
                code: .unsupportedMediaType,
                message: "publish with Content-Type application/json (one event) or application/x-ndjson (a batch)"
            )
        }
    }

    private static let json = Array("application/json".utf8)
    private static let ndjson = Array("application/x-ndjson".utf8)

    /// The media type of a `Content-Type` value: before any `;`, without spaces or tabs, ASCII lowercased.
    static func mediaType(_ value: String) -> [UInt8] {
        var type: [UInt8] = []
        type.reserveCapacity(24)
        for byte in value.utf8 {
            if byte == UInt8(ascii: ";") { break }
            if byte == 0x20 || byte == 0x09 { continue }
            type.append(byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte)
        }
        return type
    }

    private func authorize(_ topics: [String], batch: Bool, caller: Principal, _ request: Request) throws(APIError) {
        if let failure = caller.authorizePublish(topics, batch: batch) {
            throw Access(server: server).refuse(failure, request.head, principal: caller)
        }
    }
}
