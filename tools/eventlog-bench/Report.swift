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
    /// A count: shown without decimals.
    var isCount = false

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

    /// A value with its unit.
    func format(_ value: Double) -> String {
        (isCount && value.magnitude < 1000 ? String(Int(value.rounded())) : Report.number(value)) + " " + unit
    }

    var targetText: String {
        guard let target else { return "" }
        let text: String
        switch target {
        case .timesRedis(let factor): text = "≥ \(Report.number(factor))× Redis"
        case .atMost(let limit): text = "≤ \(format(limit))"
        case .atLeast(let limit): text = "≥ \(format(limit))"
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
            let eventlog = row.eventlog.map(row.format) ?? "–"
            let redis = row.redis.map(row.format) ?? "–"
            let ratio = row.ratio.map { String(format: "%.2f×", $0) } ?? "–"
            lines.append(
                "| \(row.benchmark) | \(row.metric) | \(eventlog) | \(redis) | \(ratio) | \(row.better.rawValue) "
                    + "| \(row.targetText) | \(row.note) |")
        }
        return lines.joined(separator: "\n")
    }
}
