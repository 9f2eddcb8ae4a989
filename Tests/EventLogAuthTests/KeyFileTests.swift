import Crypto
import EventLogWire
import Testing
import _CryptoExtras

@testable import EventLogAuth

@Suite("ES256 and RS256: PEM key files and JWKS")
struct KeyFileTests {
    private let payload = Craft.claims(sub: "svc", publish: ["orders/*"], subscribe: ["orders/1"])
    private let grants = Grants(publish: [.prefix("orders")], subscribe: [.topic("orders/1")])
    private let expiresAt = (testNowSeconds + 600) * 1000 + defaultLeewayMilliseconds

    private func authenticator(keyFiles: [(String, String)] = [], jwks: String? = nil) async throws -> Authenticator {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.keyFiles = try keyFiles.map { try directory.write($0.0, $0.1) }
        if let jwks { configuration.jwksFile = try directory.write("jwks.json", jwks) }
        return try await Authenticator(configuration)
    }

    /// The error loading these files gives, with the temporary directory's path replaced by `DIR`.
    private func refusal(keyFiles: [(String, String)] = [], jwks: String? = nil) async throws -> String? {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.keyFiles = try keyFiles.map { try directory.write($0.0, $0.1) }
        if let jwks { configuration.jwksFile = try directory.write("jwks.json", jwks) }
        return await configurationError(configuration)?.description.replacingOccurrences(
            of: directory.url.path, with: "DIR")
    }

    @Test("an ES256 token verifies with the P-256 public key PEM; another key's signature does not")
    func es256PEM() async throws {
        let key = P256.Signing.PrivateKey()
        let authenticator = try await authenticator(keyFiles: [("ec.pem", key.publicKey.pemRepresentation)])
        let token = try Craft.es256(payload: payload, key: key)
        #expect(
            await authenticator.authenticate(token, now: testNow)
                == .success(Principal(kind: .token, name: "svc", grants: grants, expiresAt: expiresAt)))
        let foreign = try Craft.es256(payload: payload, key: P256.Signing.PrivateKey())
        expectRefusal(
            await authenticator.authenticate(foreign, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: foreign)
        // a DER signature (not the raw r || s JWS uses) is not accepted
        let input = Craft.signingInput(header: Craft.es256Header, payload: payload)
        let der = input + "." + Base64URL.encode(try key.signature(for: Array(input.utf8)).derRepresentation)
        #expect(await authenticator.authenticate(der, now: testNow).principal == nil)
    }

