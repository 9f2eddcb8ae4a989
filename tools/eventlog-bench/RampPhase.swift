import ArgumentParser

/// Options of the `ramp` benchmark.
struct RampOptions: ParsableArguments {
    @Option(
        name: .customLong("ramp-subscribers"),
        help: "SSE subscribers (Redis: XREAD BLOCK clients) on one topic. Default 10000, or 1000 with --quick.")
    var subscribers: Int?

    @Option(name: .customLong("ramp-start"), help: "Deliveries per second offered at the first step.")
    var start: Double = 20_000

    @Option(name: .customLong("ramp-factor"), help: "The offered rate is multiplied by this at each step.")
    var factor = 1.5

    @Option(name: .customLong("ramp-step-seconds"), help: "Seconds each step publishes.")
    var stepSeconds: Double = 4

    @Option(name: .customLong("ramp-p99-ms"), help: "A step passes when its delivery p99 is at most this.")
    var p99Milliseconds: Double = 250

    @Option(
        name: .customLong("ramp-budget"),
        help: """
            Seconds of stepping per side (connecting the subscribers not counted); no step starts after it. \
            Default 120, or 40 with --quick.
            """)
    var budget: Double?

    @Option(
        name: .customLong("ramp-misses"),
        help: """
            Consecutive missed steps (each at the next higher rate) before the ramp stops; the highest passing \
            step is reported. Default 1: stop at the first miss.
            """)
    var misses = 1

    @Option(help: "Keep-alive connections the paced publisher uses (each carries one publish at a time).")
    var rampPublishers = 64

    @Option(name: .customLong("ramp-event-bytes"), help: "Bytes of data per event.")
    var eventBytes = 100

    func validate() throws {
        guard (subscribers ?? 1) > 0, misses > 0, start > 0, factor > 1, stepSeconds > 0, (budget ?? 1) > 0,
            rampPublishers > 0
        else {
            throw ValidationError("the ramp options must be positive, --ramp-factor above 1")
        }
    }
}

/// The fan-out ramp: N subscribers on one topic (connected once), the offered publish rate raised step by
/// step until a step misses (delivery p99 above the bound, or fewer than 95% of the offered deliveries
/// within the step plus the latency bound). Reports the last step that passed, for both sides. When the
/// first step already misses, it steps down instead until one passes (or a step would be under 2 events).
enum RampPhase {
    /// What one side reached.
    struct Outcome: Sendable {
        /// Offered deliveries per second of the last passing step, and what it measured.
        var passed: (offered: Double, result: LiveResult)?
        /// The last step tried (the lowest when none passed).
        var last: (offered: Double, result: LiveResult)?
        /// Why the ramp stopped.
        var stop = ""
    }

    static func run(_ env: BenchEnvironment, _ options: RampOptions) async throws -> [ResultRow] {
        let subscribers = options.subscribers ?? (env.quick ? 1000 : 10_000)
        let budget = options.budget ?? (env.quick ? 40 : 120)
        env.say(
            "## ramp: \(subscribers) subscribers on one topic; offered deliveries/s from "
                + "\(Report.number(options.start)) ×\(options.factor) per \(options.stepSeconds) s step until delivery "
                + "p99 > \(Report.number(options.p99Milliseconds)) ms or < 95% delivered; budget "
                + "\(Report.number(budget)) s per side")
        let eventlog = try await env.withEventLog { server in
            try await LiveDelivery.eventlogSession(
                env, server: server, subscribers: subscribers, publishers: options.rampPublishers,
                eventBytes: options.eventBytes
            ) { step in try await ramp(env, options, subscribers, budget, label: "eventlog (SSE)", step) }
        }
        let redis = try await env.withRedis { server in
            try await LiveDelivery.redisSession(
                env, server: server, subscribers: subscribers, publishers: options.rampPublishers,
                eventBytes: options.eventBytes
            ) { step in try await ramp(env, options, subscribers, budget, label: "Redis (XREAD BLOCK)", step) }
        }
        let people = Report.number(Double(subscribers))
        let bound = Report.number(options.p99Milliseconds)
        var note = "eventlog: \(eventlog.stop)"
        if let redis { note += "; Redis: \(redis.stop)" }
        return [
            ResultRow(
                benchmark: "ramp", metric: "\(people) subscribers: highest deliveries/s with p99 ≤ \(bound) ms",
                unit: "/s", eventlog: eventlog.passed?.offered ?? 0, redis: redis.map { $0.passed?.offered ?? 0 },
                better: .higher, target: .atLeast(300_000), note: note),
            ResultRow(
                benchmark: "ramp",
                metric: "\(people) subscribers: delivery p99 at that step (the lowest tried if none passed)",
                unit: "ms", eventlog: p99(eventlog), redis: redis.flatMap(p99), better: .lower),
        ]
    }

