import ArgumentParser
import EventLog
import Foundation
import NIOCore
import Synchronization

/// Options of `eventlog-bench postgres`.
struct PostgresOptions: ParsableArguments {
    @Option(
        help: "The throwaway-cluster script. Default: tools/pg.sh here, then in the package eventlog-bench came from.")
    var pgScript: String?

    @Option(help: "The cluster's loopback port. Default: a random one in 34000-35999 (tried up to 3 times).")
    var pgPort: Int?

    @Option(
        name: .customLong("skip"),
        help: "A phase to leave out (pg-publish, pg-cross-latency, pg-fanout, pg-outbox, pg-counter); repeatable.")
    var skipped: [String] = []

    @Option(
        help: "Single-event publishers of pg-publish and pg-counter (keep-alive connections spread over the nodes).")
    var publishers = 50

    @Option(name: .customLong("nodes"), help: "Node counts of pg-publish (repeatable). Default 1, 2, 3.")
    var publishNodes: [Int] = []

    @Option(name: .customLong("counter-nodes"), help: "Node counts of pg-counter (repeatable). Default 1, 2, 3, 4, 6.")
    var counterNodes: [Int] = []

    @Option(help: "Publishes per second of pg-cross-latency (paced).")
    var latencyRate: Double = 1000

    @Option(help: "Keep-alive connections of pg-cross-latency's paced publisher (all on node A).")
    var latencyPublishers = 32

    @Option(help: "Subscribers of pg-fanout, spread over its nodes.")
    var fanoutSubscribers = 300

    @Option(help: "Nodes of pg-fanout.")
    var fanoutNodes = 3

    @Option(help: "Publishes per second of pg-fanout (paced, spread over the nodes).")
    var fanoutRate: Double = 100

    @Option(help: "Application transactions per second of pg-outbox's latency run (one connection, paced).")
    var outboxRate: Double = 200

    @Option(
        name: .customLong("outbox-connections"),
        help: "Connections of pg-outbox's closed-loop commit runs (repeatable). Default 1 and 8.")
    var outboxConnections: [Int] = []

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100

    @Option(help: "Seconds after which the whole run is stopped (servers and cluster too) and fails.")
    var budget: Double = 1500

    @Option(help: "Also write the results table to this file.")
    var output: String?

    static let phaseNames = ["pg-publish", "pg-cross-latency", "pg-fanout", "pg-outbox", "pg-counter"]

    func validate() throws {
        for name in skipped where !Self.phaseNames.contains(name) {
            throw ValidationError("--skip \(name): not a phase (\(Self.phaseNames.joined(separator: ", ")))")
        }
        guard publishers > 0, latencyPublishers > 0, fanoutSubscribers > 0, fanoutNodes > 0, latencyRate > 0,
            fanoutRate > 0, outboxRate > 0, budget > 0
        else { throw ValidationError("counts, rates and --budget must be positive") }
        guard (publishNodes + counterNodes + outboxConnections).allSatisfy({ $0 > 0 && $0 <= 32 }) else {
            throw ValidationError("--nodes, --counter-nodes and --outbox-connections take 1...32")
        }
    }
}

/// `postgres`: eventlogd nodes sharing one log in a throwaway PostgreSQL cluster.
struct PostgresCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres",
        abstract:
            "eventlogd on PostgreSQL: publish throughput with 1-3 nodes (vs SQLite and XADD), publish on one node "
            + "to delivery on another, fan-out over 3 nodes, eventlog.publish from an application transaction, and "
            + "the counter row's commit rate as nodes grow.",
        discussion: """
            Starts its own PostgreSQL cluster with tools/pg.sh (fsync on, synchronous_commit on, 127.0.0.1 only) in \
            a temporary directory and stops it at the end, on failure, on SIGINT/SIGTERM and when --budget runs out. \
            Every measured configuration gets a fresh database and fresh eventlogd nodes (--durability full).
            """)

    @OptionGroup var server: ServerOptions
    @OptionGroup var options: PostgresOptions

    func run() async throws {
        let options = self.options
        let budget = options.budget
        let watchdog = Thread {
            Thread.sleep(forTimeInterval: budget)
            FileHandle.standardError.write(
                Data("eventlog-bench: --budget of \(Int(budget)) s ran out; stopping every server\n".utf8))
            PostgresCommand.budgetRanOut.store(true, ordering: .relaxed)
            ServerRegistry.shared.killAll()
            Foundation.exit(3)
        }
        watchdog.name = "eventlog-bench-watchdog"
        watchdog.start()
        let holder = PGClusterHolder(script: options.pgScript, port: options.pgPort)
        let phases: [(name: String, run: (BenchEnvironment) async throws -> [ResultRow])] = [
            ("pg-publish", { try await PGPhases.publish($0, try await holder.get($0), options) }),
            ("pg-cross-latency", { try await PGPhases.crossLatency($0, try await holder.get($0), options) }),
            ("pg-fanout", { try await PGPhases.fanout($0, try await holder.get($0), options) }),
            ("pg-outbox", { try await PGPhases.outbox($0, try await holder.get($0), options) }),
            ("pg-counter", { try await PGPhases.counter($0, try await holder.get($0), options) }),
        ]
        let skip = Set(options.skipped)
        do {
            try await ServerBenchmark.run(
                server, title: "postgres", output: options.output, phases.filter { !skip.contains($0.name) })
        } catch {
            // The watchdog is stopping the cluster: let it finish and exit, rather than exit under it.
            if Self.budgetRanOut.load(ordering: .relaxed) { try? await Task.sleep(for: .seconds(120)) }
            throw error
        }
    }

    /// Set by the watchdog when `--budget` ran out.
    static let budgetRanOut = Atomic<Bool>(false)
}

