import ArgumentParser
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

        print(
            "eventlog-bench append: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(run.seconds) s per scenario"
        )
        print("database: \(db ?? "temporary file")")
        print("")
        var table = Table(columns: ["scenario", "mode", "events", "seconds", "events/s", "p50 ms", "p99 ms"])
        for mode in modes {
            var options = EventLog.Options()
            options.durability = mode.durability
            let log = try await EventLog.open(path: path, options: options)
            for scenario in scenarios {
                switch scenario {
                case .single:
                    let single = try await measureSingleAppends(log)
                    table.add(single.row(scenario: "single, \(callers) callers", mode: mode))
                case .batch:
                    let batches = try await measureBatches(log)
                    let callersText = "\(batchCallers) caller\(batchCallers == 1 ? "" : "s")"
                    table.add(batches.row(scenario: "batch of \(batchSize), \(callersText)", mode: mode))
                }
            }
            await log.close()
        }
        print(table.render())
    }

    private var payload: EventData {
        .text(String(repeating: "x", count: eventBytes))
    }

    private func measureSingleAppends(_ log: EventLog) async throws -> Measurement {
        let payload = self.payload
        _ = try await log.append(batch: (0..<200).map { NewEvent(topic: "warmup/\($0 % 10)", data: payload) })
        return try await Measurement.run(callers: callers, seconds: run.seconds, eventsPerCall: 1) { caller in
            _ = try await log.append(NewEvent(topic: "bench/\(caller % 16)", data: payload))
        }
    }

    private func measureBatches(_ log: EventLog) async throws -> Measurement {
        let batch = (0..<batchSize).map { NewEvent(topic: "bench/\($0 % 16)", data: payload) }
        _ = try await log.append(batch: batch)
        return try await Measurement.run(callers: batchCallers, seconds: run.seconds, eventsPerCall: batchSize) { _ in
            _ = try await log.append(batch: batch)
        }
    }
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