    /// The delivery p99 of the last passing step, or of the lowest step tried when none passed.
    private static func p99(_ outcome: Outcome) -> Double? {
        (outcome.passed ?? outcome.last)?.result.latencies.milliseconds(0.99)
    }

    /// Steps the offered rate up on one connected side.
    private static func ramp(
        _ env: BenchEnvironment, _ options: RampOptions, _ count: Int, _ budget: Double, label: String,
        _ step: LiveDelivery.Step
    ) async throws -> Outcome {
        let subscribers = Double(count)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(budget * 1000))
        var offered = options.start
        var outcome = Outcome()
        var number = 0
        // When the first step misses, the ramp steps down instead, until a step passes or a step would
        // publish fewer than 2 events.
        var firstMiss: String?
        // Consecutive misses above the last pass.
        var misses: [String] = []
        while true {
            guard clock.now < deadline else {
                outcome.stop =
                    "budget of \(Report.number(budget)) s reached before a step "
                    + (outcome.passed == nil ? "passed" : "missed") + (firstMiss.map { "; first miss \($0)" } ?? "")
                return outcome
            }
            number += 1
            let rate = offered / subscribers
            // The first step has a 1 s warm-up (not counted) at its rate.
            let result = try await step(rate, options.stepSeconds, number == 1 ? 1 : 0)
            let span = result.span
            let offeredTotal = Double(Int(rate * options.stepSeconds)) * subscribers
            let p99 = result.latencies.milliseconds(0.99) ?? .infinity
            // At least 95% of the offered rate, the last events allowed the latency bound.
            let inTime = span <= options.stepSeconds / 0.95 + options.p99Milliseconds / 1000
            let enough = Double(result.delivered) >= 0.95 * offeredTotal
            let pass = p99 <= options.p99Milliseconds && enough && inTime && result.paced.failures == 0
            env.say(
                "  \(label) step \(number): offered \(Report.number(offered)) deliveries/s "
                    + "(\(Report.number(rate)) events/s): \(pass ? "pass" : "MISS"); "
                    + result.describe("step").dropFirst(8))
            outcome.last = (offered, result)
            if pass {
                outcome.passed = (offered, result)
                misses = []
                if let firstMiss {
                    outcome.stop = "passed at \(Report.number(offered))/s after stepping down; first miss \(firstMiss)"
                    return outcome
                }
                offered *= options.factor
                continue
            }
            var why: [String] = []
            if p99 > options.p99Milliseconds { why.append("p99 \(Report.number(p99)) ms") }
            if !enough || !inTime {
                why.append(
                    "\(Report.number(Double(result.delivered))) of \(Report.number(offeredTotal)) delivered in "
                        + "\(String(format: "%.2f", span)) s")
            }
            if result.paced.failures > 0 { why.append("\(result.paced.failures) publishes failed") }
            if result.paced.maxBacklog > 0 {
                why.append("the publisher fell behind by up to \(result.paced.maxBacklog) events")
            }
            let miss = "at \(Report.number(offered))/s (\(why.joined(separator: ", ")))"
            if outcome.passed != nil {
                misses.append(miss)
                if misses.count >= options.misses {
                    outcome.stop = "missed " + misses.joined(separator: ", then ")
                    return outcome
                }
                offered *= options.factor
                continue
            }
            firstMiss = firstMiss ?? miss
            let lower = offered / options.factor
            guard lower / subscribers * options.stepSeconds >= 2 else {
                outcome.stop =
                    "missed at every rate down to \(Report.number(offered))/s; first miss \(firstMiss ?? miss)"
                return outcome
            }
            offered = lower
        }
    }
}
