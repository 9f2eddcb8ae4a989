import ArgumentParser
import EventLog
import Foundation

extension EventLogMaint {
    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the log to a file with SQLite's online backup API; safe while eventlogd runs.",
            discussion: """
                The copy is one consistent snapshot, keeps the epoch, and is renamed into place only when \
                complete. Restore it with 'restore', which gives it a new epoch.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "The backup file to write.")
        var to: String

        @Flag(help: "Replace the file if it exists.")
        var force = false

        func run() throws {
            try database.requireFile(.backup)
            let report = try database.open(readOnly: true).backup(to: to, overwrite: force)
            database.progressReporter?.finish()
            print(
                "backup: \(report.path), \(MaintenanceText.formatBytes(report.bytes)), "
                    + "\(grouped(report.eventCount)) events, "
                    + "head \(report.head), epoch \(report.epoch)"
            )
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a backup in place at --db with a NEW epoch. Stop eventlogd first.",
            discussion: """
                A backup is an older state of the log: clients may hold positions past its head. The new epoch \
                makes their resume tokens get 'reset' (and SSE clients past the head get eventlog.reset) rather \
                than wait for ids that will name other events.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "The backup file (from 'backup' or 'vacuum --into').")
        var from: String

        @Flag(help: "Replace --db if it exists.")
        var force = false

        func run() throws {
            try database.requireFile(.restore)
            let report = try LogMaintenance.restore(
                from: from,
                to: database.databasePath,
                overwrite: force,
                progress: database.progressReporter?.handler
            )
            database.progressReporter?.finish()
            print(
                "restore: \(report.path), \(grouped(report.eventCount)) events, head \(report.head), "
                    + "new epoch \(report.epoch)"
            )
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write every event as JSON Lines, ids included; safe while eventlogd runs.",
            discussion: """
                The first line is a header with the epoch, the resume-token key, earliest and head: treat the \
                file as you would a backup.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "The output file; '-' is standard output.")
        var to = "-"

        @Flag(help: "Replace the output file if it exists.")
        var force = false

        func validate() throws {
            if to != "-" && !force && FileManager.default.fileExists(atPath: to) {
                throw ValidationError("\(to) exists; pass --force to replace it")
            }
        }

        func run() throws {
            let maintenance = try database.open(readOnly: true)
            let output: FileHandle
            if to == "-" {
                output = FileHandle.standardOutput
            } else {
                guard FileManager.default.createFile(atPath: to, contents: nil) else {
                    throw MaintenanceError(.notFound, "cannot create \(to)")
                }
                guard let handle = FileHandle(forWritingAtPath: to) else {
                    throw MaintenanceError(.notFound, "cannot open \(to)")
                }
                output = handle
            }
            let report = try maintenance.export(to: output)
            if to != "-" { try output.close() }
            database.progressReporter?.finish()
            printError(
                "export: \(grouped(report.events)) events, head \(report.head), earliest \(report.earliest), "
                    + "epoch \(report.epoch)"
            )
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load an export into a new or empty log at --db, keeping ids. Not while a server uses --db.",
            discussion: """
                All or nothing, in one transaction. The head becomes the exported head, so ids are never handed \
                out twice. The resume-token key is the export's; the epoch is new unless --keep-epoch. A \
                PostgreSQL database gets the eventlog schema if it has none; import before starting the nodes, \
                which read the epoch and the resume-token key when they start.
                """
        )

        @OptionGroup var database: DatabaseOptions

        @Option(help: "The export file; '-' is standard input.")
        var from = "-"

        @Flag(
            name: .customLong("keep-epoch"),
            help: "Take the export's epoch too: the same log to clients (for moving a log whose server is stopped)."
        )
        var keepEpoch = false

        func run() throws {
            let input: FileHandle
            if from == "-" {
                input = FileHandle.standardInput
            } else {
                guard let handle = FileHandle(forReadingAtPath: from) else {
                    throw MaintenanceError(.notFound, "no such file: \(from)")
                }
                input = handle
            }
            let report = try LogMaintenance.importEvents(
                from: input,
                into: database.databasePath,
                keepEpoch: keepEpoch,
                progress: database.progressReporter?.handler
            )
            database.progressReporter?.finish()
            let ids = report.ids.map { " (ids \($0.lowerBound)...\($0.upperBound))" } ?? ""
            print(
                "import: \(grouped(report.events)) events\(ids); head \(report.head), earliest \(report.earliest), "
                    + "epoch \(report.epoch)\(report.keptEpoch ? " (kept)" : " (new)")"
            )
        }
    }
}
