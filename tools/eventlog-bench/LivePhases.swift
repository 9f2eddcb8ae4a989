import ArgumentParser
import NIOCore

/// What a live-delivery run measured: paced publishes on one topic, delivered to every subscriber.
struct LiveResult: Sendable {
    let subscribers: Int
    let paced: PacedResult
    let delivered: Int
    let latencies: Latencies
    /// Deliveries from the first publish to the last delivery.
    let deliveriesPerSecond: Double
    /// Seconds from the start of publishing to the last delivery.
    let span: Double
    let cpu: String

    var expected: Int { paced.acknowledged * subscribers }

    func describe(_ label: String) -> String {
        var text = "  \(label): \(subscribers) subscriber(s), \(paced.sent) published "
        text += "(\(paced.acknowledged) acknowledged, ack \(paced.acknowledgements.summary))"
        if paced.maxBacklog > 0 { text += ", publisher fell behind by up to \(paced.maxBacklog) events" }
        if paced.failures > 0 { text += ", \(paced.failures) publishes FAILED: \(paced.firstFailure ?? "")" }
        text += "; delivered \(delivered) of \(expected) = \(Report.number(deliveriesPerSecond)) deliveries/s; "
        text += "delivery \(latencies.summary); \(cpu)"
        return text
    }
}

/// Paced publishing to live subscribers, for eventlog (SSE) and Redis (`XREAD BLOCK`). Used by `latency`
/// (one subscriber) and `fanout` (thousands). Latency is receive time minus the send time in the payload.
enum LiveDelivery {
    static let topic = "live"

    /// One measured step of a session: `rate` publishes per second for `seconds` (after `warmUp` seconds
    /// not counted), counts reset before it.
    typealias Step = (_ rate: Double, _ seconds: Double, _ warmUp: Double) async throws -> LiveResult

    /// eventlog: `subscribers` SSE streams on `live`; `publishers` keep-alive connections publish `rate`
    /// events per second for `seconds`.
    static func eventlog(
        _ env: BenchEnvironment, server: StartedServer, subscribers: Int, rate: Double, seconds: Double,
        warmUp: Double, publishers: Int, eventBytes: Int, subscriberPorts: [Int]? = nil, publisherPorts: [Int]? = nil
    ) async throws -> LiveResult {
        try await eventlogSession(
            env, server: server, subscribers: subscribers, publishers: publishers, eventBytes: eventBytes,
            subscriberPorts: subscriberPorts, publisherPorts: publisherPorts
        ) { step in try await step(rate, seconds, warmUp) }
    }

    /// eventlog: connects `subscribers` SSE streams on `live` and `publishers` keep-alive connections once,
    /// then lets `body` run as many measured steps as it likes on them (the fan-out ramp). With several nodes
    /// sharing one log (PostgreSQL), subscriber `i` connects to `subscriberPorts[i % count]` and publisher
    /// connection `j` to `publisherPorts[j % count]`; both default to `server`'s port.
    static func eventlogSession<T: Sendable>(
        _ env: BenchEnvironment, server: StartedServer, subscribers: Int, publishers: Int, eventBytes: Int,
        subscriberPorts: [Int]? = nil, publisherPorts: [Int]? = nil, _ body: (Step) async throws -> T
    ) async throws -> T {
        let subscriberPorts = subscriberPorts ?? [server.port]
        let publisherPorts = publisherPorts ?? [server.port]
        let connected = try await env.client.connectMany(count: subscribers, parallel: 200) { index in
            let loop = env.loop(index)
            let subscriber = SSESubscriber(
                eventLoop: loop, selectors: [topic], lastEventID: nil, options: .init(recordLatency: true))
            let channel = try await env.client.connect(
                port: subscriberPorts[index % subscriberPorts.count], on: loop, handler: subscriber)
            _ = try await wait(subscriber.caughtUp.futureResult, seconds: 60, "SSE subscriber \(index) caught up")
            return Connected(handler: subscriber, channel: channel)
        }
        var groups = LoopGroups<SSESubscriber>(loops: env.loops)
        for (index, subscriber) in connected.enumerated() { groups.add(subscriber.handler, loop: index) }
        let publisherLoop = env.loops[0]
        let connections: [HTTPLoadConnection]
        do {
            connections = try await env.client.connectMany(count: publishers) { index in
                let connection = HTTPLoadConnection(eventLoop: publisherLoop)
                _ = try await env.client.connect(
                    port: publisherPorts[index % publisherPorts.count], on: publisherLoop, handler: connection)
                return connection
            }
        } catch {
            await connected.closeAll()
            throw error
        }
        let pad = String(repeating: "x", count: max(0, eventBytes - 23))
        let make: PacedPublisher.MakeRequest = { _, sentAt in
            HTTPLoadConnection.request(
                "POST", "/v1/events", contentType: "application/json",
                body: "{\"topic\":\"\(topic)\",\"data\":\"t=\(stamp(sentAt));\(pad)\"}")
        }
        return try await runSteps(
            env, serverPID: server.pid, serverName: "eventlogd", loop: publisherLoop, connections: connections,
            make: make, subscribers: subscribers, groups: groups,
            reset: { $0.resetCounts() },
            sample: { ($0.snapshot.delivered, $0.snapshot.latencies, $0.snapshot.lastDeliveryAt) },
            close: {
                connections.forEach { $0.close() }
                await connected.closeAll()
            },
            body)
    }

