import ArgumentParser
import CSQLite
import EventLog
import Foundation

/// Options of the `append` benchmark.
struct RunOptions: ParsableArguments {
    /// Seconds each scenario runs.
    @Option(help: "Seconds each scenario runs (after a short warm-up).")
    var duration: Double = 5

    /// A short run, to check that the benchmark works.
    @Flag(help: "A short run (1 second per scenario) to check that everything works.")
    var quick = false

    /// The seconds each scenario actually runs.
    var seconds: Double { quick ? min(duration, 1) : duration }

    func validate() throws {
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
    }
}

/// One way of appending.
enum AppendScenario: String, CaseIterable, ExpressibleByArgument {
    /// Concurrent callers, one event per append.
    case single
    /// Large batches, one append(batch:) call each.
    case batch
}

/// A durability mode as a command-line value (`full`, `normal`).
enum DurabilityArgument: String, CaseIterable, ExpressibleByArgument {
    case full
    case normal

    var durability: EventLog.Durability {
        switch self {
        case .full: return .full
        case .normal: return .normal
        }
    }
}

// MARK: append

/// Appends straight into an ``EventLog``, with no server in between.
struct AppendBenchmark: AsyncParsableCommand {
    /// The subcommand's name and help.
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Appends per second into the storage core: concurrent single appends and large batches.",
        discussion: """
            Each scenario runs once per durability mode on a database in a fresh temporary directory \
            (deleted afterwards), or on the file given with --db. Single appends come from --callers \
            concurrent tasks, each waiting for its commit before the next append; group commit is what \
            lets them share fsyncs. Batches are --batch-size events in one append(batch:) call.

            Unless --no-raw is given, each scenario also runs against raw SQLite: a second file with the \
            same schema (made by the same migrations), WAL, the same synchronous setting, one connection \
            on one thread, prepared BEGIN IMMEDIATE / INSERT / COMMIT binding the same values as the core. \
            For batches, raw commits --batch-size events per transaction. For single appends, raw commits \
            transactions of the core's mean group size (events / group commits in the core's run), so both \
            sides do the same fsyncs per event; raw has no callers, threads or idempotency lookups to pay \
            for. Raw does not checkpoint while it is measured (wal_autocheckpoint=0, one TRUNCATE checkpoint \
            after each scenario, off the clock), where the core checkpoints on a thread of its own: raw is an \
            upper bound. The table gives core events/s, raw events/s and core / raw.
            """
    )

    @OptionGroup var run: RunOptions

    /// The database file. Default: a fresh temporary directory, deleted afterwards.
    @Option(help: "The database file (kept). Default: a file in a fresh temporary directory, deleted afterwards.")
    var db: String?

    /// Concurrent callers for the single-append scenario.
    @Option(help: "Concurrent callers making single appends.")
    var callers = 50

    /// Events per batch for the batch scenario.
    @Option(help: "Events per batch in the batch scenario.")
    var batchSize = 1000

    /// Concurrent callers for the batch scenario.
    @Option(help: "Concurrent callers appending batches.")
    var batchCallers = 1

    /// Bytes of payload per event.
    @Option(help: "Bytes of data per event.")
    var eventBytes = 100

    /// The durability modes to measure.
    @Option(name: .customLong("mode"), help: "Durability mode to measure (repeatable): full, normal.")
    var modes: [DurabilityArgument] = [.full, .normal]

    /// The scenarios to run.
    @Option(name: .customLong("scenario"), help: "Scenario to run (repeatable): single, batch.")
    var scenarios: [AppendScenario] = [.single, .batch]

    /// Whether each scenario also runs on raw SQLite, for the core / raw ratio.
    @Flag(
        inversion: .prefixedNo,
        help: "Also run each scenario on raw SQLite with the same schema and report core / raw."
    )
    var raw = true

    func validate() throws {
        guard !scenarios.isEmpty else { throw ValidationError("give at least one --scenario") }
        guard callers > 0, batchCallers > 0 else { throw ValidationError("callers must be positive") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard eventBytes >= 0 else { throw ValidationError("--event-bytes must not be negative") }
        guard !modes.isEmpty else { throw ValidationError("give at least one --mode") }
    }

    func run() async throws {
        var temporaryDirectory: URL?
        let path: String
        if let db {
            path = db
        } else {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventlog-bench-\(UUID().uuidString)", isDirectory: true)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            temporaryDirectory = directory
            path = directory.appendingPathComponent("bench.db").path
        }
        defer {
            if let temporaryDirectory { try? FileManager.default.removeItem(at: temporaryDirectory) }
        }
        let rawPath = path + ".raw"
        defer {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: rawPath + suffix) }
        }

        print(
            "eventlog-bench append: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(run.seconds) s per scenario"
        )
        print("database: \(db ?? "temporary file")\(raw ? "; raw SQLite: \(rawPath) (deleted afterwards)" : "")")
        print("")
        var columns = ["scenario", "mode", "events", "seconds", "events/s", "p50 ms", "p99 ms", "events/commit"]
        if raw { columns += ["raw events/s", "core/raw"] }
        var table = Table(columns: columns)
        for mode in modes {
            var options = EventLog.Options()
            options.durability = mode.durability
            let log = try await EventLog.open(path: path, options: options)
            var rawStore: RawSQLite?
            if raw {
                // The same schema: the core's migrations make the file, then raw SQLite takes it over.
                await (try await EventLog.open(path: rawPath, options: options)).close()
                rawStore = try RawSQLite(path: rawPath, durability: mode)
            }
            for scenario in scenarios {
                switch scenario {
                case .single:
                    let (single, commits) = try await measureSingleAppends(log)
                    let groupSize = max(1, Int((Double(single.events) / Double(commits)).rounded()))
                    var row = single.row(scenario: "single, \(callers) callers", mode: mode)
                    row.append(String(format: "%.1f", Double(single.events) / Double(commits)))
                    if let rawStore {
                        let rawRun = try rawStore.measure(
                            eventsPerCommit: groupSize, seconds: run.seconds, payload: payloadText)
                        row += rawColumns(core: single, raw: rawRun)
                    }
                    table.add(row)
                case .batch:
                    let (batches, commits) = try await measureBatches(log)
                    let callersText = "\(batchCallers) caller\(batchCallers == 1 ? "" : "s")"
                    var row = batches.row(scenario: "batch of \(batchSize), \(callersText)", mode: mode)
                    row.append(String(format: "%.1f", Double(batches.events) / Double(commits)))
                    if let rawStore {
                        let rawRun = try rawStore.measure(
                            eventsPerCommit: batchSize, seconds: run.seconds, payload: payloadText)
                        row += rawColumns(core: batches, raw: rawRun)
                    }
                    table.add(row)
                }
            }
            rawStore?.close()
            await log.close()
        }
        print(table.render())
    }

    private func rawColumns(core: Measurement, raw: Measurement) -> [String] {
        [
            String(Int(raw.eventsPerSecond.rounded())),
            String(format: "%.2f", core.eventsPerSecond / raw.eventsPerSecond),
        ]
    }

    private var payloadText: String { String(repeating: "x", count: eventBytes) }

    private var payload: EventData {
        .text(String(repeating: "x", count: eventBytes))
    }

    /// The measurement and the group commits the core made during it (at least 1).
    private func measureSingleAppends(_ log: EventLog) async throws -> (Measurement, commits: Int) {
        let payload = self.payload
        _ = try await log.append(batch: (0..<200).map { NewEvent(topic: "warmup/\($0 % 10)", data: payload) })
        let commitsBefore = log.groupCommits
        let measurement = try await Measurement.run(callers: callers, seconds: run.seconds, eventsPerCall: 1) {
            caller in
            _ = try await log.append(NewEvent(topic: "bench/\(caller % 16)", data: payload))
        }
        return (measurement, max(1, log.groupCommits - commitsBefore))
    }

    private func measureBatches(_ log: EventLog) async throws -> (Measurement, commits: Int) {
        let batch = (0..<batchSize).map { NewEvent(topic: "bench/\($0 % 16)", data: payload) }
        _ = try await log.append(batch: batch)
        let commitsBefore = log.groupCommits
        let measurement = try await Measurement.run(
            callers: batchCallers, seconds: run.seconds, eventsPerCall: batchSize
        ) { _ in
            _ = try await log.append(batch: batch)
        }
        return (measurement, max(1, log.groupCommits - commitsBefore))
    }
}

