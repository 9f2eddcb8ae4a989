import NIOCore
import NIOHTTP1

/// A request with its body, once fully received.
struct Request: Sendable {
    let head: HTTPRequestHead
    let path: String
    let query: [(String, String)]
    let body: ByteBuffer

    init(head: HTTPRequestHead, body: ByteBuffer) {
        self.head = head
        self.body = body
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map(String.init) ?? "/"
        query = parts.count > 1 ? Request.parseQuery(String(parts[1])) : []
    }

    /// The query of a request head that has no body to read (a WebSocket upgrade).
    init(head: HTTPRequestHead) {
        self.init(head: head, body: ByteBuffer())
    }

    /// Every value of a query parameter, percent-decoded.
    func queryValues(_ name: String) -> [String] {
        query.filter { $0.0 == name }.map(\.1)
    }

    /// The last value of a query parameter.
    func queryValue(_ name: String) -> String? {
        query.last { $0.0 == name }?.1
    }

    /// `name=value` pairs split on `&`, percent-decoded; a pair that does not decode is dropped.
    static func parseQuery(_ text: String) -> [(String, String)] {
        text.split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts.first.flatMap({ percentDecode($0) }) else { return nil }
            let value = parts.count > 1 ? percentDecode(parts[1]) : ""
            guard let value else { return nil }
            return (name, value)
        }
    }

    /// `+` is a space; `%XX` a byte; the result must be UTF-8.
    static func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