/// What a closed-loop publish run over one or more nodes measured.
struct NodesPublishResult: Sendable {
    let result: ClosedLoopResult
    /// Group commits in the window (distinct `xmin` of the events it wrote); nil on SQLite.
    var commits: Int?
    /// Events in the window by the counter's head.
    var events: Int?
    let nodesCPUSeconds: Double
    var postgresCPUSeconds: Double?
    /// Mean backends per sample in each state (pg_stat_activity), when sampled.
    var activity: ActivitySample?

    var eventsPerSecond: Double { result.eventsPerSecond(1) }
    var commitsPerSecond: Double? { commits.map { Double($0) / result.seconds } }

    func microsecondsPerEvent(_ seconds: Double) -> Double? {
        result.requests > 0 ? seconds * 1e6 / Double(result.requests) : nil
    }

    /// "p50 …, p99 …; 480 commits/s, 21.9 events/commit; CPU per event: eventlogd 60 µs, postgres 80 µs".
    var summary: String {
        var text = String(
            format: "p50 %.2f ms, p99 %.2f ms", result.latencies.milliseconds(0.5) ?? 0,
            result.latencies.milliseconds(0.99) ?? 0)
        if let commits, let events, commits > 0 {
            text += String(
                format: "; %@ commits/s, %.1f events/commit", Report.number(commitsPerSecond ?? 0),
                Double(events) / Double(commits))
        }
        text += "; CPU per event: eventlogd " + (microsecondsPerEvent(nodesCPUSeconds).map { Report.number($0) } ?? "–")
        if let postgresCPUSeconds {
            text += " µs, postgres " + (microsecondsPerEvent(postgresCPUSeconds).map { Report.number($0) } ?? "–")
        }
        text += " µs"
        if result.failures > 0 { text += "; \(result.failures) FAILED: \(result.firstFailure ?? "")" }
        return text
    }
}

/// Means over the samples of `pg_stat_activity` taken during a run: how many of the nodes' backends were in
/// each state at a time.
struct ActivitySample: Sendable {
    var samples = 0
    /// Active, waiting for a heavyweight lock (the counter row: `transactionid` / `tuple`).
    var lockWait = 0.0
    /// Active, waiting on WAL (flush, write, insert) or other I/O.
    var walOrIO = 0.0
    /// Active, no wait event: on a CPU (or runnable).
    var running = 0.0
    /// Active, waiting on something else (an LWLock other than WAL, a latch...).
    var otherWait = 0.0
    /// Idle in a transaction: the backend waits for eventlogd's next statement (in a group commit, holding the
    /// counter row).
    var idleInTransaction = 0.0

    var text: String {
        String(
            format: "backends (mean of %d samples): lock wait %.2f, WAL/IO %.2f, running %.2f, other wait %.2f, "
                + "idle in transaction %.2f", samples, lockWait, walOrIO, running, otherWait, idleInTransaction)
    }
}

/// Samples `pg_stat_activity` of one database every 25 ms on a thread of its own until stopped.
final class ActivitySampler: Sendable {
    private final class State: Sendable {
        let stopping = Atomic<Bool>(false)
        let result = Mutex(ActivitySample())
        let done = DispatchSemaphore(value: 0)
    }

    private let state = State()

