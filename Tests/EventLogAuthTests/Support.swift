import Crypto
import EventLogWire
import Foundation
import Testing
import _CryptoExtras

@testable import EventLogAuth

/// The fixed "now" every test authenticates at: 2027-01-15T08:00:00.000Z, in Unix milliseconds.
let testNow: Int64 = 1_800_000_000_000
/// `testNow` in whole seconds, as JWT times are written.
let testNowSeconds: Int64 = testNow / 1000
/// A 32-byte HS256 secret: the shortest one accepted.
let testSecret = Array("0123456789abcdef0123456789abcdef".utf8)
/// The default leeway of ``AuthConfiguration``, in milliseconds.
let defaultLeewayMilliseconds: Int64 = 10_000

/// A directory of its own under the system's temporary directory. Call ``remove()`` (in a `defer`): it is
/// not removed on deinit, so its lifetime never ends before the files are read.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("eventlog-auth-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// Writes `bytes` to the file `name` in this directory and returns its path.
    func write(_ name: String, bytes: [UInt8]) throws -> String {
        let file = url.appendingPathComponent(name)
        try Data(bytes).write(to: file)
        return file.path
    }

    /// Writes `text` as UTF-8 to the file `name` in this directory and returns its path.
    func write(_ name: String, _ text: String) throws -> String {
        try write(name, bytes: Array(text.utf8))
    }

    /// A path in this directory where no file is.
    func missing(_ name: String) -> String { url.appendingPathComponent(name).path }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// Hand-made JWTs: any header, any payload, signed (or not) with any key.
enum Craft {
    static let hs256Header = #"{"alg":"HS256","typ":"JWT"}"#
    static let es256Header = #"{"alg":"ES256","typ":"JWT"}"#
    static let rs256Header = #"{"alg":"RS256","typ":"JWT"}"#

    /// The base64url form of `text`'s UTF-8 bytes: a JWT segment.
    static func segment(_ text: String) -> String { Base64URL.encode(Array(text.utf8)) }

    /// A JSON object from members whose values are JSON text already (`"\"alice\""`, `"1800000600"`).
    static func object(_ members: KeyValuePairs<String, String>) -> String {
        "{" + members.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
    }

    /// A JSON array of strings.
    static func strings(_ values: [String]) -> String {
        "[" + values.map { "\"\($0)\"" }.joined(separator: ",") + "]"
    }

    /// Claims with `sub`, `exp` (ten minutes after `testNow` unless given) and the rights claim.
    static func claims(
        sub: String = "alice", exp: Int64? = testNowSeconds + 600, publish: [String] = [],
        subscribe: [String] = ["orders/1"], admin: Bool = false, extra: KeyValuePairs<String, String> = [:]
    ) -> String {
        var members = ["\"sub\":\"\(sub)\""]
        if let exp { members.append("\"exp\":\(exp)") }
        let rights = "{\"publish\":\(strings(publish)),\"subscribe\":\(strings(subscribe)),\"admin\":\(admin)}"
        members.append("\"eventlog\":\(rights)")
        members += extra.map { "\"\($0.key)\":\($0.value)" }
        return "{" + members.joined(separator: ",") + "}"
    }

    /// `header.payload` as a JWT signs it.
    static func signingInput(header: String, payload: String) -> String {
        segment(header) + "." + segment(payload)
    }

    static func hs256(header: String = hs256Header, payload: String, secret: [UInt8] = testSecret) -> String {
        let input = signingInput(header: header, payload: payload)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + Base64URL.encode(Array(mac))
    }

    /// ES256 signs with the raw `r || s` (64 bytes), as RFC 7518 says.
    static func es256(header: String = es256Header, payload: String, key: P256.Signing.PrivateKey) throws -> String {
        let input = signingInput(header: header, payload: payload)
        let signature = try key.signature(for: Array(input.utf8))
        return input + "." + Base64URL.encode(signature.rawRepresentation)
    }

    static func rs256(
        header: String = rs256Header, payload: String, key: _RSA.Signing.PrivateKey,
        padding: _RSA.Signing.Padding = .insecurePKCS1v1_5
    ) throws -> String {
        let input = signingInput(header: header, payload: payload)
        let signature = try key.signature(for: Array(input.utf8), padding: padding)
        return input + "." + Base64URL.encode(signature.rawRepresentation)
    }
}

/// RSA keys are slow to make: these are made once for the whole suite.
enum TestKeys {
    static let rsaA = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let rsaB = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
}

/// A JWK (public) for a P-256 key: `x` and `y` are the x963 representation without its leading `0x04`.
func jwk(_ key: P256.Signing.PublicKey, kid: String, alg: String? = "ES256") -> String {
    let point = Array(key.x963Representation.dropFirst())
    var members = [
        "\"kty\":\"EC\"", "\"crv\":\"P-256\"", "\"kid\":\"\(kid)\"", "\"use\":\"sig\"",
        "\"x\":\"\(Base64URL.encode(point[0..<32]))\"", "\"y\":\"\(Base64URL.encode(point[32..<64]))\"",
    ]
    if let alg { members.append("\"alg\":\"\(alg)\"") }
    return "{" + members.joined(separator: ",") + "}"
}

/// A JWK (public) for an RSA key: `n` and `e` base64url.
func jwk(_ key: _RSA.Signing.PublicKey, kid: String, alg: String? = "RS256") throws -> String {
    let primitives = try key.getKeyPrimitives()
    var members = [
        "\"kty\":\"RSA\"", "\"kid\":\"\(kid)\"", "\"n\":\"\(Base64URL.encode(primitives.modulus))\"",
        "\"e\":\"\(Base64URL.encode(primitives.publicExponent))\"",
    ]
    if let alg { members.append("\"alg\":\"\(alg)\"") }
    return "{" + members.joined(separator: ",") + "}"
}

/// An authenticator with the HS256 secret `testSecret` (from a file) and whatever else `configure` sets.
func hs256Authenticator(
    secret: [UInt8] = testSecret, _ configure: (inout AuthConfiguration) -> Void = { _ in }
) async throws -> Authenticator {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    var configuration = AuthConfiguration()
    configuration.secretFiles = [try directory.write("secret", bytes: secret)]
    configure(&configuration)
    return try await Authenticator(configuration)
}

/// The error `Authenticator.init` throws for `configuration`, or `nil` when it loads.
func configurationError(_ configuration: AuthConfiguration) async -> ConfigurationError? {
    do {
        _ = try await Authenticator(configuration)
        return nil
    } catch {
        return error
    }
}

/// Expects `result` to be exactly this refusal, and its message to hold neither the credential nor any of
/// its longer pieces (a token's segments, an API key).
func expectRefusal(
    _ result: Result<Principal, AuthFailure>, _ code: ErrorCode, _ message: String, credential: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(result == .failure(AuthFailure(code, message)), sourceLocation: sourceLocation)
    guard case .failure(let failure) = result else { return }
    #expect(!failure.message.contains(credential), sourceLocation: sourceLocation)
    for piece in credential.split(separator: ".") where piece.count >= 8 {
        #expect(
            !failure.message.contains(piece), "the message shows a piece of the token", sourceLocation: sourceLocation)
    }
}

extension Result where Success == Principal, Failure == AuthFailure {
    /// The principal, or `nil` when refused.
    var principal: Principal? {
        if case .success(let principal) = self { return principal }
        return nil
    }
}
