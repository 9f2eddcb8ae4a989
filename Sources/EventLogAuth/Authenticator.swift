import EventLogWire
import Foundation
import JWTKit
import Synchronization

/// What eventlogd's auth options configure.
public struct AuthConfiguration: Sendable {
    /// `--jwt-secret-file`: HS256 secrets (the files' bytes, one trailing newline dropped).
    public var secretFiles: [String] = []
    /// `--jwt-key-file`: PEM public keys, ES256 or RS256.
    public var keyFiles: [String] = []
    /// `--jwks-file`: a JWKS with keys told apart by `kid`.
    public var jwksFile: String?
    /// `--jwt-issuer`: the `iss` every token must carry.
    public var issuer: String?
    /// `--jwt-audience`: a value the token's `aud` must hold.
    public var audience: String?
    /// How far `exp` and `nbf` may be off (clock skew between the token's issuer and this server).
    public var leeway: Duration = .seconds(10)
    /// `--api-keys`: the API key file.
    public var apiKeysFile: String?
    /// `--anonymous-subscribe`: what callers without a credential may read.
    public var anonymousSubscribe: [String] = []

    public init() {}

    /// Whether any auth is configured. Without it the server is open: everyone may do everything.
    public var isEnabled: Bool {
        !secretFiles.isEmpty || !keyFiles.isEmpty || jwksFile != nil || apiKeysFile != nil
            || !anonymousSubscribe.isEmpty
    }
}

/// Turns a presented credential (a JWT or an API key) into a ``Principal``.
///
/// Verified tokens are remembered until they expire, so a client that reconnects with the same token
/// costs a dictionary lookup, not a signature check.
public final class Authenticator: Sendable {
    /// The longest credential looked at; longer ones are refused without being parsed.
    public static let maxCredentialBytes = 8192
    /// Verified tokens remembered at most; the memory is cleared when full.
    static let cacheLimit = 4096

    /// Whether auth is on. When it is off every caller is ``Principal/Kind/open``.
    public let isEnabled: Bool
    let keys: KeyRing
    let apiKeys: APIKeys
    let anonymous: Grants
    let issuer: String?
    let audience: String?
    let leewayMilliseconds: Int64
    private let cache = Mutex<[String: Principal]>([:])

    /// Whether any credential can be verified (a JWT key or an API key is configured). Auth on without one
    /// leaves only the anonymous grants: nobody can publish.
    public var acceptsCredentials: Bool { !keys.isEmpty || !apiKeys.entries.isEmpty }

    /// An authenticator with no auth: everyone may do everything.
    public init() {
        isEnabled = false
        keys = KeyRing()
        apiKeys = APIKeys()
        anonymous = .everything
        issuer = nil
        audience = nil
        leewayMilliseconds = 0
    }

    /// Loads the keys and files `configuration` names; the error says which file is wrong and why.
    public init(_ configuration: AuthConfiguration) async throws(ConfigurationError) {
        isEnabled = configuration.isEnabled
        var keys = KeyRing()
        for path in configuration.secretFiles {
            guard let secret = HS256Secret.read(path: path) else {
                throw ConfigurationError("--jwt-secret-file \(path): cannot read the file")
            }
            try await keys.addSecret(secret, source: path)
        }
        for path in configuration.keyFiles {
            try await keys.addPEM(
                String(decoding: try Self.read(path, what: "--jwt-key-file"), as: UTF8.self), source: path)
        }
        if let path = configuration.jwksFile {
            try await keys.addJWKS(
                String(decoding: try Self.read(path, what: "--jwks-file"), as: UTF8.self), source: path)
        }
        self.keys = keys
        if let path = configuration.apiKeysFile {
            apiKeys = try APIKeys(
                parsing: String(decoding: try Self.read(path, what: "--api-keys"), as: UTF8.self), source: path)
        } else {
            apiKeys = APIKeys()
        }
        do {
            anonymous = try Grants(publish: [], subscribe: configuration.anonymousSubscribe)
        } catch {
            throw ConfigurationError("--anonymous-subscribe: \(error.message)")
        }
        issuer = configuration.issuer
        audience = configuration.audience
        leewayMilliseconds = configuration.leeway.wholeMilliseconds
    }

