import ArgumentParser
import EventLog
import Foundation

/// Options of the `latest-cost` benchmark.
struct LatestCostOptions: ParsableArguments {
    @Option(
        name: .customLong("baseline-bench"),
        help: """
            An eventlog-bench built from the code before issue 13 (commit 20716ba, schema 1, no latest table): its \
            `append` runs back to back with this build's, same arguments. Without it only the raw SQLite rows run.
            """)
    var baselineBench: String?

    @Option(
        name: .customLong("latest-cost-seconds"), help: "Seconds per measured scenario. Default 5, or 1 with --quick.")
    var seconds: Double?

    @Option(
        name: .customLong("latest-cost-rounds"),
        help: "Rounds, alternating (before, this build) and (with, without the trigger). Default 2, 1 with --quick.")
    var rounds: Int?

    @Option(name: .customLong("latest-cost-keys"), help: "Distinct keys of the keyed raw SQLite scenario.")
    var keys = 100_000

    func validate() throws {
        if let seconds, !(seconds > 0) { throw ValidationError("--latest-cost-seconds must be positive") }
        if let rounds, rounds < 1 { throw ValidationError("--latest-cost-rounds must be positive") }
        guard keys > 0 else { throw ValidationError("--latest-cost-keys must be positive") }
    }
}

/// What schema 2's `latest` table costs an append: every inserted event upserts its (topic, key) row through
/// the `events_latest_insert` trigger (and moves its `latest_id` index entry).
///
/// - Raw SQLite (always): the `append` benchmark's raw baseline (prepared INSERTs, transactions of 1,000,
///   synchronous FULL) on a schema 2 file, with the trigger and with it dropped, rounds alternating; once
///   without keys (16 topics: 16 latest rows, each insert updates one) and once with keys picked at random
///   among `--latest-cost-keys` (the table and its index as large as that, warmed up first).
/// - The core (with `--baseline-bench`): `eventlog-bench append --mode full --no-raw` of the build before
///   issue 13 and of this build, same arguments, back to back, rounds alternating.
enum LatestCostPhase {
    static func run(_ env: BenchEnvironment, _ options: LatestCostOptions) async throws -> [ResultRow] {
        let seconds = options.seconds ?? (env.quick ? 1 : 5)
        let rounds = options.rounds ?? (env.quick ? 1 : 2)
        env.say(
            "## latest-cost: raw SQLite inserts with and without the latest trigger\(options.baselineBench == nil ? "" : ", and the core's append before issue 13 and now"), "
                + "\(rounds) round(s) of \(seconds) s per scenario")
        var rows = try await rawRows(env, seconds: seconds, rounds: rounds, keys: options.keys)
        if let baseline = options.baselineBench {
            rows += try await coreRows(env, baseline: baseline, seconds: seconds, rounds: rounds)
        }
        return rows
    }

    // MARK: Raw SQLite

    private static let trigger = """
        CREATE TRIGGER events_latest_insert AFTER INSERT ON events BEGIN
            INSERT INTO latest (topic, key, id) VALUES (new.topic, coalesce(new.key, new.topic), new.id)
                ON CONFLICT (topic, key) DO UPDATE SET id = excluded.id WHERE excluded.id > latest.id;
        END
        """

