/// One event dispatched by a ``ServerSentEventParser``.
public struct ServerSentEvent: Sendable, Hashable {
    /// The event type: the last `event:` field, or `message`.
    public var type: String
    /// The `data:` lines, joined with LF.
    public var data: String
    /// The stream's last event ID when this event was dispatched.
    public var lastEventID: String

    /// Creates an event.
    public init(type: String = "message", data: String, lastEventID: String = "") {
        self.type = type
        self.data = data
        self.lastEventID = lastEventID
    }
}

/// An incremental parser for a `text/event-stream` body, as the WHATWG HTML standard specifies it
/// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
///
/// Feed it bytes as they arrive, in chunks of any size: lines may end with CRLF, LF or CR, and a CRLF may be split
/// between two chunks. A UTF-8 byte order mark at the start of the stream is skipped. An event that is not
/// terminated by a blank line when the stream ends is never dispatched.
public struct ServerSentEventParser: Sendable {
    /// The last event ID: set by `id:` fields (without NUL) when an event is dispatched. It survives events without
    /// an `id:` field, as a browser's `EventSource.lastEventId` does.
    public private(set) var lastEventID: String
    /// The reconnection time in milliseconds from the last valid `retry:` field, or `nil` when none came yet.
    public private(set) var reconnectionTime: Int?
    /// The largest line or event data accepted, in bytes.
    public let maximumEventBytes: Int

    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var eventType: [UInt8] = []
    private var lastEventIDBuffer: String
    private var skipLineFeed = false
    private var atStreamStart = true
    private var startBytes: [UInt8] = []
    private var frame = ServerSentEventFrame()
    private var frameHasLines = false

    private static let lineFeed = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")
    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Creates a parser for a new stream.
    ///
    /// - Parameters:
    ///   - lastEventID: The last event ID carried over from an earlier connection.
    ///   - maximumEventBytes: The largest line or event data accepted; more is a protocol violation.
    public init(lastEventID: String = "", maximumEventBytes: Int = 16 << 20) {
        self.lastEventID = lastEventID
        self.lastEventIDBuffer = lastEventID
        self.maximumEventBytes = maximumEventBytes
    }

    /// Parses the next chunk of the stream and returns the events it completed, in order.
    ///
    /// - Throws: ``ServerSentEventLimitError`` when a line or an event is over ``maximumEventBytes``.
    public mutating func parse(_ bytes: some Collection<UInt8>) throws(ServerSentEventLimitError) -> [ServerSentEvent] {
        var output = Output(recordsFrames: false)
        try self.parse(bytes, into: &output)
        return output.events
    }

    /// Parses the next chunk of the stream (as UTF-8) and returns the events it completed, in order.
    public mutating func parse(_ text: String) throws(ServerSentEventLimitError) -> [ServerSentEvent] {
        try self.parse(Array(text.utf8))
    }

    /// Parses the next chunk of the stream and returns the frames it completed: every block of lines ended by a
    /// blank line, with its fields as they were written (comments and `retry:`-only blocks included). For tests and
    /// tools that check the framing itself; a client wants ``parse(_:)-(some Collection<UInt8>)``.
    ///
    /// The parser's event state (``lastEventID``, ``reconnectionTime``) is kept up to date as well.
    public mutating func parseFrames(
        _ bytes: some Collection<UInt8>
    ) throws(ServerSentEventLimitError) -> [ServerSentEventFrame] {
        var output = Output(recordsFrames: true)
        try self.parse(bytes, into: &output)
        return output.frames
    }

    /// What one chunk completed.
    private struct Output {
        let recordsFrames: Bool
        var events: [ServerSentEvent] = []
        var frames: [ServerSentEventFrame] = []
    }

