import Foundation
import Testing

@testable import EventLogClient

private func json(_ text: String) throws -> JSONObject {
    try WireDecoding.object(Data(text.utf8), what: "test")
}

@Suite("Wire format")
struct WireFormatTests {
    @Test("a JSON string is text, null and absence are nil, anything else is canonical JSON")
    func payloadMapping() throws {
        #expect(WireDecoding.payload("hello") == .text("hello"))
        #expect(WireDecoding.payload(nil) == nil)
        #expect(WireDecoding.payload(NSNull()) == nil)
        let object = try json(#"{"o":{"b":1,"a":[true,null,"x/y"]},"n":42,"f":1.5,"t":true,"s":"{\"not\":\"json\"}"}"#)
        #expect(WireDecoding.payload(object["o"]) == .json(#"{"a":[true,null,"x/y"],"b":1}"#))
        #expect(WireDecoding.payload(object["n"]) == .json("42"))
        #expect(WireDecoding.payload(object["f"]) == .json("1.5"))
        #expect(WireDecoding.payload(object["t"]) == .json("true"))
        #expect(WireDecoding.payload(object["s"]) == .text(#"{"not":"json"}"#))
    }

    @Test("an envelope decodes with and without a key")
    func envelope() throws {
        let withKey = try WireDecoding.envelope(
            json(
                #"{"id":7,"topic":"orders/1","type":"created","time":"2026-11-25T01:07:15.123Z","#
                    + #""data":{"n":1},"key":"k1"}"#
            )
        )
        #expect(
            withKey
                == ReceivedEvent(
                    id: 7,
                    topic: "orders/1",
                    type: "created",
                    key: "k1",
                    time: "2026-11-25T01:07:15.123Z",
                    data: .json(#"{"n":1}"#)
                )
        )
        let tombstone = try WireDecoding.envelope(
            json(#"{"id":8,"topic":"orders/1","type":"message","time":"2026-11-25T01:07:15.124Z","data":null}"#)
        )
        #expect(tombstone.key == nil)
        #expect(tombstone.data == nil)
    }

    @Test("a malformed envelope is a protocol violation")
    func malformedEnvelope() throws {
        for text in [
            #"{"id":"7","topic":"a","type":"m","time":"t"}"#,
            #"{"id":7.5,"topic":"a","type":"m","time":"t"}"#,
            #"{"id":true,"topic":"a","type":"m","time":"t"}"#,
            #"{"id":7,"type":"m","time":"t"}"#,
            #"{"id":99999999999999999999,"topic":"a","type":"m","time":"t"}"#,
        ] {
            #expect(throws: EventLogClientError.self) { try WireDecoding.envelope(json(text)) }
        }
        #expect(throws: EventLogClientError.self) { try json("[1]") }
        #expect(throws: EventLogClientError.self) { try json("{") }
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
            try decode("created", #"{"id":3,"topic":"t","type":"created","time":"T","data":"hi"}"#)
                == .event(ReceivedEvent(id: 3, topic: "t", type: "created", time: "T", data: .text("hi")))
        )
    }

    @Test("WebSocket messages decode to server messages")
    func webSocketMessages() throws {
        func decode(_ text: String) throws -> ServerMessage {
            try WireDecoding.webSocketMessage(Data(text.utf8))
        }
        #expect(
            try decode(#"{"type":"subscribed","epoch":"e","earliest":1,"head":5,"from":5}"#)
                == .opened(epoch: "e", earliest: 1, head: 5, from: 5)
        )
        #expect(
            try decode(
                #"{"type":"event","id":6,"topic":"a/b","event":"created","time":"T","#
                    + #""data":[1,2],"key":"k","resume":"tok6"}"#
            )
                == .event(
                    ReceivedEvent(
                        id: 6,
                        topic: "a/b",
                        type: "created",
                        key: "k",
                        time: "T",
                        data: .json("[1,2]"),
                        resumeToken: "tok6"
                    )
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

    @Test("answers decode: publish, batch, history, topics, errors")
    func answers() throws {
        #expect(
            try WireDecoding.publishResult(json(#"{"id":12,"topic":"a","time":"T"}"#), replayed: true)
                == PublishResult(id: 12, topic: "a", time: "T", replayed: true)
        )
        let batch = try WireDecoding.batchResults(
            Data(
                (#"{"events":[{"id":1,"topic":"a","time":"T1","replayed":true},"#
                    + #"{"id":2,"topic":"b","time":"T2","replayed":false}],"ids":[1,2]}"#).utf8
            ),
            replayed: false
        )
        #expect(
            batch == [
                PublishResult(id: 1, topic: "a", time: "T1", replayed: true),
                PublishResult(id: 2, topic: "b", time: "T2", replayed: false),
            ]
        )
        let page = try WireDecoding.historyPage(
            Data(
                #"{"events":[{"id":4,"topic":"a","type":"m","time":"T","data":"x"}],"next":4,"head":9,"earliest":2}"#
                    .utf8)
        )
        #expect(
            page
                == HistoryPage(
                    events: [ReceivedEvent(id: 4, topic: "a", type: "m", time: "T", data: .text("x"))],
                    next: 4,
                    head: 9,
                    earliest: 2
                )
        )
        let topics = try WireDecoding.topics(
            Data(#"{"topics":[{"topic":"a","count":3,"lastId":9}],"head":9,"earliest":1}"#.utf8)
        )
        #expect(topics == [TopicInfo(topic: "a", count: 3, lastId: 9)])

        let error = try #require(
            WireDecoding.errorBody(
                Data(#"{"error":{"code":"invalid_topic","message":"bad topic","index":2}}"#.utf8)
            )
        )
        #expect(error.code == "invalid_topic")
        #expect(error.message == "bad topic")
        #expect(error.index == 2)
        #expect(WireDecoding.errorBody(Data("not json".utf8)) == nil)
    }

    @Test("events encode as JSON with the payload verbatim")
    func eventEncoding() {
        let event = OutgoingEvent(
            topic: "orders/1",
            type: "created",
            key: "k\"1",
            data: .json("{\n  \"n\": 1\r\n}"),
            idempotencyKey: "idem-1"
        )
        #expect(
            JSONText.event(event, includeIdempotencyKey: true)
                == #"{"topic":"orders/1","type":"created","key":"k\"1","data":{   "n": 1  },"idempotencyKey":"idem-1"}"#
        )
        #expect(
            JSONText.event(event, includeIdempotencyKey: false)
                == #"{"topic":"orders/1","type":"created","key":"k\"1","data":{   "n": 1  }}"#
        )
        #expect(JSONText.event(OutgoingEvent(topic: "t"), includeIdempotencyKey: true) == #"{"topic":"t"}"#)
        #expect(
            JSONText.event(OutgoingEvent(topic: "t", data: .text("a\nb\u{1}\\")), includeIdempotencyKey: true)
                == #"{"topic":"t","data":"a\nb\u0001\\"}"#
        )
    }

    @Test("subscribe messages name the start position")
    func subscribeEncoding() {
        #expect(
            JSONText.subscribe(topics: ["a/*", "b"], start: .resume("tok"))
                == #"{"op":"subscribe","topics":["a/*","b"],"resume":"tok"}"#
        )
        #expect(JSONText.subscribe(topics: ["a"], start: .from(5)) == #"{"op":"subscribe","topics":["a"],"from":5}"#)
        #expect(
            JSONText.subscribe(topics: ["a"], start: .earliest)
                == #"{"op":"subscribe","topics":["a"],"from":"earliest"}"#
        )
        #expect(
            JSONText.subscribe(topics: ["a"], start: .latest) == #"{"op":"subscribe","topics":["a"],"from":"latest"}"#
        )
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
