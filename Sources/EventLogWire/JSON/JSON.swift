/// A parsed JSON value. Numbers keep their original lexeme, so a payload's digits are never
/// changed by a round trip through a floating-point type. Strings and keys compare by their Unicode
/// scalars (UTF-8 bytes), not by Swift's canonical equivalence, so equal values have equal canonical text.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return Self.sameBytes(a, b)
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { Self.sameBytes($0.0, $1.0) && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value of `key` (the same UTF-8 bytes) in an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { Self.sameBytes($0.0, key) }?.1
    }

    /// Whether two strings have the same UTF-8 bytes (not Swift's canonical equivalence).
    static func sameBytes(_ a: String, _ b: String) -> Bool {
        let (left, right) = (a.utf8, b.utf8)
        guard left.count == right.count else { return false }
        return left.withContiguousStorageIfAvailable { leftBytes in
            right.withContiguousStorageIfAvailable { rightBytes in leftBytes.elementsEqual(rightBytes) }
        }.flatMap { $0 } ?? left.elementsEqual(right)
    }

    /// Canonical text: object keys sorted by their UTF-8 bytes, no whitespace.
    public var canonicalText: String {
        var writer = JSONWriter()
        writer.writeCanonical(self)
        return writer.text
    }
}

/// An object key compared and hashed by its UTF-8 bytes: `"\u00e9"` and `"e\u0301"` are two keys, as the
/// canonical text (sorted by bytes) treats them, though Swift's `==` calls the strings equal.
private struct ExactKey: Hashable {
    let text: String

    init(_ text: String) { self.text = text }

    static func == (lhs: ExactKey, rhs: ExactKey) -> Bool { JSONValue.sameBytes(lhs.text, rhs.text) }

    func hash(into hasher: inout Hasher) {
        var text = text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// Why a JSON text could not be parsed.
public struct JSONParseError: Error, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at byte \(offset)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes, with a nesting limit.
public struct JSONParser {
    private let bytes: [UInt8]
    private var index = 0
    private let maxDepth: Int

    /// Parses one JSON value that fills `bytes` (surrounding whitespace allowed).
    public static func parse(_ bytes: [UInt8], maxDepth: Int = 64) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    private func error(_ reason: String) -> JSONParseError {
        JSONParseError(offset: index, reason: reason)
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    /// Parses the value at `index`, inside `depth` arrays and objects.
    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of JSON") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try parseNumber())
        default:
            throw error("unexpected character")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of JSON") }
        let matches = literal.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[index + $0] == expected[$0] }
        }
        guard matches else { throw error("unexpected character") }
        index += count
    }