    /// Redis: `subscribers` connections blocked in `XREAD BLOCK 0` on one stream; `publishers` connections
    /// `XADD` `rate` entries per second for `seconds`.
    static func redis(
        _ env: BenchEnvironment, server: StartedServer, subscribers: Int, rate: Double, seconds: Double,
        warmUp: Double, publishers: Int, eventBytes: Int
    ) async throws -> LiveResult {
        try await redisSession(
            env, server: server, subscribers: subscribers, publishers: publishers, eventBytes: eventBytes
        ) { step in try await step(rate, seconds, warmUp) }
    }

    /// Redis: connects `subscribers` readers blocked in `XREAD BLOCK 0` and `publishers` connections once,
    /// then lets `body` run measured steps on them.
    static func redisSession<T: Sendable>(
        _ env: BenchEnvironment, server: StartedServer, subscribers: Int, publishers: Int, eventBytes: Int,
        _ body: (Step) async throws -> T
    ) async throws -> T {
        _ = try await env.redisCommand(port: server.port, ["CONFIG", "SET", "maxclients", "12000"])
        guard let seed = try await env.redisCommand(port: server.port, ["XADD", topic, "*", "seed", "1"]).text else {
            throw BenchError("XADD seed gave no id")
        }
        let connected = try await env.client.connectMany(count: subscribers, parallel: 200) { index in
            let loop = env.loop(index)
            let connection = RESPConnection(eventLoop: loop)
            let channel = try await env.client.connect(port: server.port, on: loop, handler: connection)
            let reader = RedisStreamReader(
                connection: connection, keys: [topic], after: [seed], block: true, count: 100, recordLatency: true)
            reader.start()
            return Connected(handler: reader, channel: channel)
        }
        var groups = LoopGroups<RedisStreamReader>(loops: env.loops)
        for (index, reader) in connected.enumerated() { groups.add(reader.handler, loop: index) }
        let publisherLoop = env.loops[0]
        let connections: [RESPConnection]
        do {
            try await waitForBlockedClients(env, port: server.port, count: subscribers)
            connections = try await env.client.redisConnections(
                port: server.port, count: publishers, on: publisherLoop)
        } catch {
            await connected.closeAll()
            throw error
        }
        let pad = String(repeating: "x", count: max(0, eventBytes - 23))
        let make: PacedPublisher.MakeRequest = { _, sentAt in
            RESP.command("XADD", topic, "*", "t", String(sentAt), "d", pad)
        }
        return try await runSteps(
            env, serverPID: server.pid, serverName: "redis", loop: publisherLoop, connections: connections,
            make: make, subscribers: subscribers, groups: groups,
            reset: { $0.resetCounts() },
            sample: { ($0.snapshot.delivered, $0.snapshot.latencies, $0.snapshot.lastDeliveryAt) },
            close: {
                connections.forEach { $0.close() }
                await connected.closeAll()
            },
            body)
    }

