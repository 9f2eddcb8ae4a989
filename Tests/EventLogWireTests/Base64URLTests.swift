import EventLogWire
import Foundation
import Testing

@Suite("Base64URL: unpadded base64url")
struct Base64URLTests {
    private func decode(_ text: String) -> [UInt8]? { Base64URL.decode(Substring(text).utf8) }

    @Test("round trips for every length 0...10, with the expected encoded length", arguments: 0...10)
    func roundTrip(length: Int) throws {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 73 &+ 251) }
        let text = Base64URL.encode(bytes)
        #expect(text.utf8.count == (length * 4 + 2) / 3)
        #expect(!text.contains("="))
        #expect(decode(text) == bytes)
        // the same as Foundation's base64, made url-safe and unpadded
        let foundation = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        #expect(text == foundation)
    }

    @Test(
        "the RFC 4648 vectors, unpadded",
        arguments: [
            ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ])
    func vectors(plain: String, encoded: String) {
        #expect(Base64URL.encode(Array(plain.utf8)) == encoded)
        #expect(decode(encoded) == Array(plain.utf8))
    }

    @Test("the url-safe alphabet: - and _ where base64 has + and /")
    func alphabet() {
        #expect(Base64URL.encode([0xFB, 0xFF, 0xBF]) == "-_-_")
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
        #expect(decode("-_-_") == [0xFB, 0xFF, 0xBF])
        let all = (0...255).map { UInt8($0) }
        #expect(decode(Base64URL.encode(all)) == all)
    }

    @Test(
        "padding, the standard alphabet's + and /, and other bytes are refused; so is a length of 4n + 1",
        arguments: [
            "Zg==", "Zm8=", "Zg=", "=", "Zm9v+", "+/+/", "ab/c", "Zm 9v", "Zm9v\n", "Zm.9", "Zé", "Z", "Zm9vY",
            "Zm9vYmFyZ",
        ])
    func refused(text: String) {
        #expect(decode(text) == nil)
    }
}
