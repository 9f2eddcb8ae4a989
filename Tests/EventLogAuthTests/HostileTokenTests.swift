import Crypto
import EventLogWire
import Testing
import _CryptoExtras

@testable import EventLogAuth

@Suite("Hostile tokens: each refused with the exact code, never echoed")
struct HostileTokenTests {
    @Test("alg none (and an empty signature) is invalid_token")
    func algNone() async throws {
        let authenticator = try await hs256Authenticator()
        let payload = Craft.claims(subscribe: ["*"], admin: true)
        for header in [#"{"alg":"none","typ":"JWT"}"#, #"{"alg":"none"}"#] {
            let token = Craft.signingInput(header: header, payload: payload) + "."
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken,
                "alg \"none\" is not accepted; use HS256, ES256 or RS256", credential: token)
        }
        // a valid HS256 signature does not help a token that says none
        let signed = Craft.hs256(header: #"{"alg":"none","typ":"JWT"}"#, payload: payload)
        expectRefusal(
            await authenticator.authenticate(signed, now: testNow), .invalidToken,
            "alg \"none\" is not accepted; use HS256, ES256 or RS256", credential: signed)
    }

    @Test(
        "any other alg is invalid_token, whatever its case",
        arguments: ["HS512", "hs256", "PS256", "EdDSA", "ES384", "RS512", ""])
    func otherAlgorithms(alg: String) async throws {
        let authenticator = try await hs256Authenticator()
        let token = Craft.hs256(header: "{\"alg\":\"\(alg)\",\"typ\":\"JWT\"}", payload: Craft.claims())
        expectRefusal(
            await authenticator.authenticate(token, now: testNow), .invalidToken,
            "alg \"\(alg)\" is not accepted; use HS256, ES256 or RS256", credential: token)
    }