    private mutating func parse(
        _ bytes: some Collection<UInt8>,
        into output: inout Output
    ) throws(ServerSentEventLimitError) {
        var failure: ServerSentEventLimitError?
        let parsed: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            do throws(ServerSentEventLimitError) {
                try self.parse(buffer, into: &output)
            } catch {
                failure = error
            }
        }
        if parsed == nil {
            [UInt8](bytes).withUnsafeBufferPointer { buffer in
                do throws(ServerSentEventLimitError) {
                    try self.parse(buffer, into: &output)
                } catch {
                    failure = error
                }
            }
        }
        if let failure {
            throw failure
        }
    }

    private mutating func parse(
        _ chunk: UnsafeBufferPointer<UInt8>,
        into output: inout Output
    ) throws(ServerSentEventLimitError) {
        var bytes = chunk[...]
        if self.atStreamStart {
            // The byte order mark may itself be split between chunks: hold back a prefix of it until it is decided.
            var consumed = 0
            for byte in bytes {
                self.startBytes.append(byte)
                consumed += 1
                if self.startBytes == Self.byteOrderMark {
                    self.startBytes = []
                    self.atStreamStart = false
                    break
                }
                if !Self.byteOrderMark.starts(with: self.startBytes) {
                    self.atStreamStart = false
                    break
                }
            }
            if self.atStreamStart {
                return
            }
            bytes = bytes.dropFirst(consumed)
            let held = self.startBytes
            self.startBytes = []
            try held.withUnsafeBufferPointer { (held) throws(ServerSentEventLimitError) in
                try self.parseLines(held[...], into: &output)
            }
        }
        try self.parseLines(bytes, into: &output)
    }

    private mutating func parseLines(
        _ bytes: Slice<UnsafeBufferPointer<UInt8>>,
        into output: inout Output
    ) throws(ServerSentEventLimitError) {
        var index = bytes.startIndex
        let endIndex = bytes.endIndex
        let base = bytes.base
        while index < endIndex {
            if self.skipLineFeed {
                self.skipLineFeed = false
                if base[index] == Self.lineFeed {
                    index += 1
                    continue
                }
            }
            var end = index
            while end < endIndex {
                let byte = base[end]
                if byte == Self.lineFeed || byte == Self.carriageReturn {
                    break
                }
                end += 1
            }
            self.line.append(contentsOf: UnsafeBufferPointer(rebasing: base[index..<end]))
            guard self.line.count <= self.maximumEventBytes else {
                throw ServerSentEventLimitError(
                    limit: self.maximumEventBytes,
                    message: "an SSE line is over \(self.maximumEventBytes) bytes"
                )
            }
            guard end < endIndex else {
                return
            }
            self.skipLineFeed = base[end] == Self.carriageReturn
            try self.processLine(into: &output)
            self.line.removeAll(keepingCapacity: true)
            index = end + 1
        }
    }

    private static let eventField = Array("event".utf8)
    private static let dataField = Array("data".utf8)
    private static let idField = Array("id".utf8)
    private static let retryField = Array("retry".utf8)

    private mutating func processLine(into output: inout Output) throws(ServerSentEventLimitError) {
        guard let first = self.line.first else {
            self.dispatch(into: &output)
            return
        }
        if output.recordsFrames {
            self.frame.record(line: self.line)
            self.frameHasLines = true
        }
        if first == UInt8(ascii: ":") {
            return
        }
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = self.line.firstIndex(of: UInt8(ascii: ":")) {
            field = self.line[..<colon]
            value = self.line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") {
                value = value.dropFirst()
            }
        } else {
            field = self.line[...]
            value = []
        }
        if field.elementsEqual(Self.dataField) {
            self.data.append(contentsOf: value)
            self.data.append(Self.lineFeed)
            guard self.data.count <= self.maximumEventBytes else {
                throw ServerSentEventLimitError(
                    limit: self.maximumEventBytes,
                    message: "an SSE event is over \(self.maximumEventBytes) bytes"
                )
            }
        } else if field.elementsEqual(Self.eventField) {
            self.eventType = Array(value)
        } else if field.elementsEqual(Self.idField) {
            if !value.contains(0) {
                self.lastEventIDBuffer = String(decoding: value, as: UTF8.self)
            }
        } else if field.elementsEqual(Self.retryField) {
            if !value.isEmpty, value.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                let milliseconds = Int(String(decoding: value, as: UTF8.self))
            {
                self.reconnectionTime = milliseconds
            }
        }
    }

    private mutating func dispatch(into output: inout Output) {
        if output.recordsFrames, self.frameHasLines {
            output.frames.append(self.frame)
            self.frame = ServerSentEventFrame()
            self.frameHasLines = false
        }
        self.lastEventID = self.lastEventIDBuffer
        guard !self.data.isEmpty else {
            self.eventType.removeAll(keepingCapacity: true)
            return
        }
        if self.data.last == Self.lineFeed {
            self.data.removeLast()
        }
        output.events.append(
            ServerSentEvent(
                type: self.eventType.isEmpty ? "message" : String(decoding: self.eventType, as: UTF8.self),
                data: String(decoding: self.data, as: UTF8.self),
                lastEventID: self.lastEventID
            )
        )
        self.data.removeAll(keepingCapacity: true)
        self.eventType.removeAll(keepingCapacity: true)
    }
}

/// A line or an event over ``ServerSentEventParser/maximumEventBytes``.
public struct ServerSentEventLimitError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The limit, in bytes.
    public let limit: Int
    /// What was over it, e.g. `an SSE line is over 1024 bytes`.
    public let message: String

    public var description: String { self.message }
}

/// One block of an event stream, as written: the lines up to a blank line, with each field's raw value (after the
/// one optional space). Unlike ``ServerSentEvent`` nothing is interpreted: a block of comments or of a `retry:` alone
/// is a frame too, and `id` is only this block's field.
public struct ServerSentEventFrame: Sendable, Hashable {
    /// The last `id:` field of the block.
    public var id: String?
    /// The last `event:` field of the block.
    public var event: String?
    /// The `data:` fields, in order.
    public var data: [String] = []
    /// The last `retry:` field of the block.
    public var retry: String?
    /// The comment lines (after the `:`).
    public var comments: [String] = []

    /// Creates a frame.
    public init(
        id: String? = nil,
        event: String? = nil,
        data: [String] = [],
        retry: String? = nil,
        comments: [String] = []
    ) {
        self.id = id
        self.event = event
        self.data = data
        self.retry = retry
        self.comments = comments
    }

    /// The data fields joined with LF, as an event's data.
    public var dataText: String { self.data.joined(separator: "\n") }

    mutating func record(line: [UInt8]) {
        if line.first == UInt8(ascii: ":") {
            self.comments.append(String(decoding: line.dropFirst(), as: UTF8.self))
            return
        }
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") {
                value = value.dropFirst()
            }
        } else {
            field = line[...]
            value = []
        }
        let text = String(decoding: value, as: UTF8.self)
        switch String(decoding: field, as: UTF8.self) {
        case "id": self.id = text
        case "event": self.event = text
        case "data": self.data.append(text)
        case "retry": self.retry = text
        default: break
        }
    }
}
