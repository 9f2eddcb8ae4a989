/// The JSON that export and import need, on top of the log's own ``JSONParser`` and ``JSONWriter``: writing
/// a string, and reading one object per line. Export writes JSON data as the canonical text stored in the
/// log; the parser keeps number lexemes and the canonical writer reproduces that text byte for byte.
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

    /// Appends `text` as a JSON string literal, escaped as everywhere else (``JSONWriter``).
    static func appendString(_ text: String, to output: inout String) {
        var writer = JSONWriter()
        writer.string(text)
        output += writer.text
    }

    /// Parses one JSON object (with ``JSONParser``), returning its members in order. Strings and null come
    /// back as such; every other value as its canonical text, which is the exact text the log stores.
    static func parseObject(_ bytes: [UInt8]) throws(SyntaxError) -> [(String, Value)] {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw SyntaxError(message: error.reason, offset: error.offset)
        }
        guard case .object(let members) = value else {
            throw SyntaxError(message: "expected a JSON object", offset: 0)
        }
        return members.map { name, member in
            switch member {
            case .string(let text): return (name, .string(text))
            case .null: return (name, .null)
            default: return (name, .raw(member.canonicalText))
            }
        }
    }
}
