/// Parses and prints the sizes and durations that maintenance takes on the command line: `10MB`, `1GiB`,
/// `30d`, `1h30m`. Written once here so the tool, the server's configuration and the tests agree.
public enum MaintenanceText {
    /// Parses a size: a whole number with an optional unit, `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or
    /// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), case-insensitive. A bare number is bytes.
    public static func parseSize(_ text: String) throws(MaintenanceError) -> Int64 {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).lowercased()
        let multipliers: [String: Int64] = [
            "": 1, "b": 1, "kb": 1000, "mb": 1_000_000, "gb": 1_000_000_000, "tb": 1_000_000_000_000,
            "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
        ]
        guard !digits.isEmpty, let number = Int64(digits), let multiplier = multipliers[unit] else {
            throw MaintenanceError(
                .invalidArgument,
                "invalid size \"\(text)\": use a whole number with an optional unit B, KB, MB, GB, TB (powers of "
                    + "1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 500MB or 1GiB"
            )
        }
        let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw MaintenanceError(.invalidArgument, "invalid size \"\(text)\": too large") }
        return product
    }

    /// Parses a duration with ``DurationText/parse(_:)``: one or more whole numbers each with a unit, `ms`,
    /// `s`, `m`, `h`, `d` or `w`, e.g. `30d`, `15m`, `1h30m`, `500ms`.
    public static func parseDuration(_ text: String) throws(MaintenanceError) -> Duration {
        do {
            return try DurationText.parse(text)
        } catch {
            throw MaintenanceError(.invalidArgument, error.message)
        }
    }

    /// `1.5 MiB`, `512 B`: a byte count for people.
    public static func formatBytes(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var index = 0
        while abs(value) >= 1024 && index < units.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes) B" }
        let tenths = (value * 10).rounded() / 10
        return "\(tenths) \(units[index])"
    }

    /// `2d3h`, `15m`, `250ms`: a duration for people, to the largest two units (``DurationText/format(_:)``).
    public static func formatDuration(_ duration: Duration) -> String {
        DurationText.format(duration)
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " } ?? endIndex
        let end = lastIndex { $0 != " " }.map { index(after: $0) } ?? start
        return self[start..<max(start, end)]
    }
}