    @Test("algorithm confusion: an HS256 token keyed with the server's public key PEM is invalid_token")
    func algorithmConfusion() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let rsaPEM = TestKeys.rsaA.publicKey.pemRepresentation
        let ecPEM = P256.Signing.PrivateKey().publicKey.pemRepresentation
        var configuration = AuthConfiguration()
        configuration.keyFiles = [try directory.write("rsa.pem", rsaPEM), try directory.write("ec.pem", ecPEM)]
        let authenticator = try await Authenticator(configuration)
        let payload = Craft.claims(subscribe: ["*"], admin: true)
        for pem in [rsaPEM, rsaPEM + "\n", ecPEM] {
            let token = Craft.hs256(payload: payload, secret: Array(pem.utf8))
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken,
                "no key is configured for HS256 tokens", credential: token)
        }
        // the same payload signed with the private key is accepted: the refusal is the alg's, not the payload's
        let genuine = try Craft.rs256(payload: payload, key: TestKeys.rsaA)
        #expect(
            await authenticator.authenticate(genuine, now: testNow).principal?.grants
                == Grants(subscribe: [.all], admin: true))
    }

    @Test("an HS256-only server refuses ES256 and RS256 tokens")
    func wrongFamily() async throws {
        let authenticator = try await hs256Authenticator()
        let es = try Craft.es256(payload: Craft.claims(), key: P256.Signing.PrivateKey())
        expectRefusal(
            await authenticator.authenticate(es, now: testNow), .invalidToken, "no key is configured for ES256 tokens",
            credential: es)
        let rs = try Craft.rs256(payload: Craft.claims(), key: TestKeys.rsaB)
        expectRefusal(
            await authenticator.authenticate(rs, now: testNow), .invalidToken, "no key is configured for RS256 tokens",
            credential: rs)
    }

    @Test("a tampered payload (a widened grant) with the original signature is invalid_token")
    func tamperedPayload() async throws {
        let authenticator = try await hs256Authenticator()
        let original = Craft.hs256(payload: Craft.claims(subscribe: ["orders/1"]))
        #expect(await authenticator.authenticate(original, now: testNow).principal != nil)
        let parts = original.split(separator: ".").map(String.init)
        let payload = String(decoding: try #require(Base64URL.decode(Substring(parts[1]).utf8)), as: UTF8.self)
        #expect(payload.contains("\"orders/1\""))
        let widened = payload.replacingOccurrences(of: "\"orders/1\"", with: "\"*\"")
        let tampered = [parts[0], Craft.segment(widened), parts[2]].joined(separator: ".")
        expectRefusal(
            await (try await hs256Authenticator()).authenticate(tampered, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: tampered)
        // also refused by the authenticator that verified (and remembered) the original
        expectRefusal(
            await authenticator.authenticate(tampered, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: tampered)
        // a changed signature, or none at all
        var signature = Array(parts[2].utf8)
        signature[0] = signature[0] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        for forged in [
            [parts[0], parts[1], String(decoding: signature, as: UTF8.self)].joined(separator: "."),
            parts[0] + "." + parts[1] + ".",
        ] {
            expectRefusal(
                await authenticator.authenticate(forged, now: testNow), .invalidToken,
                "the token's signature does not verify", credential: forged)
        }
    }

    /// A correctly signed HS256 token of exactly `length` bytes.
    private func token(ofLength length: Int) throws -> String {
        func token(_ header: String, filler: Int) -> String {
            Craft.hs256(
                header: header,
                payload: Craft.claims(extra: ["pad": "\"" + String(repeating: "x", count: filler) + "\""]))
        }
        // headers whose base64url lengths (20, 30, 31) differ modulo 4, so every total length can be made
        for header in [#"{"alg":"HS256"}"#, #"{"alg":"HS256","xy":0}"#, #"{"alg":"HS256","xyz":0}"#] {
            // each 3 bytes of filler make 4 bytes of token: start a little below the length sought
            let start = max(0, (length - token(header, filler: 0).utf8.count) * 3 / 4 - 8)
            for filler in start..<start + 32 {
                let candidate = token(header, filler: filler)
                if candidate.utf8.count == length { return candidate }
                if candidate.utf8.count > length { break }
            }
        }
        Issue.record("no token of \(length) bytes")
        return ""
    }

    @Test("a token of 8192 bytes is looked at; 8193 bytes is invalid_token without being parsed")
    func tooLong() async throws {
        let authenticator = try await hs256Authenticator()
        let longest = try token(ofLength: Authenticator.maxCredentialBytes)
        #expect(longest.utf8.count == 8192)
        #expect(await authenticator.authenticate(longest, now: testNow).principal?.name == "alice")
        for length in [8193, 8194, 20_000] {
            let long = try token(ofLength: length)
            #expect(long.utf8.count == length)
            expectRefusal(
                await authenticator.authenticate(long, now: testNow), .invalidToken, "the token is over 8192 bytes",
                credential: long)
        }
        // the limit is in bytes, not characters
        let wide = String(repeating: "é", count: 4097)
        expectRefusal(
            await authenticator.authenticate(wide, now: testNow), .invalidToken, "the token is over 8192 bytes",
            credential: wide)
    }

    @Test("a token without exp (or a non-numeric one) is invalid_token")
    func noExp() async throws {
        let authenticator = try await hs256Authenticator()
        let forever = Craft.hs256(payload: Craft.claims(exp: nil, subscribe: ["*"]))
        expectRefusal(
            await authenticator.authenticate(forever, now: testNow), .invalidToken,
            "the token has no exp; eventlog accepts only tokens that expire", credential: forever)
        let nullExp = Craft.hs256(payload: Craft.claims(exp: nil, extra: ["exp": "null"]))
        expectRefusal(
            await authenticator.authenticate(nullExp, now: testNow), .invalidToken,
            "the token has no exp; eventlog accepts only tokens that expire", credential: nullExp)
        let textExp = Craft.hs256(payload: Craft.claims(exp: nil, extra: ["exp": "\"tomorrow\""]))
        expectRefusal(
            await authenticator.authenticate(textExp, now: testNow), .invalidToken, "the token is malformed",
            credential: textExp)
    }

    @Test("a crit header is invalid_token, even with a good signature")
    func critHeader() async throws {
        let authenticator = try await hs256Authenticator()
        for header in [#"{"alg":"HS256","crit":["exp"]}"#, #"{"alg":"HS256","crit":[]}"#] {
            let token = Craft.hs256(header: header, payload: Craft.claims())
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken,
                "the token's header has crit extensions, which are not supported", credential: token)
        }
    }

    @Test(
        "a bad selector in the eventlog claim is invalid_token, naming the selector",
        arguments: [
            (["orders//1"], [String](), "invalid selector \"orders//1\": it has an empty segment"),
            ([], ["orders/*/1"], "invalid selector \"orders/*/1\": byte 0x2a is not allowed"),
            ([], ["orders/1", ""], "invalid selector \"\": it is empty"),
        ] as [([String], [String], String)]
    )
    func badSelectorClaim(publish: [String], subscribe: [String], problem: String) async throws {
        let authenticator = try await hs256Authenticator()
        let token = Craft.hs256(payload: Craft.claims(publish: publish, subscribe: subscribe))
        expectRefusal(
            await authenticator.authenticate(token, now: testNow), .invalidToken,
            "the token's eventlog claim: \(problem)",
            credential: token)
    }

    @Test("a rights claim of the wrong shape is invalid_token")
    func badRightsShape() async throws {
        let authenticator = try await hs256Authenticator()
        for rights in [#""everything""#, #"{"subscribe":"*"}"#, #"{"admin":"yes"}"#, #"{"publish":[1]}"#] {
            let token = Craft.hs256(payload: Craft.object(["exp": "\(testNowSeconds + 60)", "eventlog": rights]))
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken, "the token is malformed",
                credential: token)
        }
    }

    @Test(
        "a header that is not base64url JSON is invalid_token",
        arguments: [
            "garbage.more.garbage", "..", "a.b.c", "!!!.e30.e30", "e30=.e30.e30", "eyJhbGciOiJIUzI1NiJ9=.e30.x",
            Craft.segment("not json") + ".e30.e30", Craft.segment("[\"HS256\"]") + ".e30.e30",
            Craft.segment("\"HS256\"") + ".e30.e30", Craft.segment(#"{"alg":"HS256""#) + ".e30.e30",
        ])
    func headerNotJSON(token: String) async throws {
        let authenticator = try await hs256Authenticator()
        expectRefusal(
            await authenticator.authenticate(token, now: testNow), .invalidToken,
            "the token's header is not base64url JSON", credential: token)
    }

    @Test("a header without a string alg, or with a kid that is not a string, is invalid_token")
    func headerFields() async throws {
        let authenticator = try await hs256Authenticator()
        for header in [#"{"typ":"JWT"}"#, #"{"alg":256}"#, #"{"alg":null}"#, "{}"] {
            let token = Craft.hs256(header: header, payload: Craft.claims())
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken, "the token's header has no alg",
                credential: token)
        }
        let numericKid = Craft.hs256(header: #"{"alg":"HS256","kid":7}"#, payload: Craft.claims())
        expectRefusal(
            await authenticator.authenticate(numericKid, now: testNow), .invalidToken,
            "the token's kid is not a string",
            credential: numericKid)
    }

    @Test("a well-signed payload that is not JSON is invalid_token (malformed)")
    func payloadNotJSON() async throws {
        let authenticator = try await hs256Authenticator()
        for payload in ["not json", "[1,2]", ""] {
            let input = Craft.segment(Craft.hs256Header) + "." + Craft.segment(payload)
            let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: testSecret))
            let token = input + "." + Base64URL.encode(Array(mac))
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken, "the token is malformed",
                credential: token)
        }
    }

    @Test(
        "a credential that is not three dot-separated parts is looked up as an API key, and is unknown",
        arguments: ["garbage", "a.b", "a.b.c.d", "...", "Bearer x", "elk_nope"])
    func notThreeParts(credential: String) async throws {
        let authenticator = try await hs256Authenticator()
        expectRefusal(
            await authenticator.authenticate(credential, now: testNow), .invalidToken, "not a valid token or API key",
            credential: credential)
    }

    @Test("an empty credential is invalid_token, not anonymous")
    func emptyCredential() async throws {
        let authenticator = try await hs256Authenticator()
        #expect(
            await authenticator.authenticate("", now: testNow)
                == .failure(AuthFailure(.invalidToken, "the token is empty")))
    }

    @Test("refusals are not remembered: a refused token stays refused, a good one is still accepted after")
    func refusalsNotCached() async throws {
        let authenticator = try await hs256Authenticator()
        let early = Craft.hs256(payload: Craft.claims(extra: ["nbf": "\(testNowSeconds + 60)"]))
        #expect(await authenticator.authenticate(early, now: testNow).principal == nil)
        // once nbf has come, the same token is accepted
        #expect(await authenticator.authenticate(early, now: testNow + 60_000).principal?.name == "alice")
    }
}
