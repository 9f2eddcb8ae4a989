import ArgumentParser
import EventLog
import Foundation

extension EventLogMaint {
    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the WAL into the database file and (by default) truncate it.",
            discussion: """
                Safe while eventlogd runs; restart and truncate make appends wait while they wait for readers, \
                at most --busy-timeout, and then report busy.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "passive, full, restart or truncate.")
        var mode = "truncate"

        func validate() throws {
            if CheckpointMode(rawValue: mode) == nil {
                throw ValidationError("--mode must be passive, full, restart or truncate, not \(mode)")
            }
        }

        func run() throws {
            try database.requireFile(.checkpoint)
            let maintenance = try database.open(readOnly: false)
            let report = try maintenance.checkpoint(CheckpointMode(rawValue: mode) ?? .truncate)
            print(
                "checkpoint (\(mode)): \(report.checkpointedFrames) of \(report.walFrames) WAL frames copied"
                    + "\(report.busy ? ", busy: a reader or writer kept it from completing" : ""); WAL "
                    + "\(MaintenanceText.formatBytes(report.walBytesBefore)) -> "
                    + MaintenanceText.formatBytes(report.walBytesAfter)
            )
        }
    }

    struct Vacuum: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give free pages back to the file system.",
            discussion: """
                Without options: VACUUM in place. NOT safe while eventlogd runs: it holds the writer lock for \
                the whole rebuild, so publishes fail after their busy timeout; stop the server first. \
                --into FILE writes a compacted copy from a snapshot and is safe while the server runs. \
                --incremental frees pages in small transactions and is safe while the server runs, once \
                --enable-incremental (offline, a full VACUUM) has switched the file to auto_vacuum=incremental.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "Write a compacted copy to this new file instead (VACUUM INTO); online-safe.")
        var into: String?

        @Flag(help: "Free pages in small transactions (PRAGMA incremental_vacuum); online-safe.")
        var incremental = false

        @Option(help: "With --incremental: free at most this many pages.")
        var pages: Int?

        @Flag(
            name: .customLong("enable-incremental"), help: "Switch to auto_vacuum=incremental (a full VACUUM; offline)."
        )
        var enableIncremental = false

        func validate() throws {
            let modes = [into != nil, incremental, enableIncremental].filter { $0 }.count
            if modes > 1 { throw ValidationError("use only one of --into, --incremental, --enable-incremental") }
            if pages != nil && !incremental { throw ValidationError("--pages goes with --incremental") }
            if let pages, pages < 1 { throw ValidationError("--pages must be at least 1") }
        }

        func run() throws {
            try database.requireFile(.vacuum)
            let maintenance = try database.open(readOnly: into != nil)
            let report: VacuumReport
            if let into {
                report = try maintenance.vacuum(into: into)
            } else if incremental {
                report = try maintenance.incrementalVacuum(maxPages: pages)
            } else if enableIncremental {
                report = try maintenance.enableIncrementalVacuum()
            } else {
                report = try maintenance.vacuum()
            }
            database.progressReporter?.finish()
            if into != nil {
                print(
                    "vacuum into \(report.path): \(MaintenanceText.formatBytes(report.bytesAfter)) "
                        + "(the log is \(MaintenanceText.formatBytes(report.bytesBefore)) "
                        + "with \(report.freePagesBefore) free pages)"
                )
            } else {
                print(
                    "vacuum: \(MaintenanceText.formatBytes(report.bytesBefore)) -> "
                        + "\(MaintenanceText.formatBytes(report.bytesAfter)); "
                        + "free pages \(report.freePagesBefore) -> \(report.freePagesAfter)"
                )
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the file and the log's invariants; exit 1 when something is wrong.",
            discussion: """
                Runs PRAGMA integrity_check, checks the schema and meta rows, ids against sqlite_sequence (the \
                head) and earliest, commit times, the indexes and idempotency keys, and topics. Reads one \
                snapshot; safe while eventlogd runs. On PostgreSQL: the schema, triggers and meta rows, ids \
                against eventlog.counter, the latest table, removal watermarks, voids, commit times, idempotency \
                keys, topics and the outbox (PostgreSQL checks its own pages and indexes).
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(
            name: .customLong("time-tolerance"),
            help: "How far a commit time may go back from an earlier id's before it is a warning. Default 1s.",
            transform: parseDuration
        )
        var timeTolerance: Duration = .seconds(1)

        @Flag(help: "Run quick_check instead of the full integrity_check.")
        var quick = false

        @Flag(help: "Exit 1 on warnings too.")
        var strict = false

        func run() throws {
            var options = VerifyOptions()
            options.timeTolerance = timeTolerance
            options.quick = quick
            let maintenance = try database.open(readOnly: true)
            let report = try maintenance.verify(options)
            database.progressReporter?.finish()
            for problem in report.problems { print(problem) }
            let summary =
                "\(grouped(report.eventCount)) events, head \(report.head.map(String.init) ?? "?"), "
                + "earliest \(report.earliest.map(String.init) ?? "?"), epoch \(report.epoch ?? "?")"
            if report.isOK {
                print("verify: ok (\(summary))\(report.warnings.isEmpty ? "" : "; \(report.warnings.count) warnings")")
            } else {
                print("verify: \(report.errors.count) errors, \(report.warnings.count) warnings (\(summary))")
            }
            if !report.isOK || (strict && !report.warnings.isEmpty) { throw ExitCode(1) }
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print counts, bounds, epoch and sizes.")

        @OptionGroup var database: DatabaseOptions

        @Flag(help: "Also print each topic's count and last id.")
        var topics = false

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let stats = try database.open(readOnly: true).stats(perTopic: topics)
            if json {
                var fields: [String] = [
                    "\"epoch\":\"\(stats.epoch)\"", "\"schemaVersion\":\(stats.schemaVersion)",
                    "\"events\":\(stats.eventCount)", "\"earliest\":\(stats.earliest)", "\"head\":\(stats.head)",
                    "\"topics\":\(stats.topicCount)",
                ]
                if let tables = stats.tables {
                    let sizes = tables.map { "\"\($0.name)\":\($0.bytes)" }.joined(separator: ",")
                    fields += [
                        "\"storage\":\"postgresql\"", "\"totalBytes\":\(stats.fileBytes)", "\"tableBytes\":{\(sizes)}",
                        "\"outboxBacklog\":\(stats.outboxBacklog ?? 0)",
                    ]
                } else {
                    fields += [
                        "\"fileBytes\":\(stats.fileBytes)", "\"walBytes\":\(stats.walBytes)",
                        "\"pageSize\":\(stats.pageSize)", "\"pages\":\(stats.pageCount)",
                        "\"freePages\":\(stats.freePages)", "\"autoVacuum\":\"\(stats.autoVacuum)\"",
                    ]
                }
                if let ids = stats.ids { fields.append("\"firstId\":\(ids.lowerBound),\"lastId\":\(ids.upperBound)") }
                if let times = stats.times {
                    fields.append(
                        "\"oldest\":\"\(Timestamp.rfc3339(milliseconds: times.lowerBound))\","
                            + "\"newest\":\"\(Timestamp.rfc3339(milliseconds: times.upperBound))\""
                    )
                }
                if let perTopic = stats.topics {
                    let items = perTopic.map {
                        "{\"topic\":\"\($0.topic)\",\"count\":\($0.count),\"lastId\":\($0.lastID)}"
                    }
                    fields.append("\"perTopic\":[\(items.joined(separator: ","))]")
                }
                print("{" + fields.joined(separator: ",") + "}")
                return
            }
            print("epoch:      \(stats.epoch) (schema version \(stats.schemaVersion))")
            print("events:     \(grouped(stats.eventCount)) in \(grouped(stats.topicCount)) topics")
            print("earliest:   \(stats.earliest)")
            print("head:       \(stats.head)")
            if let ids = stats.ids { print("ids:        \(ids.lowerBound)...\(ids.upperBound)") }
            if let times = stats.times {
                print(
                    "times:      \(Timestamp.rfc3339(milliseconds: times.lowerBound)) ... "
                        + Timestamp.rfc3339(milliseconds: times.upperBound)
                )
            }
            if let tables = stats.tables {
                let each = tables.map { "\($0.name) \(MaintenanceText.formatBytes($0.bytes))" }
                print(
                    "size:       \(MaintenanceText.formatBytes(stats.fileBytes)) in PostgreSQL: "
                        + each.joined(separator: ", "))
                print("outbox:     \(grouped(stats.outboxBacklog ?? 0)) events waiting")
                for topic in stats.topics ?? [] {
                    print("  \(topic.topic)  \(grouped(topic.count)) events, last id \(topic.lastID)")
                }
                return
            }
            print(
                "file:       \(MaintenanceText.formatBytes(stats.fileBytes)) + "
                    + "WAL \(MaintenanceText.formatBytes(stats.walBytes)); "
                    + "\(grouped(stats.pageCount)) pages of \(stats.pageSize) bytes, \(grouped(stats.freePages)) free; "
                    + "auto_vacuum \(stats.autoVacuum)"
            )
            for topic in stats.topics ?? [] {
                print("  \(topic.topic)  \(grouped(topic.count)) events, last id \(topic.lastID)")
            }
        }
    }
}