    private static func read(_ path: String, what: String) throws(ConfigurationError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("\(what) \(path): cannot read the file")
        }
        return Array(data)
    }

    /// The caller behind `credential` (the bearer value, the cookie or the query token), or why it is
    /// refused. No credential is the anonymous caller. The failure's message never holds the credential.
    public func authenticate(
        _ credential: String?, now: Int64 = Timestamp.nowMilliseconds()
    ) async -> Result<
        Principal, AuthFailure
    > {
        guard isEnabled else { return .success(Principal(kind: .open, name: "open", grants: .everything)) }
        guard let credential else { return .success(Principal(kind: .anonymous, name: "anonymous", grants: anonymous)) }
        guard credential.utf8.count <= Self.maxCredentialBytes else {
            return .failure(AuthFailure(.invalidToken, "the token is over \(Self.maxCredentialBytes) bytes"))
        }
        guard !credential.isEmpty else { return .failure(AuthFailure(.invalidToken, "the token is empty")) }
        if let cached = cache.withLock({ $0[credential] }) {
            if let expiresAt = cached.expiresAt, now >= expiresAt {
                // expiresAt holds the leeway; the message names exp itself, as a first verification does
                let exp = expiresAt - leewayMilliseconds
                return .failure(
                    AuthFailure(.tokenExpired, "the token expired at \(Timestamp.rfc3339(milliseconds: exp))"))
            }
            return .success(cached)
        }
        let result: Result<Principal, AuthFailure>
        if credential.utf8.count(where: { $0 == UInt8(ascii: ".") }) == 2 {
            result = await verifyJWT(credential, now: now)
        } else if let entry = apiKeys.lookup(credential) {
            result = .success(Principal(kind: .apiKey, name: entry.name, grants: entry.grants.union(anonymous)))
        } else {
            result = .failure(AuthFailure(.invalidToken, "not a valid token or API key"))
        }
        if case .success(let principal) = result {
            cache.withLock { cache in
                if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
                cache[credential] = principal
            }
        }
        return result
    }

    private func verifyJWT(_ token: String, now: Int64) async -> Result<Principal, AuthFailure> {
        // The header is read first, to pin the algorithm: `alg` must be one the configuration has keys
        // for, and only those keys are tried.
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard let headerBytes = Base64URL.decode(parts[0].utf8),
            case .object(let header)? = try? JSONParser.parse(headerBytes)
        else {
            return .failure(AuthFailure(.invalidToken, "the token's header is not base64url JSON"))
        }
        guard case .string(let alg)? = header.first(where: { $0.0 == "alg" })?.1 else {
            return .failure(AuthFailure(.invalidToken, "the token's header has no alg"))
        }
        guard let algorithm = KeyRing.Algorithm(rawValue: alg) else {
            return .failure(
                AuthFailure(.invalidToken, "alg \(Topic.quoted(alg)) is not accepted; use HS256, ES256 or RS256"))
        }
        if header.contains(where: { $0.0 == "crit" }) {
            return .failure(
                AuthFailure(.invalidToken, "the token's header has crit extensions, which are not supported"))
        }
        var kid: String?
        if let value = header.first(where: { $0.0 == "kid" })?.1 {
            guard case .string(let text) = value else {
                return .failure(AuthFailure(.invalidToken, "the token's kid is not a string"))
            }
            kid = text
        }
        let candidates: [KeyRing.Key]
        switch keys.candidates(algorithm: algorithm, kid: kid) {
        case .success(let found): candidates = found
        case .failure(let failure): return .failure(failure)
        }
        var claims: EventLogClaims?
        var malformed = false
        for key in candidates {
            do {
                claims = try await key.collection.verify(token, as: EventLogClaims.self)
                break
            } catch let error as JWTError where error.errorType == .malformedToken {
                malformed = true
            } catch {
                continue
            }
        }
        guard let claims else {
            return .failure(
                AuthFailure(
                    .invalidToken, malformed ? "the token is malformed" : "the token's signature does not verify"))
        }
        return check(claims, now: now)
    }

    /// The claims' times, issuer and audience, then the rights.
    func check(_ claims: EventLogClaims, now: Int64) -> Result<Principal, AuthFailure> {
        guard let exp = claims.exp, exp.isFinite else {
            return .failure(
                AuthFailure(.invalidToken, "the token has no exp; eventlog accepts only tokens that expire"))
        }
        let expiresAt = Int64(min(max(exp, 0), 1e15) * 1000) + leewayMilliseconds
        if now >= expiresAt {
            return .failure(
                AuthFailure(.tokenExpired, "the token expired at \(Timestamp.rfc3339(milliseconds: Int64(exp * 1000)))")
            )
        }
        if let nbf = claims.nbf {
            guard nbf.isFinite, now + leewayMilliseconds >= Int64(min(max(nbf, 0), 1e15) * 1000) else {
                return .failure(AuthFailure(.invalidToken, "the token is not valid yet (nbf)"))
            }
        }
        if let issuer, claims.iss != issuer {
            return .failure(AuthFailure(.invalidToken, "the token's iss is not \(Topic.quoted(issuer))"))
        }
        if let audience, !(claims.aud?.values.contains(audience) ?? false) {
            return .failure(AuthFailure(.invalidToken, "the token's aud does not include \(Topic.quoted(audience))"))
        }
        let rights = claims.eventlog
        let grants: Grants
        do {
            grants = try Grants(
                publish: rights?.publish ?? [], subscribe: rights?.subscribe ?? [], admin: rights?.admin ?? false)
        } catch {
            return .failure(AuthFailure(.invalidToken, "the token's eventlog claim: \(error.message)"))
        }
        return .success(
            Principal(kind: .token, name: claims.sub ?? "token", grants: grants.union(anonymous), expiresAt: expiresAt))
    }
}
