import EventLogAuth
import EventLogWire
import Foundation
import Testing

/// A scratch directory with an HS256 secret file, removed by ``remove()``.
private struct Secrets {
    let directory: URL
    /// The secret, 40 bytes.
    static let secret = "0123456789abcdefghijklmnopqrstuvwxyzABCD"

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("eventlog-token-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // The file ends with a newline, as an editor writes it; eventlogd and `token mint` both drop it.
        try write("secret", Self.secret + "\n")
        try write("secret-bare", Self.secret)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        try Data(text.utf8).write(to: directory.appendingPathComponent(name))
        return path(name)
    }

    /// An authenticator configured as eventlogd would be with `--jwt-secret-file <name>` and no leeway.
    func authenticator(
        secretFile name: String = "secret", issuer: String? = nil, audience: String? = nil
    )
        async throws -> Authenticator
    {
        var configuration = AuthConfiguration()
        configuration.secretFiles = [path(name)]
        configuration.issuer = issuer
        configuration.audience = audience
        configuration.leeway = .zero
        return try await Authenticator(configuration)
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

/// Runs `eventlog token mint` and returns the token, with the Unix seconds before and after the run.
private func mint(_ arguments: [String]) throws -> (token: String, before: Int64, after: Int64) {
    let before = Timestamp.nowMilliseconds() / 1000
    let run = try Run.command("eventlog", ["token", "mint"] + arguments)
    let after = Timestamp.nowMilliseconds() / 1000
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stderr == "")
    #expect(run.stdout.hasSuffix("\n"))
    #expect(run.stdout.filter { $0 == "\n" }.count == 1)
    return (String(run.stdout.dropLast()), before, after)
}

private func selectors(_ texts: [String]) throws -> [EventLogWire.Selector] {
    try texts.map { try EventLogWire.Selector(parsing: $0) }
}

@Suite("eventlog token: mint, new-key, hash-key")
struct TokenCommandTests {
    @Test("token mint prints a token eventlogd's authenticator accepts, with exactly the grants, subject and ttl asked")
    func mintVerifies() async throws {
        let secrets = try Secrets()
        defer { secrets.remove() }
        let (token, before, after) = try mint([
            "--secret-file", secrets.path("secret"), "--subject", "alice", "--publish", "orders/*",
            "--subscribe", "orders/1", "--subscribe", "public/*", "--ttl", "2h", "--issuer", "https://id.example",
            "--audience", "eventlog",
        ])
        #expect(token.split(separator: ".").count == 3)
        // Verified as eventlogd verifies it, also with the same secret in a file without the newline.
        for file in ["secret", "secret-bare"] {
            let authenticator = try await secrets.authenticator(
                secretFile: file, issuer: "https://id.example", audience: "eventlog")
            let principal = try await authenticator.authenticate(token).get()
            #expect(principal.kind == .token)
            #expect(principal.name == "alice")
            #expect(
                principal.grants
                    == Grants(
                        publish: try selectors(["orders/*"]), subscribe: try selectors(["orders/1", "public/*"]),
                        admin: false))
            // exp is the minting second plus 2 h (no leeway configured here).
            let expiresAt = try #require(principal.expiresAt)
            #expect(expiresAt % 1000 == 0)
            #expect((before + 7200) * 1000 <= expiresAt && expiresAt <= (after + 7200) * 1000)
            // Accepted up to the last millisecond before exp, refused from exp on.
            let atExpiry = await authenticator.authenticate(token, now: expiresAt)
            #expect(atExpiry.failure?.code == .tokenExpired)
        }
        // Another secret, or another issuer, refuses it.
        try secrets.write("other", String(Secrets.secret.reversed()))
        let other = try await secrets.authenticator(secretFile: "other")
        #expect(await other.authenticate(token).failure?.code == .invalidToken)
        let otherIssuer = try await secrets.authenticator(issuer: "https://elsewhere.example")
        #expect(await otherIssuer.authenticate(token).failure?.code == .invalidToken)
    }

    @Test("token mint without grants: no right at all, admin only with --admin, 1 h by default")
    func mintDefaults() async throws {
        let secrets = try Secrets()
        defer { secrets.remove() }
        let authenticator = try await secrets.authenticator()
        let (plain, before, after) = try mint(["--secret-file", secrets.path("secret")])
        let principal = try await authenticator.authenticate(plain).get()
        #expect(principal.name == "token")
        #expect(principal.grants == Grants.nothing)
        let expiresAt = try #require(principal.expiresAt)
        #expect((before + 3600) * 1000 <= expiresAt && expiresAt <= (after + 3600) * 1000)
        let (admin, _, _) = try mint(["--secret-file", secrets.path("secret"), "--admin", "--ttl", "90s"])
        let adminPrincipal = try await authenticator.authenticate(admin).get()
        #expect(adminPrincipal.grants == Grants(admin: true))
    }

