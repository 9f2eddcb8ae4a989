import ArgumentParser
import NIOCore
import Synchronization

/// Options of the `storm` benchmark.
struct StormOptions: ParsableArguments {
    @Option(help: "Clients that resume at once.")
    var clients = 1000

    @Option(help: "Events published before the storm. Default 20000, or 5000 with --quick.")
    var history: Int?

    @Option(help: "Publishes per second while the clients catch up.")
    var rate: Double = 100

    @Option(help: "Topics the events are spread over.")
    var topics = 16

    @Option(help: "Bytes of data per event.")
    var eventBytes = 100

    func validate() throws {
        guard clients > 0, topics > 1, rate > 0 else {
            throw ValidationError("clients, topics and rate must be positive")
        }
    }
}

/// A reconnect storm: many clients resume at once from random positions, each with its own topic selection
/// (one topic, two topics, or all of them), while publishing goes on. Measures the time until all are caught
/// up and checks that each received exactly the events after its position up to the head it caught up at.
enum StormPhase {
    /// Who resumes where, and which topic every event has; the same for eventlog and Redis.
    struct Plan: Sendable {
        let topics: Int
        /// The topic of history event `k` (id k + 1).
        let historyTopics: [Int]
        /// Per client: how many history events it had seen (its position), and its topic indexes.
        let clients: [(seen: Int, topics: [Int])]

        init(clients: Int, history: Int, topics: Int) {
            var random = SeededRandom(seed: 2026)
            self.topics = topics
            historyTopics = (0..<history).map { _ in Int(random.next() % UInt64(topics)) }
            self.clients = (0..<clients).map { _ in
                let seen = Int(random.next() % UInt64(history + 1))
                let kind = random.next() % 10
                let first = Int(random.next() % UInt64(topics))
                let second = (first + 1 + Int(random.next() % UInt64(topics - 1))) % topics
                switch kind {
                case 0..<4: return (seen, [first])
                case 4..<7: return (seen, [first, second].sorted())
                default: return (seen, Array(0..<topics))
                }
            }
        }

        /// The topic of the live publish number `sequence`.
        func liveTopic(_ sequence: Int) -> Int {
            (sequence * 7 + 3) % topics
        }
    }

    /// Topics of the events, by id, filled in as publishes are acknowledged.
    final class TopicBook: Sendable {
        private let topics = Mutex<[Int64: Int]>([:])

        func record(_ id: Int64, topic: Int) {
            topics.withLock { $0[id] = topic }
        }

        var all: [Int64: Int] { topics.withLock { $0 } }
    }

    /// The outcome of checking every client.
    struct Check: Sendable {
        var clientsRight = 0
        var clientsWrong = 0
        var eventsChecked = 0
        var firstProblem: String?
    }

    /// Checks that `received` is exactly the events after `position` up to `head` on `selection`.
    static func check(
        _ check: inout Check, client: Int, received: [Int64], position: Int64, head: Int64, selection: Set<Int>,
        book: [Int64: Int]
    ) {
        var expected: [Int64] = []
        var unknown = 0
        if head > position {
            for id in (position + 1)...head {
                guard let topic = book[id] else {
                    unknown += 1
                    continue
                }
                if selection.contains(topic) { expected.append(id) }
            }
        }
        check.eventsChecked += received.count
        if received == expected, unknown == 0 {
            check.clientsRight += 1
            return
        }
        check.clientsWrong += 1
        guard check.firstProblem == nil else { return }
        let missing = Set(expected).subtracting(received).sorted()
        let extra = Set(received).subtracting(expected).sorted()
        check.firstProblem =
            "client \(client) after \(position) up to \(head): received \(received.count), expected \(expected.count), "
            + "missing \(missing.prefix(5)), extra \(extra.prefix(5)), out of order \(received != received.sorted()), "
            + "unknown ids in range \(unknown)"
    }

    struct Outcome: Sendable {
        let seconds: Double
        let delivered: Int
        let check: Check
        let published: PacedResult
        let cpu: String
    }

    static func run(_ env: BenchEnvironment, _ options: StormOptions) async throws -> [ResultRow] {
        let history = options.history ?? (env.quick ? 5000 : 20_000)
        let plan = Plan(clients: options.clients, history: history, topics: options.topics)
        let payload = String(repeating: "x", count: options.eventBytes)
        env.say(
            "## storm: \(options.clients) clients resume at once over \(history) events on \(options.topics) topics, "
                + "\(Report.number(options.rate)) publishes/s meanwhile")
        let eventlog = try await env.withEventLog { server in
            try await eventlogStorm(env, server: server, plan: plan, rate: options.rate, payload: payload)
        }
        report(env, "eventlog (SSE, Last-Event-ID)", eventlog)
        let redis = try await env.withRedis { server in
            try await redisStorm(env, server: server, plan: plan, rate: options.rate, payload: payload)
        }
        if let redis { report(env, "Redis (XREAD COUNT 500 paging)", redis) }
        let clients = Report.number(Double(options.clients))
        return [
            ResultRow(
                benchmark: "storm", metric: "\(clients) clients resume at once: all caught up after", unit: "s",
                eventlog: eventlog.seconds, redis: redis?.seconds, better: .lower,
                note: "\(Report.number(Double(eventlog.delivered))) events delivered (eventlog)"),
            ResultRow(
                benchmark: "storm", metric: "clients with a missing, extra or misordered event", unit: "clients",
                eventlog: Double(eventlog.check.clientsWrong), redis: redis.map { Double($0.check.clientsWrong) },
                better: .lower, target: .atMost(0),
                note: "\(eventlog.check.clientsRight)/\(options.clients) exact (eventlog)", isCount: true),
        ]
    }

