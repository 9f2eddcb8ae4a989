import Crypto
import EventLogWire

/// Resume tokens for WebSocket subscriptions: opaque, URL-safe, versioned, and HMAC-SHA256 signed
/// with the key kept in the log's meta table, so they survive restarts and cannot be forged or
/// carried to another log.
///
/// Layout (not a promise to clients): `v1.` + base64url(8-byte big-endian position + epoch bytes)
/// + `.` + base64url(first 16 bytes of HMAC-SHA256(key, "v1." + payload)).
struct ResumeTokenCodec: Sendable {
    private let keyBytes: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    private let epoch: String

    init(key: [UInt8], epoch: String) {
        self.keyBytes = key
        self.epoch = epoch
    }

    /// Why a token was refused.
    enum Failure: Error, Equatable {
        case malformed
        case badSignature
        /// Signed with this log's key for another epoch (a restored backup); carries the position.
        case otherEpoch(Int64)
    }

    /// The token for "after `position`" in this log's epoch.
    func encode(position: Int64) -> String {
        var payload = [UInt8]()
        payload.reserveCapacity(8 + epoch.utf8.count)
        withUnsafeBytes(of: UInt64(bitPattern: position).bigEndian) { payload.append(contentsOf: $0) }
        payload.append(contentsOf: epoch.utf8)
        let body = "v1." + Base64URL.encode(payload)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(body.utf8), using: key)
        return body + "." + Base64URL.encode(mac.prefix(16))
    }

    /// The position a token names, after checking its version, signature and epoch.
    func decode(_ token: String) -> Result<Int64, Failure> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 512, parts.count == 3, parts[0] == "v1",
            let payload = Base64URL.decode(parts[1].utf8), payload.count >= 8,
            let signature = Base64URL.decode(parts[2].utf8), signature.count == 16
        else { return .failure(.malformed) }
        let body = "v1." + parts[1]
        let mac = HMAC<SHA256>.authenticationCode(for: Array(body.utf8), using: key)
        // Constant-time comparison of the truncated MAC.
        var difference: UInt8 = 0
        for (a, b) in zip(Array(mac.prefix(16)), signature) { difference |= a ^ b }
        guard difference == 0 else { return .failure(.badSignature) }
        let position = Int64(bitPattern: payload[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        guard position >= 0 else { return .failure(.malformed) }
        guard String(decoding: payload[8...], as: UTF8.self) == epoch else { return .failure(.otherEpoch(position)) }
        return .success(position)
    }
}
