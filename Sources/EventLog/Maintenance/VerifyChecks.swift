/// The checks of `verify` whose logic does not depend on the store: SQLite's ``Verifier`` and
/// ``PostgresVerifier`` read the rows their way and hand them here, so both report the same problems in the same
/// words.
extension Verifier {
    /// The meta rows: an epoch of 32 and a token key of 64 lowercase hex digits, and a schema version, which must
    /// equal `version` when the store keeps its version elsewhere too (SQLite's `PRAGMA user_version`).
    static func checkMeta(
        _ meta: [String: String], version: (value: Int64, source: String)?, _ report: inout VerifyReport
    ) {
        report.checks.append("meta")
        func isHex(_ text: String, length: Int) -> Bool {
            text.utf8.count == length && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
        }
        if let epoch = meta["epoch"] {
            report.epoch = epoch
            if !isHex(epoch, length: 32) {
                report.error("meta", "meta epoch \(Topic.quoted(epoch)) is not 32 lowercase hex digits")
            }
        } else {
            report.error("meta", "meta has no epoch row")
        }
        if let key = meta["token_key"] {
            if !isHex(key, length: 64) {
                report.error(
                    "meta", "meta token_key is not 64 lowercase hex digits (it has \(key.utf8.count) characters)")
            }
        } else {
            report.error("meta", "meta has no token_key row")
        }
        if let text = meta["schema_version"] {
            if let version, Int64(text) != version.value {
                report.error(
                    "meta",
                    "meta schema_version \(Topic.quoted(text)) does not match \(version.source) \(version.value)")
            }
        } else {
            report.error("meta", "meta has no schema_version row")
        }
    }

    /// Ids start at 1 and none is above the head (`headSource` names where the head is kept): the server takes
    /// that as the head, so readers would never be told of an event above it, and its position is unsafe.
    /// Sets the report's count, head and earliest. `below` and `above` count the offending events.
    static func checkIDs(
        count: Int64,
        ids: (min: Int64?, max: Int64?),
        head: Int64,
        headSource: String,
        below: () throws -> Int64,
        above: () throws -> Int64,
        _ report: inout VerifyReport
    ) throws {
        report.eventCount = count
        report.head = head
        report.checks.append("ids")
        if let minID = ids.min, minID < 1 {
            report.error("ids", "\(try below()) events have ids below 1 (smallest \(minID)); ids start at 1")
        }
        if let maxID = ids.max, maxID > head {
            report.error(
                "sequence",
                "\(try above()) events have ids above the head \(head) (\(headSource)); largest id \(maxID)")
        }
        report.earliest = ids.min ?? head + 1
    }

    /// `mismatched` rows of the latest table (or keys missing from it) do not name their key's newest event.
    static func reportLatest(wrong mismatched: Int64, _ report: inout VerifyReport) {
        report.checks.append("latest")
        if mismatched > 0 {
            report.error(
                "latest",
                "\(mismatched) (topic, key) rows of the latest table do not name the newest event of their key")
        }
    }

    /// The removal watermark of a prefix (and of `*`) is at least that of every topic below it.
    static func checkWatermarks(_ rows: [(String, Int64)], _ report: inout VerifyReport) {
        report.checks.append("removed")
        let watermarks = Dictionary(rows, uniquingKeysWith: max)
        var behind: [String] = []
        for (selector, through) in rows where selector != "" && selector != "*" && !selector.hasSuffix("/*") {
            var covering = ["*"]
            var prefix = Substring(selector)
            while let slash = prefix.lastIndex(of: "/") {
                prefix = prefix[..<slash]
                covering.append(String(prefix) + "/*")
            }
            if let lower = covering.first(where: { (watermarks[$0] ?? 0) < through }) {
                behind.append("\(lower) below \(selector) (\(through))")
            }
        }
        if !behind.isEmpty {
            report.error(
                "removed",
                "\(behind.count) removal watermarks of prefixes are below a topic's: "
                    + behind.prefix(examples).joined(separator: ", "))
        }
    }

    /// Voids lie at or below the head and hold no event (`inside` counts the events of one).
    static func checkVoids(
        _ voids: [ClosedRange<Int64>], _ report: inout VerifyReport, inside: (ClosedRange<Int64>) throws -> Int64
    ) throws {
        report.checks.append("voids")
        let head = report.head ?? 0
        for void in voids {
            if void.upperBound > head {
                report.error("voids", "the void \(void) reaches above the head \(head)")
            }
            let count = try inside(void)
            if count > 0 { report.error("voids", "\(count) events have ids inside the void \(void)") }
        }
    }

    /// `duplicates` are `topic "key" ×n` for idempotency keys stored more than once on a topic.
    static func reportDuplicateIdempotencyKeys(_ duplicates: [String], _ report: inout VerifyReport) {
        report.checks.append("idempotency")
        if !duplicates.isEmpty {
            report.error(
                "idempotency", "idempotency keys used more than once on a topic: " + duplicates.joined(separator: ", "))
        }
    }

    /// Commit times along ids, fed in id order: a time more than `tolerance` before an earlier id's (a clock that
    /// stepped back) and a time more than a day ahead are warnings.
    struct TimeOrder {
        let tolerance: Int64
        let total: Int64
        let progress: MaintenanceProgressHandler?
        private var newest: (id: Int64, time: Int64)?
        private var regressions: [String] = []
        private var regressionCount = 0
        private var rows: Int64 = 0
        private let future = Timestamp.nowMilliseconds() + 86_400_000
        private var inFuture = 0

        init(tolerance: Int64, total: Int64, progress: MaintenanceProgressHandler?) {
            self.tolerance = tolerance
            self.total = total
            self.progress = progress
        }

        mutating func add(id: Int64, time: Int64) {
            rows += 1
            if rows % 100_000 == 0 {
                progress?(
                    MaintenanceProgress(phase: "checking ids and times", completed: rows, total: total, unit: "events"))
            }
            if time > future { inFuture += 1 }
            if let newest, time < newest.time - tolerance {
                regressionCount += 1
                if regressions.count < examples {
                    regressions.append(
                        "id \(id) at \(Timestamp.rfc3339(milliseconds: time)) after id \(newest.id) at "
                            + "\(Timestamp.rfc3339(milliseconds: newest.time)) (\(newest.time - time) ms back)"
                    )
                }
            }
            if newest.map({ time > $0.time }) ?? true { newest = (id, time) }
        }

        func report(_ report: inout VerifyReport) {
            if regressionCount > 0 {
                report.warning(
                    "time",
                    "\(regressionCount) events have a commit time more than \(tolerance) ms before an earlier id's: "
                        + regressions.joined(separator: "; ")
                )
            }
            if inFuture > 0 {
                report.warning("time", "\(inFuture) events have a commit time more than a day in the future")
            }
        }
    }

    /// The distinct topics, fed one by one: those that break the topic grammar are an error.
    struct TopicGrammar {
        private var invalid: [String] = []
        private var count = 0

        mutating func add(_ topic: String) {
            guard !Topic.isValid(topic) else { return }
            count += 1
            if invalid.count < examples { invalid.append(Topic.quoted(topic)) }
        }

        func report(_ report: inout VerifyReport) {
            if count > 0 {
                report.error("topics", "\(count) topics break the topic grammar: " + invalid.joined(separator: ", "))
            }
        }
    }
}
