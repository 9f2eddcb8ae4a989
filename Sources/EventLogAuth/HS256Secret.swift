import Foundation

/// The rules of an HS256 secret, shared by eventlogd (`--jwt-secret-file`) and `eventlog token mint`.
public enum HS256Secret {
    /// The shortest secret accepted: 256 bits, the size of the HMAC-SHA256 output.
    public static let minimumBytes = 32

    /// A secret file's bytes without one trailing newline (LF or CRLF), as an editor leaves it; `nil` when the
    /// file cannot be read.
    public static func read(path: String) -> [UInt8]? {
        guard var bytes = FileManager.default.contents(atPath: path).map(Array.init) else { return nil }
        if bytes.last == 0x0A {
            bytes.removeLast()
            if bytes.last == 0x0D { bytes.removeLast() }
        }
        return bytes
    }

    /// What is wrong with a secret, if anything.
    public static func problem(_ secret: [UInt8]) -> String? {
        secret.count >= minimumBytes
            ? nil : "an HS256 secret needs at least \(minimumBytes) bytes, this one has \(secret.count)"
    }
}
