import ArgumentParser
import EventLog
import Foundation

extension EventLogMaint {
    struct Retain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete events by age, count or size, oldest first, in small transactions.",
            discussion: """
                An event is deleted when any limit says so. Each transaction also moves the log's earliest past \
                the last id it deleted, so subscribers behind it get a gap. With --topic the limits apply to the \
                selected topics only, but earliest still moves for the whole log (see docs/OPERATIONS.md). \
                Safe while eventlogd runs.
                """
        )

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var selection: SelectorOptions

        @Option(
            name: .customLong("max-age"), help: "Delete events older than this, e.g. 30d, 12h.",
            transform: parseDuration)
        var maxAge: Duration?

        @Option(name: .customLong("max-events"), help: "Keep only the newest N (selected) events.")
        var maxEvents: Int?

        @Option(
            name: .customLong("max-bytes"),
            help: "Keep only the newest events that fit in this approximate size, e.g. 10GB, 512MiB.",
            transform: parseSize
        )
        var maxBytes: Int64?

        @Flag(name: .customLong("dry-run"), help: "Print what would be deleted; change nothing.")
        var dryRun = false

        @OptionGroup var batching: BatchingOptions

        func validate() throws {
            if maxAge == nil && maxEvents == nil && maxBytes == nil {
                throw ValidationError("give at least one of --max-age, --max-events, --max-bytes")
            }
            if let maxEvents, maxEvents < 0 { throw ValidationError("--max-events must not be negative") }
        }

        func run() throws {
            let policy = RetentionPolicy(
                maxAge: maxAge,
                maxEvents: maxEvents,
                maxBytes: maxBytes,
                selectors: try selection.selectors()
            )
            let maintenance = try database.open(readOnly: dryRun, batching: batching.batching)
            let report = try maintenance.retain(policy, dryRun: dryRun)
            database.progressReporter?.finish()
            let verb = dryRun ? "would remove" : "removed"
            let ids = report.removedIDs.map { " (ids \($0.lowerBound)...\($0.upperBound))" } ?? ""
            print(
                "retention\(dryRun ? " (dry run)" : ""): \(verb) \(grouped(report.removedEvents)) events, "
                    + "~\(MaintenanceText.formatBytes(report.removedBytes))\(ids)"
                    + (dryRun ? "" : " in \(report.transactions) transactions")
            )
            let move =
                report.earliestAfter == report.earliestBefore
                ? "unchanged at \(report.earliestBefore)"
                : "\(report.earliestBefore) -> \(report.earliestAfter)"
            print(
                "earliest: \(dryRun && report.earliestAfter != report.earliestBefore ? "would move " : "")"
                    + "\(move) (head \(report.head))"
            )
        }
    }

    struct Compact: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep the latest event per key; delete superseded ones and expired tombstones.",
            discussion: """
                A key is the event's key, or its topic when it has none, within its topic. Ids and their order \
                never change and earliest does not move: a replay from 0 still sees the final state of every \
                key. Safe while eventlogd runs.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Flag(name: .customLong("keep-latest"), help: "Keep the latest event of every key (the compaction mode).")
        var keepLatest = false

        @OptionGroup var selection: SelectorOptions

        @Option(
            name: .customLong("min-age"),
            help: "Delete a superseded event only once it is at least this old, e.g. 1h. Default 0.",
            transform: parseDuration
        )
        var minAge: Duration = .zero

        @Option(
            name: .customLong("tombstone-retention"),
            help: """
                Once a tombstone (an event with no data) that is its key's latest is this old, delete it and its \
                key's older events; 'forever' keeps tombstones.
                """
        )
        var tombstoneRetention = "24h"

        @Flag(name: .customLong("dry-run"), help: "Print what would be deleted; change nothing.")
        var dryRun = false

        @OptionGroup var batching: BatchingOptions

        func validate() throws {
            if !keepLatest { throw ValidationError("compact needs --keep-latest (the one compaction mode)") }
            _ = try tombstoneDuration()
        }

        private func tombstoneDuration() throws -> Duration? {
            if tombstoneRetention == "forever" { return nil }
            do {
                return try MaintenanceText.parseDuration(tombstoneRetention)
            } catch {
                throw ValidationError("--tombstone-retention: \(error.message), or forever")
            }
        }

        func run() throws {
            let policy = CompactionPolicy(
                selectors: try selection.selectors(),
                minAge: minAge,
                tombstoneRetention: try tombstoneDuration()
            )
            let maintenance = try database.open(readOnly: dryRun, batching: batching.batching)
            let report = try maintenance.compact(policy, dryRun: dryRun)
            database.progressReporter?.finish()
            print(
                "compaction\(dryRun ? " (dry run)" : ""): examined \(grouped(report.scannedEvents)) events with "
                    + "\(grouped(Int64(report.keys))) keys; \(dryRun ? "would remove" : "removed") "
                    + "\(grouped(report.removedEvents)) events (\(grouped(report.removedTombstones)) tombstones), "
                    + "~\(MaintenanceText.formatBytes(report.removedBytes))"
                    + (dryRun ? "" : " in \(report.transactions) transactions")
            )
            if report.keptYoungSuperseded > 0 {
                // Say why superseded events are still there, or "removed 0" reads like a failure.
                print(
                    "\(dryRun ? "would keep" : "kept") \(grouped(report.keptYoungSuperseded)) superseded events "
                        + "younger than --min-age \(MaintenanceText.formatDuration(minAge))"
                )
            }
            let move =
                report.earliest == report.earliestBefore
                ? "unchanged at \(report.earliest)" : "\(report.earliestBefore) -> \(report.earliest)"
            print("earliest: \(move) (head \(report.head))")
        }
    }
}