    /// Runs `body` with a measured step over `groups` of subscribers (`reset` clears a member's counts,
    /// `sample` reads them), then closes everything with `close`, also when `body` fails.
    private static func runSteps<Member: Sendable, T: Sendable>(
        _ env: BenchEnvironment, serverPID: Int32, serverName: String, loop: any EventLoop,
        connections: [any LoadConnection], make: @escaping PacedPublisher.MakeRequest, subscribers: Int,
        groups: LoopGroups<Member>, reset: @escaping @Sendable (Member) -> Void,
        sample: @escaping @Sendable (Member) -> Sample, close: () async -> Void,
        _ body: (Step) async throws -> T
    ) async throws -> T {
        let resetAll: () async throws -> Void = {
            _ = try await groups.collect { members in members.forEach(reset) }
        }
        let step: Step = { rate, seconds, warmUp in
            try await resetAll()
            return try await measure(
                env, serverPID: serverPID, serverName: serverName, loop: loop, connections: connections,
                rate: rate, seconds: seconds, warmUp: warmUp, make: make, subscribers: subscribers,
                collect: { try await groups.collect { members in members.map(sample) }.flatMap { $0 } },
                reset: resetAll)
        }
        do {
            let result = try await body(step)
            await close()
            return result
        } catch {
            await close()
            throw error
        }
    }

    /// Waits until Redis reports `count` clients blocked (every subscriber is waiting in XREAD).
    static func waitForBlockedClients(_ env: BenchEnvironment, port: Int, count: Int) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        while clock.now < deadline {
            if let blocked = try await env.redisInfo(port: port, "blocked_clients").flatMap({ Int($0) }),
                blocked >= count
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BenchError("Redis has fewer than \(count) blocked XREAD clients after 60 s")
    }

    private typealias Sample = (delivered: Int, latencies: [UInt64], lastDeliveryAt: UInt64)

    private static func measure(
        _ env: BenchEnvironment, serverPID: Int32, serverName: String, loop: any EventLoop,
        connections: [any LoadConnection], rate: Double, seconds: Double, warmUp: Double,
        make: @escaping PacedPublisher.MakeRequest, subscribers: Int,
        collect: () async throws -> [Sample], reset: () async throws -> Void
    ) async throws -> LiveResult {
        if warmUp > 0 {
            let pacer = PacedPublisher(
                eventLoop: loop, connections: connections, rate: rate, seconds: warmUp, makeRequest: make)
            pacer.start()
            let warm = try await wait(pacer.future, seconds: warmUp + 30, "warm-up publishing")
            try await waitForDeliveries(warm.acknowledged, collect: collect)
            try await reset()
        }
        let cpu = CPUUsage(serverPID: serverPID)
        let pacer = PacedPublisher(
            eventLoop: loop, connections: connections, rate: rate, seconds: seconds, makeRequest: make)
        pacer.start()
        let paced = try await wait(pacer.future, seconds: seconds + 30, "paced publishing")
        try await waitForDeliveries(paced.acknowledged, collect: collect)
        let cpuText = cpu.summary(serverName: serverName)
        let samples = try await collect()
        let delivered = samples.reduce(0) { $0 + $1.delivered }
        let lastDelivery = samples.map(\.lastDeliveryAt).max() ?? paced.startedAt
        let span = Double(max(lastDelivery, paced.startedAt + 1) - paced.startedAt) / 1e9
        return LiveResult(
            subscribers: subscribers, paced: paced, delivered: delivered,
            latencies: Latencies(samples.flatMap(\.latencies)), deliveriesPerSecond: Double(delivered) / span,
            span: span, cpu: cpuText)
    }

