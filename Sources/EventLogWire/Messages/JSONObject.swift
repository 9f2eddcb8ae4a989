/// Why a message from the other side could not be decoded: not JSON, not the expected shape, or a field of the
/// wrong type. The message names what was being decoded, e.g. `the history answer: "next" is not an integer`.
public struct WireDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A one-line explanation.
    public let message: String

    /// Creates an error.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { self.message }
}

/// A parsed JSON object with typed accessors that fail with a ``WireDecodingError`` naming the field.
///
/// Numbers stay lexemes (``JSONValue/number(_:)``): an integer field is read from its digits, and any other value
/// can be kept as its exact text.
package struct JSONObject: Sendable {
    private let members: [(String, JSONValue)]
    private let what: String

    /// Parses `bytes` as one JSON object; `what` names it in errors (`the publish answer`).
    package init(parsing bytes: [UInt8], what: String) throws(WireDecodingError) {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw WireDecodingError("\(what) is not valid JSON")
        }
        guard case .object(let members) = value else {
            throw WireDecodingError("\(what) is not a JSON object")
        }
        self.init(members, what: what)
    }

    /// Parses `text` as one JSON object.
    package init(parsing text: String, what: String) throws(WireDecodingError) {
        try self.init(parsing: Array(text.utf8), what: what)
    }

    package init(_ members: [(String, JSONValue)], what: String) {
        self.members = members
        self.what = what
    }

    /// The value of `key`, if present.
    package subscript(key: String) -> JSONValue? {
        self.members.first { $0.0 == key }?.1
    }

    private func violation(_ key: String, _ expected: String) -> WireDecodingError {
        WireDecodingError("\(self.what): \"\(key)\" is not \(expected)")
    }

    package func string(_ key: String) throws(WireDecodingError) -> String {
        guard let value = try self.optionalString(key) else {
            throw self.violation(key, "a string")
        }
        return value
    }

    package func optionalString(_ key: String) throws(WireDecodingError) -> String? {
        switch self[key] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw self.violation(key, "a string")
        }
    }

    package func int64(_ key: String) throws(WireDecodingError) -> Int64 {
        guard let value = try self.optionalInt64(key) else {
            throw self.violation(key, "an integer")
        }
        return value
    }

    /// An integer: digits that fit 64 bits, or a number with a fraction or exponent whose value is exactly one.
    package func optionalInt64(_ key: String) throws(WireDecodingError) -> Int64? {
        switch self[key] {
        case nil, .null?:
            return nil
        case .number(let lexeme)?:
            if let value = Int64(lexeme) {
                return value
            }
            if lexeme.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) }) {
                throw self.violation(key, "a 64-bit integer")
            }
            guard let double = Double(lexeme), let value = Int64(exactly: double) else {
                throw self.violation(key, "an integer")
            }
            return value
        default:
            throw self.violation(key, "an integer")
        }
    }

    package func optionalBool(_ key: String) throws(WireDecodingError) -> Bool? {
        switch self[key] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw self.violation(key, "a boolean")
        }
    }

    /// An RFC 3339 time, as milliseconds since the epoch.
    package func time(_ key: String) throws(WireDecodingError) -> Int64 {
        guard let milliseconds = Timestamp.parseRFC3339(try self.string(key)) else {
            throw self.violation(key, "an RFC 3339 time")
        }
        return milliseconds
    }

    package func optionalObject(_ key: String) throws(WireDecodingError) -> JSONObject? {
        switch self[key] {
        case nil, .null?: return nil
        case .object(let members)?: return JSONObject(members, what: "\(self.what) \"\(key)\"")
        default: throw self.violation(key, "an object")
        }
    }

    /// An array of strings; absent or `null` is empty.
    package func strings(_ key: String) throws(WireDecodingError) -> [String] {
        switch self[key] {
        case nil, .null?: return []
        case .array(let elements)?:
            return try elements.map { element throws(WireDecodingError) in
                guard case .string(let text) = element else { throw self.violation(key, "an array of strings") }
                return text
            }
        default: throw self.violation(key, "an array of strings")
        }
    }

    package func objects(_ key: String) throws(WireDecodingError) -> [JSONObject] {
        guard case .array(let elements)? = self[key] else {
            throw self.violation(key, "an array")
        }
        var objects: [JSONObject] = []
        objects.reserveCapacity(elements.count)
        for element in elements {
            guard case .object(let members) = element else {
                throw self.violation(key, "an array of objects")
            }
            objects.append(JSONObject(members, what: "\(self.what) \"\(key)\" element"))
        }
        return objects
    }
}

extension EventData {
    /// The payload a JSON value carries: a string is text, `null` (or no value) is a tombstone (`nil`), and any
    /// other value is its canonical JSON text, digits untouched.
    public static func decoding(_ value: JSONValue?) -> EventData? {
        switch value {
        case nil, .null?: return nil
        case .string(let text)?: return .text(text)
        case let value?: return .json(value.canonicalText)
        }
    }

    /// The payload as a JSON value for an envelope or a message: JSON data as is, text as a JSON string, a
    /// tombstone as `null`.
    public static func jsonFragment(_ data: EventData?) -> JSONFragment {
        switch data {
        case .none: return .null
        case .text(let text): return .string(text)
        case .json(let json): return .raw(json)
        }
    }
}
