import ArgumentParser
import NIOCore

/// Options of the `tail` benchmark.
struct TailOptions: ParsableArguments {
    @Option(name: .customLong("tail-megabytes"), help: "eventlogd's --tail-bytes for this phase, in MiB.")
    var megabytes = 64

    @Option(
        name: .customLong("tail-publish-megabytes"),
        help: "MiB of event data published, more than the tail holds so that it is full and evicting.")
    var publishMegabytes = 100

    @Option(name: .customLong("tail-event-bytes"), help: "Bytes of data per event.")
    var eventBytes = 2048

    @Option(name: .customLong("tail-settle"), help: "Seconds to wait after the last publish before reading RSS.")
    var settle: Double = 2

    func validate() throws {
        guard megabytes > 0, publishMegabytes > 0, eventBytes > 0, settle >= 0 else {
            throw ValidationError("the tail options must be positive")
        }
    }
}

/// Server memory with a full in-memory tail: eventlogd with `--tail-bytes` M MiB (and an event count limit that
/// does not bind) has more than M MiB published to it in NDJSON batches of 500, with no subscriber. The RSS it
/// grew by, against `--tail-bytes`: what the tail costs beyond the event bytes it is allowed to keep (the
/// `Event` values, their chunks, the allocator). eventlog only: Redis keeps the whole stream in memory.
enum TailPhase {
    static func run(_ env: BenchEnvironment, _ options: TailOptions) async throws -> [ResultRow] {
        let tailBytes = options.megabytes * 1_048_576
        let perBatch = 500
        let events = (options.publishMegabytes * 1_048_576 / options.eventBytes + perBatch - 1) / perBatch * perBatch
        env.say(
            "## tail: eventlogd --tail-bytes \(tailBytes) (\(options.megabytes) MiB); \(events) events of "
                + "\(options.eventBytes) bytes published in NDJSON batches of \(perBatch), no subscribers")
        let arguments = ["--tail-bytes", String(tailBytes), "--tail-events", String(events * 2)]
        let (before, after, peak) = try await env.withEventLog(arguments: arguments) { server in
            try await Task.sleep(for: .milliseconds(500))
            let before = Processes.residentBytes(server.pid) ?? 0
            let connections = try await env.client.httpConnections(port: server.port, count: 4)
            defer { connections.forEach { $0.close() } }
            let payload = String(repeating: "t", count: options.eventBytes)
            let body = (0..<perBatch).map { _ in "{\"topic\":\"tail\",\"data\":\"\(payload)\"}" }
                .joined(separator: "\n")
            let request = HTTPLoadConnection.request(
                "POST", "/v1/events", contentType: "application/x-ndjson", body: body)
            _ = try await env.client.connectMany(count: events / perBatch, parallel: connections.count) { index in
                let reply = try await connections[index % connections.count].request(request)
                guard reply.isSuccess else { throw BenchError("publishing: \(reply.summary)") }
                return true
            }
            try await Task.sleep(for: .milliseconds(Int64(options.settle * 1000)))
            let after = Processes.residentBytes(server.pid) ?? 0
            let peak = Processes.peakResidentBytes(server.pid) ?? after
            env.say(
                "  eventlogd: RSS \(before / 1_048_576) MB before, \(after / 1_048_576) MB after "
                    + "\(Report.number(Double(events))) events, peak \(peak / 1_048_576) MB (VmHWM)")
            return (before, after, peak)
        }
        let grown = Double(after - before)
        let note = "eventlog only (Redis keeps the whole stream in memory); --tail-bytes \(tailBytes)"
        return [
            ResultRow(
                benchmark: "tail", metric: "RSS grown with a full \(options.megabytes) MiB tail", unit: "MB",
                eventlog: grown / 1_048_576, redis: nil, better: .lower,
                note: "RSS \(before / 1_048_576) → \(after / 1_048_576) MB; peak \(peak / 1_048_576) MB"),
            ResultRow(
                benchmark: "tail", metric: "RSS grown / --tail-bytes", unit: "×", eventlog: grown / Double(tailBytes),
                redis: nil, better: .lower, target: .atMost(1.3), note: note),
        ]
    }
}