    init(url: String) {
        let thread = Thread { [state] in
            let done = state.done
            defer { done.signal() }
            guard let connection = try? PGConnection(url: url) else { return }
            defer { connection.close() }
            var totals = [Double](repeating: 0, count: 5)
            var samples = 0
            while !state.stopping.load(ordering: .relaxed) {
                if let row = try? connection.query(
                    """
                    SELECT count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
                      count(*) FILTER (WHERE state = 'active' AND (wait_event_type = 'IO' OR wait_event LIKE 'WAL%')),
                      count(*) FILTER (WHERE state = 'active' AND wait_event_type IS NULL),
                      count(*) FILTER (WHERE state = 'active' AND wait_event_type IS NOT NULL
                        AND wait_event_type <> 'Lock' AND wait_event_type <> 'IO' AND wait_event NOT LIKE 'WAL%'),
                      count(*) FILTER (WHERE state = 'idle in transaction')
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                    """), row.rowCount == 1
                {
                    for column in 0..<5 { totals[column] += Double(row.int64(0, column)) }
                    samples += 1
                }
                usleep(25_000)
            }
            let n = Double(max(samples, 1))
            state.result.withLock {
                $0 = ActivitySample(
                    samples: samples, lockWait: totals[0] / n, walOrIO: totals[1] / n, running: totals[2] / n,
                    otherWait: totals[3] / n, idleInTransaction: totals[4] / n)
            }
        }
        thread.name = "eventlog-bench-pg-activity"
        thread.start()
    }

    /// Stops sampling and returns the means.
    func stop() async -> ActivitySample {
        state.stopping.store(true, ordering: .relaxed)
        let state = self.state
        _ = try? await onThread { state.done.wait() }
        return state.result.withLock { $0 }
    }
}

enum PGPhases {
    // MARK: Helpers

    /// The counter's head (`eventlog.counter`).
    static func head(_ url: String) async throws -> Int64 {
        try await onThread {
            let connection = try PGConnection(url: url)
            defer { connection.close() }
            return try connection.scalarInt("SELECT head FROM eventlog.counter") ?? 0
        }
    }

    /// Events and group commits (distinct transaction ids) with ids in `after + 1 ... through`.
    static func commits(_ url: String, after: Int64, through: Int64) async throws -> (events: Int, commits: Int) {
        try await onThread {
            let connection = try PGConnection(url: url)
            defer { connection.close() }
            let result = try connection.query(
                "SELECT count(*), count(DISTINCT xmin::text) FROM eventlog.events WHERE id > $1 AND id <= $2",
                [String(after), String(through)])
            return (Int(result.int64(0, 0)), Int(result.int64(0, 1)))
        }
    }

    /// The publish phase's load: `publishers` keep-alive connections spread over `nodes` (connection `i` on node
    /// `i % count`), each sending one 100-byte event on one of 16 topics and waiting for its answer; a warm-up, then
    /// the measured window. On PostgreSQL (`url`) it also counts the window's group commits and the cluster's CPU.
    static func closedLoopPublish(
        _ env: BenchEnvironment, nodes: [StartedServer], url: String?, cluster: PGCluster?, publishers: Int,
        eventBytes: Int, sampleActivity: Bool = false
    ) async throws -> NodesPublishResult {
        let seconds = env.duration
        let warmUp = env.quick ? 0.5 : 1.0
        let payload = String(repeating: "x", count: eventBytes)
        let connections = try await env.client.connectMany(count: publishers) { index in
            let loop = env.loop(index)
            let connection = HTTPLoadConnection(eventLoop: loop)
            _ = try await env.client.connect(port: nodes[index % nodes.count].port, on: loop, handler: connection)
            return connection
        }
        defer { connections.forEach { $0.close() } }
        let singles = (0..<publishers).map {
            HTTPLoadConnection.request(
                "POST", "/v1/events", contentType: "application/json",
                body: "{\"topic\":\"bench/\($0 % 16)\",\"data\":\"\(payload)\"}")
        }
        _ = try await runClosedLoop(connections: connections, requests: singles, seconds: warmUp)
        let before = try await url.asyncMap { try await head($0) }
        let sampler = sampleActivity ? url.map { ActivitySampler(url: $0) } : nil
        let nodesCPU = GroupCPU(nodes.map(\.pid))
        let postgresCPU = cluster.map { GroupCPU($0.processIDs) }
        let result = try await runClosedLoop(connections: connections, requests: singles, seconds: seconds)
        var measured = NodesPublishResult(
            result: result, nodesCPUSeconds: nodesCPU.seconds, postgresCPUSeconds: postgresCPU?.seconds)
        measured.activity = await sampler?.stop()
        if let url, let before {
            let after = try await head(url)
            let counted = try await commits(url, after: before, through: after)
            measured.events = counted.events
            measured.commits = counted.commits
        }
        return measured
    }

    // MARK: pg-publish

