import EventLogWire
import Testing

@testable import EventLogClient

private func json(_ text: String) throws -> JSONObject {
    try JSONObject(parsing: text, what: "test")
}

private func envelope(_ text: String) throws(EventLogClientError) -> Event {
    try WireDecoding.decode { () throws(WireDecodingError) in try EventEnvelope.decode(Array(text.utf8)) }
}

/// `2026-11-25T01:07:15.123Z`, and one and two milliseconds after it.
private let time = testTime
private let timeText = testTimeText

@Suite("Wire format")
struct WireFormatTests {
    @Test("a JSON string is text, null and absence are nil, anything else is canonical JSON")
    func payloadMapping() throws {
        #expect(EventData.decoding(.string("hello")) == .text("hello"))
        #expect(EventData.decoding(nil) == nil)
        #expect(EventData.decoding(.null) == nil)
        let object = try json(#"{"o":{"b":1,"a":[true,null,"x/y"]},"n":42,"f":1.5,"t":true,"s":"{\"not\":\"json\"}"}"#)
        #expect(EventData.decoding(object["o"]) == .json(#"{"a":[true,null,"x/y"],"b":1}"#))
        #expect(EventData.decoding(object["n"]) == .json("42"))
        #expect(EventData.decoding(object["f"]) == .json("1.5"))
        #expect(EventData.decoding(object["t"]) == .json("true"))
        #expect(EventData.decoding(object["s"]) == .text(#"{"not":"json"}"#))
    }

    @Test("numbers keep every digit: no detour through Double")
    func exactNumbers() throws {
        let object = try json(
            #"{"d":{"big":12345678901234567890123,"frac":0.1000000000000000055511151231257827,"exp":1E+400},"#
                + #""n":-0.0,"m":[1e-7,10000000000000000000000000001]}"#
        )
        #expect(
            EventData.decoding(object["d"])
                == .json(#"{"big":12345678901234567890123,"exp":1E+400,"frac":0.1000000000000000055511151231257827}"#)
        )
        #expect(EventData.decoding(object["n"]) == .json("-0.0"))
        #expect(EventData.decoding(object["m"]) == .json("[1e-7,10000000000000000000000000001]"))
        let event = try envelope(
            #"{"id":1,"topic":"n","type":"message","time":"\#(timeText)","data":12345678901234567890123}"#
        )
        #expect(event.data == .json("12345678901234567890123"))
    }

    @Test("an envelope decodes with and without a key")
    func envelopeDecoding() throws {
        let withKey = try envelope(
            #"{"id":7,"topic":"orders/1","type":"created","time":"2026-11-25T01:07:15.123Z","#
                + #""data":{"n":1},"key":"k1"}"#
        )
        #expect(
            withKey
                == Event(id: 7, topic: "orders/1", type: "created", key: "k1", data: .json(#"{"n":1}"#), time: time)
        )
        #expect(withKey.timeText == "2026-11-25T01:07:15.123Z")
        let tombstone = try envelope(
            #"{"id":8,"topic":"orders/1","type":"message","time":"2026-11-25T01:07:15.124Z","data":null}"#
        )
        #expect(tombstone.key == nil)
        #expect(tombstone.data == nil)
    }

    @Test("a malformed envelope is a protocol violation")
    func malformedEnvelope() throws {
        for text in [
            #"{"id":"7","topic":"a","type":"m","time":"\#(timeText)"}"#,
            #"{"id":7.5,"topic":"a","type":"m","time":"\#(timeText)"}"#,
            #"{"id":true,"topic":"a","type":"m","time":"\#(timeText)"}"#,
            #"{"id":7,"type":"m","time":"\#(timeText)"}"#,
            #"{"id":99999999999999999999,"topic":"a","type":"m","time":"\#(timeText)"}"#,
            #"{"id":7,"topic":"a","type":"m","time":"yesterday"}"#,
        ] {
            #expect(throws: EventLogClientError.self) { try envelope(text) }
        }
        do {
            _ = try envelope(#"{"id":99999999999999999999,"topic":"a","type":"m","time":"\#(timeText)"}"#)
        } catch {
            #expect(error.code == .protocolViolation)
            #expect(error.message == #"an event envelope: "id" is not a 64-bit integer"#)
        }
        #expect(throws: WireDecodingError("test is not a JSON object")) { try json("[1]") }
        #expect(throws: WireDecodingError("test is not valid JSON")) { try json("{") }
    }

    @Test("SSE control events and envelopes decode to server messages")
    func sseMessages() throws {
        func decode(_ type: String, _ data: String) throws -> ServerMessage {
            try WireDecoding.sseMessage(ServerSentEvent(type: type, data: data))
        }
        #expect(
            try decode("eventlog.open", #"{"epoch":"e1","earliest":1,"head":9,"from":4}"#)
                == .opened(epoch: "e1", earliest: 1, head: 9, from: 4)
        )
        #expect(
            try decode("eventlog.open", #"{"epoch":"e1","earliest":0,"head":0}"#)
                == .opened(epoch: "e1", earliest: 0, head: 0, from: nil)
        )
        #expect(try decode("eventlog.caughtup", #"{"head":9}"#) == .caughtUp(head: 9, resumeToken: nil))
        #expect(
            try decode("eventlog.gap", #"{"requested":2,"earliest":50,"reason":"retention"}"#)
                == .gap(requested: 2, earliest: 50)
        )
        #expect(
            try decode("eventlog.reset", #"{"requested":90,"head":10,"epoch":"e2"}"#)
                == .reset(requested: 90, head: 10, epoch: "e2")
        )
        #expect(try decode("eventlog.future", "{}") == .ignored)
        #expect(
            try decode("created", #"{"id":3,"topic":"t","type":"created","time":"\#(timeText)","data":"hi"}"#)
                == .event(Event(id: 3, topic: "t", type: "created", key: nil, data: .text("hi"), time: time))
        )
        #expect(throws: EventLogClientError.self) { try decode("eventlog.gap", "{") }
    }

    @Test("WebSocket messages decode to server messages")
    func webSocketMessages() throws {
        func decode(_ text: String) throws -> ServerMessage {
            try WireDecoding.webSocketMessage(Array(text.utf8))
        }
        #expect(
            try decode(#"{"type":"subscribed","epoch":"e","earliest":1,"head":5,"from":5}"#)
                == .opened(epoch: "e", earliest: 1, head: 5, from: 5)
        )
        #expect(
            try decode(#"{"type":"subscribed","epoch":"e","earliest":1,"head":5,"from":5,"resume":"tok5"}"#)
                == .opened(epoch: "e", earliest: 1, head: 5, from: 5, resumeToken: "tok5")
        )
        #expect(
            try decode(
                #"{"type":"event","id":6,"topic":"a/b","event":"created","time":"\#(timeText)","#
                    + #""data":[1,2],"key":"k","resume":"tok6"}"#
            )
                == .event(
                    Event(id: 6, topic: "a/b", type: "created", key: "k", data: .json("[1,2]"), time: time),
                    resumeToken: "tok6"
                )
        )
        #expect(try decode(#"{"type":"caughtup","head":6,"resume":"tok"}"#) == .caughtUp(head: 6, resumeToken: "tok"))
        #expect(try decode(#"{"type":"caughtup"}"#) == .caughtUp(head: nil, resumeToken: nil))
        #expect(
            try decode(#"{"type":"gap","requested":1,"earliest":10,"reason":"retention"}"#)
                == .gap(requested: 1, earliest: 10)
        )
        #expect(
            try decode(#"{"type":"reset","requested":100,"head":3,"epoch":"e2"}"#)
                == .reset(requested: 100, head: 3, epoch: "e2")
        )
        #expect(
            try decode(#"{"type":"error","code":"invalid_resume_token","message":"bad signature"}"#)
                == .error(code: "invalid_resume_token", message: "bad signature")
        )
        #expect(
            try decode(#"{"type":"error","error":{"code":"invalid_selector","message":"no"}}"#)
                == .error(code: "invalid_selector", message: "no")
        )
        #expect(try decode(#"{"type":"ack","ref":"c1","id":3}"#) == .ignored)
        #expect(throws: EventLogClientError.self) { try decode(#"{"kind":"event"}"#) }
    }

    @Test("server messages encode byte for byte as the server writes them")
    func serverMessageEncoding() throws {
        let event = Event(id: 6, topic: "a/b", type: "created", key: "k", data: .json(#"{"n":1.50}"#), time: time)
        let plain = Event(id: 7, topic: "a/b", type: "message", key: nil, data: .text("x\r\ny\nz"), time: time + 1)
        // WebSocket: the texts the server's Subscriber and WebSocketSession write.
        let webSocket: [(ServerMessage, String)] = [
            (
                .opened(epoch: "ep", earliest: 1, head: 9, from: 4, resumeToken: "r4"),
                #"{"type":"subscribed","epoch":"ep","earliest":1,"head":9,"from":4,"resume":"r4"}"#
            ),
            (
                .event(event, resumeToken: "r6"),
                #"{"type":"event","id":6,"topic":"a/b","event":"created","key":"k","#
                    + #""time":"2026-11-25T01:07:15.123Z","data":{"n":1.50},"resume":"r6"}"#
            ),
            (
                .event(plain, resumeToken: "r7"),
                #"{"type":"event","id":7,"topic":"a/b","event":"message","#
                    + #""time":"2026-11-25T01:07:15.124Z","data":"x\r\ny\nz","resume":"r7"}"#
            ),
            (.caughtUp(head: 9, resumeToken: "r9"), #"{"type":"caughtup","head":9,"resume":"r9"}"#),
            (.gap(requested: 2, earliest: 5), #"{"type":"gap","requested":2,"earliest":5,"reason":"retention"}"#),
            (.reset(requested: 90, head: 9, epoch: "e2"), #"{"type":"reset","requested":90,"head":9,"epoch":"e2"}"#),
            (
                .error(code: "slow_consumer", message: "too slow"),
                #"{"type":"error","code":"slow_consumer","message":"too slow"}"#
            ),
        ]
        for (message, text) in webSocket {
            #expect(message.webSocketText == text)
            #expect(try ServerMessage.decodeWebSocket(text) == message)
        }
        #expect(ServerMessage.ignored.webSocketText == nil)
        #expect(
            ServerMessage.webSocketError(code: .invalidOp, message: "no", ref: .string("c1"))
                == #"{"type":"error","code":"invalid_op","message":"no","ref":"c1"}"#
        )
        #expect(
            PublishAnswer(id: 3, topic: "a", time: time, replayed: false).webSocketAck(ref: .int(7))
                == #"{"type":"ack","ref":7,"id":3,"topic":"a","time":"2026-11-25T01:07:15.123Z","replayed":false}"#
        )

        // SSE: the frames the server's Subscriber (through FrameCache) and SSEFrame write.
        let sse: [(ServerMessage, String)] = [
            (
                .opened(epoch: "ep", earliest: 1, head: 9, from: 4),
                "event: eventlog.open\ndata: {\"epoch\":\"ep\",\"earliest\":1,\"head\":9,\"from\":4}\n\n"
            ),
            (.caughtUp(head: 9), "event: eventlog.caughtup\ndata: {\"head\":9}\n\n"),
            (
                .gap(requested: 2, earliest: 5),
                "event: eventlog.gap\ndata: {\"requested\":2,\"earliest\":5,\"reason\":\"retention\"}\n\n"
            ),
            (
                .reset(requested: 90, head: 9, epoch: "e2"),
                "event: eventlog.reset\ndata: {\"requested\":90,\"head\":9,\"epoch\":\"e2\"}\n\n"
            ),
        ]
        for (message, frame) in sse {
            #expect(message.sseFrame(envelope: true) == frame)
            var parser = ServerSentEventParser()
            let events = try parser.parse(frame)
            #expect(try events.map { try WireDecoding.sseMessage($0) } == [message])
        }
        #expect(
            ServerMessage.event(plain).sseFrame(envelope: false)
                == "id: 7\nevent: message\ndata: x\ndata: y\ndata: z\n\n"
        )
        #expect(
            ServerMessage.event(event).sseFrame(envelope: true)
                == "id: 6\nevent: created\ndata: {\"id\":6,\"topic\":\"a/b\",\"type\":\"created\",\"key\":\"k\","
                + "\"time\":\"2026-11-25T01:07:15.123Z\",\"data\":{\"n\":1.50}}\n\n"
        )
        #expect(ServerMessage.event(event).sseControl == nil)
        var control = ""
        SSEEncoder.writeControl("x", json: "a\rb\r\n\nc", into: &control)
        #expect(control == "event: x\ndata: a\ndata: b\ndata: \ndata: c\n\n")
        var retry = ""
        SSEEncoder.writeRetry(milliseconds: 1500, into: &retry)
        #expect(retry == "retry: 1500\n\n")
    }

    @Test("answers decode: publish, batch, history, topics, errors")
    func answers() throws {
        #expect(
            try PublishAnswer.decode(Array(#"{"id":12,"topic":"a","time":"\#(timeText)"}"#.utf8), replayed: true)
                == PublishResult(id: 12, topic: "a", time: time, replayed: true)
        )
        let batchText =
            #"{"events":[{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z","replayed":true},"#
            + #"{"id":2,"topic":"b","time":"2026-11-25T01:07:15.124Z","replayed":false}],"ids":[1,2]}"#
        let batch = try PublishAnswer.decodeBatch(Array(batchText.utf8), replayed: false)
        #expect(
            batch == [
                PublishResult(id: 1, topic: "a", time: time, replayed: true),
                PublishResult(id: 2, topic: "b", time: time + 1, replayed: false),
            ]
        )
        #expect(PublishAnswer.batchJSON(batch) == batchText)
        let first = try #require(batch.first)
        #expect(first.json == #"{"id":1,"topic":"a","time":"2026-11-25T01:07:15.123Z"}"#)

        let pageText =
            #"{"events":[{"id":4,"topic":"a","type":"m","time":"2026-11-25T01:07:15.123Z","data":"x"}],"#
            + #""next":4,"head":9,"earliest":2}"#
        let page = try HistoryPage(decoding: Array(pageText.utf8))
        #expect(
            page
                == HistoryPage(
                    events: [Event(id: 4, topic: "a", type: "m", key: nil, data: .text("x"), time: time)],
                    next: 4,
                    head: 9,
                    earliest: 2
                )
        )
        #expect(page.json == pageText)
        let topicsText = #"{"topics":[{"topic":"a","count":3,"lastId":9}],"head":9,"earliest":1}"#
        let topics = try TopicSummary.decodeList(Array(topicsText.utf8))
        #expect(topics == [TopicSummary(topic: "a", count: 3, lastID: 9)])
        #expect(TopicSummary.listJSON(topics, head: 9, earliest: 1) == topicsText)

        let errorText = #"{"error":{"code":"invalid_topic","message":"bad topic","index":2}}"#
        let error = try #require(ErrorBody(decoding: Array(errorText.utf8)))
        #expect(error.code == "invalid_topic")
        #expect(error.errorCode == .invalidTopic)
        #expect(error.message == "bad topic")
        #expect(error.index == 2)
        #expect(error.json == errorText)
        #expect(ErrorBody(decoding: Array("not json".utf8)) == nil)
        #expect(ErrorBody(decoding: Array(#"{"error":{"code":"x"}}"#.utf8))?.message == "x")
    }

    @Test("events encode as JSON with the payload verbatim")
    func eventEncoding() {
        let event = NewEvent(
            topic: "orders/1",
            type: "created",
            key: "k\"1",
            data: .json("{\n  \"n\": 1\r\n}"),
            idempotencyKey: "idem-1"
        )
        #expect(
            PublishRequest.encode(event, includeIdempotencyKey: true)
                == #"{"topic":"orders/1","type":"created","key":"k\"1","data":{   "n": 1  },"idempotencyKey":"idem-1"}"#
        )
        #expect(
            PublishRequest.encode(event, includeIdempotencyKey: false)
                == #"{"topic":"orders/1","type":"created","key":"k\"1","data":{   "n": 1  }}"#
        )
        #expect(
            PublishRequest.encode(NewEvent(topic: "t", data: nil), includeIdempotencyKey: true) == #"{"topic":"t"}"#)
        #expect(
            PublishRequest.encode(NewEvent(topic: "t", data: .text("a\nb\u{1}\\")), includeIdempotencyKey: true)
                == #"{"topic":"t","data":"a\nb\u0001\\"}"#
        )
    }

    @Test("subscribe messages name the start position, and the server's decoder reads them back")
    func subscribeEncoding() throws {
        let cases: [(StartPosition, String)] = [
            (.resumeToken("tok"), #"{"op":"subscribe","topics":["a/*","b"],"resume":"tok"}"#),
            (.after(5), #"{"op":"subscribe","topics":["a/*","b"],"from":5}"#),
            (.earliest, #"{"op":"subscribe","topics":["a/*","b"],"from":"earliest"}"#),
            (.live, #"{"op":"subscribe","topics":["a/*","b"],"from":"latest"}"#),
        ]
        for (start, text) in cases {
            #expect(ClientOp.subscribeText(topics: ["a/*", "b"], start: start) == text)
            let decoded = ClientOp.decode(Array(text.utf8))
            #expect(decoded.ref == nil)
            guard case .success(.subscribe(let subscription)) = decoded.op else {
                Issue.record("\(text) did not decode as a subscribe op: \(decoded.op)")
                continue
            }
            #expect(subscription.topics == ["a/*", "b"])
            #expect(subscription.selectors == SelectorSet([.prefix("a"), .topic("b")]))
            #expect(subscription.start == start)
        }
        #expect(
            ClientOp.subscribeText(topics: ["a"], start: .after(5), ref: .number("7"))
                == #"{"op":"subscribe","topics":["a"],"from":5,"ref":7}"#
        )
    }

    @Test("a publish op encodes the publish object after op and before ref, and decodes to the same event")
    func publishOp() throws {
        let event = NewEvent(topic: "o/1", type: "paid", key: "k", data: .json("{\"n\":1.50}"), idempotencyKey: "i-1")
        let text = ClientOp.publish(event).encode(ref: .string("r1"))
        #expect(
            text
                == #"{"op":"publish","topic":"o/1","type":"paid","key":"k","data":{"n":1.50},"idempotencyKey":"i-1","ref":"r1"}"#
        )
        let decoded = ClientOp.decode(Array(text.utf8))
        #expect(decoded.ref == .string("r1"))
        #expect(try decoded.op.get() == .publish(event))
        let bad = ClientOp.decode(Array(#"{"op":"nope","ref":3}"#.utf8))
        #expect(bad.ref == .number("3"))
        #expect(throws: EventLogError(.invalidOp, #"unknown op "nope""#)) { try bad.op.get() }
    }

    @Test("a server code is typed; an unknown one is kept as text; transient codes retry a subscription")
    func serverCodes() {
        let known = EventLogClientError(.http, status: 409, serverCode: "idempotency_conflict", message: "m", index: 1)
        #expect(known.serverCode == .idempotencyConflict)
        #expect(known.description == "http 409 idempotency_conflict (line 1): m")
        let unknown = EventLogClientError(.server, serverCode: "quota_exceeded", message: "later")
        #expect(unknown.serverCode == nil)
        #expect(unknown.serverCodeText == "quota_exceeded")
        #expect(unknown.description == "server quota_exceeded: later")
        #expect(!unknown.isRetryableForSubscription)
        for code in ErrorCode.allCases {
            let error = EventLogClientError(.server, serverCode: code, message: "m")
            #expect(error.isRetryableForSubscription == code.isTransient)
        }
    }

    @Test("base URLs parse into host, port and path prefix")
    func serverAddress() throws {
        #expect(try ServerAddress(parsing: "http://127.0.0.1:8080") == ServerAddress(host: "127.0.0.1", port: 8080))
        #expect(try ServerAddress(parsing: "HTTP://localhost/") == ServerAddress(host: "localhost", port: 80))
        #expect(
            try ServerAddress(parsing: "http://[::1]:9000/log/")
                == ServerAddress(host: "::1", port: 9000, pathPrefix: "/log")
        )
        #expect(try ServerAddress(parsing: "http://[::1]:9000").hostHeader == "[::1]:9000")
        #expect(try ServerAddress(parsing: "http://example.com").hostHeader == "example.com")
        for invalid in [
            "https://x", "x:80", "http://", "http://h:0", "http://h:99999", "http://h:8a", "http://u@h", "http://h?q",
        ] {
            #expect(throws: EventLogClientError.self) { try ServerAddress(parsing: invalid) }
        }
    }

    @Test("query values are percent-encoded, + included")
    func queryEncoding() {
        let address = ServerAddress(host: "h", port: 1, pathPrefix: "/p")
        #expect(
            address.target("/v1/events", query: [("topic", "orders/*"), ("topic", "a+b c&d"), ("after", "5")])
                == "/p/v1/events?topic=orders/*&topic=a%2Bb%20c%26d&after=5"
        )
        #expect(address.target("/v1/ws") == "/p/v1/ws")
    }
}
