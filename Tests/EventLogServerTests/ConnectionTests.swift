import EventLog
import NIOCore
import NIOPosix
import Testing

@testable import EventLogServer

@Suite("Connections")
struct ConnectionTests {
    /// How a client leaves: what it sends, and whether it reads an answer first.
    struct Departure: Sendable, CustomTestStringConvertible {
        let testDescription: String
        let bytes: String
        let readsAnswer: Bool

        static let all: [Departure] = [
            Departure(
                testDescription: "hangs up between keep-alive requests",
                bytes: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", readsAnswer: true),
            Departure(
                testDescription: "hangs up in the middle of a body",
                bytes: "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + "Content-Length: 100\r\n\r\n{\"topic\":", readsAnswer: false),
            Departure(
                testDescription: "sends garbage after a keep-alive request",
                bytes: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\u{1}\r\n\r\n", readsAnswer: true),
            Departure(testDescription: "hangs up before a request", bytes: "", readsAnswer: false),
        ]
    }

    /// Sends `bytes` on a new connection, reads until the first answer arrives if asked, and closes.
    static func exchange(port: Int, _ departure: Departure) async throws {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound, outbound in
            if !departure.bytes.isEmpty { try await outbound.write(ByteBuffer(string: departure.bytes)) }
            guard departure.readsAnswer else { return }
            var received = ""
            for try await chunk in inbound {
                received += String(buffer: chunk)
                if received.contains("\r\n\r\n") { break }
            }
        }
    }

    @Test(
        "a connection the client ends leaves no scheduled close behind to hold it until the request timeout",
        arguments: Departure.all
    )
    func noScheduledCloseOutlivesItsConnection(_ departure: Departure) async throws {
        // Long enough that no timeout fires during the test: only a cancellation ends a scheduled close.
        try await withTestServer(configure: { $0.requestTimeout = .seconds(600) }) { server in
            for _ in 0..<20 {
                try await withTimeout(.seconds(10)) { try await Self.exchange(port: server.port, departure) }
            }
            var state = (connections: -1, pendingCloses: -1)
            for _ in 0..<250 {
                state = (server.server.metrics.connections, server.server.connections.pendingCloses)
                if state == (0, 0) { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(state.connections == 0)
            #expect(state.pendingCloses == 0)
        }
    }

    @Test("pipelined requests in one write (two publishes, then /healthz) are each answered, in order")
    func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withTestServer { server in
            func publish(_ data: String) -> String {
                let body = "{\"topic\":\"pipe/1\",\"data\":\"\(data)\"}"
                return "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            let bytes = publish("a") + publish("b") + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let received = try await Self.sendAndReadAll(ByteBuffer(string: bytes), port: server.port, seconds: 20)
            // Each answer's status line follows the previous body directly.
            let statuses = received.components(separatedBy: "HTTP/1.1 ").dropFirst().map {
                $0.components(separatedBy: "\r\n")[0]
            }
            #expect(statuses == ["201 Created", "201 Created", "200 OK"])
            #expect(received.contains("\"id\":1"))
            #expect(received.contains("\"id\":2"))
            let history = try await server.log.read(after: 0, selectors: SelectorSet([.topic("pipe/1")]), limit: 10)
            #expect(history.events.map(\.id) == [1, 2])
        }
    }

    @Test("2,000 publishes pipelined in one write: reading pauses and resumes, every one answered once, in order")
    func manyPipelinedRequests() async throws {
        try await withTestServer { server in
            let count = 2000
            var bytes = ""
            for index in 1...count {
                let body = "{\"topic\":\"pipe/\(index % 3)\",\"data\":\"\(index)\"}"
                bytes += "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                bytes += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            bytes += "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let received = try await Self.sendAndReadAll(ByteBuffer(string: bytes), port: server.port, seconds: 60)
            let answers = received.components(separatedBy: "HTTP/1.1 ").dropFirst()
            let statuses = answers.map { $0.components(separatedBy: "\r\n")[0] }
            #expect(statuses == Array(repeating: "201 Created", count: count) + ["200 OK"])
            // The n-th answer carries id n: answered in the order sent, none twice.
            let ids = answers.prefix(count).map { answer -> Int in
                let after = answer.components(separatedBy: "\"id\":")[1]
                return Int(after.prefix { $0.isNumber }) ?? -1
            }
            #expect(ids == Array(1...count))
            let history = try await server.log.read(after: 0, selectors: SelectorSet([.all]), limit: count + 10)
            #expect(history.events.map(\.id) == Array(1...Int64(count)))
            #expect(history.events.map(\.data) == (1...count).map { .text(String($0)) })
        }
    }

    @Test("bytes that do not parse right after a publish: the publish gets its 201, then 400 and the close")
    func garbageAfterARequestWaitsForItsAnswer() async throws {
        try await withTestServer { server in
            let body = "{\"topic\":\"pipe/g\",\"data\":\"kept\"}"
            let bytes =
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)GARBAGE\u{0}\u{1}\r\n\r\n"
            let received = try await Self.sendAndReadAll(ByteBuffer(string: bytes), port: server.port, seconds: 20)
            let answers = received.components(separatedBy: "HTTP/1.1 ").dropFirst()
            #expect(answers.map { $0.components(separatedBy: "\r\n")[0] } == ["201 Created", "400 Bad Request"])
            #expect(answers.first?.contains("\"id\":1,\"topic\":\"pipe/g\"") == true)
            let history = try await server.log.read(after: 0, selectors: SelectorSet([.all]), limit: 10)
            #expect(history.events.map(\.data) == [.text("kept")])
        }
    }

    /// Writes `bytes` on a new connection to `port` and returns everything the server sends until it closes.
    static func sendAndReadAll(_ bytes: ByteBuffer, port: Int, seconds: Int64) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await withTimeout(.seconds(seconds)) {
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(bytes)
                var received = ""
                for try await chunk in inbound { received += String(buffer: chunk) }
                return received
            }
        }
    }
}
