/// The small amount of JSON that export and import need: writing a string, and reading one flat object per
/// line while keeping the exact text of each value. Export writes JSON data as the canonical text stored in
/// the log, and import must store that text byte for byte, so a general JSON decoder (which would
/// re-serialise numbers and reorder keys) does not fit.
enum JSONLine {
    /// A member value of a parsed object.
    enum Value: Equatable {
        case string(String)
        case null
        /// A number, `true`/`false`, an object or an array: its exact text.
        case raw(String)

        var typeName: String {
            switch self {
            case .string: return "a string"
            case .null: return "null"
            case .raw(let text):
                switch text.utf8.first {
                case UInt8(ascii: "{"): return "an object"
                case UInt8(ascii: "["): return "an array"
                case UInt8(ascii: "t"), UInt8(ascii: "f"): return "a boolean"
                default: return "a number"
                }
            }
        }
    }

    struct SyntaxError: Error {
        let message: String
        let offset: Int
    }

    /// Appends `text` as a JSON string literal.
    static func appendString(_ text: String, to output: inout String) {
        output += "\""
        var plainStart = text.unicodeScalars.startIndex
        var index = plainStart
        let scalars = text.unicodeScalars
        while index != scalars.endIndex {
            let scalar = scalars[index]
            let escaped: String?
            switch scalar {
            case "\"": escaped = "\\\""
            case "\\": escaped = "\\\\"
            case "\n": escaped = "\\n"
            case "\r": escaped = "\\r"
            case "\t": escaped = "\\t"
            case "\u{2028}": escaped = "\\u2028"
            case "\u{2029}": escaped = "\\u2029"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    escaped = "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    escaped = nil
                }
            }
            if let escaped {
                output.unicodeScalars.append(contentsOf: scalars[plainStart..<index])
                output += escaped
                plainStart = scalars.index(after: index)
            }
            index = scalars.index(after: index)
        }
        output.unicodeScalars.append(contentsOf: scalars[plainStart..<scalars.endIndex])
        output += "\""
    }

    /// Parses one JSON object, returning its members in order. Member values keep their exact text.
    static func parseObject(_ bytes: [UInt8]) throws(SyntaxError) -> [(String, Value)] {
        var parser = Parser(bytes: bytes)
        parser.skipSpace()
        try parser.expect(UInt8(ascii: "{"))
        var members: [(String, Value)] = []
        parser.skipSpace()
        if parser.peek == UInt8(ascii: "}") {
            parser.index += 1
        } else {
            while true {
                parser.skipSpace()
                let name = try parser.string()
                parser.skipSpace()
                try parser.expect(UInt8(ascii: ":"))
                parser.skipSpace()
                members.append((name, try parser.memberValue()))
                parser.skipSpace()
                if parser.peek == UInt8(ascii: ",") {
                    parser.index += 1
                    continue
                }
                try parser.expect(UInt8(ascii: "}"))
                break
            }
        }
        parser.skipSpace()
        guard parser.index == bytes.count else { throw parser.error("unexpected text after the object") }
        return members
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        func error(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: index) }

        mutating func skipSpace() {
            while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        mutating func expect(_ byte: UInt8) throws(SyntaxError) {
            guard peek == byte else {
                throw error("expected '\(Character(Unicode.Scalar(byte)))'")
            }
            index += 1
        }

        mutating func memberValue() throws(SyntaxError) -> Value {
            switch peek {
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            default:
                let start = index
                try skipValue(depth: 0)
                return .raw(String(decoding: bytes[start..<index], as: UTF8.self))
            }
        }

        mutating func literal(_ word: String) throws(SyntaxError) {
            for byte in word.utf8 {
                guard peek == byte else { throw error("invalid literal, expected \(word)") }
                index += 1
            }
        }

        /// Checks and skips any JSON value.
        mutating func skipValue(depth: Int) throws(SyntaxError) {
            guard depth < 512 else { throw error("nested too deeply") }
            switch peek {
            case UInt8(ascii: "{"):
                index += 1
                skipSpace()
                if peek == UInt8(ascii: "}") {
                    index += 1
                    return
                }
                while true {
                    skipSpace()
                    _ = try string()
                    skipSpace()
                    try expect(UInt8(ascii: ":"))
                    skipSpace()
                    try skipValue(depth: depth + 1)
                    skipSpace()
                    if peek == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    try expect(UInt8(ascii: "}"))
                    return
                }
            case UInt8(ascii: "["):
                index += 1
                skipSpace()
                if peek == UInt8(ascii: "]") {
                    index += 1
                    return
                }
                while true {
                    skipSpace()
                    try skipValue(depth: depth + 1)
                    skipSpace()
                    if peek == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    try expect(UInt8(ascii: "]"))
                    return
                }
            case UInt8(ascii: "\""):
                _ = try string()
            case UInt8(ascii: "t"):
                try literal("true")
            case UInt8(ascii: "f"):
                try literal("false")
            case UInt8(ascii: "n"):
                try literal("null")
            default:
                try number()
            }
        }

        mutating func number() throws(SyntaxError) {
            let start = index
            if peek == UInt8(ascii: "-") { index += 1 }
            func digits(_ parser: inout Parser) -> Int {
                var count = 0
                while let byte = parser.peek, byte >= 48, byte <= 57 {
                    parser.index += 1
                    count += 1
                }
                return count
            }
            let integerStart = index
            guard digits(&self) > 0 else { throw error("invalid value") }
            if bytes[integerStart] == UInt8(ascii: "0") && index - integerStart > 1 {
                throw SyntaxError(message: "a number has a leading zero", offset: start)
            }
            if peek == UInt8(ascii: ".") {
                index += 1
                guard digits(&self) > 0 else { throw error("a number has no digits after '.'") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                index += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
                guard digits(&self) > 0 else { throw error("a number has no exponent digits") }
            }
        }

        mutating func string() throws(SyntaxError) -> String {
            try expect(UInt8(ascii: "\""))
            var result: [UInt8] = []
            while true {
                guard let byte = peek else { throw error("unterminated string") }
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: result, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let escape = peek else { throw error("unterminated string") }
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): result.append(escape)
                    case UInt8(ascii: "b"): result.append(0x08)
                    case UInt8(ascii: "f"): result.append(0x0C)
                    case UInt8(ascii: "n"): result.append(0x0A)
                    case UInt8(ascii: "r"): result.append(0x0D)
                    case UInt8(ascii: "t"): result.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            // A surrogate pair: the low half must follow as another \u escape.
                            guard peek == UInt8(ascii: "\\") else { throw error("unpaired surrogate") }
                            index += 1
                            try expect(UInt8(ascii: "u"))
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                        result.append(contentsOf: Array(String(Character(unicode)).utf8))
                    default:
                        throw error("invalid escape")
                    }
                case 0..<0x20:
                    throw error("a control character in a string")
                default:
                    result.append(byte)
                }
            }
        }

        mutating func hex4() throws(SyntaxError) -> UInt32 {
            guard index + 4 <= bytes.count,
                let value = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16)
            else { throw error("invalid \\u escape") }
            index += 4
            return value
        }
    }
}