    @Test("an RS256 token verifies with the RSA public key PEM; another key's, or a PSS signature, does not")
    func rs256PEM() async throws {
        let authenticator = try await authenticator(keyFiles: [("rsa.pem", TestKeys.rsaA.publicKey.pemRepresentation)])
        let token = try Craft.rs256(payload: payload, key: TestKeys.rsaA)
        #expect(
            await authenticator.authenticate(token, now: testNow)
                == .success(Principal(kind: .token, name: "svc", grants: grants, expiresAt: expiresAt)))
        for forged in [
            try Craft.rs256(payload: payload, key: TestKeys.rsaB),
            try Craft.rs256(payload: payload, key: TestKeys.rsaA, padding: .PSS),
        ] {
            expectRefusal(
                await authenticator.authenticate(forged, now: testNow), .invalidToken,
                "the token's signature does not verify", credential: forged)
        }
    }

    @Test("ES256 and RS256 PEMs side by side: each token goes to the key of its alg; the alg is not switchable")
    func bothPEMs() async throws {
        let ec = P256.Signing.PrivateKey()
        let authenticator = try await authenticator(keyFiles: [
            ("ec.pem", ec.publicKey.pemRepresentation), ("rsa.pem", TestKeys.rsaA.publicKey.pemRepresentation),
        ])
        #expect(
            await authenticator.authenticate(try Craft.es256(payload: payload, key: ec), now: testNow).principal != nil)
        #expect(
            await authenticator.authenticate(try Craft.rs256(payload: payload, key: TestKeys.rsaA), now: testNow)
                .principal != nil)
        // an RS256 signature under an ES256 header, and the other way round
        let rsSigned = try Craft.rs256(header: Craft.es256Header, payload: payload, key: TestKeys.rsaA)
        let esSigned = try Craft.es256(header: Craft.rs256Header, payload: payload, key: ec)
        for token in [rsSigned, esSigned] {
            expectRefusal(
                await authenticator.authenticate(token, now: testNow), .invalidToken,
                "the token's signature does not verify", credential: token)
        }
    }

    @Test("a private key PEM is refused at start")
    func privatePEM() async throws {
        let message = "DIR/key.pem: this is a private key; give eventlogd the public key only"
        #expect(try await refusal(keyFiles: [("key.pem", P256.Signing.PrivateKey().pemRepresentation)]) == message)
        #expect(try await refusal(keyFiles: [("key.pem", TestKeys.rsaA.pemRepresentation)]) == message)
        // a private key after a good public key still stops the start
        let both = [
            ("pub.pem", P256.Signing.PrivateKey().publicKey.pemRepresentation),
            ("key.pem", TestKeys.rsaB.pemRepresentation),
        ]
        #expect(try await refusal(keyFiles: both) == message)
    }

    @Test("a file that is not a P-256 or RSA public key PEM is refused at start; a missing file too")
    func badPEM() async throws {
        let message = "DIR/key.pem: not a P-256 EC or RSA (2048 bits or more) public key in PEM form"
        for text in [
            "", "not a key", P384.Signing.PrivateKey().publicKey.pemRepresentation,
            Curve25519.Signing.PrivateKey().publicKey.rawRepresentation.base64EncodedString(),
        ] {
            #expect(try await refusal(keyFiles: [("key.pem", text)]) == message)
        }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.keyFiles = [directory.missing("absent.pem")]
        #expect(
            await configurationError(configuration)?.description
                == "--jwt-key-file \(directory.missing("absent.pem")): cannot read the file")
    }

    @Test("a JWKS with keys told apart by kid: each token verifies with the key its kid names")
    func jwksByKid() async throws {
        let a = P256.Signing.PrivateKey()
        let b = P256.Signing.PrivateKey()
        let jwks = """
            {"keys":[\(jwk(a.publicKey, kid: "a")),\(jwk(b.publicKey, kid: "b", alg: nil)),\
            \(try jwk(TestKeys.rsaA.publicKey, kid: "r"))]}
            """
        let authenticator = try await authenticator(jwks: jwks)
        let expected = Principal(kind: .token, name: "svc", grants: grants, expiresAt: expiresAt)

        let byA = try Craft.es256(header: #"{"alg":"ES256","kid":"a"}"#, payload: payload, key: a)
        #expect(await authenticator.authenticate(byA, now: testNow) == .success(expected))
        let byB = try Craft.es256(header: #"{"alg":"ES256","kid":"b"}"#, payload: payload, key: b)
        #expect(await authenticator.authenticate(byB, now: testNow) == .success(expected))
        let byR = try Craft.rs256(header: #"{"alg":"RS256","kid":"r"}"#, payload: payload, key: TestKeys.rsaA)
        #expect(await authenticator.authenticate(byR, now: testNow) == .success(expected))

        // kid "a", signed by key "b": refused, although "b" is a configured key
        let crossed = try Craft.es256(header: #"{"alg":"ES256","kid":"a"}"#, payload: payload, key: b)
        expectRefusal(
            await authenticator.authenticate(crossed, now: testNow), .invalidToken,
            "the token's signature does not verify", credential: crossed)

        // kid names the RS256 key, alg says ES256: refused before any signature is looked at
        for key in [a, b] {
            let confused = try Craft.es256(header: #"{"alg":"ES256","kid":"r"}"#, payload: payload, key: key)
            expectRefusal(
                await authenticator.authenticate(confused, now: testNow), .invalidToken,
                "key \"r\" is for RS256, not ES256", credential: confused)
        }
        let hsWithKid = Craft.hs256(header: #"{"alg":"HS256","kid":"a"}"#, payload: payload)
        expectRefusal(
            await authenticator.authenticate(hsWithKid, now: testNow), .invalidToken,
            "key \"a\" is for ES256, not HS256",
            credential: hsWithKid)
        let hsNoKid = Craft.hs256(payload: payload)
        expectRefusal(
            await authenticator.authenticate(hsNoKid, now: testNow), .invalidToken,
            "no key is configured for HS256 tokens", credential: hsNoKid)

        // a kid the JWKS does not hold, signed by a key it does not hold
        let stranger = try Craft.es256(
            header: #"{"alg":"ES256","kid":"zzz"}"#, payload: payload, key: P256.Signing.PrivateKey())
        expectRefusal(
            await authenticator.authenticate(stranger, now: testNow), .invalidToken,
            "no key is configured for the token's kid", credential: stranger)
        // a JWKS key is reached only by its own kid: an unknown kid signed by key "a" is refused too
        let unknownKid = try Craft.es256(header: #"{"alg":"ES256","kid":"zzz"}"#, payload: payload, key: a)
        expectRefusal(
            await authenticator.authenticate(unknownKid, now: testNow), .invalidToken,
            "no key is configured for the token's kid", credential: unknownKid)
    }

    @Test("a JWKS key's alg follows from kty and crv when it has none")
    func jwksWithoutAlg() async throws {
        let ec = P256.Signing.PrivateKey()
        let jwks = """
            {"keys":[\(jwk(ec.publicKey, kid: "e", alg: nil)),\(try jwk(TestKeys.rsaB.publicKey, kid: "r", alg: nil))]}
            """
        let authenticator = try await authenticator(jwks: jwks)
        let es = try Craft.es256(header: #"{"alg":"ES256","kid":"e"}"#, payload: payload, key: ec)
        #expect(await authenticator.authenticate(es, now: testNow).principal?.name == "svc")
        let rs = try Craft.rs256(header: #"{"alg":"RS256","kid":"r"}"#, payload: payload, key: TestKeys.rsaB)
        #expect(await authenticator.authenticate(rs, now: testNow).principal?.name == "svc")
        let confused = try Craft.rs256(header: #"{"alg":"RS256","kid":"e"}"#, payload: payload, key: TestKeys.rsaB)
        expectRefusal(
            await authenticator.authenticate(confused, now: testNow), .invalidToken,
            "key \"e\" is for ES256, not RS256",
            credential: confused)
    }

    @Test("a JWKS key that is not for signatures is skipped")
    func jwksEncryptionKeySkipped() async throws {
        let ec = P256.Signing.PrivateKey()
        let encryption = jwk(ec.publicKey, kid: "enc").replacingOccurrences(
            of: "\"use\":\"sig\"", with: "\"use\":\"enc\"")
        let authenticator = try await authenticator(jwks: "{\"keys\":[\(encryption)]}")
        let token = try Craft.es256(header: #"{"alg":"ES256","kid":"enc"}"#, payload: payload, key: ec)
        expectRefusal(
            await authenticator.authenticate(token, now: testNow), .invalidToken,
            "no key is configured for the token's kid", credential: token)
    }

    @Test("a JWKS that cannot be used is refused at start, naming the key")
    func badJWKS() async throws {
        let ec = P256.Signing.PrivateKey()
        let good = jwk(ec.publicKey, kid: "a")
        let privateJWK = good.replacingOccurrences(
            of: "}", with: ",\"d\":\"\(Base64URL.encode(ec.rawRepresentation))\"}")
        let noKid = good.replacingOccurrences(of: "\"kid\":\"a\",", with: "")
        let emptyKid = good.replacingOccurrences(of: "\"kid\":\"a\"", with: "\"kid\":\"\"")
        let badX = good.replacingOccurrences(of: "\"x\":\"", with: "\"x\":\"AAAA")
        let rsaPublic = try TestKeys.rsaA.publicKey.getKeyPrimitives()
        let cases: [(String, String)] = [
            (
                "{\"keys\":[\(privateJWK)]}",
                "DIR/jwks.json: key \"a\" is a private key; give eventlogd public keys only"
            ),
            ("{\"keys\":[\(good),\(noKid)]}", "DIR/jwks.json: key 1 has no \"kid\""),
            ("{\"keys\":[\(emptyKid)]}", "DIR/jwks.json: key 0 has no \"kid\""),
            ("{\"keys\":[\(good),\(good)]}", "DIR/jwks.json: kid \"a\" appears twice"),
            ("{\"keys\":[]}", "DIR/jwks.json: the JWKS holds no keys"),
            ("{\"keys\":[1]}", "DIR/jwks.json: key 0 is not an object"),
            ("{\"key\":[]}", "DIR/jwks.json: a JWKS is an object with a \"keys\" array"),
            ("[]", "DIR/jwks.json: a JWKS is an object with a \"keys\" array"),
            ("{\"keys\":[\(badX)]}", "DIR/jwks.json: key \"a\" is not a valid P-256 public key"),
            (
                #"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AAAA"}]}"#,
                "DIR/jwks.json: key \"ed\" (kty OKP, alg none, crv Ed25519) is not supported;"
                    + " eventlog verifies ES256 (EC P-256) and RS256 (RSA)"
            ),
            (
                #"{"keys":[{"kty":"EC","crv":"P-384","alg":"ES384","kid":"p384","x":"AA","y":"AA"}]}"#,
                "DIR/jwks.json: key \"p384\" (kty EC, alg ES384, crv P-384) is not supported;"
                    + " eventlog verifies ES256 (EC P-256) and RS256 (RSA)"
            ),
            (
                "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
                "DIR/jwks.json: key \"short\" is not a valid RSA public key (2048 bits or more)"
            ),
            (
                "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"alg\":\"PS256\",\"n\":\"\(Base64URL.encode(rsaPublic.modulus))\",\"e\":\"AQAB\"}]}",
                "DIR/jwks.json: key \"r\" (kty RSA, alg PS256, crv none) is not supported;"
                    + " eventlog verifies ES256 (EC P-256) and RS256 (RSA)"
            ),
        ]
        for (jwks, message) in cases {
            #expect(try await refusal(jwks: jwks) == message, "\(jwks)")
        }
        #expect(try await refusal(jwks: "not json")?.hasPrefix("DIR/jwks.json: not JSON: ") == true)

        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var configuration = AuthConfiguration()
        configuration.jwksFile = directory.missing("jwks.json")
        #expect(
            await configurationError(configuration)?.description
                == "--jwks-file \(directory.missing("jwks.json")): cannot read the file")
    }
}