    static func publish(
        _ env: BenchEnvironment, _ cluster: PGCluster, _ options: PostgresOptions
    ) async throws
        -> [ResultRow]
    {
        let counts = options.publishNodes.isEmpty ? [1, 2, 3] : options.publishNodes
        env.say(
            "## pg-publish: \(options.publishers) single-event publishers for \(env.duration) s on SQLite (1 node), "
                + "on PostgreSQL with \(counts.map(String.init).joined(separator: ", ")) node(s), and XADD")
        let sqlite = try await env.withEventLog { server in
            try await closedLoopPublish(
                env, nodes: [server], url: nil, cluster: nil, publishers: options.publishers,
                eventBytes: options.eventBytes)
        }
        env.say("  SQLite, 1 node: \(Report.number(sqlite.eventsPerSecond)) events/s; \(sqlite.summary)")
        var postgres: [(nodes: Int, result: NodesPublishResult)] = []
        for count in counts {
            let result = try await cluster.withDatabase("bench_publish_\(count)") { url in
                try await env.withEventLogNodes(count, database: url) { nodes in
                    try await closedLoopPublish(
                        env, nodes: nodes, url: cluster.databaseURL("bench_publish_\(count)", statementTimeout: true),
                        cluster: cluster, publishers: options.publishers, eventBytes: options.eventBytes)
                }
            }
            env.say(
                "  PostgreSQL, \(count) node(s): \(Report.number(result.eventsPerSecond)) events/s; \(result.summary)")
            postgres.append((count, result))
        }
        let redis = try await env.withRedis { server -> ClosedLoopResult in
            let connections = try await env.client.redisConnections(port: server.port, count: options.publishers)
            defer { connections.forEach { $0.close() } }
            let payload = String(repeating: "x", count: options.eventBytes)
            let singles = (0..<options.publishers).map { RESP.command("XADD", "bench:\($0 % 16)", "*", "d", payload) }
            _ = try await runClosedLoop(connections: connections, requests: singles, seconds: env.quick ? 0.5 : 1)
            return try await runClosedLoop(connections: connections, requests: singles, seconds: env.duration)
        }
        if let redis {
            env.say("  Redis XADD: \(Report.number(redis.eventsPerSecond(1))) events/s; \(redis.latencies.summary)")
        }
        let name = "pg-publish"
        let people = options.publishers
        var rows = [
            ResultRow(
                benchmark: name, metric: "single events, \(people) publishers, SQLite, 1 node", unit: "events/s",
                eventlog: sqlite.eventsPerSecond, redis: redis?.eventsPerSecond(1), better: .higher,
                note: sqlite.summary + "; Redis: XADD, appendfsync always")
        ]
        for (count, result) in postgres {
            let ratio = sqlite.eventsPerSecond > 0 ? result.eventsPerSecond / sqlite.eventsPerSecond : 0
            rows.append(
                ResultRow(
                    benchmark: name,
                    metric: "single events, \(people) publishers, PostgreSQL, \(count) node\(count == 1 ? "" : "s")",
                    unit: "events/s", eventlog: result.eventsPerSecond, redis: redis?.eventsPerSecond(1),
                    better: .higher, note: String(format: "%.2f× SQLite 1 node; ", ratio) + result.summary))
        }
        rows.append(
            ResultRow(
                benchmark: name, metric: "single publish p99, PostgreSQL, 1 node", unit: "ms",
                eventlog: postgres.first?.result.result.latencies.milliseconds(0.99),
                redis: redis?.latencies.milliseconds(0.99), better: .lower,
                note: "SQLite 1 node: " + (sqlite.result.latencies.milliseconds(0.99).map { Report.number($0) } ?? "–")
                    + " ms"))
        return rows
    }

    // MARK: pg-cross-latency

