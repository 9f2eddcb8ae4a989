import ArgumentParser
import NIOCore

/// Options of the `stalled` benchmark.
struct StalledOptions: ParsableArguments {
    @Option(name: .customLong("stalled-subscribers"), help: "SSE subscribers that stop reading.")
    var subscribers = 1000

    @Option(
        name: .customLong("stalled-megabytes"),
        help: "MiB of event data published while they are stalled. Default 100, or 20 with --quick.")
    var megabytes: Int?

    @Option(name: .customLong("stalled-event-bytes"), help: "Bytes of data per event.")
    var eventBytes = 2048

    @Option(name: .customLong("stalled-receive-buffer"), help: "SO_RCVBUF of every subscriber's socket (bytes).")
    var receiveBuffer = 4096

    @Option(
        name: .customLong("stalled-stall-timeout"),
        help: "eventlogd's --stall-timeout for this phase (seconds); the run must end before it closes anyone.")
    var stallTimeout = 120

    @Option(name: .customLong("stalled-settle"), help: "Seconds to keep sampling RSS after the last publish.")
    var settle: Double = 3

    func validate() throws {
        guard subscribers > 0, (megabytes ?? 1) > 0, eventBytes > 0, receiveBuffer > 0, stallTimeout > 0 else {
            throw ValidationError("the stalled options must be positive")
        }
    }
}

/// Server memory held for subscribers that stop reading: N SSE subscribers (small `SO_RCVBUF`) stop reading
/// once caught up, then M MiB are published to their topic; peak RSS (VmHWM) against the same run where the
/// N subscribers keep reading but subscribe to another topic (none stalled, nothing for them to hold).
/// eventlog only: a Redis XREAD client pulls, the server holds nothing for a reader that stops.
enum StalledPhase {
    struct Outcome: Sendable {
        var before: Int
        var peak: Int
        var seconds: Double
        var stillOpen: Int
    }

    static func run(_ env: BenchEnvironment, _ options: StalledOptions) async throws -> [ResultRow] {
        let megabytes = options.megabytes ?? (env.quick ? 20 : 100)
        // Whole batches of 100 events.
        let events = (megabytes * 1_048_576 / options.eventBytes + 99) / 100 * 100
        env.say(
            "## stalled: \(options.subscribers) SSE subscribers (SO_RCVBUF \(options.receiveBuffer)) stop reading; "
                + "\(megabytes) MiB published (\(events) events of \(options.eventBytes) bytes); eventlogd "
                + "--stall-timeout \(options.stallTimeout); against the same with none stalled")
        let stalled = try await measure(env, options, events: events, stall: true)
        let reading = try await measure(env, options, events: events, stall: false)
        let perSubscriber = Double(stalled.peak - reading.peak) / Double(options.subscribers) / 1024
        let people = Report.number(Double(options.subscribers))
        let note = "eventlog only (a Redis XREAD reader pulls; nothing is pushed to a client that stops)"
        var closedNote = ""
        if stalled.stillOpen < options.subscribers {
            closedNote = "; \(options.subscribers - stalled.stillOpen) stalled subscribers were closed by the server"
        }
        return [
            ResultRow(
                benchmark: "stalled",
                metric: "peak RSS, \(people) subscribers stopped reading, \(megabytes) MiB published",
                unit: "MB", eventlog: Double(stalled.peak) / 1_048_576, redis: nil, better: .lower,
                note: "VmHWM; before publishing \(stalled.before / 1_048_576) MB" + closedNote),
            ResultRow(
                benchmark: "stalled", metric: "peak RSS, \(people) subscribers, none stopped, same publishing",
                unit: "MB", eventlog: Double(reading.peak) / 1_048_576, redis: nil, better: .lower,
                note: "VmHWM; subscribers read another topic; before publishing \(reading.before / 1_048_576) MB"),
            ResultRow(
                benchmark: "stalled", metric: "memory per stalled subscriber", unit: "KB", eventlog: perSubscriber,
                redis: nil, better: .lower, target: .atMost(64), note: note),
        ]
    }

    private static func measure(
        _ env: BenchEnvironment, _ options: StalledOptions, events: Int, stall: Bool
    ) async throws -> Outcome {
        try await env.withEventLog(arguments: ["--stall-timeout", String(options.stallTimeout)]) { server in
            let topic = stall ? "stall" : "other"
            let connected = try await env.client.connectMany(count: options.subscribers, parallel: 200) { index in
                let loop = env.loop(index)
                let subscriber = SSESubscriber(eventLoop: loop, selectors: [topic], lastEventID: nil, options: .init())
                let channel = try await env.client.connect(
                    port: server.port, on: loop, handler: subscriber, receiveBuffer: options.receiveBuffer)
                _ = try await wait(subscriber.caughtUp.futureResult, seconds: 60, "subscriber \(index) caught up")
                // Stop reading: the kernel buffers fill, then the server's socket turns unwritable.
                if stall { try await channel.setOption(.autoRead, value: false).get() }
                return Connected(handler: subscriber, channel: channel)
            }
            try await Task.sleep(for: .milliseconds(500))
            let before = Processes.residentBytes(server.pid) ?? 0
            let started = monotonicNanos()
            // Publish: NDJSON batches of 100 events over 4 connections, sampling RSS meanwhile.
            let connections = try await env.client.httpConnections(port: server.port, count: 4)
            let payload = String(repeating: "s", count: options.eventBytes)
            let perBatch = 100
            let body = (0..<perBatch).map { _ in "{\"topic\":\"stall\",\"data\":\"\(payload)\"}" }
                .joined(separator: "\n")
            let request = HTTPLoadConnection.request(
                "POST", "/v1/events", contentType: "application/x-ndjson", body: body)
            let batches = events / perBatch
            var peak = before
            let sampler = Task {
                var highest = 0
                while !Task.isCancelled {
                    highest = max(highest, Processes.residentBytes(server.pid) ?? 0)
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return highest
            }
            do {
                _ = try await env.client.connectMany(count: batches, parallel: connections.count) { index in
                    let reply = try await connections[index % connections.count].request(request)
                    guard reply.isSuccess else { throw BenchError("publishing: \(reply.summary)") }
                    return true
                }
            } catch {
                sampler.cancel()
                connections.forEach { $0.close() }
                await connected.closeAll()
                throw error
            }
            let published = Double(monotonicNanos() - started) / 1e9
            try await Task.sleep(for: .milliseconds(Int64(options.settle * 1000)))
            sampler.cancel()
            peak = max(peak, await sampler.value, Processes.peakResidentBytes(server.pid) ?? 0)
            let seconds = Double(monotonicNanos() - started) / 1e9
            let stillOpen = connected.filter { $0.channel.isActive }.count
            env.say(
                "  eventlogd, \(stall ? "stalled" : "none stalled"): published \(batches * perBatch) events in "
                    + "\(String(format: "%.1f", published)) s; RSS \(before / 1_048_576) MB before, peak "
                    + "\(peak / 1_048_576) MB (VmHWM), now \((Processes.residentBytes(server.pid) ?? 0) / 1_048_576) "
                    + "MB; \(stillOpen) of \(connected.count) subscribers open after "
                    + "\(String(format: "%.1f", seconds)) s")
            connections.forEach { $0.close() }
            await connected.closeAll()
            return Outcome(before: before, peak: peak, seconds: seconds, stillOpen: stillOpen)
        }
    }
}
