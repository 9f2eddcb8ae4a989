import EventLogWire
import Testing

private func parse(_ text: String) throws(JSONParseError) -> JSONValue {
    try JSONParser.parse(Array(text.utf8))
}

private func written(_ string: String) -> String {
    var writer = JSONWriter()
    writer.string(string)
    return writer.text
}

@Suite("JSON writer")
struct JSONWriterTests {
    @Test("strings: quote and backslash escaped, \\n \\r \\t short, other controls as lowercase \\u00XX")
    func stringEscapes() {
        #expect(written("plain") == #""plain""#)
        #expect(written("") == #""""#)
        #expect(written("a\"b\\c") == #""a\"b\\c""#)
        #expect(written("\n\r\t") == #""\n\r\t""#)
        #expect(written("\u{08}\u{0C}") == #""\u0008\u000c""#)
        #expect(written("\u{0}\u{1}\u{1F}") == #""\u0000\u0001\u001f""#)
        // The slash, DEL, non-ASCII, U+2028 and scalars outside the BMP are written as they are.
        #expect(written("/") == #""/""#)
        #expect(written("\u{7F}é€😀\u{2028}\u{FFFF}") == "\"\u{7F}é€😀\u{2028}\u{FFFF}\"")
        // The escaping path keeps the non-ASCII text beside an escape.
        #expect(written("é\n😀") == "\"é\\n😀\"")
    }

    @Test("every control character is written as an escape that parses back to it", arguments: UInt32(0)..<0x20)
    func controlCharactersRoundTrip(value: UInt32) throws {
        let string = "x" + String(Unicode.Scalar(value)!) + "y"
        let text = written(string)
        #expect(!text.utf8.contains { $0 < 0x20 })
        #expect(try parse(text) == .string(string))
    }

    @Test("canonical text: keys sorted by UTF-8 bytes at every level, no whitespace, numbers as written")
    func canonical() throws {
        let value = try parse(
            #"{ "b" : [ 1 , { "z" : null , "a" : true } ] , "a" : "x" , "\u00e9" : 1E+2 , "Z" : 2e-7 , "aa" : [ ] }"#)
        #expect(value.canonicalText == #"{"Z":2e-7,"a":"x","aa":[],"b":[1,{"a":true,"z":null}],"é":1E+2}"#)
        var writer = JSONWriter()
        writer.writeCanonical(value)
        #expect(writer.text == value.canonicalText)
    }

    @Test("canonical order is UTF-8 byte order, not UTF-16 or Unicode canonical order")
    func byteOrder() throws {
        // U+FFFF (EF BF BF) sorts before U+1F600 (F0 9F 98 80); in UTF-16 (D83D DE00) it would come after.
        let value = JSONValue.object([("😀", .number("1")), ("\u{FFFF}", .number("2")), ("~", .number("3"))])
        #expect(value.canonicalText == "{\"~\":3,\"\u{FFFF}\":2,\"😀\":1}")
        // A key that is a prefix of another sorts first.
        #expect(
            JSONValue.object([("ab", .null), ("a", .null), ("", .null)]).canonicalText
                == #"{"":null,"a":null,"ab":null}"#)
    }

    @Test(
        "parse, canonical text, parse again: the same value and the same text",
        arguments: [
            #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            #"[12345678901234567890123,-0,1e400,0.1000000000000000055511151231257827,1E+2,2e-7]"#,
            #""\"\\\/\b\f\n\r\t\u0001\u001f\u007f\u00e9\ud83d\ude00""#,
            #"{"z":{"y":{"x":[{"w":"v"}]}},"\u0000":"nul"}"#,
            "  { \"k\" : \"\u{2028}😀\" }  ",
        ]
    )
    func roundTrip(text: String) throws {
        let value = try parse(text)
        let canonical = value.canonicalText
        let again = try parse(canonical)
        #expect(again.canonicalText == canonical)
        #expect(try parse(again.canonicalText) == again)
        // With its keys already in order the value itself survives.
        if case .object(let members) = value {
            let sorted = members.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }
            if sorted.map(\.0) == members.map(\.0) { #expect(again == value) }
        } else {
            #expect(again == value)
        }
    }

    @Test("object(_:) keeps the members' order, escapes keys and leaves out omitted members")
    func objectBuilder() {
        let text = JSONWriter.object([
            "b": .int(-1), "a\n": .string("x\"y"), "c": .omitted, "d": .null, "e": .raw("[1,2]"), "f": .bool(false),
            "g": .optionalString(nil), "h": .optionalString("s"),
        ])
        #expect(text == #"{"b":-1,"a\n":"x\"y","d":null,"e":[1,2],"f":false,"h":"s"}"#)
        #expect(JSONWriter.object([:]) == "{}")
        #expect(JSONWriter.object(["a": .omitted]) == "{}")
    }
}
