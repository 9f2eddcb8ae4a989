import EventLogWire
import Testing

@testable import EventLogAuth

@Suite("API keys: the --api-keys file, lookups and new keys")
struct APIKeyTests {
    private let ordersKey = "orders-backend-key-0123456789"
    private let opsKey = "ops-key-abcdefghijklmnopqrstuv"

    private var file: String {
        """
        {"keys": [
          {"name": "orders-backend", "sha256": "\(TokenMinter.apiKeyHash(ordersKey))",
           "publish": ["orders/*"], "subscribe": ["orders/*"], "admin": false},
          {"name": "ops", "sha256": "\(TokenMinter.apiKeyHash(opsKey).uppercased())", "subscribe": ["*"], "admin": true}
        ]}
        """
    }

    private func authenticator(_ text: String, anonymous: [String] = []) async throws -> Authenticator {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.apiKeysFile = try directory.write("keys.json", text)
        configuration.anonymousSubscribe = anonymous
        return try await Authenticator(configuration)
    }

    /// The error the file gives at start, with the temporary directory's path replaced by `DIR`.
    private func refusal(_ text: String) async throws -> String? {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.apiKeysFile = try directory.write("keys.json", text)
        return await configurationError(configuration)?.description.replacingOccurrences(
            of: directory.url.path, with: "DIR")
    }

    @Test("the SHA-256 of a key, as 64 lowercase hex digits")
    func hash() {
        #expect(TokenMinter.apiKeyHash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(TokenMinter.apiKeyHash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(APIKeys.hashHex("abc") == TokenMinter.apiKeyHash("abc"))
    }

