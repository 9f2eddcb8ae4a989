import EventLogClient
import EventLogWire
import NIOCore
import Testing

/// Feeds `chunks` to a fresh parser and returns the events and the parser.
private func parse(
    _ chunks: [[UInt8]], maximumEventBytes: Int = 1 << 20
) throws -> (
    events: [ServerSentEvent], parser: ServerSentEventParser
) {
    var parser = ServerSentEventParser(maximumEventBytes: maximumEventBytes)
    var events: [ServerSentEvent] = []
    for chunk in chunks {
        events += try parser.parse(chunk)
    }
    return (events, parser)
}

private func parse(_ chunks: String...) throws -> [ServerSentEvent] {
    try parse(chunks.map { Array($0.utf8) }).events
}

@Suite("SSE parser")
struct ServerSentEventParserTests {
    @Test("LF, CRLF and CR all end lines")
    func lineEndings() throws {
        let expected = [ServerSentEvent(type: "message", data: "a\nb")]
        #expect(try parse("data: a\ndata: b\n\n") == expected)
        #expect(try parse("data: a\r\ndata: b\r\n\r\n") == expected)
        #expect(try parse("data: a\rdata: b\r\r") == expected)
        #expect(try parse("data: a\r\ndata: b\rdata: c\n\r\n") == [ServerSentEvent(data: "a\nb\nc")])
    }

    @Test("a CRLF split between chunks is one line end, not an empty line")
    func carriageReturnAtChunkBoundary() throws {
        let events = try parse("data: x\r", "\ndata: y\r", "\n\r", "\n")
        #expect(events == [ServerSentEvent(data: "x\ny")])
    }

    @Test("a CR at the end of a chunk followed by a non-LF byte ends the line")
    func carriageReturnThenText() throws {
        let events = try parse("data: x\r", "data: y\r", "\r")
        #expect(events == [ServerSentEvent(data: "x\ny")])
    }