    /// Waits (at most 15 s) until every subscriber received `count` events.
    private static func waitForDeliveries(_ count: Int, collect: () async throws -> [Sample]) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(15)
        while clock.now < deadline {
            if try await collect().allSatisfy({ $0.delivered >= count }) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Options of the `latency` benchmark.
struct LatencyOptions: ParsableArguments {
    @Option(help: "Publishes per second (paced).")
    var rate: Double = 1000

    @Option(help: "Keep-alive connections the paced publisher spreads its publishes over.")
    var publishers = 32

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100

    func validate() throws {
        guard rate > 0, publishers > 0 else { throw ValidationError("--rate and --publishers must be positive") }
    }
}

/// Publish-to-delivery latency at a fixed rate with one live subscriber.
enum LatencyPhase {
    static func run(_ env: BenchEnvironment, _ options: LatencyOptions) async throws -> [ResultRow] {
        let seconds = env.duration
        env.say("## latency: \(Report.number(options.rate)) publishes/s for \(seconds) s, one live subscriber")
        let warmUp = env.quick ? 0.5 : 1
        let eventlog = try await env.withEventLog { server in
            try await LiveDelivery.eventlog(
                env, server: server, subscribers: 1, rate: options.rate, seconds: seconds, warmUp: warmUp,
                publishers: options.publishers, eventBytes: options.eventBytes)
        }
        env.say(eventlog.describe("eventlog (SSE)"))
        let redis = try await env.withRedis { server in
            try await LiveDelivery.redis(
                env, server: server, subscribers: 1, rate: options.rate, seconds: seconds, warmUp: warmUp,
                publishers: options.publishers, eventBytes: options.eventBytes)
        }
        if let redis { env.say(redis.describe("Redis (XREAD BLOCK)")) }
        let name = "latency"
        let rate = Report.number(options.rate)
        return [
            ResultRow(
                benchmark: name, metric: "publish→delivery p50 at \(rate)/s", unit: "ms",
                eventlog: eventlog.latencies.milliseconds(0.5), redis: redis?.latencies.milliseconds(0.5),
                better: .lower),
            ResultRow(
                benchmark: name, metric: "publish→delivery p99 at \(rate)/s", unit: "ms",
                eventlog: eventlog.latencies.milliseconds(0.99), redis: redis?.latencies.milliseconds(0.99),
                better: .lower, target: .atMost(5)),
            ResultRow(
                benchmark: name, metric: "publish→ack p99 at \(rate)/s", unit: "ms",
                eventlog: eventlog.paced.acknowledgements.milliseconds(0.99),
                redis: redis?.paced.acknowledgements.milliseconds(0.99), better: .lower),
        ]
    }
}

/// Options of the `fanout` benchmark.
struct FanoutOptions: ParsableArguments {
    @Option(
        name: .customLong("subscribers"), help: "Subscriber counts to measure (repeatable). Default 1000 and 10000.")
    var subscriberCounts: [Int] = []

    @Option(help: "Publishes per second. Default: 100,000 deliveries per second divided by the subscribers.")
    var rate: Double?

    @Option(help: "Keep-alive connections the paced publisher uses.")
    var publishers = 16

    @Option(help: "Most subscribers for the Redis side (it needs as many connections).")
    var redisMaxSubscribers = 10_000

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100
}

/// Many SSE subscribers on one topic, publishing at a fixed rate.
enum FanoutPhase {
    static func run(_ env: BenchEnvironment, _ options: FanoutOptions) async throws -> [ResultRow] {
        let counts =
            options.subscriberCounts.isEmpty ? (env.quick ? [1000] : [1000, 10_000]) : options.subscriberCounts
        let seconds = env.duration
        var rows: [ResultRow] = []
        for count in counts {
            let rate = options.rate ?? max(1, 100_000 / Double(count))
            env.say("## fanout: \(count) subscribers, \(Report.number(rate)) publishes/s for \(seconds) s")
            let eventlog = try await env.withEventLog { server in
                try await LiveDelivery.eventlog(
                    env, server: server, subscribers: count, rate: rate, seconds: seconds, warmUp: 0,
                    publishers: options.publishers, eventBytes: options.eventBytes)
            }
            env.say(eventlog.describe("eventlog (SSE)"))
            var redis: LiveResult?
            if count <= options.redisMaxSubscribers {
                redis = try await env.withRedis { server in
                    try await LiveDelivery.redis(
                        env, server: server, subscribers: count, rate: rate, seconds: seconds, warmUp: 0,
                        publishers: options.publishers, eventBytes: options.eventBytes)
                }
                if let redis { env.say(redis.describe("Redis (XREAD BLOCK)")) }
            }
            let note = count > options.redisMaxSubscribers ? "Redis not run at this size" : ""
            let name = "fanout"
            let people = Report.number(Double(count))
            rows.append(
                ResultRow(
                    benchmark: name, metric: "\(people) subscribers, \(Report.number(rate)) events/s: deliveries",
                    unit: "/s", eventlog: eventlog.deliveriesPerSecond, redis: redis?.deliveriesPerSecond,
                    better: .higher,
                    note: note.isEmpty
                        ? "delivered \(Report.number(Double(eventlog.delivered)))/"
                            + Report.number(Double(eventlog.expected)) : note))
            rows.append(
                ResultRow(
                    benchmark: name, metric: "\(people) subscribers: delivery p99", unit: "ms",
                    eventlog: eventlog.latencies.milliseconds(0.99), redis: redis?.latencies.milliseconds(0.99),
                    better: .lower, note: note))
        }
        return rows
    }
}