    @Test("each key gives its own entry's name and grants, with no expiry")
    func rightKeys() async throws {
        let authenticator = try await authenticator(file)
        #expect(authenticator.isEnabled)
        #expect(
            await authenticator.authenticate(ordersKey, now: testNow)
                == .success(
                    Principal(
                        kind: .apiKey, name: "orders-backend",
                        grants: Grants(publish: [.prefix("orders")], subscribe: [.prefix("orders")], admin: false))))
        #expect(
            await authenticator.authenticate(opsKey, now: testNow)
                == .success(Principal(kind: .apiKey, name: "ops", grants: Grants(subscribe: [.all], admin: true))))
        // an API key does not expire: still accepted much later (and from the cache)
        #expect(await authenticator.authenticate(opsKey, now: testNow + 365 * 86_400_000).principal?.name == "ops")
    }

    @Test("a wrong key is invalid_token, without the key in the message")
    func wrongKeys() async throws {
        let authenticator = try await authenticator(file)
        for wrong in [ordersKey + "x", String(ordersKey.dropLast()), ordersKey.uppercased(), " " + opsKey, "abc"] {
            expectRefusal(
                await authenticator.authenticate(wrong, now: testNow), .invalidToken, "not a valid token or API key",
                credential: wrong)
        }
        // the hash itself is not the key
        let hash = TokenMinter.apiKeyHash(ordersKey)
        expectRefusal(
            await authenticator.authenticate(hash, now: testNow), .invalidToken, "not a valid token or API key",
            credential: hash)
    }

    @Test("the anonymous grants are added to a key's grants")
    func anonymousAdded() async throws {
        let authenticator = try await authenticator(file, anonymous: ["public/*"])
        let principal = try #require(await authenticator.authenticate(ordersKey, now: testNow).principal)
        #expect(
            principal.grants == Grants(publish: [.prefix("orders")], subscribe: [.prefix("orders"), .prefix("public")]))
    }

    @Test("lookup in the parsed file: the entry whose hash matches, or none")
    func lookup() throws {
        let keys = try APIKeys(parsing: file, source: "keys.json")
        #expect(keys.entries.map(\.name) == ["orders-backend", "ops"])
        #expect(keys.lookup(opsKey)?.name == "ops")
        #expect(keys.lookup(ordersKey)?.grants.publish == [.prefix("orders")])
        #expect(keys.lookup("nope") == nil)
        #expect(APIKeys().lookup("") == nil)
        #expect(try APIKeys(parsing: #"{"keys":[]}"#, source: "k").entries.isEmpty)
    }

    @Test("a file that cannot be used is refused at start, the message naming the entry")
    func badFiles() async throws {
        let hash = TokenMinter.apiKeyHash("k")
        let cases: [(String, String)] = [
            (
                #"{"keys":[{"name":"a","sha256":"\#(hash)"},{"name":"bad-hex","sha256":"\#(String(repeating: "zz", count: 32))"}]}"#,
                "DIR/keys.json: key \"bad-hex\": sha256 must be 64 hex digits"
            ),
            (
                #"{"keys":[{"name":"short","sha256":"\#(hash.dropLast())"}]}"#,
                "DIR/keys.json: key \"short\": sha256 must be 64 hex digits"
            ),
            (
                #"{"keys":[{"name":"long","sha256":"\#(hash)00"}]}"#,
                "DIR/keys.json: key \"long\": sha256 must be 64 hex digits"
            ),
            (
                #"{"keys":[{"name":"signs","sha256":"\#("+f" + hash.dropFirst(2))"}]}"#,
                "DIR/keys.json: key \"signs\": sha256 must be 64 hex digits"
            ),
            (
                #"{"keys":[{"name":"a","sha256":"\#(hash)"},{"name":"a","sha256":"\#(hash)"}]}"#,
                "DIR/keys.json: key 1 needs a name of its own"
            ),
            (#"{"keys":[{"name":"","sha256":"\#(hash)"}]}"#, "DIR/keys.json: key 0 needs a name of its own"),
            (
                #"{"keys":[{"name":"sel","sha256":"\#(hash)","subscribe":["orders//1"]}]}"#,
                "DIR/keys.json: key \"sel\": invalid selector \"orders//1\": it has an empty segment"
            ),
            (
                #"{"keys":[{"name":"pub","sha256":"\#(hash)","publish":["a/*/b"]}]}"#,
                "DIR/keys.json: key \"pub\": invalid selector \"a/*/b\": byte 0x2a is not allowed"
            ),
            (#"{"keys":[{"sha256":"\#(hash)"}]}"#, "DIR/keys.json \"keys\" element: \"name\" is not a string"),
            (#"{"keys":[{"name":"n"}]}"#, "DIR/keys.json \"keys\" element: \"sha256\" is not a string"),
            (
                #"{"keys":[{"name":"n","sha256":"\#(hash)","admin":"yes"}]}"#,
                "DIR/keys.json \"keys\" element: \"admin\" is not a boolean"
            ),
            (
                #"{"keys":[{"name":"n","sha256":"\#(hash)","publish":"a/1"}]}"#,
                "DIR/keys.json \"keys\" element: \"publish\" is not an array of strings"
            ),
            (#"{"key":[]}"#, "DIR/keys.json: \"keys\" is not an array"),
            ("not json", "DIR/keys.json is not valid JSON"),
            ("[]", "DIR/keys.json is not a JSON object"),
        ]
        for (text, message) in cases {
            #expect(try await refusal(text) == message, "\(text)")
        }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.apiKeysFile = directory.missing("keys.json")
        #expect(
            await configurationError(configuration)?.description
                == "--api-keys \(directory.missing("keys.json")): cannot read the file")
    }

    @Test("TokenMinter.newAPIKey: elk_ and 32 random bytes, its hash, accepted once the hash is in the file")
    func newKey() async throws {
        let (key, sha256) = TokenMinter.newAPIKey()
        #expect(key.hasPrefix("elk_"))
        #expect(key.utf8.count == 4 + 43)
        #expect(Base64URL.decode(key.dropFirst(4).utf8)?.count == 32)
        #expect(sha256 == TokenMinter.apiKeyHash(key))
        #expect(sha256.utf8.count == 64)
        #expect(sha256.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(!key.contains("."))
        let other = TokenMinter.newAPIKey()
        #expect(other.key != key && other.sha256 != sha256)

        let authenticator = try await authenticator(
            #"{"keys":[{"name":"fresh","sha256":"\#(sha256)","publish":["jobs/*"]}]}"#)
        #expect(
            await authenticator.authenticate(key, now: testNow)
                == .success(Principal(kind: .apiKey, name: "fresh", grants: Grants(publish: [.prefix("jobs")]))))
        expectRefusal(
            await authenticator.authenticate(other.key, now: testNow), .invalidToken, "not a valid token or API key",
            credential: other.key)
    }
}
