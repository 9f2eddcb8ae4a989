import ArgumentParser
import EventLog
import EventLogAuth
import Foundation

extension EventLogCommand {
    /// `eventlog token`: credentials for a server with access control (docs/CLIENT.md, "Tokens").
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mint tokens and make API keys for a server with access control.",
            subcommands: [Mint.self, NewKey.self, HashKey.self]
        )
    }
}

/// What a token or an API key may do: `--publish`, `--subscribe`, `--admin`.
struct GrantOptions: ParsableArguments {
    @Option(help: "A topic or prefix/* it may publish to; repeatable.")
    var publish: [String] = []

    @Option(help: "A selector it may subscribe to and read the history of; repeatable.")
    var subscribe: [String] = []

    @Flag(help: "The admin grant: it may read /metrics.")
    var admin = false

    /// Each list is checked on its own, so that the error names the option of the bad selector.
    func validate() throws {
        for (option, selectors) in [("--publish", publish), ("--subscribe", subscribe)] {
            do {
                _ = try Grants(publish: selectors, subscribe: [])
            } catch {
                throw ValidationError("\(option): \(error.message)")
            }
        }
    }
}

extension EventLogCommand.Token {
    /// `eventlog token mint`: an HS256 token for development and tests.
    struct Mint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print an HS256 token that eventlogd started with --jwt-secret-file accepts.",
            discussion: """
                For development and tests: production tokens come from your application's backend. The token \
                carries the grants in its eventlog claim, the subject in sub, and expires after --ttl.
                """
        )

        @Option(help: "The HS256 secret's file, as eventlogd's --jwt-secret-file (at least 32 bytes).")
        var secretFile: String

        @Option(help: "The token's subject (sub): the name the server logs.")
        var subject: String?

        @OptionGroup var grants: GrantOptions

        @Option(
            help: "How long the token is valid, e.g. 15m, 1h, 7d; at least 1s. Default 1h.",
            transform: { try MaintenanceText.parseDuration($0) })
        var ttl: Duration = .seconds(3600)

        @Option(help: "The issuer (iss), for a server started with --jwt-issuer.")
        var issuer: String?

        @Option(help: "The audience (aud), for a server started with --jwt-audience.")
        var audience: String?

        /// The secret as eventlogd reads it: the file's bytes without one trailing newline; `nil` when the file
        /// cannot be read.
        private var secret: [UInt8]? { HS256Secret.read(path: secretFile) }

        func validate() throws {
            if ttl < .seconds(1) { throw ValidationError("--ttl must be at least 1s") }
            // eventlogd refuses a shorter secret at start; so does the minter, but here it is a usage error.
            if let secret, let problem = HS256Secret.problem(secret) {
                throw ValidationError("--secret-file \(secretFile): \(problem)")
            }
        }

        func run() async throws {
            guard let secret else { throw UserError("cannot read --secret-file \(secretFile)") }
            var request = TokenMinter.Request()
            request.subject = subject
            request.publish = grants.publish
            request.subscribe = grants.subscribe
            request.admin = grants.admin
            request.lifetime = ttl
            request.issuer = issuer
            request.audience = audience
            print(try await TokenMinter.mint(request, secret: secret))
        }
    }

    /// `eventlog token new-key`: an API key and its `--api-keys` entry.
    struct NewKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new-key",
            abstract: "Print a new API key and, on the next line, its entry for eventlogd's --api-keys file.",
            discussion: """
                The file keeps only the key's SHA-256: put the entry in its "keys" array and give the key (the first \
                line) to the client that presents it (Authorization: Bearer, or eventlog --token).
                """
        )

        @Option(help: "The key's name in the file: the name the server logs.")
        var name = "key-1"

        @OptionGroup var grants: GrantOptions

        func validate() throws {
            if name.isEmpty { throw ValidationError("--name must not be empty") }
        }

        func run() throws {
            let (key, sha256) = TokenMinter.newAPIKey()
            let entry = JSONWriter.object([
                "name": .string(name), "sha256": .string(sha256),
                "publish": .raw(JSONValue.array(grants.publish.map { .string($0) }).canonicalText),
                "subscribe": .raw(JSONValue.array(grants.subscribe.map { .string($0) }).canonicalText),
                "admin": grants.admin ? .bool(true) : .omitted,
            ])
            print(key + "\n" + entry)
        }
    }

    /// `eventlog token hash-key`: the SHA-256 an `--api-keys` entry holds for a key.
    struct HashKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash-key",
            abstract: "Read an API key from stdin and print its SHA-256, as the --api-keys file holds it."
        )

        func run() throws {
            let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            let key = input.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !key.isEmpty else { throw UserError("stdin has no key") }
            print(TokenMinter.apiKeyHash(key))
        }
    }
}
