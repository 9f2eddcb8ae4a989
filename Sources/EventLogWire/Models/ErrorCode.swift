/// Every error code on the wire, with the HTTP status it is answered with (docs/PROTOCOL.md, "Errors").
///
/// The raw value is the snake_case name in `{"error":{"code":..}}` bodies and WebSocket `error` messages.
/// HTTP answers, WebSocket messages, ``EventLogError`` and the client's errors all use this one catalogue.
public enum ErrorCode: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The body (or an NDJSON line, or a WebSocket message) is not valid JSON, or not an object.
    case malformedJSON = "malformed_json"
    /// A field has the wrong JSON type, or an unknown field is present.
    case invalidField = "invalid_field"
    /// The topic does not follow the topic grammar.
    case invalidTopic = "invalid_topic"
    /// The selector is neither a topic, a `prefix/*` nor `*`.
    case invalidSelector = "invalid_selector"
    /// The type is empty, too long, reserved, or holds CR, LF or NUL.
    case invalidType = "invalid_type"
    /// The key is empty, too long, or holds CR, LF or NUL.
    case invalidKey = "invalid_key"
    /// The idempotency key is empty, too long, or holds control characters.
    case invalidIdempotencyKey = "invalid_idempotency_key"
    /// A batch with no events.
    case emptyBatch = "empty_batch"
    /// `Last-Event-ID` / `lastEventId` is not a non-negative integer or `earliest`.
    case invalidLastEventID = "invalid_last_event_id"
    /// A bad query parameter (`after`, `limit`, `envelope`, ...) or a missing `topic`.
    case invalidParameter = "invalid_parameter"
    /// A WebSocket message with a missing or unknown `op`.
    case invalidOp = "invalid_op"
    /// A resume token that is malformed, tampered with, or from another log.
    case invalidResumeToken = "invalid_resume_token"
    /// No credential was presented, and the anonymous grants do not allow the request.
    case authenticationRequired = "authentication_required"
    /// The token is malformed, badly signed, not yet valid, for another issuer or audience, or an unknown
    /// API key.
    case invalidToken = "invalid_token"
    /// The token's `exp` has passed.
    case tokenExpired = "token_expired"
    /// A valid credential without the right (`/metrics` without the admin grant, a cookie from a foreign
    /// origin).
    case forbidden = "forbidden"
    /// A valid credential whose grants do not cover a topic or selector of the request.
    case forbiddenTopic = "forbidden_topic"
    /// No such path.
    case notFound = "not_found"
    /// Wrong method for the path.
    case methodNotAllowed = "method_not_allowed"
    /// The idempotency key names a different event on this topic.
    case idempotencyConflict = "idempotency_conflict"
    /// A conditional append's `expectedLastId` is not the topic's newest id; nothing was appended (409).
    case expectedLastIDMismatch = "expected_last_id_mismatch"
    /// The body is over the server's limit.
    case bodyTooLarge = "body_too_large"
    /// One event's data is over the size limit.
    case eventTooLarge = "event_too_large"
    /// A publish whose content type is neither JSON nor NDJSON.
    case unsupportedMediaType = "unsupported_media_type"
    /// A plain request on the WebSocket path.
    case upgradeRequired = "upgrade_required"
    /// The store cannot write now (disk full, read-only, I/O error, locked); nothing was written.
    case storageUnavailable = "storage_unavailable"
    /// The server is stopping.
    case shuttingDown = "shutting_down"
    /// The server holds as many connections as it may.
    case tooManyConnections = "too_many_connections"
    /// A subscriber that did not read for too long.
    case slowConsumer = "slow_consumer"
    /// A failure inside the server.
    case internalError = "internal_error"
    /// The log is closed (in-process only; a server answers `shutting_down`).
    case closed = "closed"
    /// The database is not a valid event log (answered 503: the file is unusable now, another process may be
    /// restoring it).
    case corrupt = "corrupt"

    /// The HTTP status an answer with this code has.
    public var httpStatus: Int {
        switch self {
        case .malformedJSON, .invalidField, .invalidTopic, .invalidSelector, .invalidType, .invalidKey,
            .invalidIdempotencyKey, .emptyBatch, .invalidLastEventID, .invalidParameter, .invalidOp,
            .invalidResumeToken:
            return 400
        case .authenticationRequired, .invalidToken, .tokenExpired: return 401
        case .forbidden, .forbiddenTopic: return 403
        case .notFound: return 404
        case .methodNotAllowed: return 405
        case .idempotencyConflict, .expectedLastIDMismatch: return 409
        case .bodyTooLarge, .eventTooLarge: return 413
        case .unsupportedMediaType: return 415
        case .upgradeRequired: return 426
        case .storageUnavailable, .shuttingDown, .tooManyConnections, .closed, .slowConsumer, .corrupt: return 503
        case .internalError: return 500
        }
    }

    /// Whether the condition passes by itself, so a subscriber should reconnect after it rather than stop.
    public var isTransient: Bool {
        switch self {
        case .shuttingDown, .tooManyConnections, .storageUnavailable, .slowConsumer, .internalError, .closed:
            return true
        default:
            return false
        }
    }

    /// The snake_case name used on the wire, e.g. `invalid_topic`.
    public var description: String { rawValue }
}