    @Test("a stream fed one byte at a time parses like a stream fed at once")
    func byteAtATime() throws {
        let stream = "\u{FEFF}retry: 150\r\n: hi\r\nid: 1\r\nevent: e\r\ndata: one\r\ndata:two\r\n\r\ndata: three\r\r"
        let whole = try parse([Array(stream.utf8)])
        let bytes = try parse(stream.utf8.map { [$0] })
        #expect(whole.events == bytes.events)
        #expect(
            whole.events == [
                ServerSentEvent(type: "e", data: "one\ntwo", lastEventID: "1"),
                ServerSentEvent(type: "message", data: "three", lastEventID: "1"),
            ]
        )
        #expect(bytes.parser.reconnectionTime == 150)
    }

    @Test("one leading space is stripped from a value, and only one")
    func leadingSpace() throws {
        #expect(try parse("data:no-space\n\n") == [ServerSentEvent(data: "no-space")])
        #expect(try parse("data:  two\n\n") == [ServerSentEvent(data: " two")])
        #expect(try parse("data: a: b\n\n") == [ServerSentEvent(data: "a: b")])
    }

    @Test("a field without a colon has an empty value, and empty data still dispatches")
    func fieldWithoutColon() throws {
        #expect(try parse("data\n\n") == [ServerSentEvent(data: "")])
        #expect(try parse("data: \n\n") == [ServerSentEvent(data: "")])
        #expect(try parse("data\ndata\n\n") == [ServerSentEvent(data: "\n")])
    }

    @Test("comments and unknown fields are ignored")
    func comments() throws {
        let events = try parse(": keepalive\n\ndata: a\n:comment\nfoo: bar\ndata: b\n\n")
        #expect(events == [ServerSentEvent(data: "a\nb")])
    }

    @Test("retry takes only ASCII digits")
    func retry() throws {
        #expect(try parse([Array("retry: 2500\n".utf8)]).parser.reconnectionTime == 2500)
        #expect(try parse([Array("retry: 12a\n".utf8)]).parser.reconnectionTime == nil)
        #expect(try parse([Array("retry:\n".utf8)]).parser.reconnectionTime == nil)
        #expect(try parse([Array("retry: -5\n".utf8)]).parser.reconnectionTime == nil)
        #expect(try parse([Array("retry: 100\nretry: x\n".utf8)]).parser.reconnectionTime == 100)
    }

    @Test("an id without data sets the last event ID and dispatches nothing")
    func idWithoutData() throws {
        let result = try parse([Array("id: 7\n\n".utf8)])
        #expect(result.events.isEmpty)
        #expect(result.parser.lastEventID == "7")

        let events = try parse("id: 7\n\ndata: later\n\n")
        #expect(events == [ServerSentEvent(data: "later", lastEventID: "7")])
    }

    @Test("an id containing NUL is ignored, and an empty id clears the last event ID")
    func idWithNul() throws {
        let events = try parse("id: 5\ndata: a\n\nid: 6\u{0}x\ndata: b\n\nid\ndata: c\n\n")
        #expect(
            events == [
                ServerSentEvent(data: "a", lastEventID: "5"),
                ServerSentEvent(data: "b", lastEventID: "5"),
                ServerSentEvent(data: "c", lastEventID: ""),
            ]
        )
    }

    @Test("the id only takes effect when the event is dispatched")
    func idAtDispatch() throws {
        var parser = ServerSentEventParser()
        _ = try parser.parse("id: 9\ndata: a\n")
        #expect(parser.lastEventID == "")
        _ = try parser.parse("\n")
        #expect(parser.lastEventID == "9")
    }

    @Test("the event type applies to one event only")
    func eventType() throws {
        let events = try parse("event: eventlog.open\ndata: {}\n\ndata: plain\n\nevent: x\n\ndata: y\n\n")
        #expect(
            events == [
                ServerSentEvent(type: "eventlog.open", data: "{}"),
                ServerSentEvent(type: "message", data: "plain"),
                ServerSentEvent(type: "message", data: "y"),
            ]
        )
    }

    @Test("a byte order mark at the start of the stream is skipped, even split between chunks")
    func byteOrderMark() throws {
        #expect(try parse([[0xEF, 0xBB, 0xBF] + Array("data: a\n\n".utf8)]).events == [ServerSentEvent(data: "a")])
        #expect(try parse([[0xEF], [0xBB], [0xBF], Array("data: a\n\n".utf8)]).events == [ServerSentEvent(data: "a")])
        #expect(
            try parse([[0xEF, 0xBB], [0xBF, 0x64] + Array("ata: a\n\n".utf8)]).events == [ServerSentEvent(data: "a")])
    }

    @Test("a byte order mark later in the stream is not skipped")
    func laterByteOrderMark() throws {
        // The second BOM makes the field name "\u{FEFF}data", which is unknown, so the event has no data.
        let events = try parse("data: a\n\n\u{FEFF}data: b\n\ndata: c\n\n")
        #expect(events == [ServerSentEvent(data: "a"), ServerSentEvent(data: "c")])
    }

    @Test("a prefix of a byte order mark that is not one is kept")
    func partialByteOrderMark() throws {
        let events = try parse([[0xEF, 0xBB], Array("\ndata: a\n\n".utf8)]).events
        #expect(events == [ServerSentEvent(data: "a")])
    }

    @Test("an event not ended by a blank line is not dispatched")
    func unterminatedEvent() throws {
        #expect(try parse("data: a\n").isEmpty)
        #expect(try parse("data: a").isEmpty)
    }

    @Test("a multi-byte character split between chunks is decoded whole")
    func splitCharacter() throws {
        let bytes = Array("data: é€\n\n".utf8)
        let events = try parse([Array(bytes[0..<7]), Array(bytes[7..<10]), Array(bytes[10...])]).events
        #expect(events == [ServerSentEvent(data: "é€")])
    }

    @Test("a ByteBuffer chunk parses like bytes")
    func byteBuffer() throws {
        var parser = ServerSentEventParser()
        let events = try parser.parse(ByteBuffer(string: "data: a\n\n"))
        #expect(events == [ServerSentEvent(data: "a")])
    }

    @Test("the last event ID carries over from an earlier connection")
    func carriedLastEventID() throws {
        var parser = ServerSentEventParser(lastEventID: "41")
        #expect(try parser.parse("data: a\n\n") == [ServerSentEvent(data: "a", lastEventID: "41")])
    }

    @Test("a line or an event over the limit is refused")
    func limit() throws {
        #expect(throws: ServerSentEventLimitError.self) {
            _ = try parse([Array("data: 0123456789\n".utf8)], maximumEventBytes: 8)
        }
        #expect(throws: ServerSentEventLimitError.self) {
            _ = try parse([Array("data:0123\ndata:4567\n".utf8)], maximumEventBytes: 9)
        }
        do {
            _ = try parse([Array(String(repeating: "x", count: 20).utf8)], maximumEventBytes: 8)
            Issue.record("expected an error")
        } catch let error as ServerSentEventLimitError {
            #expect(error.limit == 8)
            #expect(error.message == "an SSE line is over 8 bytes")
        }
        // The client's ByteBuffer entry reports it as its own error.
        var parser = ServerSentEventParser(maximumEventBytes: 8)
        do {
            _ = try parser.parse(ByteBuffer(string: String(repeating: "x", count: 20)))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .responseTooLarge)
            #expect(error.message == "an SSE line is over 8 bytes")
        }
    }

    @Test("frames keep every block as written: comments, retry-only blocks, ids per block")
    func frames() throws {
        var parser = ServerSentEventParser()
        let stream = Array(
            "retry: 1500\n\nevent: eventlog.open\ndata: {}\n\n: keepalive\n\nid: 3\nevent: m\ndata: a\ndata: b\n\n"
                .utf8
        )
        var frames: [ServerSentEventFrame] = []
        for byte in stream {
            frames += try parser.parseFrames([byte])
        }
        #expect(
            frames == [
                ServerSentEventFrame(retry: "1500"),
                ServerSentEventFrame(event: "eventlog.open", data: ["{}"]),
                ServerSentEventFrame(comments: [" keepalive"]),
                ServerSentEventFrame(id: "3", event: "m", data: ["a", "b"]),
            ]
        )
        try #require(frames.count == 4)
        #expect(frames[3].dataText == "a\nb")
        #expect(parser.lastEventID == "3")
        #expect(parser.reconnectionTime == 1500)
    }
}