    /// An array or object inside `depth` others is nesting level `depth + 1`: at most `maxDepth` levels.
    private func checkDepth(_ depth: Int) throws(JSONParseError) {
        guard depth < maxDepth else { throw error("JSON nested deeper than \(maxDepth) levels") }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        try checkDepth(depth)
        index += 1
        var members: [(String, JSONValue)] = []
        var seen: Set<ExactKey> = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try parseString()
            // A few members (a publish object has five at most): a scan beats hashing every key.
            let duplicate =
                members.count < 16
                ? members.contains { JSONValue.sameBytes($0.0, key) } : !seen.insert(ExactKey(key)).inserted
            if members.count == 15 { seen = Set(members.map { ExactKey($0.0) } + [ExactKey(key)]) }
            guard !duplicate else { throw error("duplicate key \"\(key)\"") }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
            index += 1
            skipWhitespace()
            members.append((key, try parseValue(depth: depth + 1)))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of JSON") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            } else {
                throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        try checkDepth(depth)
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of JSON") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            } else {
                throw error("expected ',' or ']'")
            }
        }
    }

    private mutating func parseNumber() throws(JSONParseError) -> String {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { throw error("bad number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if isDigit(bytes[index]) {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        } else {
            throw error("bad number")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("bad number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("bad number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        var runStart = index
        var result = ""
        func flushRun(_ end: Int) throws(JSONParseError) {
            if end > runStart {
                let run = bytes.withUnsafeBufferPointer { buffer -> String? in
                    // Decoding repairs invalid UTF-8; its result is always valid, so it equals the input bytes
                    // exactly when they were valid. (`String(validating:)` goes through unspecialized generics.)
                    let input = UnsafeBufferPointer(rebasing: buffer[runStart..<end])
                    let decoded = String(decoding: input, as: UTF8.self)
                    let same = decoded.utf8.withContiguousStorageIfAvailable { $0.elementsEqual(input) }
                    return (same ?? decoded.utf8.elementsEqual(input)) ? decoded : nil
                }
                guard let run else { throw error("invalid UTF-8 in string") }
                if result.isEmpty { result = run } else { result += run }
            }
        }
        while true {
            guard index < bytes.count else { throw error("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                try flushRun(index)
                index += 1
                return result
            }
            if byte < 0x20 { throw error("control character in string") }
            if byte != UInt8(ascii: "\\") {
                index += 1
                continue
            }
            try flushRun(index)
            index += 1
            guard index < bytes.count else { throw error("unterminated string") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""): result += "\""
            case UInt8(ascii: "\\"): result += "\\"
            case UInt8(ascii: "/"): result += "/"
            case UInt8(ascii: "b"): result += "\u{08}"
            case UInt8(ascii: "f"): result += "\u{0C}"
            case UInt8(ascii: "n"): result += "\n"
            case UInt8(ascii: "r"): result += "\r"
            case UInt8(ascii: "t"): result += "\t"
            case UInt8(ascii: "u"):
                let first = try parseHex4()
                if (0xD800...0xDBFF).contains(first) {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                        bytes[index + 1] == UInt8(ascii: "u")
                    else { throw error("unpaired surrogate") }
                    index += 2
                    let second = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(second) else { throw error("unpaired surrogate") }
                    let value = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    guard let scalar = Unicode.Scalar(value) else { throw error("bad escape") }
                    result.unicodeScalars.append(scalar)
                } else {
                    guard let scalar = Unicode.Scalar(first) else { throw error("unpaired surrogate") }
                    result.unicodeScalars.append(scalar)
                }
            default:
                throw error("bad escape")
            }
            runStart = index
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("bad \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - 0x30)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - 0x61 + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - 0x41 + 10)
            default: throw error("bad \\u escape")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }
}

/// Builds JSON text. One escaper for every JSON the server writes.
public struct JSONWriter {
    public private(set) var text = ""

    public init() {}

    /// A writer whose text has room for `capacity` bytes before it grows.
    public init(capacity: Int) {
        text.reserveCapacity(capacity)
    }

    public mutating func raw(_ fragment: String) {
        text += fragment
    }

    public mutating func string(_ value: String) {
        text += "\""
        var needsEscape = false
        for byte in value.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            needsEscape = true
            break
        }
        if !needsEscape {
            text += value
        } else {
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": text += "\\\""
                case "\\": text += "\\\\"
                case "\n": text += "\\n"
                case "\r": text += "\\r"
                case "\t": text += "\\t"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default:
                    text.unicodeScalars.append(scalar)
                }
            }
        }
        text += "\""
    }

    public mutating func writeCanonical(_ value: JSONValue) {
        switch value {
        case .null: text += "null"
        case .bool(let flag): text += flag ? "true" : "false"
        case .number(let lexeme): text += lexeme
        case .string(let string): self.string(string)
        case .array(let elements):
            text += "["
            for (offset, element) in elements.enumerated() {
                if offset > 0 { text += "," }
                writeCanonical(element)
            }
            text += "]"
        case .object(let members):
            text += "{"
            let sorted = members.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }
            for (offset, member) in sorted.enumerated() {
                if offset > 0 { text += "," }
                string(member.0)
                text += ":"
                writeCanonical(member.1)
            }
            text += "}"
        }
    }

    /// `{"a":1,"b":"x"}` from ordered members whose values are already JSON text.
    public static func object(_ members: KeyValuePairs<String, JSONFragment>) -> String {
        var writer = JSONWriter(capacity: 128)
        writer.text += "{"
        var first = true
        for (key, value) in members {
            if case .omitted = value { continue }
            if !first { writer.text += "," }
            first = false
            writer.string(key)
            writer.text += ":"
            writer.fragment(value)
        }
        writer.text += "}"
        return writer.text
    }

    public mutating func fragment(_ value: JSONFragment) {
        switch value {
        case .string(let string): self.string(string)
        case .int(let number): text += String(number)
        case .bool(let flag): text += flag ? "true" : "false"
        case .raw(let json): text += json
        case .null, .omitted: text += "null"
        }
    }
}

/// A value for ``JSONWriter/object(_:)``.
public enum JSONFragment: Sendable {
    case string(String)
    case int(Int64)
    case bool(Bool)
    /// Already JSON text.
    case raw(String)
    case null
    /// Leave the member out.
    case omitted

    public static func optionalString(_ value: String?) -> JSONFragment {
        value.map { .string($0) } ?? .omitted
    }
}
