/// Topic grammar: 1-256 bytes of `[A-Za-z0-9._~:@!$+=-]` in segments separated by `/`, with no
/// empty segment (PROTOCOL.md, "Topics and selectors").
public enum Topic {
    /// The longest topic, in bytes.
    public static let maxLength = 256

    /// Throws ``EventLogError/Code/invalidTopic`` unless `topic` follows the grammar.
    public static func validate(_ topic: String) throws(EventLogError) {
        if let problem = problem(topic) {
            throw EventLogError(.invalidTopic, "invalid topic \(quoted(topic)): \(problem)")
        }
    }

    /// True when `topic` follows the grammar.
    public static func isValid(_ topic: String) -> Bool {
        problem(topic) == nil
    }

    package static func problem(_ topic: String) -> String? {
        let bytes = topic.utf8
        if bytes.isEmpty { return "it is empty" }
        if bytes.count > maxLength { return "it is longer than \(maxLength) bytes" }
        var previous: UInt8 = UInt8(ascii: "/")
        for byte in bytes {
            if byte == UInt8(ascii: "/") {
                if previous == UInt8(ascii: "/") { return "it has an empty segment" }
            } else if !isTopicByte(byte) {
                return "byte 0x\(String(byte, radix: 16)) is not allowed"
            }
            previous = byte
        }
        if previous == UInt8(ascii: "/") { return "it has an empty segment" }
        return nil
    }

    @inline(__always)
    package static func isTopicByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "@"),
            UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "+"), UInt8(ascii: "="), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    /// A short, printable rendering of untrusted text for error messages.
    package static func quoted(_ text: String) -> String {
        var shown = ""
        for scalar in text.unicodeScalars.prefix(64) {
            shown += scalar.properties.generalCategory == .control ? scalar.escaped(asASCII: true) : String(scalar)
        }
        if text.unicodeScalars.count > 64 { shown += "..." }
        return "\"\(shown)\""
    }
}