    static func crossLatency(
        _ env: BenchEnvironment, _ cluster: PGCluster, _ options: PostgresOptions
    ) async throws
        -> [ResultRow]
    {
        let seconds = env.duration
        let warmUp = env.quick ? 0.5 : 1.0
        let rate = options.latencyRate
        env.say(
            "## pg-cross-latency: 2 nodes on PostgreSQL, \(Report.number(rate)) publishes/s on node A for \(seconds) s, "
                + "one SSE subscriber on node B, then on node A")
        let (crossed, local) = try await cluster.withDatabase("bench_latency") { url in
            try await env.withEventLogNodes(2, database: url) { nodes in
                let crossed = try await LiveDelivery.eventlog(
                    env, server: nodes[0], subscribers: 1, rate: rate, seconds: seconds, warmUp: warmUp,
                    publishers: options.latencyPublishers, eventBytes: options.eventBytes,
                    subscriberPorts: [nodes[1].port], publisherPorts: [nodes[0].port])
                env.say(crossed.describe("A → B"))
                let local = try await LiveDelivery.eventlog(
                    env, server: nodes[0], subscribers: 1, rate: rate, seconds: seconds, warmUp: warmUp,
                    publishers: options.latencyPublishers, eventBytes: options.eventBytes,
                    subscriberPorts: [nodes[0].port], publisherPorts: [nodes[0].port])
                env.say(local.describe("A → A"))
                return (crossed, local)
            }
        }
        let redis = try await env.withRedis { server in
            try await LiveDelivery.redis(
                env, server: server, subscribers: 1, rate: rate, seconds: seconds, warmUp: warmUp,
                publishers: options.latencyPublishers, eventBytes: options.eventBytes)
        }
        if let redis { env.say(redis.describe("Redis (XREAD BLOCK)")) }
        let name = "pg-cross-latency"
        let at = Report.number(rate)
        func delivered(_ result: LiveResult) -> String {
            "delivered \(Report.number(Double(result.delivered)))/\(Report.number(Double(result.expected)))"
        }
        return [
            ResultRow(
                benchmark: name, metric: "publish on A → delivery on B p50 at \(at)/s (2 nodes)", unit: "ms",
                eventlog: crossed.latencies.milliseconds(0.5), redis: redis?.latencies.milliseconds(0.5),
                better: .lower, note: delivered(crossed) + "; Redis: one server, XREAD BLOCK"),
            ResultRow(
                benchmark: name, metric: "publish on A → delivery on B p99", unit: "ms",
                eventlog: crossed.latencies.milliseconds(0.99), redis: redis?.latencies.milliseconds(0.99),
                better: .lower),
            ResultRow(
                benchmark: name, metric: "publish on A → delivery on A p50 (same run's cluster)", unit: "ms",
                eventlog: local.latencies.milliseconds(0.5), redis: redis?.latencies.milliseconds(0.5),
                better: .lower, note: delivered(local)),
            ResultRow(
                benchmark: name, metric: "publish on A → delivery on A p99", unit: "ms",
                eventlog: local.latencies.milliseconds(0.99), redis: redis?.latencies.milliseconds(0.99),
                better: .lower),
            ResultRow(
                benchmark: name, metric: "publish→ack p99 on A (A → B run)", unit: "ms",
                eventlog: crossed.paced.acknowledgements.milliseconds(0.99),
                redis: redis?.paced.acknowledgements.milliseconds(0.99), better: .lower,
                note: String(format: "p50 %.2f ms", crossed.paced.acknowledgements.milliseconds(0.5) ?? 0)),
        ]
    }

    // MARK: pg-fanout

    static func fanout(
        _ env: BenchEnvironment, _ cluster: PGCluster, _ options: PostgresOptions
    ) async throws
        -> [ResultRow]
    {
        let seconds = env.duration
        let count = options.fanoutSubscribers
        let rate = options.fanoutRate
        let nodeCount = options.fanoutNodes
        env.say(
            "## pg-fanout: \(count) SSE subscribers over \(nodeCount) nodes on PostgreSQL, "
                + "\(Report.number(rate)) publishes/s over the nodes for \(seconds) s")
        let publishers = 16
        let postgres = try await cluster.withDatabase("bench_fanout") { url in
            try await env.withEventLogNodes(nodeCount, database: url) { nodes in
                try await LiveDelivery.eventlog(
                    env, server: nodes[0], subscribers: count, rate: rate, seconds: seconds, warmUp: 0,
                    publishers: publishers, eventBytes: options.eventBytes, subscriberPorts: nodes.map(\.port),
                    publisherPorts: nodes.map(\.port))
            }
        }
        env.say(postgres.describe("PostgreSQL, \(nodeCount) nodes (SSE)"))
        let sqlite = try await env.withEventLog { server in
            try await LiveDelivery.eventlog(
                env, server: server, subscribers: count, rate: rate, seconds: seconds, warmUp: 0,
                publishers: publishers, eventBytes: options.eventBytes)
        }
        env.say(sqlite.describe("SQLite, 1 node (SSE)"))
        let redis = try await env.withRedis { server in
            try await LiveDelivery.redis(
                env, server: server, subscribers: count, rate: rate, seconds: seconds, warmUp: 0,
                publishers: publishers, eventBytes: options.eventBytes)
        }
        if let redis { env.say(redis.describe("Redis (XREAD BLOCK)")) }
        let name = "pg-fanout"
        let people =
            "\(count >= 1000 ? Report.number(Double(count)) : String(count)) subscribers over \(nodeCount) nodes"
        func ms(_ value: Double?) -> String { value.map { Report.number($0) + " ms" } ?? "–" }
        return [
            ResultRow(
                benchmark: name, metric: "\(people), \(Report.number(rate)) events/s: deliveries", unit: "/s",
                eventlog: postgres.deliveriesPerSecond, redis: redis?.deliveriesPerSecond, better: .higher,
                note: "delivered \(Report.number(Double(postgres.delivered)))/"
                    + "\(Report.number(Double(postgres.expected))); SQLite 1 node: "
                    + Report.number(sqlite.deliveriesPerSecond) + "/s"),
            ResultRow(
                benchmark: name, metric: "\(people): publish→delivery p50", unit: "ms",
                eventlog: postgres.latencies.milliseconds(0.5), redis: redis?.latencies.milliseconds(0.5),
                better: .lower, note: "SQLite 1 node: " + ms(sqlite.latencies.milliseconds(0.5))),
            ResultRow(
                benchmark: name, metric: "\(people): publish→delivery p99", unit: "ms",
                eventlog: postgres.latencies.milliseconds(0.99), redis: redis?.latencies.milliseconds(0.99),
                better: .lower, note: "SQLite 1 node: " + ms(sqlite.latencies.milliseconds(0.99))),
        ]
    }