    @Test("token mint: a bad selector, a short secret or a bad ttl is a usage error (2); an unreadable file is 1")
    func mintErrors() throws {
        let secrets = try Secrets()
        defer { secrets.remove() }
        let secret = secrets.path("secret")
        let badSelector = try Run.command(
            "eventlog", ["token", "mint", "--secret-file", secret, "--subscribe", "orders/*", "--subscribe", "a b"])
        #expect(badSelector.status == 2)
        #expect(badSelector.stderr.hasPrefix("Error: --subscribe: invalid selector \"a b\": "))
        #expect(badSelector.stderr.contains("Usage: eventlog token mint "))
        #expect(badSelector.stdout == "")
        let badPublish = try Run.command("eventlog", ["token", "mint", "--secret-file", secret, "--publish", "*/x"])
        #expect(badPublish.status == 2)
        #expect(badPublish.stderr.hasPrefix("Error: --publish: invalid selector \"*/x\""))

        let short = try secrets.write("short", "0123456789\n")
        let shortRun = try Run.command("eventlog", ["token", "mint", "--secret-file", short])
        #expect(shortRun.status == 2)
        #expect(
            shortRun.stderr.hasPrefix(
                "Error: --secret-file \(short): an HS256 secret needs at least 32 bytes, this one has 10\n"))
        #expect(shortRun.stdout == "")

        let ttl = try Run.command("eventlog", ["token", "mint", "--secret-file", secret, "--ttl", "1y"])
        #expect(ttl.status == 2)
        #expect(ttl.stderr.hasPrefix("Error: The value '1y' is invalid for '--ttl <ttl>'"))
        let tooShortTTL = try Run.command("eventlog", ["token", "mint", "--secret-file", secret, "--ttl", "500ms"])
        #expect(tooShortTTL.status == 2)
        #expect(tooShortTTL.stderr.hasPrefix("Error: --ttl must be at least 1s\n"))

        let missing = secrets.path("none")
        let unreadable = try Run.command("eventlog", ["token", "mint", "--secret-file", missing])
        #expect(unreadable.status == 1)
        #expect(unreadable.stderr == "eventlog: cannot read --secret-file \(missing)\n")
    }

    @Test(
        "token new-key prints a key and its --api-keys entry; hash-key gives the entry's sha256; eventlogd accepts it")
    func newKeyAndHashKey() async throws {
        let secrets = try Secrets()
        defer { secrets.remove() }
        let run = try Run.command(
            "eventlog",
            ["token", "new-key", "--name", "orders-backend", "--publish", "orders/*", "--subscribe", "orders/*"])
        #expect(run.status == 0)
        let lines = run.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        try #require(lines.count == 3)
        #expect(lines[2] == "")
        let key = lines[0]
        // `elk_` and 32 random bytes in base64url: 43 characters.
        #expect(key.hasPrefix("elk_") && key.count == 47)
        let hash = try Run.command("eventlog", ["token", "hash-key"], stdin: key + "\n")
        #expect(hash.status == 0)
        #expect(hash.stdout.count == 65)
        let sha256 = String(hash.stdout.dropLast())
        #expect(
            lines[1]
                == #"{"name":"orders-backend","sha256":"\#(sha256)","publish":["orders/*"],"subscribe":["orders/*"]}"#)
        // The entry, in an --api-keys file, makes the key a credential with exactly those grants.
        var configuration = AuthConfiguration()
        configuration.apiKeysFile = try secrets.write("keys.json", #"{"keys":[\#(lines[1])]}"#)
        let authenticator = try await Authenticator(configuration)
        let principal = try await authenticator.authenticate(key).get()
        #expect(principal.kind == .apiKey)
        #expect(principal.name == "orders-backend")
        #expect(
            principal.grants
                == Grants(publish: try selectors(["orders/*"]), subscribe: try selectors(["orders/*"]), admin: false))
        // A second key is another key.
        let second = try Run.command("eventlog", ["token", "new-key"])
        #expect(second.stdout.split(separator: "\n").first.map(String.init) != key)
    }

    @Test("token new-key: the default name, --admin, and a bad selector as a usage error")
    func newKeyOptions() throws {
        let run = try Run.command("eventlog", ["token", "new-key", "--admin"])
        #expect(run.status == 0)
        let lines = run.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 2)
        let sha256 = String(try Run.command("eventlog", ["token", "hash-key"], stdin: lines[0]).stdout.dropLast())
        #expect(lines[1] == #"{"name":"key-1","sha256":"\#(sha256)","publish":[],"subscribe":[],"admin":true}"#)
        let bad = try Run.command("eventlog", ["token", "new-key", "--publish", "orders/"])
        #expect(bad.status == 2)
        #expect(bad.stderr.hasPrefix("Error: --publish: invalid selector \"orders/\""))
        #expect(bad.stdout == "")
    }

    @Test("token hash-key prints the SHA-256 of the key on stdin, without its line break; no key is an error")
    func hashKey() throws {
        // printf elk_test | sha256sum
        let expected = "ce2f39fc143ac274713495eaf2fcce2b2572dbd6d301675ee73fcbb49a0505c9\n"
        #expect(try Run.command("eventlog", ["token", "hash-key"], stdin: "elk_test").stdout == expected)
        #expect(try Run.command("eventlog", ["token", "hash-key"], stdin: "elk_test\r\n").stdout == expected)
        let empty = try Run.command("eventlog", ["token", "hash-key"], stdin: "\n")
        #expect(empty.status == 1)
        #expect(empty.stderr == "eventlog: stdin has no key\n")
    }
}

extension Result {
    /// The error of a failure, `nil` for a success.
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
