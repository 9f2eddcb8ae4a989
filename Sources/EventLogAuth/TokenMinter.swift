import Crypto
import EventLogWire
import Foundation
import JWTKit

/// Signs HS256 tokens with eventlog's rights claim: `eventlog token mint`, for development and tests.
/// Production tokens come from the application's backend (docs/SECURITY.md).
public enum TokenMinter {
    /// What a minted token says.
    public struct Request: Sendable {
        public var subject: String?
        public var publish: [String] = []
        public var subscribe: [String] = []
        public var admin = false
        public var lifetime: Duration = .seconds(3600)
        public var issuer: String?
        public var audience: String?
        /// The moment it is minted at, in Unix milliseconds.
        public var now = Timestamp.nowMilliseconds()

        public init() {}
    }

    /// A signed token. The selectors are checked first (`invalid_selector` names a bad one), and the
    /// secret must be at least 32 bytes, as eventlogd requires.
    public static func mint(_ request: Request, secret: [UInt8]) async throws -> String {
        _ = try Grants(publish: request.publish, subscribe: request.subscribe, admin: request.admin)
        if let problem = HS256Secret.problem(secret) { throw ConfigurationError(problem) }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        let seconds = request.now / 1000
        let claims = EventLogClaims(
            sub: request.subject,
            iss: request.issuer,
            aud: request.audience.map { EventLogClaims.Audience([$0]) },
            iat: Double(seconds),
            nbf: nil,
            exp: Double(seconds + max(1, request.lifetime.wholeMilliseconds / 1000)),
            eventlog: EventLogClaims.Rights(
                publish: request.publish, subscribe: request.subscribe, admin: request.admin ? true : nil)
        )
        return try await keys.sign(claims)
    }

    /// A new random API key (`elk_` and 32 random bytes) and the SHA-256 the `--api-keys` file holds.
    public static func newAPIKey() -> (key: String, sha256: String) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let key = "elk_" + Base64URL.encode(bytes)
        return (key, APIKeys.hashHex(key))
    }

    /// The SHA-256 of an API key, as the `--api-keys` file holds it.
    public static func apiKeyHash(_ key: String) -> String { APIKeys.hashHex(key) }
}