    // MARK: pg-outbox

    /// One application transaction: an INSERT into the application's own table and, unless `publish` is false,
    /// `eventlog.publish` of a text event; one round trip (the simple query protocol runs the whole script).
    static func applicationTransaction(topic: String, data: String, publish: Bool) -> String {
        let insert = "INSERT INTO bench_orders (data) VALUES ('\(data)')"
        guard publish else { return "BEGIN; \(insert); COMMIT" }
        return "BEGIN; \(insert); SELECT eventlog.publish('\(topic)', NULL, NULL, to_jsonb('\(data)'::text)); COMMIT"
    }

    /// `connections` threads, each running application transactions back to back for `seconds`.
    static func closedLoopTransactions(
        url: String, connections: Int, seconds: Double, publish: Bool, eventBytes: Int
    ) async throws -> ClosedLoopResult {
        let payload = String(repeating: "x", count: eventBytes)
        let opened = try await onThread {
            try (0..<connections).map { _ in try PGConnection(url: url) }
        }
        let holder = UncheckedConnections(opened)
        let start = monotonicNanos()
        let deadline = start + UInt64(seconds * 1e9)
        let results = try await withThrowingTaskGroup(of: ClosedLoopCallerResult.self) { group in
            for index in 0..<connections {
                group.addTask {
                    try await onThread {
                        let connection = holder.connections[index]
                        let sql = applicationTransaction(topic: "outbox/\(index)", data: payload, publish: publish)
                        var result = ClosedLoopCallerResult()
                        result.latencies.reserveCapacity(1 << 14)
                        while true {
                            let sent = monotonicNanos()
                            guard sent < deadline else { break }
                            do {
                                try connection.execute(sql)
                                result.latencies.append(monotonicNanos() - sent)
                            } catch {
                                result.failures += 1
                                result.firstFailure = result.firstFailure ?? "\(error)"
                                break
                            }
                        }
                        return result
                    }
                }
            }
            var all: [ClosedLoopCallerResult] = []
            for try await result in group { all.append(result) }
            return all
        }
        let elapsed = Double(monotonicNanos() - start) / 1e9
        _ = try? await onThread { holder.connections.forEach { $0.close() } }
        let latencies = results.flatMap(\.latencies)
        return ClosedLoopResult(
            requests: latencies.count, failures: results.reduce(0) { $0 + $1.failures },
            firstFailure: results.compactMap(\.firstFailure).first, seconds: elapsed, latencies: Latencies(latencies))
    }

    /// Waits (at most `seconds`) until eventlogd has moved every outbox row; returns the seconds waited, or nil.
    static func outboxDrained(_ url: String, seconds: Double) async throws -> Double? {
        try await onThread {
            let connection = try PGConnection(url: url)
            defer { connection.close() }
            let start = monotonicNanos()
            while Double(monotonicNanos() - start) / 1e9 < seconds {
                if try connection.scalarInt("SELECT count(*) FROM eventlog.outbox") == 0 {
                    return Double(monotonicNanos() - start) / 1e9
                }
                usleep(20_000)
            }
            return nil
        }
    }

