import ArgumentParser
import EventLog
import EventLogWire
import Foundation

/// Options of the `snapshot` benchmark.
struct SnapshotOptions: ParsableArguments {
    @Option(
        name: .customLong("snapshot-events"),
        help: "Events in the log. Default 1000000, or 200000 with --quick.")
    var events: Int?

    @Option(
        name: .customLong("snapshot-keys"),
        help: "Distinct keys the events fall on. Default 100000, or 20000 with --quick.")
    var keys: Int?

    @Option(name: .customLong("snapshot-page"), help: "Events per readSnapshot page (library reads).")
    var page = 1000

    @Option(
        name: .customLong("snapshot-runs"),
        help: "Reads of each snapshot; the median is reported. Default 3, 1 with --quick.")
    var runs: Int?

    func validate() throws {
        if let keys, keys < 10 { throw ValidationError("--snapshot-keys must be at least 10") }
        if let events, let keys, events < keys { throw ValidationError("--snapshot-events must be at least the keys") }
        guard page > 0 else { throw ValidationError("--snapshot-page must be positive") }
        if let runs, runs < 1 { throw ValidationError("--snapshot-runs must be positive") }
    }
}

/// `snapshot=latest` over a large keyed log: the newest event of every key of a topic prefix (and of `*`),
/// read through the library (`EventLog.readSnapshot`, page after page until a page is short) and end to end
/// through a running eventlogd (an SSE stream with `snapshot=latest` until `eventlog.caughtup`). eventlog only:
/// Redis Streams keep no newest entry per key.
///
/// The log: `--snapshot-events` events over `--snapshot-keys` keys, appended with the library (batches of
/// 1,000, durability normal: this is setup). Key `k` lives in topic `orders/<k % 1000>` when `k % 10 < 9`,
/// else `users/<k % 1000>`, so `orders/*` covers 90% of the keys and `users/*` 10% (its snapshot steps
/// over the other 90%). The first events name every key once, the rest pick keys at random (seeded), so the
/// newest event of each key lies anywhere in the log.
enum SnapshotPhase {
    /// A snapshot to read: the selector, and how many keys it covers.
    struct Target: Sendable {
        let selector: String
        let keys: Int
    }

