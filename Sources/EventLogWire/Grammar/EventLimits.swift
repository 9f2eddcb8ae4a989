/// Limits on what an event may hold. The server exposes ``maxDataBytes`` as a flag.
public struct EventLimits: Sendable, Hashable {
    /// The largest payload, in UTF-8 bytes.
    public var maxDataBytes: Int
    /// The longest type, in bytes.
    public var maxTypeBytes: Int
    /// The longest key, in bytes.
    public var maxKeyBytes: Int
    /// The longest idempotency key, in bytes.
    public var maxIdempotencyKeyBytes: Int

    /// Defaults: 1 MiB of data, 128-byte types, 1 KiB keys, 256-byte idempotency keys.
    public init(
        maxDataBytes: Int = 1 << 20,
        maxTypeBytes: Int = 128,
        maxKeyBytes: Int = 1024,
        maxIdempotencyKeyBytes: Int = 256
    ) {
        self.maxDataBytes = maxDataBytes
        self.maxTypeBytes = maxTypeBytes
        self.maxKeyBytes = maxKeyBytes
        self.maxIdempotencyKeyBytes = maxIdempotencyKeyBytes
    }

    /// Types beginning with this are the server's own control events (`eventlog.open`, ...).
    public static let reservedTypePrefix = "eventlog."

    /// Throws a typed error for the first thing wrong with `event`.
    public func validate(_ event: NewEvent) throws(EventLogError) {
        try Topic.validate(event.topic)
        if let problem = fieldProblem(event.type, maxBytes: maxTypeBytes) {
            throw EventLogError(.invalidType, "invalid type \(Topic.quoted(event.type)): \(problem)")
        }
        if event.type.hasPrefix(Self.reservedTypePrefix) {
            throw EventLogError(
                .invalidType,
                "invalid type \(Topic.quoted(event.type)): types starting with \"eventlog.\" are reserved"
            )
        }
        if let key = event.key, let problem = fieldProblem(key, maxBytes: maxKeyBytes) {
            throw EventLogError(.invalidKey, "invalid key \(Topic.quoted(key)): \(problem)")
        }
        if let key = event.idempotencyKey {
            if let problem = fieldProblem(key, maxBytes: maxIdempotencyKeyBytes) {
                throw EventLogError(.invalidIdempotencyKey, "invalid idempotency key \(Topic.quoted(key)): \(problem)")
            }
            if key.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                throw EventLogError(
                    .invalidIdempotencyKey,
                    "invalid idempotency key \(Topic.quoted(key)): it holds a control character"
                )
            }
        }
        if let data = event.data, data.byteCount > maxDataBytes {
            throw EventLogError(
                .eventTooLarge,
                "data is \(data.byteCount) bytes, over the limit of \(maxDataBytes) bytes"
            )
        }
    }

    /// Why a type or key is unacceptable: empty, too long, or holding CR, LF or NUL (which would let
    /// it inject SSE fields).
    private func fieldProblem(_ value: String, maxBytes: Int) -> String? {
        let bytes = value.utf8
        if bytes.isEmpty { return "it is empty" }
        if bytes.count > maxBytes { return "it is longer than \(maxBytes) bytes" }
        if bytes.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }) { return "it holds CR, LF or NUL" }
        return nil
    }
}
