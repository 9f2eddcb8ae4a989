import EventLogWire
import Testing

/// Parses UTF-8 text.
private func parse(_ text: String, maxDepth: Int = 64) throws(JSONParseError) -> JSONValue {
    try JSONParser.parse(Array(text.utf8), maxDepth: maxDepth)
}

/// The error parsing `bytes` throws, or nil when it parses.
private func failure(_ bytes: [UInt8], maxDepth: Int = 64) -> JSONParseError? {
    do {
        _ = try JSONParser.parse(bytes, maxDepth: maxDepth)
        return nil
    } catch {
        return error
    }
}

private func failure(_ text: String, maxDepth: Int = 64) -> JSONParseError? {
    failure(Array(text.utf8), maxDepth: maxDepth)
}

/// `levels` arrays, one inside the other, around `innermost`.
private func nestedArrays(_ levels: Int, around innermost: String = "") -> String {
    String(repeating: "[", count: levels) + innermost + String(repeating: "]", count: levels)
}

@Suite("JSON parser")
struct JSONParserTests {
    // MARK: Numbers

    @Test(
        "a number keeps its exact lexeme, however large, long or signed",
        arguments: [
            "0", "-0", "7", "-12", "12345678901234567890123", "-12345678901234567890123", "1e400", "-1e-400",
            "0.1000000000000000055511151231257827", "1E+2", "2e-7", "1e2", "0.0", "-0.5E-0", "3.14159e+00",
        ]
    )
    func numberLexemes(text: String) throws {
        #expect(try parse(text) == .number(text))
        #expect(try parse(" [\(text)] ") == .array([.number(text)]))
        #expect(try parse(text).canonicalText == text)
    }

    @Test("numbers that differ only in form are different values")
    func numberFormsDiffer() throws {
        #expect(try parse("1.0") != parse("1"))
        #expect(try parse("1e2") != parse("1E2"))
        #expect(try parse("-0") != parse("0"))
    }

    @Test(
        "a malformed number is refused, with the offset of the first byte that cannot continue it",
        arguments: [
            ("01", 1, "unexpected text after the JSON value"),
            ("-01", 2, "unexpected text after the JSON value"),
            ("[01]", 2, "expected ',' or ']'"),
            ("1.", 2, "bad number"),
            ("1.e5", 2, "bad number"),
            (".5", 0, "unexpected character"),
            ("-", 1, "bad number"),
            ("-a", 1, "bad number"),
            ("1e", 2, "bad number"),
            ("1e+", 3, "bad number"),
            ("1E-x", 3, "bad number"),
            ("+1", 0, "unexpected character"),
            ("[1,-]", 4, "bad number"),
            ("0x10", 1, "unexpected text after the JSON value"),
            ("NaN", 0, "unexpected character"),
            ("Infinity", 0, "unexpected character"),
        ] as [(String, Int, String)]
    )
    func badNumbers(text: String, offset: Int, reason: String) throws {
        let error = try #require(failure(text))
        #expect(error.offset == offset)
        #expect(error.reason == reason)
        #expect(error.description == "\(reason) at byte \(offset)")
    }

    // MARK: Structure

