import EventLogWire
import Foundation
import Testing

@testable import EventLogAuth

@Suite("HS256 tokens: secrets, minting, times, issuer and audience")
struct TokenTests {
    private func mint(
        subject: String? = "alice", publish: [String] = ["orders/*"], subscribe: [String] = ["orders/1", "public/*"],
        admin: Bool = false, lifetime: Duration = .seconds(3600), issuer: String? = nil, audience: String? = nil,
        secret: [UInt8] = testSecret
    ) async throws -> String {
        var request = TokenMinter.Request()
        request.subject = subject
        request.publish = publish
        request.subscribe = subscribe
        request.admin = admin
        request.lifetime = lifetime
        request.issuer = issuer
        request.audience = audience
        request.now = testNow
        return try await TokenMinter.mint(request, secret: secret)
    }

    @Test("a minted token verifies: its grants exactly, sub as the name, expiresAt = exp * 1000 + leeway")
    func mintedTokenVerifies() async throws {
        let authenticator = try await hs256Authenticator()
        #expect(authenticator.isEnabled)
        let token = try await mint(admin: true)
        let result = await authenticator.authenticate(token, now: testNow)
        let expected = Principal(
            kind: .token, name: "alice",
            grants: Grants(
                publish: [.prefix("orders")], subscribe: [.topic("orders/1"), .prefix("public")], admin: true),
            expiresAt: (testNowSeconds + 3600) * 1000 + defaultLeewayMilliseconds)
        #expect(result == .success(expected))
    }

