public import EventLogWire

/// Who is calling, and what it may do.
public struct Principal: Sendable, Hashable {
    /// How the caller proved who it is.
    public enum Kind: Sendable, Hashable {
        /// The server has no auth configured: everyone may do everything.
        case open
        /// No credential was presented: the anonymous grants apply.
        case anonymous
        /// A verified JWT.
        case token
        /// An API key from `--api-keys`.
        case apiKey
    }

    public var kind: Kind
    /// The token's `sub` claim, the API key's name, or `anonymous`; for logs, never a secret.
    public var name: String
    /// What the caller may do (the anonymous grants included).
    public var grants: Grants
    /// When the credential stops being accepted (its `exp` plus the leeway), in Unix milliseconds;
    /// `nil` when it does not expire.
    public var expiresAt: Int64?

    public init(kind: Kind, name: String, grants: Grants, expiresAt: Int64? = nil) {
        self.kind = kind
        self.name = name
        self.grants = grants
        self.expiresAt = expiresAt
    }

    /// Whether a refusal for this caller is `401` (no credential was given: authenticate first) rather
    /// than `403` (a valid credential without the right).
    public var isUnauthenticated: Bool { kind == .anonymous }

    /// The error for a request this caller may not make: `401 authentication_required` when it gave no
    /// credential, `403 <forbidden>` otherwise.
    public func refusal(_ forbidden: ErrorCode, _ message: String) -> AuthFailure {
        if isUnauthenticated {
            return AuthFailure(.authenticationRequired, message + "; present a token (Authorization: Bearer)")
        }
        return AuthFailure(forbidden, message)
    }
}

/// Why a request was refused: the wire code (`401` or `403`) and a message that never holds the token.
public struct AuthFailure: Error, Sendable, Hashable {
    public var code: ErrorCode
    public var message: String
    /// The selector (subscribe) or topic (publish) that was refused, when there is one.
    public var selector: String?
    /// For a batch, the index of the refused event.
    public var index: Int?

    public init(_ code: ErrorCode, _ message: String, selector: String? = nil, index: Int? = nil) {
        self.code = code
        self.message = message
        self.selector = selector
        self.index = index
    }
}

extension Principal {
    /// Refuses unless every selector may be subscribed to: `forbidden_topic` names the first that may not.
    public func authorizeSubscribe(_ selectors: SelectorSet) -> AuthFailure? {
        guard let selector = grants.firstForbidden(selectors) else { return nil }
        var failure = refusal(.forbiddenTopic, "not allowed to read \(Topic.quoted(selector.description))")
        failure.selector = selector.description
        return failure
    }

    /// Refuses unless every topic may be published to: `forbidden_topic` names the first that may not, with
    /// its index in the batch when there is more than one event.
    public func authorizePublish(_ topics: [String], batch: Bool) -> AuthFailure? {
        guard let (index, topic) = grants.firstForbidden(topics: topics) else { return nil }
        let prefix = batch ? "line \(index + 1): " : ""
        var failure = refusal(.forbiddenTopic, prefix + "not allowed to publish to \(Topic.quoted(topic))")
        failure.selector = topic
        failure.index = batch ? index : nil
        return failure
    }

    /// Refuses unless the caller holds the admin grant (`/metrics`).
    public func authorizeAdmin(_ what: String) -> AuthFailure? {
        grants.admin ? nil : refusal(.forbidden, "\(what) needs the admin grant")
    }
}