    private static func report(_ env: BenchEnvironment, _ label: String, _ outcome: Outcome) {
        var line = "  \(label): all caught up after \(String(format: "%.3f", outcome.seconds)) s, "
        line += "\(outcome.delivered) events delivered, \(outcome.check.clientsRight) clients exact, "
        line += "\(outcome.check.clientsWrong) wrong; \(outcome.published.acknowledged) published meanwhile; "
        line += outcome.cpu
        if let problem = outcome.check.firstProblem { line += "\n  FIRST PROBLEM: \(problem)" }
        env.say(line)
    }

    private static func eventlogStorm(
        _ env: BenchEnvironment, server: StartedServer, plan: Plan, rate: Double, payload: String
    ) async throws -> Outcome {
        let book = TopicBook()
        // History: NDJSON batches on one connection, so the ids come back in order.
        let populate = try await env.client.httpConnections(port: server.port, count: 1)
        var historyIDs: [Int64] = []
        for start in stride(from: 0, to: plan.historyTopics.count, by: 1000) {
            let topics = plan.historyTopics[start..<min(start + 1000, plan.historyTopics.count)]
            let body = topics.map { "{\"topic\":\"storm/\($0)\",\"data\":\"\(payload)\"}" }.joined(separator: "\n")
            let reply = try await populate[0].request(
                HTTPLoadConnection.request("POST", "/v1/events", contentType: "application/x-ndjson", body: body))
            guard case .http(let status, let responseBody) = reply, status == 201 else {
                throw BenchError("populating: \(reply.summary)")
            }
            let ids = idsOfBatch(String(buffer: responseBody))
            guard ids.count == topics.count else { throw BenchError("a batch answer has \(ids.count) ids") }
            for (id, topic) in zip(ids, topics) { book.record(id, topic: topic) }
            historyIDs += ids
        }
        populate.forEach { $0.close() }
        let positions = historyIDs

        let publisherLoop = env.loops[0]
        let publishers = try await env.client.httpConnections(port: server.port, count: 4, on: publisherLoop)
        let pacer = PacedPublisher(
            eventLoop: publisherLoop, connections: publishers, rate: rate, seconds: 600,
            makeRequest: { sequence, _ in
                HTTPLoadConnection.request(
                    "POST", "/v1/events", contentType: "application/json",
                    body: "{\"topic\":\"storm/\(plan.liveTopic(sequence))\",\"data\":\"\(payload)\"}")
            },
            onReply: { sequence, reply in
                guard case .http(201, let body) = reply, let id = idOfEvent(String(buffer: body)) else { return }
                book.record(id, topic: plan.liveTopic(sequence))
            })
        pacer.start()
        try await Task.sleep(for: .milliseconds(200))

        let cpu = CPUUsage(serverPID: server.pid)
        let start = monotonicNanos()
        let connected = try await env.client.connectMany(count: plan.clients.count, parallel: plan.clients.count) {
            index in
            let client = plan.clients[index]
            let loop = env.loop(index)
            let selectors = client.topics.count == plan.topics ? ["storm/*"] : client.topics.map { "storm/\($0)" }
            let position = client.seen == 0 ? 0 : positions[client.seen - 1]
            let subscriber = SSESubscriber(
                eventLoop: loop, selectors: selectors, lastEventID: position, options: .init(recordIDs: true))
            let channel = try await env.client.connect(port: server.port, on: loop, handler: subscriber)
            return Connected(handler: subscriber, channel: channel)
        }
        var finished: UInt64 = start
        for (index, subscriber) in connected.enumerated() {
            let caught = try await wait(
                subscriber.handler.caughtUp.futureResult, seconds: 300, "storm client \(index) caught up")
            finished = max(finished, caught.at)
        }
        let cpuText = cpu.summary(serverName: "eventlogd")
        pacer.stop()
        let published = try await wait(pacer.future, seconds: 30, "storm publisher")
        publishers.forEach { $0.close() }

        var check = Check()
        var delivered = 0
        let ids = book.all
        for (index, subscriber) in connected.enumerated() {
            let handler = subscriber.handler
            let snapshot = try await onLoop(handler.eventLoop) { handler.snapshot }
            let client = plan.clients[index]
            let position = client.seen == 0 ? 0 : positions[client.seen - 1]
            delivered += snapshot.ids.count
            Self.check(
                &check, client: index, received: snapshot.ids, position: position,
                head: snapshot.caughtUp?.head ?? -1, selection: Set(client.topics), book: ids)
        }
        await connected.closeAll()
        return Outcome(
            seconds: Double(finished - start) / 1e9, delivered: delivered, check: check, published: published,
            cpu: cpuText)
    }

