import Crypto
import EventLogWire
import JWTKit
import _CryptoExtras

/// The keys JWTs are verified with. Each key is pinned to one algorithm by its configuration (HS256 for
/// a secret, ES256 for a P-256 key, RS256 for an RSA key); a token's `alg` only chooses among the keys
/// configured for it, never the algorithm a key is used with. `none` is never accepted.
struct KeyRing: Sendable {
    /// The algorithms eventlog accepts.
    enum Algorithm: String, Sendable, CaseIterable {
        case hs256 = "HS256"
        case es256 = "ES256"
        case rs256 = "RS256"
    }

    struct Key: Sendable {
        let kid: String?
        let algorithm: Algorithm
        /// A collection holding only this key, as its default signer.
        let collection: JWTKeyCollection
        /// Where it came from, for messages.
        let source: String
    }

    private(set) var keys: [Key] = []

    var isEmpty: Bool { keys.isEmpty }

    /// An HS256 secret; at least 32 bytes.
    mutating func addSecret(_ secret: [UInt8], source: String) async throws(ConfigurationError) {
        if let problem = HS256Secret.problem(secret) { throw ConfigurationError("\(source): \(problem)") }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        keys.append(Key(kid: nil, algorithm: .hs256, collection: collection, source: source))
    }

    /// A PEM public key: P-256 (ES256) or RSA (RS256). A private key is refused: the server only verifies.
    mutating func addPEM(_ pem: String, kid: String? = nil, source: String) async throws(ConfigurationError) {
        if pem.contains("PRIVATE KEY") {
            throw ConfigurationError("\(source): this is a private key; give eventlogd the public key only")
        }
        let collection = JWTKeyCollection()
        if let key = try? ES256PublicKey(pem: pem) {
            await collection.add(ecdsa: key)
            keys.append(Key(kid: kid, algorithm: .es256, collection: collection, source: source))
        } else if let key = try? Insecure.RSA.PublicKey(pem: pem) {
            await collection.add(rsa: key, digestAlgorithm: .sha256)
            keys.append(Key(kid: kid, algorithm: .rs256, collection: collection, source: source))
        } else {
            throw ConfigurationError(
                "\(source): not a P-256 EC or RSA (2048 bits or more) public key in PEM form")
        }
    }

    /// A JWKS document (`{"keys":[..]}`). Every key needs a `kid`; its algorithm is its `alg` (ES256 or
    /// RS256) or, without one, follows from `kty` (`EC` with `crv` P-256 is ES256, `RSA` is RS256).
    mutating func addJWKS(_ text: String, source: String) async throws(ConfigurationError) {
        let document: JSONValue
        do {
            document = try JSONParser.parse(Array(text.utf8))
        } catch {
            throw ConfigurationError("\(source): not JSON: \(error)")
        }
        guard case .object(let members) = document, let list = members.first(where: { $0.0 == "keys" })?.1,
            case .array(let entries) = list
        else {
            throw ConfigurationError("\(source): a JWKS is an object with a \"keys\" array")
        }
        var seen: Set<String> = []
        for (index, entry) in entries.enumerated() {
            guard case .object(let fields) = entry else {
                throw ConfigurationError("\(source): key \(index) is not an object")
            }
            func field(_ name: String) -> String? {
                guard case .string(let value)? = fields.first(where: { $0.0 == name })?.1 else { return nil }
                return value
            }
            guard let kid = field("kid"), !kid.isEmpty else {
                throw ConfigurationError("\(source): key \(index) has no \"kid\"")
            }
            guard seen.insert(kid).inserted else {
                throw ConfigurationError("\(source): kid \"\(kid)\" appears twice")
            }
            if field("d") != nil {
                throw ConfigurationError("\(source): key \"\(kid)\" is a private key; give eventlogd public keys only")
            }
            if let use = field("use"), use != "sig" { continue }  // an encryption key is not for us
            let collection = JWTKeyCollection()
            let algorithm: Algorithm
            switch (field("kty"), field("alg"), field("crv")) {
            case ("EC", "ES256"?, "P-256"?), ("EC", nil, "P-256"?):
                guard let x = field("x"), let y = field("y"), let key = try? ES256PublicKey(parameters: (x, y)) else {
                    throw ConfigurationError("\(source): key \"\(kid)\" is not a valid P-256 public key")
                }
                await collection.add(ecdsa: key)
                algorithm = .es256
            case ("RSA", "RS256"?, _), ("RSA", nil, _):
                guard let n = field("n"), let e = field("e"),
                    let key = try? Insecure.RSA.PublicKey(modulus: n, exponent: e)
                else {
                    throw ConfigurationError(
                        "\(source): key \"\(kid)\" is not a valid RSA public key (2048 bits or more)")
                }
                await collection.add(rsa: key, digestAlgorithm: .sha256)
                algorithm = .rs256
            case (let kty, let alg, let crv):
                throw ConfigurationError(
                    "\(source): key \"\(kid)\" (kty \(kty ?? "none"), alg \(alg ?? "none"), crv \(crv ?? "none"))"
                        + " is not supported; eventlog verifies ES256 (EC P-256) and RS256 (RSA)")
            }
            keys.append(Key(kid: kid, algorithm: algorithm, collection: collection, source: source))
        }
        if entries.isEmpty { throw ConfigurationError("\(source): the JWKS holds no keys") }
    }

    /// The keys a token with this header may be verified with: the key its `kid` names (whose algorithm must
    /// be `alg`); otherwise the keys configured without a kid (secrets and PEM keys) for `alg`. A JWKS key is
    /// reached only through its kid, except by a token without one when no kid-less key is configured.
    func candidates(algorithm: Algorithm, kid: String?) -> Result<[Key], AuthFailure> {
        if let kid, let named = keys.first(where: { $0.kid == kid }) {
            guard named.algorithm == algorithm else {
                return .failure(
                    AuthFailure(
                        .invalidToken, "key \"\(kid)\" is for \(named.algorithm.rawValue), not \(algorithm.rawValue)"))
            }
            return .success([named])
        }
        let kidless = keys.filter { $0.kid == nil && $0.algorithm == algorithm }
        if !kidless.isEmpty { return .success(kidless) }
        if kid != nil {
            return .failure(AuthFailure(.invalidToken, "no key is configured for the token's kid"))
        }
        let matching = keys.filter { $0.algorithm == algorithm }
        guard !matching.isEmpty else {
            return .failure(AuthFailure(.invalidToken, "no key is configured for \(algorithm.rawValue) tokens"))
        }
        return .success(matching)
    }
}

/// A configuration that cannot be used; eventlogd refuses to start with this message.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
