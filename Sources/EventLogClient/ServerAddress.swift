/// Where the server is: parsed from a base URL such as `http://127.0.0.1:8080` or `http://[::1]:8080/prefix`.
struct ServerAddress: Sendable, Hashable {
    /// The host to connect to (an IPv6 address without brackets).
    var host: String
    /// The TCP port.
    var port: Int
    /// A path prefix without a trailing slash (`""` when the server is at the root).
    var pathPrefix: String

    /// The `Host` header value.
    var hostHeader: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port == 80 ? host : "\(host):\(self.port)"
    }

    init(host: String, port: Int, pathPrefix: String = "") {
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
    }

    /// Parses a plain-HTTP base URL: `http://host[:port][/prefix]`.
    init(parsing url: String) throws(EventLogClientError) {
        func invalid(_ why: String) -> EventLogClientError {
            EventLogClientError(.invalidURL, message: "\(why): \(url)")
        }
        let scheme = "http://"
        guard url.lowercased().hasPrefix(scheme) else {
            if url.lowercased().hasPrefix("https://") {
                throw invalid("https is not supported; use a TLS-terminating proxy")
            }
            throw invalid("the base URL must start with http://")
        }
        let rest = url.dropFirst(scheme.count)
        guard !rest.contains("?"), !rest.contains("#") else {
            throw invalid("the base URL must not have a query or a fragment")
        }
        let authority = rest.prefix { $0 != "/" }
        var path = String(rest.dropFirst(authority.count))
        while path.hasSuffix("/") {
            path.removeLast()
        }
        guard !authority.contains("@") else {
            throw invalid("the base URL must not carry credentials")
        }

        let host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw invalid("unterminated IPv6 address")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw invalid("unexpected text after the IPv6 address")
                }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else {
            throw invalid("the base URL has no host")
        }
        var port = 80
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), let value = Int(portText),
                (1...65_535).contains(value)
            else {
                throw invalid("invalid port")
            }
            port = value
        }
        self.init(host: String(host), port: port, pathPrefix: path)
    }

    /// The request target for `path` (which starts with `/`) and query items, percent-encoded.
    func target(_ path: String, query: [(String, String)] = []) -> String {
        var target = self.pathPrefix + path
        for (index, (name, value)) in query.enumerated() {
            target += index == 0 ? "?" : "&"
            target += Self.percentEncode(name) + "=" + Self.percentEncode(value)
        }
        return target
    }

    /// Percent-encodes a query component. Only unreserved characters and `/ : @ *` are left as they are;
    /// in particular `+` is encoded, because form decoding reads it as a space.
    static func percentEncode(_ value: String) -> String {
        var encoded = ""
        encoded.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "*"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                encoded.unicodeScalars.append("%")
                encoded.unicodeScalars.append(hex[Int(byte >> 4)])
                encoded.unicodeScalars.append(hex[Int(byte & 0x0F)])
            }
        }
        return encoded
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool {
        self.isASCII && self.isNumber
    }
}