    static func run(_ env: BenchEnvironment, _ options: SnapshotOptions) async throws -> [ResultRow] {
        let keys = options.keys ?? (env.quick ? 20_000 : 100_000)
        let total = max(keys, options.events ?? (env.quick ? 200_000 : 1_000_000))
        let runs = options.runs ?? (env.quick ? 1 : 3)
        let users = (0..<keys).count(where: { $0 % 10 == 9 })
        let targets = [
            Target(selector: "orders/*", keys: keys - users), Target(selector: "users/*", keys: users),
            Target(selector: "*", keys: keys),
        ]
        env.say(
            "## snapshot: \(Report.number(Double(total))) events over \(Report.number(Double(keys))) keys; "
                + "snapshot=latest of \(targets.map(\.selector).joined(separator: ", ")), library (pages of "
                + "\(options.page)) and SSE, \(runs) run(s) each, median reported")
        let directory = try Processes.makeTemporaryDirectory(prefix: "eventlog-bench-snapshot")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bench.db"
        try await fill(env, path: path, events: total, keys: keys)

        // The library, in this process.
        var library: [Double] = []
        do {
            let log = try await EventLog.open(path: path)
            do {
                for target in targets {
                    var times: [Double] = []
                    for run in 0..<runs {
                        let (count, seconds, pages) = try await readLibrary(
                            log, selector: target.selector, page: options.page)
                        guard count == target.keys else {
                            throw BenchError(
                                "readSnapshot of \(target.selector) returned \(count) events, not \(target.keys) keys")
                        }
                        times.append(seconds)
                        env.say(
                            "  library \(target.selector) run \(run + 1): \(count) keys in \(pages) pages, "
                                + "\(String(format: "%.3f", seconds)) s = \(Report.number(Double(count) / seconds)) keys/s"
                        )
                    }
                    library.append(times.sorted()[times.count / 2])
                }
            } catch {
                await log.close()
                throw error
            }
            await log.close()
        }

        // End to end: eventlogd on the same file, one SSE stream per read.
        let sse = try await env.withEventLog(database: path) { server -> [Double] in
            var medians: [Double] = []
            for target in targets {
                var times: [Double] = []
                for run in 0..<runs {
                    let loop = env.loop(run)
                    let cpu = CPUUsage(serverPID: server.pid)
                    let start = monotonicNanos()
                    let subscriber = SSESubscriber(
                        eventLoop: loop, selectors: [target.selector], lastEventID: nil,
                        options: .init(recordIDs: true), parameters: ["snapshot=latest"])
                    let channel = try await env.client.connect(port: server.port, on: loop, handler: subscriber)
                    let caught = try await wait(subscriber.caughtUp.futureResult, seconds: 300, "snapshot caught up")
                    let seen = try await onLoop(loop) { subscriber.snapshot }
                    channel.close(promise: nil)
                    let seconds = Double(caught.at - start) / 1e9
                    guard seen.ids.count == target.keys else {
                        throw BenchError(
                            "SSE snapshot=latest of \(target.selector) sent \(seen.ids.count) events before "
                                + "eventlog.caughtup, not \(target.keys) keys")
                    }
                    guard zip(seen.ids, seen.ids.dropFirst()).allSatisfy({ $0 < $1 }) else {
                        throw BenchError("SSE snapshot=latest of \(target.selector): ids not strictly increasing")
                    }
                    times.append(seconds)
                    env.say(
                        "  SSE \(target.selector) run \(run + 1): \(seen.ids.count) keys until eventlog.caughtup in "
                            + "\(String(format: "%.3f", seconds)) s = \(Report.number(Double(seen.ids.count) / seconds)) "
                            + "keys/s; \(cpu.summary(serverName: "eventlogd"))")
                }
                medians.append(times.sorted()[times.count / 2])
            }
            return medians
        }

        let scale = "\(Report.number(Double(total))) events / \(Report.number(Double(keys))) keys"
        let noRedis = "Redis: no equivalent (Streams keep no newest entry per key)"
        var rows: [ResultRow] = []
        for (index, target) in targets.enumerated() {
            let covered = "\(target.selector) (\(Report.number(Double(target.keys))) keys)"
            rows.append(
                ResultRow(
                    benchmark: "snapshot", metric: "snapshot of \(covered) at \(scale), library readSnapshot",
                    unit: "s", eventlog: library[index], redis: nil, better: .lower,
                    note: "\(Report.number(Double(target.keys) / library[index])) keys/s; pages of \(options.page) "
                        + "until a short one; median of \(runs)"))
            rows.append(
                ResultRow(
                    benchmark: "snapshot", metric: "snapshot of \(covered) at \(scale), SSE snapshot=latest",
                    unit: "s", eventlog: sse[index], redis: nil, better: .lower,
                    note: "\(Report.number(Double(target.keys) / sse[index])) keys/s; connect until "
                        + "eventlog.caughtup, every key once, ids increasing; median of \(runs). " + noRedis))
        }
        return rows
    }

    /// Appends `events` keyed events over `keys` keys through the library (batches of 1,000).
    private static func fill(_ env: BenchEnvironment, path: String, events: Int, keys: Int) async throws {
        var options = EventLog.Options()
        options.durability = .normal
        let log = try await EventLog.open(path: path, options: options)
        let payload = EventData.text(String(repeating: "x", count: 100))
        let start = monotonicNanos()
        var random = SeededRandom(seed: 13)
        var appended = 0
        do {
            while appended < events {
                let count = min(1000, events - appended)
                let batch = (appended..<(appended + count)).map { index -> NewEvent in
                    let key = index < keys ? index : Int(random.next() % UInt64(keys))
                    let topic = (key % 10 < 9 ? "orders/" : "users/") + String(key % 1000)
                    return NewEvent(topic: topic, key: "k\(key)", data: payload)
                }
                _ = try await log.append(batch: batch)
                appended += count
            }
        } catch {
            await log.close()
            throw error
        }
        await log.close()
        let seconds = Double(monotonicNanos() - start) / 1e9
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        env.say(
            "  filled \(Report.number(Double(appended))) events in \(String(format: "%.1f", seconds)) s "
                + "(\(Report.number(Double(appended) / seconds)) events/s with the latest table); database "
                + "\(size / 1_048_576) MB")
    }

    /// Reads the whole snapshot of `selector` page by page until a page is short: (events, seconds, pages).
    private static func readLibrary(
        _ log: EventLog, selector: String, page: Int
    ) async throws -> (count: Int, seconds: Double, pages: Int) {
        let selectors = try SelectorSet(parsing: [selector])
        let start = monotonicNanos()
        var position: Int64 = 0
        var count = 0
        var pages = 0
        var last: Int64 = 0
        while true {
            let result = try await log.readSnapshot(after: position, selectors: selectors, limit: page)
            pages += 1
            count += result.events.count
            for event in result.events {
                guard event.id > last else { throw BenchError("readSnapshot of \(selector): ids not increasing") }
                last = event.id
            }
            position = result.next
            if result.events.count < page { break }
        }
        return (count, Double(monotonicNanos() - start) / 1e9, pages)
    }
}