// MARK: Raw SQLite

/// The core's group commit done by hand on one SQLite connection: the baseline of the core / raw ratio.
///
/// Each transaction is a prepared `BEGIN IMMEDIATE`, the prepared INSERT of the core's writer once per
/// event (topic, type, key, data, data_format, time, idempotency_key, request_hash, bound the same way),
/// and a prepared `COMMIT`. WAL and `synchronous` as the core sets them.
final class RawSQLite {
    private var db: OpaquePointer?
    private var begin: OpaquePointer?
    private var insert: OpaquePointer?
    private var commit: OpaquePointer?

    init(path: String, durability: DurabilityArgument) throws {
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else {
            throw RawSQLiteError(message: "cannot open \(path)")
        }
        sqlite3_busy_timeout(db, 5000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=\(durability == .full ? "FULL" : "NORMAL")")
        // No checkpoint inside the measured loop (the core checkpoints on a thread of its own): raw is the
        // upper bound. measure(...) checkpoints after its loop, outside the clock.
        try execute("PRAGMA wal_autocheckpoint=0")
        begin = try prepare("BEGIN IMMEDIATE")
        insert = try prepare(
            """
            INSERT INTO events (topic, type, key, data, data_format, time, idempotency_key, request_hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """
        )
        commit = try prepare("COMMIT")
    }

    func close() {
        for statement in [begin, insert, commit] { sqlite3_finalize(statement) }
        begin = nil
        insert = nil
        commit = nil
        sqlite3_close_v2(db)
        db = nil
    }

    /// Commits transactions of `eventsPerCommit` events, one after another, for `seconds`.
    /// Latencies are per transaction. With `keys`, each event gets a key picked at random among that many
    /// (`k<n>`, in topic `bench/<n % 16>`); without, none (its topic is its key), topics in turn.
    func measure(eventsPerCommit: Int, seconds: Double, payload: String, keys: Int? = nil) throws -> Measurement {
        let topics = (0..<16).map { "bench/\($0)" }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        var latencies: [Duration] = []
        var now = start
        var events = 0
        var random = SeededRandom(seed: 7)
        while now < deadline {
            let before = now
            try step(begin)
            let time = Int64(Date().timeIntervalSince1970 * 1000)
            for index in 0..<eventsPerCommit {
                // A key lives in one topic (key % 16), so there are `keys` (topic, key) pairs.
                let number = keys.map { Int.random(in: 0..<$0, using: &random) }
                let topic = topics[(number ?? (events + index)) % topics.count]
                topic.withCString { _ = sqlite3_bind_text(insert, 1, $0, Int32(topic.utf8.count), transient) }
                "message".withCString { _ = sqlite3_bind_text(insert, 2, $0, 7, transient) }
                if let number {
                    let key = "k\(number)"
                    key.withCString { _ = sqlite3_bind_text(insert, 3, $0, Int32(key.utf8.count), transient) }
                } else {
                    sqlite3_bind_null(insert, 3)
                }
                payload.withCString { _ = sqlite3_bind_text(insert, 4, $0, Int32(payload.utf8.count), transient) }
                sqlite3_bind_int64(insert, 5, 0)
                sqlite3_bind_int64(insert, 6, time)
                sqlite3_bind_null(insert, 7)
                sqlite3_bind_null(insert, 8)
                try step(insert)
            }
            try step(commit)
            events += eventsPerCommit
            now = clock.now
            latencies.append(now - before)
        }
        let elapsed = clock.now - start
        try execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return Measurement(events: events, elapsed: elapsed, latencies: latencies.sorted())
    }

    private func step(_ statement: OpaquePointer?) throws {
        let code = sqlite3_step(statement)
        sqlite3_reset(statement)
        guard code == SQLITE_DONE else { throw RawSQLiteError(message: String(cString: sqlite3_errmsg(db))) }
    }

    private func prepare(_ sql: String) throws -> OpaquePointer? {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK else {
            throw RawSQLiteError(message: String(cString: sqlite3_errmsg(db)))
        }
        return statement
    }

    /// Runs SQL on the connection (no rows).
    func execute(_ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else {
            throw RawSQLiteError(message: String(cString: sqlite3_errmsg(db)))
        }
    }
}

struct RawSQLiteError: Error, CustomStringConvertible {
    let message: String
    var description: String { "raw SQLite: \(message)" }
}

// MARK: Measuring

/// What one scenario did: how many events in how long, and how long each call waited.
struct Measurement {
    let events: Int
    let elapsed: Duration
    /// Per-call latencies, sorted.
    let latencies: [Duration]

