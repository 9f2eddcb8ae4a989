/// Durations as people write them: `30d`, `15m`, `1h30m`, `500ms`. The one parser and printer for every
/// duration the tools, the server's configuration and relative ages (`--since 15m`) take.
public enum DurationText {
    /// Milliseconds in each unit a duration may use.
    private static let units: [String: Int64] = [
        "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
    ]

    /// Parses one or more whole numbers each with a unit, `ms`, `s`, `m`, `h`, `d` or `w`, summed: `30d`,
    /// `15m`, `1h30m`, `500ms`, `2w`. Units are case-insensitive, spaces around the text are ignored and
    /// one leading `+` is allowed (`+15m`); there is no negative duration, fraction or bare number.
    public static func parse(_ text: String) throws(DurationTextError) -> Duration {
        var rest = Substring(text.trimmingSpaces.lowercased())
        if rest.first == "+" { rest = rest.dropFirst() }
        guard !rest.isEmpty else { throw DurationTextError(text, .malformed) }
        var milliseconds: Int64 = 0
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            guard !digits.isEmpty, let number = Int64(digits), let scale = units[String(unit)] else {
                throw DurationTextError(text, .malformed)
            }
            let (part, overflow) = number.multipliedReportingOverflow(by: scale)
            let (sum, sumOverflow) = milliseconds.addingReportingOverflow(part)
            guard !overflow, !sumOverflow else { throw DurationTextError(text, .tooLarge) }
            milliseconds = sum
        }
        return .milliseconds(milliseconds)
    }

    /// `2d3h`, `15m`, `250ms`, `0s`: a duration for people, in its largest two units (days at most), rounded
    /// down to whole milliseconds below a second and to the second unit above. What it prints parses back.
    public static func format(_ duration: Duration) -> String {
        var milliseconds = duration.wholeMilliseconds
        if milliseconds == 0 { return "0s" }
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        var parts: [String] = []
        for (unit, scale) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            let count = milliseconds / scale
            if count > 0 {
                parts.append("\(count)\(unit)")
                milliseconds -= count * scale
            }
            if parts.count == 2 { break }
        }
        return parts.joined()
    }
}

/// Why a duration could not be parsed. ``message`` names the text and says what is accepted.
public struct DurationTextError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Reason: Sendable, Equatable {
        /// Not numbers with units.
        case malformed
        /// More milliseconds than a 64-bit integer holds.
        case tooLarge
    }

    /// The text as given.
    public let text: String
    public let reason: Reason

    init(_ text: String, _ reason: Reason) {
        self.text = text
        self.reason = reason
    }

    /// `invalid duration "1y": use whole numbers with units ms, s, m, h, d, w, e.g. 30d, 1h30m or 500ms`.
    public var message: String {
        switch reason {
        case .malformed:
            return "invalid duration \"\(text)\": use whole numbers with units ms, s, m, h, d, w, e.g. 30d, 1h30m "
                + "or 500ms"
        case .tooLarge:
            return "invalid duration \"\(text)\": too large"
        }
    }

    public var description: String { message }
}

extension Duration {
    /// The duration in whole milliseconds, rounded toward zero.
    package var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The duration in seconds, as a floating-point number (for metrics, backoff and seconds options).
    package var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}

extension String {
    /// The text without leading and trailing spaces.
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " } ?? endIndex
        let end = lastIndex { $0 != " " }.map { index(after: $0) } ?? start
        return self[start..<max(start, end)]
    }
}
