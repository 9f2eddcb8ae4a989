import Foundation

/// One figure of the comparison: eventlog's and Redis's value from the same run.
struct ResultRow: Sendable {
    /// Which way is better.
    enum Better: String, Sendable {
        case higher
        case lower
    }

    /// What the project aims at for the eventlog figure.
    enum Target: Sendable {
        /// eventlog at least this many times Redis.
        case timesRedis(Double)
        /// eventlog at most this value.
        case atMost(Double)
        /// eventlog at least this value.
        case atLeast(Double)
    }

    let benchmark: String
    let metric: String
    let unit: String
    let eventlog: Double?
    let redis: Double?
    let better: Better
    var target: Target?
    var note = ""

    /// eventlog / Redis.
    var ratio: Double? {
        guard let eventlog, let redis, redis != 0 else { return nil }
        return eventlog / redis
    }

    /// Whether the eventlog figure meets the target; nil when there is no target (or no figure).
    var targetMet: Bool? {
        guard let target, let eventlog else { return nil }
        switch target {
        case .timesRedis(let factor): return ratio.map { $0 >= factor }
        case .atMost(let limit): return eventlog <= limit
        case .atLeast(let limit): return eventlog >= limit
        }
    }

    var targetText: String {
        guard let target else { return "" }
        let text: String
        switch target {
        case .timesRedis(let factor): text = "≥ \(Report.number(factor))× Redis"
        case .atMost(let limit): text = "≤ \(Report.number(limit)) \(unit)"
        case .atLeast(let limit): text = "≥ \(Report.number(limit)) \(unit)"
        }
        switch targetMet {
        case true?: return text + ": met"
        case false?: return text + ": **missed**"
        case nil: return text
        }
    }
}

/// The markdown report.
enum Report {
    /// A number for a table: thousands grouped for large values, two decimals for small ones.
    static func number(_ value: Double) -> String {
        if value.magnitude >= 1000 {
            let formatter = NumberFormatter()
            formatter.numberStyle = .decimal
            formatter.maximumFractionDigits = 0
            formatter.groupingSeparator = ","
            formatter.usesGroupingSeparator = true
            return formatter.string(from: NSNumber(value: value.rounded())) ?? String(Int(value))
        }
        if value.magnitude >= 100 { return String(format: "%.0f", value) }
        if value.magnitude >= 10 { return String(format: "%.1f", value) }
        return String(format: "%.2f", value)
    }

    /// The comparison table in markdown.
    static func markdown(_ rows: [ResultRow]) -> String {
        var lines = [
            "| benchmark | metric | eventlog | Redis 7 | eventlog / Redis | better | target | notes |",
            "|---|---|---:|---:|---:|---|---|---|",
        ]
        for row in rows {
            let eventlog = row.eventlog.map { "\(number($0)) \(row.unit)" } ?? "–"
            let redis = row.redis.map { "\(number($0)) \(row.unit)" } ?? "–"
            let ratio = row.ratio.map { String(format: "%.2f×", $0) } ?? "–"
            lines.append(
                "| \(row.benchmark) | \(row.metric) | \(eventlog) | \(redis) | \(ratio) | \(row.better.rawValue) "
                    + "| \(row.targetText) | \(row.note) |")
        }
        return lines.joined(separator: "\n")
    }
}
