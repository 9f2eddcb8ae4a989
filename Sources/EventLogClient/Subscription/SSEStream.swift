import NIOCore
import NIOHTTP1

extension SubscriptionConnector {
    /// One SSE connection: `GET /v1/events?topic=..&envelope=1`, parsed as it arrives.
    ///
    /// - Returns: Why the stream ended when the server ended it.
    func streamSSE(_ state: inout SubscriptionState) async throws -> String {
        let address = try self.client.resolvedAddress()
        var query = self.topics.map { ("topic", $0) }
        query.append(("envelope", "1"))
        var headers = try self.client.headers()
        try await self.client.authorize(&headers)
        headers.add(name: "Accept", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Content-Length", value: "0")
        switch try state.nextSSEStart() {
        case .live, .resumeToken:
            break
        case .earliest:
            query.append(("lastEventId", "earliest"))
        case .after(let id):
            headers.add(name: "Last-Event-ID", value: String(id))
        case .snapshot:
            query.append(("snapshot", "latest"))
        case .since(let time):
            query.append(("since", Timestamp.rfc3339(milliseconds: time)))
        case .rewind(let count):
            query.append(("rewind", String(count)))
        }
        let head = HTTPRequestHead(
            version: .http1_1,
            method: .GET,
            uri: address.target("/v1/events", query: query),
            headers: headers
        )

        let channel = try await self.connect { channel in
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                wrappingChannelSynchronously: channel
            )
        }
        let maximumEventBytes = self.configuration.maxMessageBytes
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(.head(head))
            try await outbound.write(.end(nil))
            var parts = inbound.makeAsyncIterator()
            guard case .head(let response)? = try await parts.next() else {
                return "the server closed the connection before answering"
            }
            guard response.status == .ok else {
                let body = try await Self.errorBody(&parts)
                throw EventLogClient.httpError(status: response.status, body: body)
            }
            let contentType = response.headers["Content-Type"].first?.lowercased() ?? ""
            guard contentType.hasPrefix("text/event-stream") else {
                throw EventLogClientError(
                    .protocolViolation,
                    message: "expected text/event-stream, got \"\(contentType)\""
                )
            }
            var parser = ServerSentEventParser(maximumEventBytes: maximumEventBytes)
            while let part = try await parts.next() {
                switch part {
                case .body(let chunk):
                    let events = try parser.parse(chunk)
                    if let retry = parser.reconnectionTime {
                        state.serverRetry = .milliseconds(retry)
                    }
                    // Everything one read completed goes to the consumer in one hand-over; an error comes after
                    // the elements before it.
                    var elements: [SubscriptionElement] = []
                    var failure: EventLogClientError?
                    do throws(EventLogClientError) {
                        for event in events {
                            elements += try state.receive(try WireDecoding.sseMessage(event))
                        }
                    } catch {
                        failure = error
                    }
                    if !elements.isEmpty {
                        try await self.sink.yield(contentsOf: elements)
                    }
                    if let failure {
                        throw failure
                    }
                case .end:
                    return "the server ended the stream"
                case .head:
                    throw EventLogClientError(.protocolViolation, message: "a second response head on an SSE stream")
                }
            }
            return "the connection closed"
        }
    }
}