    private static func redisStorm(
        _ env: BenchEnvironment, server: StartedServer, plan: Plan, rate: Double, payload: String
    ) async throws -> Outcome {
        _ = try await env.redisCommand(port: server.port, ["CONFIG", "SET", "maxclients", "12000"])
        let book = TopicBook()
        // History with explicit ids 1...history, so positions and checks are the same as eventlog's.
        let populate = try await env.client.redisConnections(port: server.port, count: 1)
        for start in stride(from: 0, to: plan.historyTopics.count, by: 1000) {
            let end = min(start + 1000, plan.historyTopics.count)
            var pipelined = ByteBuffer()
            for index in start..<end {
                let topic = plan.historyTopics[index]
                RESP.encode(["XADD", "storm:\(topic)", "\(index + 1)-0", "d", payload], into: &pipelined)
                book.record(Int64(index + 1), topic: topic)
            }
            let reply = try await populate[0].request(LoadRequest(bytes: pipelined, replies: end - start))
            guard reply.isSuccess else { throw BenchError("populating Redis: \(reply.summary)") }
        }
        populate.forEach { $0.close() }

        // One publisher connection: explicit ids must reach Redis in order.
        let history = plan.historyTopics.count
        let acknowledged = SharedMaximum()
        acknowledged.raise(to: Int64(history))
        let publisherLoop = env.loops[0]
        let publishers = try await env.client.redisConnections(port: server.port, count: 1, on: publisherLoop)
        let pacer = PacedPublisher(
            eventLoop: publisherLoop, connections: publishers, rate: rate, seconds: 600,
            makeRequest: { sequence, _ in
                RESP.command("XADD", "storm:\(plan.liveTopic(sequence))", "\(history + 1 + sequence)-0", "d", payload)
            },
            onReply: { sequence, reply in
                guard reply.isSuccess else { return }
                let id = Int64(history + 1 + sequence)
                book.record(id, topic: plan.liveTopic(sequence))
                acknowledged.raise(to: id)
            })
        pacer.start()
        try await Task.sleep(for: .milliseconds(200))

        let cpu = CPUUsage(serverPID: server.pid)
        let start = monotonicNanos()
        let connected = try await env.client.connectMany(count: plan.clients.count, parallel: plan.clients.count) {
            index in
            let client = plan.clients[index]
            let loop = env.loop(index)
            let connection = RESPConnection(eventLoop: loop)
            let channel = try await env.client.connect(port: server.port, on: loop, handler: connection)
            let reader = RedisStreamReader(
                connection: connection, keys: client.topics.map { "storm:\($0)" },
                after: Array(repeating: "\(client.seen)-0", count: client.topics.count), block: false, count: 500,
                recordIDs: true, acknowledgedHead: acknowledged)
            reader.start()
            return Connected(handler: reader, channel: channel)
        }
        var finished: UInt64 = start
        for (index, reader) in connected.enumerated() {
            let at = try await wait(reader.handler.caughtUp.futureResult, seconds: 300, "Redis storm client \(index)")
            finished = max(finished, at)
        }
        let cpuText = cpu.summary(serverName: "redis")
        pacer.stop()
        let published = try await wait(pacer.future, seconds: 30, "Redis storm publisher")
        publishers.forEach { $0.close() }

        var check = Check()
        var delivered = 0
        let ids = book.all
        for (index, reader) in connected.enumerated() {
            let handler = reader.handler
            let snapshot = try await onLoop(handler.eventLoop) { handler.snapshot }
            let client = plan.clients[index]
            let received = snapshot.ids.sorted()
            delivered += received.count
            // Everything acknowledged before the last read was sent must be there; later ones may be.
            let head = max(snapshot.headWhenCaughtUp, received.last ?? 0)
            Self.check(
                &check, client: index, received: received, position: Int64(client.seen), head: head,
                selection: Set(client.topics), book: ids)
        }
        await connected.closeAll()
        return Outcome(
            seconds: Double(finished - start) / 1e9, delivered: delivered, check: check, published: published,
            cpu: cpuText)
    }

    /// The `ids` array of a batch publish answer (`..."ids":[1,2,3]}`).
    static func idsOfBatch(_ body: String) -> [Int64] {
        guard let range = body.range(of: "\"ids\":[") else { return [] }
        let rest = body[range.upperBound...].prefix { $0 != "]" }
        return rest.split(separator: ",").compactMap { Int64($0) }
    }

    /// The `id` of a single publish answer (`{"id":12,...}`).
    static func idOfEvent(_ body: String) -> Int64? {
        guard let range = body.range(of: "\"id\":") else { return nil }
        return Int64(body[range.upperBound...].prefix { $0.isNumber })
    }
}
