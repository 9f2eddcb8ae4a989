import ArgumentParser
import Foundation

/// Runs server benchmark phases with a fresh environment, prints the comparison table, and stops every
/// server even when a phase fails.
enum ServerBenchmark {
    static func run(
        _ options: ServerOptions, title: String, output: String? = nil,
        _ phases: [(name: String, run: (BenchEnvironment) async throws -> [ResultRow])]
    ) async throws {
        let env = try await BenchEnvironment.make(options)
        let started = Date()
        env.say("# eventlog-bench \(title)\(options.quick ? " --quick" : "")")
        env.say(
            "date: \(ISO8601DateFormatter().string(from: started)); \(ProcessInfo.processInfo.activeProcessorCount) "
                + "cores; load average \(Processes.loadAverage()); eventlogd: \(env.eventlogdPath); Redis: "
                + (env.redisScript ?? "skipped"))
        var rows: [ResultRow] = []
        var failures: [String] = []
        for phase in phases {
            do {
                rows += try await phase.run(env)
            } catch {
                failures.append("\(phase.name): \(error)")
                env.say("  \(phase.name) FAILED: \(error)")
            }
        }
        await env.shutdown()
        let elapsed = Date().timeIntervalSince(started)
        var report = "\n## Results (\(String(format: "%.0f", elapsed)) s; load average at the end "
        report += "\(Processes.loadAverage()))\n\n" + Report.markdown(rows) + "\n"
        if !failures.isEmpty { report += "\nFailed phases:\n" + failures.map { "- \($0)" }.joined(separator: "\n") }
        env.say(report)
        if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// `publish`: durable publish throughput and latency.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Durable publish throughput and latency (single events and batches) vs Redis XADD.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: PublishOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "publish", [("publish", { try await PublishPhase.run($0, options) })])
    }
}

/// `latency`: publish-to-delivery latency at a fixed rate.
struct LatencyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency",
        abstract: "Publish-to-delivery latency at a fixed rate, one SSE subscriber vs XREAD BLOCK.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: LatencyOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "latency", [("latency", { try await LatencyPhase.run($0, options) })])
    }
}

/// `fanout`: thousands of subscribers on one topic.
struct FanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Deliveries per second and delivery latency with 1,000 and 10,000 subscribers on one topic.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: FanoutOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "fanout", [("fanout", { try await FanoutPhase.run($0, options) })])
    }
}

/// `idle`: server memory per idle connection.
struct IdleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Server memory (RSS) per idle subscriber with 10,000 idle connections.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: IdleOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "idle", [("idle", { try await IdlePhase.run($0, options) })])
    }
}

/// `replay`: catching up from far behind.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay throughput for a client resuming 100,000 events behind vs XRANGE paging.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: ReplayOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "replay", [("replay", { try await ReplayPhase.run($0, options) })])
    }
}

/// `storm`: a reconnect storm, checked event by event.
struct StormCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storm",
        abstract: "1,000 clients resume at once from random positions; time until all caught up, and a check "
            + "that none missed an event.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: StormOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "storm", [("storm", { try await StormPhase.run($0, options) })])
    }
}

/// `ramp`: the fan-out ramp at 10,000 subscribers.
struct RampCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ramp",
        abstract: "The highest deliveries/s sustained with delivery p99 ≤ 250 ms at 10,000 subscribers on one topic "
            + "(offered rate stepped up until a step misses), vs XREAD BLOCK.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: RampOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "ramp", [("ramp", { try await RampPhase.run($0, options) })])
    }
}

/// `compaction`: publish latency while eventlog-maint compacts.
struct CompactionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compaction",
        abstract: "Publish p99 while eventlog-maint compact runs over 1M keyed events, against the same without "
            + "it (eventlog only).")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: CompactionOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "compaction", [("compaction", { try await CompactionPhase.run($0, options) })])
    }
}

/// `stalled`: server memory held for subscribers that stop reading.
struct StalledCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stalled",
        abstract: "Server peak RSS with 1,000 SSE subscribers that stop reading while 100 MiB is published, "
            + "against none stopped (eventlog only).")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: StalledOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "stalled", [("stalled", { try await StalledPhase.run($0, options) })])
    }
}

/// `tail`: server memory with a full in-memory tail.
struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Server RSS growth with a full 64 MiB in-memory tail (--tail-bytes), against --tail-bytes "
            + "(eventlog only).")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: TailOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(server, title: "tail", [("tail", { try await TailPhase.run($0, options) })])
    }
}

/// `snapshot`: `snapshot=latest` over a large keyed log.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Time to read the newest event of every key (snapshot=latest) of a prefix and of * over 1M events "
            + "and 100k keys, through the library and through an SSE stream (eventlog only).")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: SnapshotOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "snapshot", [("snapshot", { try await SnapshotPhase.run($0, options) })])
    }
}