    static func outbox(
        _ env: BenchEnvironment, _ cluster: PGCluster, _ options: PostgresOptions
    ) async throws
        -> [ResultRow]
    {
        let seconds = env.duration
        let rate = options.outboxRate
        let counts = options.outboxConnections.isEmpty ? [1, 8] : options.outboxConnections
        env.say(
            "## pg-outbox: application transactions calling eventlog.publish, 1 node; \(Report.number(rate))/s paced "
                + "from one connection to one SSE subscriber for \(seconds) s, then closed loops from "
                + "\(counts.map(String.init).joined(separator: ", ")) connection(s), with and without eventlog.publish")
        struct Measured: Sendable {
            var delivery: Latencies
            var commit: Latencies
            var delivered: Int
            var committed: Int
            var failures: Int
            var firstFailure: String?
            var loops: [(connections: Int, publish: ClosedLoopResult, plain: ClosedLoopResult, drained: Double?)] = []
        }
        let name = "bench_outbox"
        let measured = try await cluster.withDatabase(name) { _ in
            let url = cluster.databaseURL(name, statementTimeout: true)
            return try await env.withEventLogNodes(1, database: cluster.databaseURL(name)) { nodes -> Measured in
                try await onThread {
                    let connection = try PGConnection(url: url)
                    defer { connection.close() }
                    try connection.execute("CREATE TABLE bench_orders (id bigserial PRIMARY KEY, data text NOT NULL)")
                }
                // One SSE subscriber on the node, on the topic the paced transactions publish to.
                let loop = env.loops[0]
                let subscriber = SSESubscriber(
                    eventLoop: loop, selectors: ["outbox"], lastEventID: nil, options: .init(recordLatency: true))
                let channel = try await env.client.connect(port: nodes[0].port, on: loop, handler: subscriber)
                defer { channel.close(promise: nil) }
                _ = try await wait(subscriber.caughtUp.futureResult, seconds: 60, "the outbox subscriber caught up")
                let pad = String(repeating: "x", count: max(0, options.eventBytes - 23))
                func paced(_ seconds: Double) async throws -> (commits: [UInt64], failures: Int, first: String?) {
                    try await onThread {
                        let connection = try PGConnection(url: url)
                        defer { connection.close() }
                        let total = Int(rate * seconds)
                        let start = monotonicNanos()
                        var commits: [UInt64] = []
                        commits.reserveCapacity(total)
                        var failures = 0
                        var first: String?
                        for index in 0..<total {
                            let due = start + UInt64(Double(index) / rate * 1e9)
                            let now = monotonicNanos()
                            if due > now { usleep(UInt32((due - now) / 1000)) }
                            let sent = monotonicNanos()
                            do {
                                try connection.execute(
                                    applicationTransaction(
                                        topic: "outbox", data: "t=\(stamp(sent));\(pad)", publish: true))
                                commits.append(monotonicNanos() - sent)
                            } catch {
                                failures += 1
                                first = first ?? "\(error)"
                                if failures > 10 { break }
                            }
                            if Double(monotonicNanos() - start) / 1e9 > seconds + 30 { break }
                        }
                        return (commits, failures, first)
                    }
                }
                func waitDelivered(_ count: Int) async throws {
                    let deadline = ContinuousClock.now + .seconds(15)
                    while ContinuousClock.now < deadline {
                        if try await onLoop(loop, { subscriber.snapshot.delivered }) >= count { return }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                let warm = try await paced(env.quick ? 0.5 : 1)
                try await waitDelivered(warm.commits.count)
                try await onLoop(loop) { subscriber.resetCounts() }
                let run = try await paced(seconds)
                try await waitDelivered(run.commits.count)
                let snapshot = try await onLoop(loop) { subscriber.snapshot }
                var result = Measured(
                    delivery: Latencies(snapshot.latencies), commit: Latencies(run.commits),
                    delivered: snapshot.delivered, committed: run.commits.count, failures: run.failures,
                    firstFailure: run.first)
                env.say(
                    "  paced \(Report.number(rate))/s: committed \(run.commits.count) (commit \(result.commit.summary)"
                        + (run.failures > 0 ? ", \(run.failures) FAILED: \(run.first ?? "")" : "")
                        + "); delivered \(snapshot.delivered); delivery \(result.delivery.summary)")
                for connections in counts {
                    let publish = try await closedLoopTransactions(
                        url: url, connections: connections, seconds: seconds, publish: true,
                        eventBytes: options.eventBytes)
                    let drained = try await outboxDrained(url, seconds: 60)
                    let plain = try await closedLoopTransactions(
                        url: url, connections: connections, seconds: seconds, publish: false,
                        eventBytes: options.eventBytes)
                    env.say(
                        "  \(connections) connection(s): with eventlog.publish "
                            + "\(Report.number(publish.eventsPerSecond(1))) commits/s (\(publish.latencies.summary)"
                            + (publish.failures > 0 ? ", FAILED: \(publish.firstFailure ?? "")" : "")
                            + "), outbox moved "
                            + (drained.map { String(format: "%.2f s after the last commit", $0) } ?? "NOT within 60 s")
                            + "; without: \(Report.number(plain.eventsPerSecond(1))) commits/s "
                            + "(\(plain.latencies.summary))")
                    result.loops.append((connections, publish, plain, drained))
                }
                return result
            }
        }
        let metricName = "pg-outbox"
        var rows = [
            ResultRow(
                benchmark: metricName,
                metric: "app transaction with eventlog.publish → delivery p50 at \(Report.number(rate))/s", unit: "ms",
                eventlog: measured.delivery.milliseconds(0.5), redis: nil, better: .lower,
                note: "from sending BEGIN…COMMIT to the SSE subscriber on the node; delivered \(measured.delivered)/"
                    + "\(measured.committed); the transaction's own commit p50 "
                    + Report.number(measured.commit.milliseconds(0.5) ?? 0) + " ms; Redis: no equivalent"),
            ResultRow(
                benchmark: metricName, metric: "app transaction with eventlog.publish → delivery p99", unit: "ms",
                eventlog: measured.delivery.milliseconds(0.99), redis: nil, better: .lower,
                note: "commit p99 " + Report.number(measured.commit.milliseconds(0.99) ?? 0) + " ms"
                    + (measured.failures > 0 ? "; \(measured.failures) FAILED: \(measured.firstFailure ?? "")" : "")),
        ]
        for loop in measured.loops {
            let with = loop.publish.eventsPerSecond(1)
            let without = loop.plain.eventsPerSecond(1)
            rows.append(
                ResultRow(
                    benchmark: metricName,
                    metric: "app transactions with eventlog.publish, \(loop.connections) connection"
                        + (loop.connections == 1 ? "" : "s"), unit: "commits/s", eventlog: with, redis: nil,
                    better: .higher,
                    note: "without eventlog.publish: \(Report.number(without)) commits/s ("
                        + String(format: "%.2f×", without > 0 ? with / without : 0)
                        + String(
                            format: "); commit p50 %.2f ms, p99 %.2f ms; ",
                            loop.publish.latencies.milliseconds(0.5) ?? 0,
                            loop.publish.latencies.milliseconds(0.99) ?? 0)
                        + (loop.drained.map { String(format: "outbox empty %.2f s after the last commit", $0) }
                            ?? "outbox NOT empty 60 s after")
                        + (loop.publish.failures > 0 ? "; FAILED: \(loop.publish.firstFailure ?? "")" : "")))
        }
        return rows
    }

    // MARK: pg-counter

    static func counter(
        _ env: BenchEnvironment, _ cluster: PGCluster, _ options: PostgresOptions
    ) async throws
        -> [ResultRow]
    {
        let counts = options.counterNodes.isEmpty ? [1, 2, 3, 4, 6] : options.counterNodes
        env.say(
            "## pg-counter: \(options.publishers) single-event publishers spread over "
                + "\(counts.map(String.init).joined(separator: ", ")) node(s) for \(env.duration) s each; "
                + "group commits counted by distinct xmin, pg_stat_activity sampled every 25 ms")
        var rows: [ResultRow] = []
        for count in counts {
            let name = "bench_counter_\(count)"
            let result = try await cluster.withDatabase(name) { url in
                try await env.withEventLogNodes(count, database: url) { nodes in
                    try await closedLoopPublish(
                        env, nodes: nodes, url: cluster.databaseURL(name, statementTimeout: true), cluster: cluster,
                        publishers: options.publishers, eventBytes: options.eventBytes, sampleActivity: true)
                }
            }
            let activity = result.activity?.text ?? ""
            env.say(
                "  \(count) node(s): \(Report.number(result.eventsPerSecond)) events/s; \(result.summary); \(activity)")
            let nodesText = "\(count) node\(count == 1 ? "" : "s")"
            rows.append(
                ResultRow(
                    benchmark: "pg-counter", metric: "group commits/s through the counter row, \(nodesText)",
                    unit: "commits/s", eventlog: result.commitsPerSecond, redis: nil, better: .higher,
                    note: "\(Report.number(result.eventsPerSecond)) events/s; \(result.summary); \(activity)"))
        }
        return rows
    }
}

/// What one closed-loop transaction thread did.
struct ClosedLoopCallerResult: Sendable {
    var latencies: [UInt64] = []
    var failures = 0
    var firstFailure: String?
}

/// Connections handed to one thread each.
private final class UncheckedConnections: @unchecked Sendable {
    // @unchecked: connection `i` is used only by the thread of caller `i`, one after the other.
    let connections: [PGConnection]

    init(_ connections: [PGConnection]) { self.connections = connections }
}

extension Optional {
    fileprivate func asyncMap<U>(_ transform: (Wrapped) async throws -> U) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
