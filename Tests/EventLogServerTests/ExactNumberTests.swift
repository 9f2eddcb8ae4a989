import EventLog
import EventLogClient
import EventLogWire
import Foundation
import NIOCore
import TestSupport
import Testing

@testable import EventLogServer

/// Numbers `JSONSerialization` would round: more digits than a Double holds, and an exponent out of its range.
private let objectData = #"{"frac":0.1000000000000000055511151231257827,"exp":1E+400,"big":12345678901234567890123}"#
/// The same object as the server stores and sends it: canonical, keys sorted, every digit kept.
private let objectCanonical =
    #"{"big":12345678901234567890123,"exp":1E+400,"frac":0.1000000000000000055511151231257827}"#
/// A top-level number.
private let numberData = "-98765432109876543210.000000000000000000001"

@Suite("Exact numbers end to end, and the server writing what the wire layer decodes", .timeLimit(.minutes(3)))
struct ExactNumberTests {
    @Test("numbers a Double would round come back byte for byte through the Swift client: SSE, WebSocket, history")
    func exactNumbersThroughTheClient() async throws {
        let server = try await TestServer.start()
        let client = EventLogClient(baseURL: "http://127.0.0.1:\(server.port)")
        do {
            #expect(try await server.client.publish(topic: "n/object", data: objectData).status == 201)
            #expect(try await server.client.publish(topic: "n/number", data: numberData).status == 201)
            // The client's own publish sends JSON data verbatim.
            let published = try await client.publish(NewEvent(topic: "n/client", data: .json(objectData)))
            #expect(published.id == 3)
            let expected: [EventData?] = [.json(objectCanonical), .json(numberData), .json(objectCanonical)]

            for transport in [Transport.sse, .webSocket] {
                let elements = try await client.subscribe(topics: ["n/*"], from: .earliest, transport: transport)
                    .collect(events: 3, timeout: .seconds(60))
                let events = elements.compactMap { element -> Event? in
                    if case .event(let event) = element { return event }
                    return nil
                }
                #expect(events.map(\.id) == [1, 2, 3], "\(transport)")
                #expect(events.map(\.data) == expected, "\(transport)")
                #expect(events.map(\.topic) == ["n/object", "n/number", "n/client"], "\(transport)")
            }

            let page = try await client.history(topics: ["n/*"])
            #expect(page.events.map(\.data) == expected)
            // The events equal the log's own, time included.
            let stored = try await server.log.read(after: 0, selectors: try SelectorSet(parsing: ["n/*"]), limit: 10)
            #expect(page.events == stored.events)
        } catch {
            Issue.record("\(error)")
        }
        client.closeIdleConnections()
        await server.stop()
    }

    @Test("every WebSocket message and SSE frame of a subscription re-encodes byte for byte with ServerMessage")
    func serverMessagesReencode() async throws {
        let server = try await TestServer.start()
        do {
            _ = try await server.client.publish(topic: "r/1", data: objectData)
            _ = try await server.client.publish(topic: "r/2", type: "paid", data: #""line one\nline two\r\nthree""#)
            _ = try await server.client.publish(topic: "r/1", data: "null")
            _ = try await server.client.request(
                .POST, "/v1/events", headers: [("Content-Type", "application/json")],
                body: #"{"topic":"r/3","key":"k\"1","data":[1,{"b":2,"a":1}]}"#)

            let texts = try await withTimeout(.seconds(60)) {
                try await TestWebSocket.connect(port: server.port) { ws in
                    try await ws.send(#"{"op":"subscribe","topics":["r/*"],"from":"earliest"}"#)
                    return try await ws.read(until: "caughtup").map(\.text)
                }
            }
            #expect(texts.count == 6)
            for text in texts {
                let message = try ServerMessage.decodeWebSocket(text)
                #expect(message.webSocketText == text)
            }

            let frames = try await server.client.sse("/v1/events?topic=r/*&envelope=1&lastEventId=earliest") {
                reader in
                var frames: [SSEMessage] = []
                while let message = try await reader.nextMessage() {
                    frames.append(message)
                    if message.event == "eventlog.caughtup" { break }
                }
                return frames
            }
            #expect(frames.count == 7)
            for frame in frames where frame.retry == nil {
                // The frame as the server wrote it: its fields in the server's order.
                var written = frame.id.map { "id: \($0)\n" } ?? ""
                written += frame.event.map { "event: \($0)\n" } ?? ""
                written += frame.data.map { "data: \($0)\n" }.joined() + "\n"
                var parser = ServerSentEventParser()
                let events = try parser.parse(written)
                #expect(events.count == 1)
                let message = try ServerMessage.decodeSSE(try #require(events.first))
                #expect(message.sseFrame(envelope: true) == written)
            }
        } catch {
            Issue.record("\(error)")
        }
        await server.stop()
    }

    @Test("eventlog replay --server prints the numbers with every digit, as JSON lines and as SSE frames")
    func exactNumbersThroughReplay() async throws {
        try await withTestServer { server in
            #expect(try await server.client.publish(topic: "n/object", data: objectData).status == 201)
            #expect(try await server.client.publish(topic: "n/number", data: numberData).status == 201)
            let url = "http://127.0.0.1:\(server.port)"

            let jsonl = try runReplay(["--server", url, "--topic", "n/*", "--format", "jsonl"])
            let lines = jsonl.split(separator: "\n").map(String.init)
            try #require(lines.count == 2, "\(jsonl)")
            #expect(lines[0].hasSuffix(#","data":\#(objectCanonical)}"#), "\(lines[0])")
            #expect(lines[1].hasSuffix(#","data":\#(numberData)}"#), "\(lines[1])")
            let stored = try await server.log.read(after: 0, selectors: .all, limit: 10).events
            #expect(lines == stored.map(EventEnvelope.encode))

            let sse = try runReplay(["--server", url, "--topic", "n/*", "--format", "sse"])
            #expect(
                sse
                    == "id: 1\nevent: message\ndata: \(objectCanonical)\n\nid: 2\nevent: message\ndata: \(numberData)\n\n"
            )
        }
    }

    /// Runs the built `eventlog replay` and returns its standard output; fails on a non-zero exit.
    private func runReplay(_ arguments: [String]) throws -> String {
        let process = Subprocess()
        process.executableURL = ServerProcess.builtExecutable("eventlog")
        process.arguments = ["replay"] + arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("EVENTLOG_") }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "eventlog replay failed: \(errorText)")
        return text
    }
}
