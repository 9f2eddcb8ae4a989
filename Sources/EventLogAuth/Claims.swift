import JWTKit

/// The claims eventlog reads from a JWT. Times are checked by ``Authenticator`` (with its leeway), so
/// ``verify(using:)`` has nothing left to do.
struct EventLogClaims: JWTPayload, Equatable {
    /// The rights claim: `"eventlog": {"publish": [..], "subscribe": [..], "admin": true}`.
    struct Rights: Codable, Sendable, Equatable {
        var publish: [String]?
        var subscribe: [String]?
        var admin: Bool?
    }

    /// `aud`: one string or an array of strings (RFC 7519, section 4.1.3).
    struct Audience: Codable, Sendable, Equatable {
        var values: [String]

        init(_ values: [String]) { self.values = values }

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let one = try? container.decode(String.self) {
                values = [one]
            } else {
                values = try container.decode([String].self)
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            if values.count == 1 { try container.encode(values[0]) } else { try container.encode(values) }
        }
    }

    var sub: String?
    var iss: String?
    var aud: Audience?
    /// A NumericDate, which may have a fraction (RFC 7519, section 2), as `nbf` and `exp`.
    var iat: Double?
    var nbf: Double?
    var exp: Double?
    var eventlog: Rights?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