    @Test("a token without sub is named token; without rights it may do nothing")
    func noSubjectNoRights() async throws {
        let authenticator = try await hs256Authenticator()
        let token = try await mint(subject: nil, publish: [], subscribe: [])
        let principal = try #require(await authenticator.authenticate(token, now: testNow).principal)
        #expect(principal == Principal(kind: .token, name: "token", grants: .nothing, expiresAt: 1_800_003_610_000))
        let crafted = Craft.hs256(payload: Craft.object(["exp": "\(testNowSeconds + 60)", "eventlog": "{}"]))
        #expect(
            await authenticator.authenticate(crafted, now: testNow)
                == .success(Principal(kind: .token, name: "token", grants: .nothing, expiresAt: 1_800_000_070_000)))
    }

    @Test("what TokenMinter writes: HS256 header, iat, exp = iat + lifetime, the rights claim, no admin when false")
    func mintedClaims() async throws {
        let token = try await mint(issuer: "https://issuer.example", audience: "eventlog")
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        #expect(parts.count == 3)
        let header = try JSONParser.parse(try #require(Base64URL.decode(parts[0].utf8)))
        #expect(header["alg"] == .string("HS256"))
        let payload = try #require(Base64URL.decode(parts[1].utf8))
        let claims = try JSONDecoder().decode(EventLogClaims.self, from: Data(payload))
        #expect(
            claims
                == EventLogClaims(
                    sub: "alice", iss: "https://issuer.example", aud: .init(["eventlog"]), iat: Double(testNowSeconds),
                    nbf: nil,
                    exp: Double(testNowSeconds + 3600),
                    eventlog: .init(publish: ["orders/*"], subscribe: ["orders/1", "public/*"], admin: nil)))
        // whole seconds, written as integers; one audience as a string
        let json = try JSONParser.parse(payload)
        #expect(json["iat"] == .number("1800000000"))
        #expect(json["exp"] == .number("1800003600"))
        #expect(json["aud"] == .string("eventlog"))
        #expect(json["nbf"] == nil)
    }

    @Test(
        "times are NumericDates: integers, fractions and exponents are all accepted in iat, nbf and exp",
        arguments: ["1800000000", "1800000000.5", "1.8e9", "1800000000.0"])
    func numericDates(value: String) async throws {
        let authenticator = try await hs256Authenticator()
        let token = Craft.hs256(
            payload: Craft.object([
                "sub": "\"n\"", "iat": value, "nbf": value, "exp": "\(testNowSeconds + 60)", "eventlog": "{}",
            ]))
        #expect(
            await authenticator.authenticate(token, now: testNow)
                == .success(Principal(kind: .token, name: "n", grants: .nothing, expiresAt: 1_800_000_070_000)))
    }

    @Test("aud is one string or an array of strings, written back the same way")
    func audienceCoding() throws {
        let decoder = JSONDecoder()
        #expect(try decoder.decode(EventLogClaims.Audience.self, from: Data(#""a""#.utf8)).values == ["a"])
        #expect(try decoder.decode(EventLogClaims.Audience.self, from: Data(#"["a","b"]"#.utf8)).values == ["a", "b"])
        #expect(throws: DecodingError.self) { try decoder.decode(EventLogClaims.Audience.self, from: Data("5".utf8)) }
        let encoder = JSONEncoder()
        #expect(String(decoding: try encoder.encode(EventLogClaims.Audience(["a"])), as: UTF8.self) == #""a""#)
        #expect(
            String(decoding: try encoder.encode(EventLogClaims.Audience(["a", "b"])), as: UTF8.self) == #"["a","b"]"#)
    }

    @Test("a lifetime under a second is one second")
    func shortLifetime() async throws {
        let authenticator = try await hs256Authenticator { $0.leeway = .zero }
        let token = try await mint(lifetime: .milliseconds(10))
        let principal = try #require(await authenticator.authenticate(token, now: testNow).principal)
        #expect(principal.expiresAt == testNow + 1000)
    }

    @Test("TokenMinter refuses a bad selector and a secret under 32 bytes")
    func minterRefuses() async throws {
        await #expect(
            throws: EventLogError(.invalidSelector, "invalid selector \"orders//1\": it has an empty segment")
        ) {
            _ = try await mint(subscribe: ["orders//1"])
        }
        let error = await #expect(throws: ConfigurationError.self) {
            _ = try await mint(secret: Array(testSecret.dropLast()))
        }
        #expect(error?.description == "an HS256 secret needs at least 32 bytes, this one has 31")
    }

    @Test("a secret file of 31 bytes is refused at start; a trailing newline does not count")
    func shortSecret() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for (name, bytes) in [("short", Array(testSecret.dropLast())), ("short-nl", testSecret.dropLast() + [0x0A])] {
            var configuration = AuthConfiguration()
            configuration.secretFiles = [try directory.write(name, bytes: bytes)]
            let error = try #require(await configurationError(configuration))
            #expect(
                error.description
                    == "\(directory.url.appendingPathComponent(name).path): an HS256 secret needs at least 32 bytes, this one has 31"
            )
        }
        var missing = AuthConfiguration()
        missing.secretFiles = [directory.missing("nowhere")]
        #expect(
            await configurationError(missing)?.description
                == "--jwt-secret-file \(directory.missing("nowhere")): cannot read the file")
    }

    @Test(
        "one trailing newline (LF or CRLF) of the secret file is dropped",
        arguments: [[0x0A], [0x0D, 0x0A]] as [[UInt8]])
    func trailingNewline(ending: [UInt8]) async throws {
        let authenticator = try await hs256Authenticator(secret: testSecret + ending)
        // minted with the secret without the newline: accepted
        let token = try await mint()
        #expect(await authenticator.authenticate(token, now: testNow).principal?.name == "alice")
        // minted with the newline as part of the secret: a different key, refused
        let withNewline = try await mint(secret: testSecret + ending)
        expectRefusal(
            await authenticator.authenticate(withNewline, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: withNewline)
    }

    @Test("only one newline is dropped: a secret that ends in a blank line keeps the other")
    func onlyOneNewline() async throws {
        let secret = testSecret + [0x0A]
        let authenticator = try await hs256Authenticator(secret: secret + [0x0A])
        #expect(
            await authenticator.authenticate(try await mint(secret: secret), now: testNow).principal?.name == "alice")
        expectRefusal(
            await authenticator.authenticate(try await mint(), now: testNow), .invalidToken,
            "the token's signature does not verify", credential: try await mint())
    }

    @Test("several secret files: a token signed with any of them verifies; another secret does not")
    func severalSecrets() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let second = Array("another secret, also 32 bytes or more".utf8)
        var configuration = AuthConfiguration()
        configuration.secretFiles = [
            try directory.write("one", bytes: testSecret), try directory.write("two", bytes: second),
        ]
        let authenticator = try await Authenticator(configuration)
        #expect(await authenticator.authenticate(try await mint(secret: testSecret), now: testNow).principal != nil)
        #expect(
            await authenticator.authenticate(try await mint(subject: "bob", secret: second), now: testNow).principal?
                .name
                == "bob")
        let foreign = try await mint(secret: Array("a third secret nobody configured!".utf8))
        expectRefusal(
            await authenticator.authenticate(foreign, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: foreign)
    }

    @Test("exp: accepted while now < exp + leeway, token_expired from then on")
    func expiryBoundary() async throws {
        let exp = testNowSeconds + 600
        let token = Craft.hs256(payload: Craft.claims(exp: exp))
        let expiresAt = exp * 1000 + defaultLeewayMilliseconds
        // fresh authenticators, so the verified-token cache plays no part
        let justInside = await (try await hs256Authenticator()).authenticate(token, now: expiresAt - 1)
        #expect(justInside.principal?.expiresAt == expiresAt)
        // past exp but within the leeway: still accepted
        #expect(await (try await hs256Authenticator()).authenticate(token, now: exp * 1000 + 1).principal != nil)
        expectRefusal(
            await (try await hs256Authenticator()).authenticate(token, now: expiresAt), .tokenExpired,
            "the token expired at 2027-01-15T08:10:00.000Z", credential: token)
        expectRefusal(
            await (try await hs256Authenticator()).authenticate(token, now: expiresAt + 3_600_000), .tokenExpired,
            "the token expired at 2027-01-15T08:10:00.000Z", credential: token)
    }

    @Test("the leeway is configurable, zero included")
    func configuredLeeway() async throws {
        let exp = testNowSeconds + 600
        let token = Craft.hs256(payload: Craft.claims(exp: exp))
        let none = try await hs256Authenticator { $0.leeway = .zero }
        #expect(await none.authenticate(token, now: exp * 1000 - 1).principal?.expiresAt == exp * 1000)
        let strict = try await hs256Authenticator { $0.leeway = .zero }
        #expect(
            await strict.authenticate(token, now: exp * 1000)
                == .failure(AuthFailure(.tokenExpired, "the token expired at 2027-01-15T08:10:00.000Z")))
        let generous = try await hs256Authenticator { $0.leeway = .seconds(120) }
        #expect(
            await generous.authenticate(token, now: exp * 1000 + 119_999).principal?.expiresAt == exp * 1000 + 120_000)
    }

    @Test("a token expired long ago is token_expired; a fractional exp counts to the millisecond")
    func expiredAndFractional() async throws {
        let authenticator = try await hs256Authenticator()
        let old = Craft.hs256(payload: Craft.claims(exp: testNowSeconds - 3600))
        expectRefusal(
            await authenticator.authenticate(old, now: testNow), .tokenExpired,
            "the token expired at 2027-01-15T07:00:00.000Z", credential: old)
        let fractional = Craft.hs256(
            payload: Craft.object(["sub": "\"f\"", "exp": "\(testNowSeconds + 1).5"]))
        let principal = try #require(await authenticator.authenticate(fractional, now: testNow).principal)
        #expect(principal.expiresAt == testNow + 1500 + defaultLeewayMilliseconds)
    }

    @Test("nbf: accepted from nbf - leeway on, invalid_token before")
    func notBefore() async throws {
        func token(nbf: String) -> String {
            Craft.hs256(payload: Craft.claims(extra: ["nbf": nbf]))
        }
        // exactly now + leeway: accepted
        let atLeeway = token(nbf: "\(testNowSeconds + 10)")
        #expect(await (try await hs256Authenticator()).authenticate(atLeeway, now: testNow).principal?.name == "alice")
        // in the past: accepted
        #expect(
            await (try await hs256Authenticator()).authenticate(token(nbf: "\(testNowSeconds - 100)"), now: testNow)
                .principal != nil)
        // a millisecond beyond the leeway, and far in the future: refused
        for future in ["\(testNowSeconds + 10).001", "\(testNowSeconds + 11)", "\(testNowSeconds + 86_400)"] {
            let early = token(nbf: future)
            expectRefusal(
                await (try await hs256Authenticator()).authenticate(early, now: testNow), .invalidToken,
                "the token is not valid yet (nbf)", credential: early)
        }
        // with no leeway, nbf must have passed
        let strict = try await hs256Authenticator { $0.leeway = .zero }
        let inOneSecond = token(nbf: "\(testNowSeconds + 1)")
        #expect(
            await strict.authenticate(inOneSecond, now: testNow)
                == .failure(AuthFailure(.invalidToken, "the token is not valid yet (nbf)")))
        #expect(await strict.authenticate(inOneSecond, now: testNow + 1000).principal != nil)
    }

    @Test("iss and aud are checked when configured: right ones accepted, wrong or missing refused")
    func issuerAndAudience() async throws {
        let authenticator = try await hs256Authenticator {
            $0.issuer = "https://issuer.example"
            $0.audience = "eventlog"
        }
        let good = try await mint(issuer: "https://issuer.example", audience: "eventlog")
        #expect(await authenticator.authenticate(good, now: testNow).principal?.name == "alice")

        let issuerMessage = "the token's iss is not \"https://issuer.example\""
        let audienceMessage = "the token's aud does not include \"eventlog\""
        let cases: [(String, String)] = [
            (try await mint(issuer: "https://evil.example", audience: "eventlog"), issuerMessage),
            (try await mint(issuer: nil, audience: "eventlog"), issuerMessage),
            (try await mint(issuer: "https://issuer.example", audience: "other"), audienceMessage),
            (try await mint(issuer: "https://issuer.example", audience: nil), audienceMessage),
            (
                Craft.hs256(
                    payload: Craft.claims(extra: ["iss": "\"https://issuer.example\"", "aud": #"["a","b"]"#])),
                audienceMessage
            ),
            (
                Craft.hs256(
                    payload: Craft.claims(extra: ["iss": "\"https://issuer.example\"", "aud": "[]"])),
                audienceMessage
            ),
            (
                Craft.hs256(
                    payload: Craft.claims(extra: ["iss": "\"https://ISSUER.example\"", "aud": "\"eventlog\""])),
                issuerMessage
            ),
        ]
        for (token, message) in cases {
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken, message, credential: token)
        }

        let inArray = Craft.hs256(
            payload: Craft.claims(extra: ["iss": "\"https://issuer.example\"", "aud": #"["other","eventlog"]"#]))
        #expect(await authenticator.authenticate(inArray, now: testNow).principal?.name == "alice")
    }

    @Test("iss and aud are ignored when not configured")
    func issuerAndAudienceNotConfigured() async throws {
        let authenticator = try await hs256Authenticator()
        let token = try await mint(issuer: "https://anyone.example", audience: "anything")
        #expect(await authenticator.authenticate(token, now: testNow).principal?.name == "alice")
        let arrayAudience = Craft.hs256(payload: Craft.claims(extra: ["aud": #"["x","y"]"#]))
        #expect(await authenticator.authenticate(arrayAudience, now: testNow).principal?.name == "alice")
    }

    @Test("the verified-token cache: a token verified once is refused as token_expired after its expiry")
    func cacheHonoursExpiry() async throws {
        let authenticator = try await hs256Authenticator()
        let token = try await mint(lifetime: .seconds(60))
        let expiresAt = (testNowSeconds + 60) * 1000 + defaultLeewayMilliseconds
        let first = await authenticator.authenticate(token, now: testNow)
        #expect(first.principal?.expiresAt == expiresAt)
        // presented again, before its expiry: the same principal
        #expect(await authenticator.authenticate(token, now: expiresAt - 1) == first)
        // and after: refused, with the same answer a fresh authenticator gives
        let cached = await authenticator.authenticate(token, now: expiresAt)
        let fresh = await (try await hs256Authenticator()).authenticate(token, now: expiresAt)
        expectRefusal(cached, .tokenExpired, "the token expired at 2027-01-15T08:01:00.000Z", credential: token)
        #expect(cached == fresh)
        expectRefusal(
            await authenticator.authenticate(token, now: expiresAt + 86_400_000), .tokenExpired,
            "the token expired at 2027-01-15T08:01:00.000Z", credential: token)
    }
}
