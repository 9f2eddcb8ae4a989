import ArgumentParser

/// The benchmark tool. `append` measures the storage core alone; every other mode runs a real `eventlogd`
/// process and, in the same run, Redis 7 Streams started by the peer script, and reports both side by side.
@main
struct EventLogBench: AsyncParsableCommand {
    /// The command tree.
    static let configuration = CommandConfiguration(
        commandName: "eventlog-bench",
        abstract: "Measure eventlog's throughput and latency, side by side with Redis Streams.",
        subcommands: [
            AppendBenchmark.self, PublishCommand.self, LatencyCommand.self, FanoutCommand.self, IdleCommand.self,
            ReplayCommand.self, StormCommand.self, AuthCommand.self, RampCommand.self, CompactionCommand.self,
            StalledCommand.self, TailCommand.self, SnapshotCommand.self, ConditionalCommand.self,
            LatestCostCommand.self, PostgresCommand.self, AllCommand.self,
        ]
    )
}
