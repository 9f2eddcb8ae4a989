import EventLogWire
import Testing

@testable import EventLogAuth

@Suite("Authenticator: auth off, anonymous callers, configuration")
struct AuthenticatorTests {
    private static let anyCredentials: [String?] = [
        nil, "", "garbage", "a.b.c", "..", String(repeating: "x", count: 9000),
        Craft.hs256(payload: Craft.claims(exp: 1)),
        Craft.signingInput(header: #"{"alg":"none"}"#, payload: Craft.claims()) + ".",
    ]

    @Test("auth off (Authenticator()): every credential, even garbage, is the open principal with every right")
    func off() async {
        let authenticator = Authenticator()
        #expect(!authenticator.isEnabled)
        for credential in Self.anyCredentials {
            #expect(
                await authenticator.authenticate(credential, now: testNow)
                    == .success(Principal(kind: .open, name: "open", grants: .everything)))
        }
        #expect(await authenticator.authenticate("x").principal?.kind == .open)
    }

    @Test("auth off (a configuration with nothing in it): the same")
    func offByConfiguration() async throws {
        var configuration = AuthConfiguration()
        configuration.issuer = "https://issuer.example"
        configuration.audience = "eventlog"
        configuration.leeway = .seconds(1)
        #expect(!configuration.isEnabled)
        let authenticator = try await Authenticator(configuration)
        #expect(!authenticator.isEnabled)
        for credential in Self.anyCredentials {
            #expect(
                await authenticator.authenticate(credential, now: testNow)
                    == .success(Principal(kind: .open, name: "open", grants: .everything)))
        }
    }

    @Test("auth is on as soon as any credential source or anonymous grant is configured")
    func enabled() {
        var configurations: [AuthConfiguration] = []
        for index in 0..<5 {
            var configuration = AuthConfiguration()
            switch index {
            case 0: configuration.secretFiles = ["s"]
            case 1: configuration.keyFiles = ["k"]
            case 2: configuration.jwksFile = "j"
            case 3: configuration.apiKeysFile = "a"
            default: configuration.anonymousSubscribe = ["public/*"]
            }
            configurations.append(configuration)
        }
        #expect(configurations.map(\.isEnabled) == [true, true, true, true, true])
        #expect(AuthConfiguration().leeway == .seconds(10))
    }

    @Test("anonymous-subscribe only: no credential is anonymous with exactly those grants")
    func anonymousOnly() async throws {
        var configuration = AuthConfiguration()
        configuration.anonymousSubscribe = ["public/*", "news/1"]
        let authenticator = try await Authenticator(configuration)
        #expect(authenticator.isEnabled)
        let anonymous = Principal(
            kind: .anonymous, name: "anonymous", grants: Grants(subscribe: [.prefix("public"), .topic("news/1")]))
        #expect(await authenticator.authenticate(nil, now: testNow) == .success(anonymous))
        let principal = try #require(await authenticator.authenticate(nil, now: testNow).principal)
        #expect(principal.isUnauthenticated)
        #expect(principal.authorizeSubscribe(try SelectorSet(parsing: ["public/a/*", "news/1"])) == nil)
        #expect(
            principal.authorizeSubscribe(try SelectorSet(parsing: ["news/2"]))?.code == .authenticationRequired)
        #expect(principal.authorizePublish(["public/1"], batch: false)?.code == .authenticationRequired)
        // a credential is still checked: garbage is refused, a token finds no key
        expectRefusal(
            await authenticator.authenticate("garbage", now: testNow), .invalidToken, "not a valid token or API key",
            credential: "garbage")
        let token = Craft.hs256(payload: Craft.claims())
        expectRefusal(
            await authenticator.authenticate(token, now: testNow), .invalidToken,
            "no key is configured for HS256 tokens", credential: token)
    }

    @Test("with only a secret, no credential is anonymous with no right at all")
    func anonymousWithoutGrants() async throws {
        let authenticator = try await hs256Authenticator()
        #expect(
            await authenticator.authenticate(nil, now: testNow)
                == .success(Principal(kind: .anonymous, name: "anonymous", grants: .nothing)))
    }

    @Test("the anonymous grants are added to a token's grants")
    func anonymousAddedToToken() async throws {
        let authenticator = try await hs256Authenticator { $0.anonymousSubscribe = ["public/*"] }
        let token = Craft.hs256(payload: Craft.claims(publish: ["orders/1"], subscribe: ["orders/1"]))
        #expect(
            await authenticator.authenticate(token, now: testNow)
                == .success(
                    Principal(
                        kind: .token, name: "alice",
                        grants: Grants(
                            publish: [.topic("orders/1")], subscribe: [.topic("orders/1"), .prefix("public")]),
                        expiresAt: (testNowSeconds + 600) * 1000 + defaultLeewayMilliseconds)))
        // a token with no rights still reads what anonymous callers read
        let bare = Craft.hs256(payload: Craft.claims(subscribe: []))
        #expect(
            await authenticator.authenticate(bare, now: testNow).principal?.grants
                == Grants(subscribe: [.prefix("public")]))
    }

    @Test("a bad --anonymous-subscribe selector is refused at start")
    func badAnonymousSelector() async {
        var configuration = AuthConfiguration()
        configuration.anonymousSubscribe = ["public/*", "a//b"]
        #expect(
            await configurationError(configuration)?.description
                == "--anonymous-subscribe: invalid selector \"a//b\": it has an empty segment")
    }
}