    @Test("literals, whitespace, empty and nested containers")
    func structure() throws {
        #expect(try parse("true") == .bool(true))
        #expect(try parse("false") == .bool(false))
        #expect(try parse("null") == .null)
        #expect(try parse(" \t\r\n[ ] \n") == .array([]))
        #expect(try parse("{}") == .object([]))
        let value = try parse(#"{ "a" : [ 1 , { "b" : null } ] , "c" : "d" }"#)
        #expect(value == .object([("a", .array([.number("1"), .object([("b", .null)])])), ("c", .string("d"))]))
        #expect(value["c"] == .string("d"))
        #expect(value["missing"] == nil)
        #expect(JSONValue.array([])["a"] == nil)
    }

    @Test(
        "malformed structure is refused at the offending byte",
        arguments: [
            ("", 0, "unexpected end of JSON"),
            ("   ", 3, "unexpected end of JSON"),
            ("tru", 0, "unexpected end of JSON"),
            ("trux", 0, "unexpected character"),
            ("nul l", 0, "unexpected character"),
            ("1 2", 2, "unexpected text after the JSON value"),
            ("[1,]", 3, "unexpected character"),
            ("[1 2]", 3, "expected ',' or ']'"),
            ("[1", 2, "unexpected end of JSON"),
            (#"{"a":1,}"#, 7, "expected a string key"),
            (#"{"a" 1}"#, 5, "expected ':'"),
            (#"{"a":1 "b":2}"#, 7, "expected ',' or '}'"),
            (#"{"a":1"#, 6, "unexpected end of JSON"),
            ("{1:2}", 1, "expected a string key"),
            ("\u{0C}1", 0, "unexpected character"),
            ("'a'", 0, "unexpected character"),
        ] as [(String, Int, String)]
    )
    func badStructure(text: String, offset: Int, reason: String) throws {
        let error = try #require(failure(text))
        #expect(error.offset == offset)
        #expect(error.reason == reason)
    }

    // MARK: Duplicate keys

    @Test("a key repeated in one object is refused at the byte after the repeat")
    func duplicateKeys() throws {
        let error = try #require(failure(#"{"a":1,"a":2}"#))
        #expect(error.reason == #"duplicate key "a""#)
        #expect(error.offset == 10)
        // Written differently, the same key: the escape is decoded before comparing.
        #expect(failure(#"{"a":1,"\u0061":2}"#)?.reason == #"duplicate key "a""#)
        // Nested objects and sibling objects each have their own keys.
        #expect(try parse(#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#)["b"] != nil)
    }

    @Test(
        "duplicates are found in large objects too (the first 16 keys are scanned, the rest hashed)",
        arguments: [(15, 3), (16, 3), (17, 3), (17, 16), (40, 0), (40, 20), (40, 39)])
    func duplicateKeysInLargeObjects(count: Int, repeated: Int) throws {
        let keys = (0..<count).map { "k\($0)" }
        let members = keys.enumerated().map { "\"\($0.element)\":\($0.offset)" }
        let unique = try parse("{" + members.joined(separator: ",") + "}")
        #expect(unique["k\(count - 1)"] == .number(String(count - 1)))
        let withRepeat = "{" + (members + ["\"k\(repeated)\":0"]).joined(separator: ",") + "}"
        #expect(failure(withRepeat)?.reason == "duplicate key \"k\(repeated)\"")
        // A repeat in the middle, before the object has 16 keys or after.
        let middle =
            "{" + (members.prefix(count / 2) + ["\"k0\":0"] + members.dropFirst(count / 2)).joined(separator: ",")
            + "}"
        #expect(failure(middle)?.reason == "duplicate key \"k0\"")
    }

    @Test("keys that are canonically equivalent but differ in bytes are two keys")
    func canonicallyEquivalentKeys() throws {
        // U+00E9 and e + U+0301: Swift's String == calls them equal; JSON and the canonical text don't.
        let value = try parse(#"{"\u00e9":1,"e\u0301":2}"#)
        guard case .object(let members) = value else {
            Issue.record("not an object")
            return
        }
        #expect(members.count == 2)
        #expect(value["\u{E9}"] == .number("1"))
        #expect(value["e\u{301}"] == .number("2"))
        #expect(value.canonicalText == "{\"e\u{301}\":2,\"\u{E9}\":1}")
        #expect(JSONValue.string("\u{E9}") != .string("e\u{301}"))
    }

    // MARK: Depth

    @Test("exactly maxDepth nested arrays or objects are accepted, one more is refused", arguments: [1, 3, 64])
    func depthLimit(maxDepth: Int) throws {
        #expect(throws: Never.self) { try parse(nestedArrays(maxDepth), maxDepth: maxDepth) }
        #expect(throws: Never.self) { try parse(nestedArrays(maxDepth, around: "1"), maxDepth: maxDepth) }
        #expect(throws: Never.self) { try parse(nestedArrays(maxDepth - 1, around: "{}"), maxDepth: maxDepth) }
        #expect(failure(nestedArrays(maxDepth, around: "{}"), maxDepth: maxDepth)?.offset == maxDepth)
        for deeper in [nestedArrays(maxDepth + 1), nestedArrays(maxDepth + 1, around: "1")] {
            let error = try #require(failure(deeper, maxDepth: maxDepth))
            #expect(error.reason == "JSON nested deeper than \(maxDepth) levels")
            #expect(error.offset == maxDepth)
        }
    }

    @Test("the default limit is 64 levels; objects count like arrays; scalars are no level")
    func defaultDepth() throws {
        #expect(throws: Never.self) { try parse(nestedArrays(64, around: "null")) }
        #expect(failure(nestedArrays(65))?.offset == 64)
        #expect(try parse("1", maxDepth: 0) == .number("1"))
        #expect(failure("[]", maxDepth: 0)?.offset == 0)
        #expect(throws: Never.self) { try parse(#"{"a":{"b":{"c":{}}}}"#, maxDepth: 4) }
        let error = try #require(failure(#"{"a":{"b":{"c":{}}}}"#, maxDepth: 3))
        #expect(error.offset == 15)
        #expect(error.reason == "JSON nested deeper than 3 levels")
        // Breadth is no depth.
        #expect(throws: Never.self) {
            try parse("[" + Array(repeating: "[]", count: 100).joined(separator: ",") + "]", maxDepth: 2)
        }
    }

    // MARK: Strings

    @Test("every escape decodes to its character")
    func escapes() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{08}\u{0C}\n\r\t"))
        #expect(try parse(#""\u0041\u00e9\u00E9\u20AC\u0000\uffff""#) == .string("A\u{E9}\u{E9}\u{20AC}\u{0}\u{FFFF}"))
        #expect(try parse(#""a\u0022b""#) == .string("a\"b"))
        #expect(try parse(#""""#) == .string(""))
        #expect(try parse("\"é😀\u{7F}\"") == .string("é😀\u{7F}"))
    }

    @Test("a surrogate pair decodes to one scalar outside the BMP")
    func surrogatePairs() throws {
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try parse(#""\uD83D\uDE00x""#) == .string("😀x"))
        #expect(try parse(#""\ud800\udc00\udbff\udfff""#) == .string("\u{10000}\u{10FFFF}"))
    }

    @Test(
        "a lone surrogate is refused",
        arguments: [
            (#""\ud83d""#, 7),  // high, then the end of the string
            (#""\ude00""#, 7),  // low alone
            (#""\ud83dx""#, 7),  // high, then a character
            (#""\ud83d\u0041""#, 13),  // high, then an escape that is no low surrogate
            (#""\ud83d\ud83d""#, 13),  // high, then high
            (#""\ud83d\n""#, 7),  // high, then another escape
        ] as [(String, Int)]
    )
    func loneSurrogates(text: String, offset: Int) throws {
        let error = try #require(failure(text))
        #expect(error.reason == "unpaired surrogate")
        #expect(error.offset == offset)
    }

    @Test(
        "bad escapes are refused",
        arguments: [
            (#""\x""#, 3, "bad escape"),
            (#""\'""#, 3, "bad escape"),
            (#""\U0041""#, 3, "bad escape"),
            (#""\u12""#, 3, "bad \\u escape"),
            (#""\u12G4""#, 5, "bad \\u escape"),
            (#""\"#, 2, "unterminated string"),
            (#""abc"#, 4, "unterminated string"),
        ] as [(String, Int, String)]
    )
    func badEscapes(text: String, offset: Int, reason: String) throws {
        let error = try #require(failure(text))
        #expect(error.reason == reason)
        #expect(error.offset == offset)
    }

    @Test("every control character is refused raw in a string; DEL is allowed", arguments: Array(UInt8(0)..<0x20))
    func controlCharacters(byte: UInt8) throws {
        let error = try #require(failure([0x22, 0x61, byte, 0x62, 0x22]))
        #expect(error.reason == "control character in string")
        #expect(error.offset == 2)
        #expect(try JSONParser.parse([0x22, 0x7F, 0x22]) == .string("\u{7F}"))
    }

    @Test(
        "invalid UTF-8 in a string is refused, at the end of the run that holds it",
        arguments: [
            ([0x22, 0xC0, 0xAF, 0x22], 3),  // overlong "/"
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], 4),  // overlong, three bytes
            ([0x22, 0xE2, 0x82, 0x22], 3),  // truncated "€"
            ([0x22, 0x61, 0xF0, 0x9F, 0x98, 0x5C, 0x6E, 0x22], 5),  // truncated "😀" before an escape
            ([0x22, 0xFF, 0x22], 2),
            ([0x22, 0x80, 0x22], 2),  // a lone continuation byte
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 4),  // a UTF-8 encoded surrogate
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 5),  // beyond U+10FFFF
        ] as [([UInt8], Int)]
    )
    func invalidUTF8(bytes: [UInt8], offset: Int) throws {
        let error = try #require(failure(bytes))
        #expect(error.reason == "invalid UTF-8 in string")
        #expect(error.offset == offset)
    }

    @Test("invalid UTF-8 in a key is refused too, and a stray byte outside a string is an unexpected character")
    func invalidUTF8Elsewhere() throws {
        #expect(failure([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])?.reason == "invalid UTF-8 in string")
        #expect(failure([0xFF])?.reason == "unexpected character")
        #expect(failure([0xEF, 0xBB, 0xBF, 0x31])?.reason == "unexpected character")  // no byte order mark
    }
}