/// `conditional`: publish throughput with and without Expected-Last-Id.
struct ConditionalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conditional",
        abstract: "Single-publish throughput with and without conditional appends (Expected-Last-Id) vs XADD and a "
            + "Lua check-and-XADD.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: ConditionalOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "conditional", [("conditional", { try await ConditionalPhase.run($0, options) })])
    }
}

/// `latest-cost`: what the latest table's trigger costs an append.
struct LatestCostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latest-cost",
        abstract: "Raw SQLite inserts with and without the latest trigger, and (with --baseline-bench) the core's "
            + "append rate before issue 13 against this build (eventlog only).")

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: LatestCostOptions

    func run() async throws {
        let options = self.options
        try await ServerBenchmark.run(
            server, title: "latest-cost", [("latest-cost", { try await LatestCostPhase.run($0, options) })])
    }
}

/// `all`: every server benchmark with its default options, and one table at the end.
struct AllCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Run publish, latency, fanout, idle, replay, storm, tail, snapshot, conditional, latest-cost, ramp, "
            + "compaction and stalled, and print one markdown table.",
        discussion: """
            Each phase starts a fresh eventlogd (release build, --durability full, a new database in a temporary \
            directory) on 127.0.0.1, measures it, stops it, then does the same against Redis 7 Streams started by \
            the peer script (AOF, appendfsync always). --quick shortens every phase so that the whole run takes a \
            few minutes. ramp, compaction and stalled are the long phases (each several minutes); --skip-long \
            leaves them out, --skip PHASE leaves out any phase.
            """)

    @OptionGroup var server: ServerOptions
    @OptionGroup var ramp: RampOptions
    @OptionGroup var compaction: CompactionOptions
    @OptionGroup var stalled: StalledOptions
    @OptionGroup var tail: TailOptions
    @OptionGroup var snapshot: SnapshotOptions
    @OptionGroup var conditional: ConditionalOptions
    @OptionGroup var latestCost: LatestCostOptions

    /// Phases to leave out.
    @Option(
        name: .customLong("skip"),
        help: """
            A phase to leave out (publish, latency, fanout, idle, replay, storm, tail, snapshot, conditional, \
            latest-cost, ramp, compaction, stalled); repeatable.
            """)
    var skipped: [String] = []

    /// Leave out the long phases.
    @Flag(help: "Leave out the long phases: ramp, compaction and stalled.")
    var skipLong = false

    static let phaseNames = [
        "publish", "latency", "fanout", "idle", "replay", "storm", "tail", "snapshot", "conditional", "latest-cost",
        "ramp", "compaction", "stalled",
    ]

    func validate() throws {
        for name in skipped where !Self.phaseNames.contains(name) {
            throw ValidationError("--skip \(name): not a phase (\(Self.phaseNames.joined(separator: ", ")))")
        }
    }

    /// Also write the final table to this file.
    @Option(help: "Also write the results table to this file.")
    var output: String?

    func run() async throws {
        let publish = try PublishOptions.parse([])
        let latency = try LatencyOptions.parse([])
        let fanout = try FanoutOptions.parse([])
        let idle = try IdleOptions.parse([])
        let replay = try ReplayOptions.parse([])
        let storm = try StormOptions.parse([])
        let ramp = self.ramp
        let compaction = self.compaction
        let stalled = self.stalled
        let tail = self.tail
        let snapshot = self.snapshot
        let conditional = self.conditional
        let latestCost = self.latestCost
        let phases: [(name: String, run: (BenchEnvironment) async throws -> [ResultRow])] = [
            ("publish", { try await PublishPhase.run($0, publish) }),
            ("latency", { try await LatencyPhase.run($0, latency) }),
            ("fanout", { try await FanoutPhase.run($0, fanout) }),
            ("idle", { try await IdlePhase.run($0, idle) }),
            ("replay", { try await ReplayPhase.run($0, replay) }),
            ("storm", { try await StormPhase.run($0, storm) }),
            ("tail", { try await TailPhase.run($0, tail) }),
            ("snapshot", { try await SnapshotPhase.run($0, snapshot) }),
            ("conditional", { try await ConditionalPhase.run($0, conditional) }),
            ("latest-cost", { try await LatestCostPhase.run($0, latestCost) }),
            ("ramp", { try await RampPhase.run($0, ramp) }),
            ("compaction", { try await CompactionPhase.run($0, compaction) }),
            ("stalled", { try await StalledPhase.run($0, stalled) }),
        ]
        let long: Set = ["ramp", "compaction", "stalled"]
        let skip = Set(skipped).union(skipLong ? long : [])
        try await ServerBenchmark.run(
            server, title: "all", output: output, phases.filter { !skip.contains($0.name) })
    }
}