    private static func rawRows(
        _ env: BenchEnvironment, seconds: Double, rounds: Int, keys: Int
    ) async throws -> [ResultRow] {
        let directory = try Processes.makeTemporaryDirectory(prefix: "eventlog-bench-latest")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let payload = String(repeating: "x", count: 100)
        var rows: [ResultRow] = []
        for keyed in [false, true] {
            // A fresh schema 2 file per scenario, made by the core's migrations.
            let path = directory + (keyed ? "/keyed.db" : "/plain.db")
            try await makeSchema(path)
            let raw = try RawSQLite(path: path, durability: .full)
            defer { raw.close() }
            let keyCount = keyed ? keys : nil
            // Warm-up with the trigger: with keys, until the latest table holds (nearly) all of them.
            _ = try raw.measure(eventsPerCommit: 1000, seconds: keyed ? 3 : 1, payload: payload, keys: keyCount)
            var with: [Double] = []
            var without: [Double] = []
            for round in 0..<rounds {
                let a = try raw.measure(eventsPerCommit: 1000, seconds: seconds, payload: payload, keys: keyCount)
                try raw.execute("DROP TRIGGER events_latest_insert")
                let b = try raw.measure(eventsPerCommit: 1000, seconds: seconds, payload: payload, keys: keyCount)
                try raw.execute(trigger)
                with.append(a.eventsPerSecond)
                without.append(b.eventsPerSecond)
                env.say(
                    "  raw SQLite \(keyed ? "keyed (\(Report.number(Double(keys))) keys)" : "no keys (16 topics)"), "
                        + "round \(round + 1): with the trigger \(Report.number(a.eventsPerSecond)) events/s, "
                        + "without \(Report.number(b.eventsPerSecond)) events/s")
            }
            let withRate = with.reduce(0, +) / Double(with.count)
            let withoutRate = without.reduce(0, +) / Double(without.count)
            let label = keyed ? "keys random among \(Report.number(Double(keys)))" : "no keys, 16 topics"
            rows.append(
                ResultRow(
                    benchmark: "latest-cost",
                    metric: "raw SQLite inserts, transactions of 1,000, \(label), with the latest trigger",
                    unit: "events/s", eventlog: withRate, redis: nil, better: .higher,
                    note: "without the trigger (same file, dropped): \(Report.number(withoutRate)) events/s; "
                        + "mean of \(rounds) alternating round(s)"))
            rows.append(
                ResultRow(
                    benchmark: "latest-cost", metric: "raw SQLite, \(label): with the trigger / without", unit: "×",
                    eventlog: withRate / withoutRate, redis: nil, better: .higher,
                    note: "Redis: no equivalent (no per-key table)"))
        }
        return rows
    }

    private static func makeSchema(_ path: String) async throws {
        await (try await EventLog.open(path: path)).close()
    }

    // MARK: The core, before and after

    private struct CoreFigures {
        var single: [Double] = []
        var batch: [Double] = []
    }

    private static func coreRows(
        _ env: BenchEnvironment, baseline: String, seconds: Double, rounds: Int
    ) async throws -> [ResultRow] {
        guard FileManager.default.isExecutableFile(atPath: baseline) else {
            throw BenchError("--baseline-bench \(baseline) is not an executable")
        }
        let current = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let arguments = [
            "append", "--mode", "full", "--no-raw", "--duration", String(seconds), "--scenario", "single",
            "--scenario", "batch",
        ]
        var before = CoreFigures()
        var after = CoreFigures()
        for round in 0..<rounds {
            for (name, binary) in [("before", baseline), ("this build", current)] {
                let output = try await Processes.run(binary, arguments, timeout: .seconds(Int64(seconds * 4 + 120)))
                guard let single = rate(in: output, scenario: "single, "),
                    let batch = rate(in: output, scenario: "batch of ")
                else { throw BenchError("\(binary) append printed no rates:\n\(output.suffix(2000))") }
                if name == "before" {
                    before.single.append(single)
                    before.batch.append(batch)
                } else {
                    after.single.append(single)
                    after.batch.append(batch)
                }
                env.say(
                    "  core append, \(name), round \(round + 1): single (50 callers) \(Report.number(single)) events/s, "
                        + "batch of 1000 \(Report.number(batch)) events/s")
            }
        }
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
        let noRedis = "Redis: no equivalent"
        var rows: [ResultRow] = []
        for (label, now, then) in [
            ("single appends, 50 callers", mean(after.single), mean(before.single)),
            ("batches of 1,000, 1 caller", mean(after.batch), mean(before.batch)),
        ] {
            rows.append(
                ResultRow(
                    benchmark: "latest-cost", metric: "core append (durability full), \(label), this build",
                    unit: "events/s", eventlog: now, redis: nil, better: .higher,
                    note: "before issue 13 (--baseline-bench): \(Report.number(then)) events/s; mean of \(rounds) "
                        + "alternating round(s); \(noRedis)"))
            rows.append(
                ResultRow(
                    benchmark: "latest-cost", metric: "core append, \(label): this build / before issue 13",
                    unit: "×", eventlog: now / then, redis: nil, better: .higher,
                    note: "the latest trigger's cost on the core (events without keys)"))
        }
        return rows
    }

    /// The events/s of the first table row whose scenario starts with `scenario` in `append`'s output.
    private static func rate(in output: String, scenario: String) -> Double? {
        for line in output.split(separator: "\n") where line.hasPrefix(scenario) {
            // Columns are separated by two spaces or more: scenario, mode, events, seconds, events/s, ...
            let cells = line.split(separator: "  ").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
            if cells.count >= 5, let value = Double(cells[4]) { return value }
        }
        return nil
    }
}
