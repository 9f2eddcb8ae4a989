import Crypto
import EventLogWire

/// The API keys of `--api-keys FILE`: for backends that publish, where a key is simpler than a JWT.
///
/// The file holds each key's SHA-256 (never the key), a name and its grants:
/// ```json
/// {"keys": [{"name": "orders-backend", "sha256": "<64 hex digits>", "publish": ["orders/*"],
///            "subscribe": ["orders/*"], "admin": false}]}
/// ```
/// A presented key is hashed and compared with every entry in constant time: how long a lookup takes
/// does not depend on how much of a hash matched, nor on which entry did.
struct APIKeys: Sendable {
    struct Entry: Sendable {
        let name: String
        let hash: [UInt8]
        let grants: Grants
    }

    let entries: [Entry]

    init(entries: [Entry] = []) { self.entries = entries }

    /// Parses the file's text; the error names the entry and what is wrong with it.
    init(parsing text: String, source: String) throws(ConfigurationError) {
        do {
            let document = try JSONObject(parsing: text, what: source)
            var entries: [Entry] = []
            for (index, entry) in try document.objects("keys").enumerated() {
                let name = try entry.string("name")
                guard !name.isEmpty, !entries.contains(where: { $0.name == name }) else {
                    throw ConfigurationError("\(source): key \(index) needs a name of its own")
                }
                let hex = try entry.string("sha256")
                guard let hash = Self.bytes(hex: hex), hash.count == 32 else {
                    throw ConfigurationError("\(source): key \"\(name)\": sha256 must be 64 hex digits")
                }
                let (publish, subscribe) = (try entry.strings("publish"), try entry.strings("subscribe"))
                let admin = try entry.optionalBool("admin") ?? false
                let grants: Grants
                do {
                    grants = try Grants(publish: publish, subscribe: subscribe, admin: admin)
                } catch {
                    throw ConfigurationError("\(source): key \"\(name)\": \(error.message)")
                }
                entries.append(Entry(name: name, hash: hash, grants: grants))
            }
            self.entries = entries
        } catch let error as WireDecodingError {
            throw ConfigurationError(error.message)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError("\(source): \(error)")
        }
    }

    /// The entry whose hash is the key's SHA-256, compared with every entry without an early exit.
    func lookup(_ key: String) -> Entry? {
        let digest = Array(SHA256.hash(data: Array(key.utf8)))
        var found: Int?
        for (index, entry) in entries.enumerated() {
            var difference: UInt8 = 0
            for (a, b) in zip(digest, entry.hash) { difference |= a ^ b }
            if difference == 0 { found = index }
        }
        return found.map { entries[$0] }
    }

    /// The SHA-256 of a key as 64 lowercase hex digits: what goes in the file.
    static func hashHex(_ key: String) -> String {
        SHA256.hash(data: Array(key.utf8)).map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 15)]], as: UTF8.self)
        }.joined()
    }

    private static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        // only hex digits: UInt8(_:radix:) alone would also take a sign ("+f", "-0")
        let isHexDigit = { (byte: UInt8) in
            (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
        }
        guard digits.count % 2 == 0, digits.allSatisfy(isHexDigit) else { return nil }
        var bytes: [UInt8] = []
        for pair in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[pair...pair + 1], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }
}