    var seconds: Double { elapsed.secondsValue }
    var eventsPerSecond: Double { Double(events) / seconds }

    func percentile(_ fraction: Double) -> Duration {
        guard !latencies.isEmpty else { return .zero }
        let index = min(latencies.count - 1, Int((Double(latencies.count) * fraction).rounded(.down)))
        return latencies[index]
    }

    func row(scenario: String, mode: DurabilityArgument) -> [String] {
        [
            scenario, mode.rawValue, String(events), String(format: "%.2f", seconds),
            String(Int(eventsPerSecond.rounded())),
            String(format: "%.2f", percentile(0.5).secondsValue * 1000),
            String(format: "%.2f", percentile(0.99).secondsValue * 1000),
        ]
    }

    /// Runs `call` from `callers` concurrent tasks, each calling again as soon as its previous call
    /// returned, until `seconds` have passed. The clock stops when the last call returns.
    static func run(
        callers: Int,
        seconds: Double,
        eventsPerCall: Int,
        _ call: @escaping @Sendable (_ caller: Int) async throws -> Void
    ) async throws -> Measurement {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var latencies: [Duration] = []
                    var now = clock.now
                    while now < deadline {
                        let before = now
                        try await call(caller)
                        now = clock.now
                        latencies.append(now - before)
                    }
                    return latencies
                }
            }
            var all: [Duration] = []
            for try await latencies in group { all += latencies }
            return all
        }
        return Measurement(
            events: latencies.count * eventsPerCall, elapsed: clock.now - start, latencies: latencies.sorted())
    }
}

extension Duration {
    var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// A plain-text table with aligned columns: text to the left, numbers to the right.
struct Table {
    let columns: [String]
    private var rows: [[String]] = []

    init(columns: [String]) {
        self.columns = columns
    }

    mutating func add(_ row: [String]) {
        rows.append(row)
    }

    func render() -> String {
        let all = [columns] + rows
        let widths = columns.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        func isNumeric(_ column: Int) -> Bool {
            rows.allSatisfy { Double($0[column]) != nil }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return isNumeric(column) ? padding + cell : cell + padding
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(columns), rule] + rows.map(line)).joined(separator: "\n")
    }
}
