import EventLog
import Synchronization

/// The server's counters, rendered in the Prometheus text format at `GET /metrics`.
final class Metrics: Sendable {
    /// Upper bounds of the publish latency histogram, in seconds.
    static let latencyBuckets: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
    ]

    private let appended = Atomic<Int>(0)
    private let deliveredTotal = Atomic<Int>(0)
    private let replayedTotal = Atomic<Int>(0)
    private let sseConnections = Atomic<Int>(0)
    private let webSocketConnections = Atomic<Int>(0)
    private let webSocketDelivered = Atomic<Int>(0)
    private let httpConnections = Atomic<Int>(0)
    private let publishLatency = Mutex(LatencyHistogram())
    private let statuses: Mutex<[Int: Int]> = Mutex([:])

    private struct LatencyHistogram {
        var buckets = [Int](repeating: 0, count: Metrics.latencyBuckets.count)
        var count = 0
        var sum: Double = 0
    }

    init() {}

    func appended(_ count: Int, latency: Duration) {
        appended.add(count, ordering: .relaxed)
        let seconds = latency.secondsValue
        publishLatency.withLock { histogram in
            for (index, bound) in Metrics.latencyBuckets.enumerated() where seconds <= bound {
                histogram.buckets[index] += 1
            }
            histogram.count += 1
            histogram.sum += seconds
        }
    }

    func delivered(_ count: Int, replayed: Bool) {
        deliveredTotal.add(count, ordering: .relaxed)
        if replayed { replayedTotal.add(count, ordering: .relaxed) }
    }

    func webSocketDelivered(_ count: Int) {
        webSocketDelivered.add(count, ordering: .relaxed)
    }

    func sseOpened() { sseConnections.add(1, ordering: .relaxed) }
    func sseClosed() { sseConnections.subtract(1, ordering: .relaxed) }
    func webSocketOpened() { webSocketConnections.add(1, ordering: .relaxed) }
    func webSocketClosed() { webSocketConnections.subtract(1, ordering: .relaxed) }

    /// Open TCP connections; also the count `--max-connections` limits.
    var connections: Int { httpConnections.load(ordering: .relaxed) }

    /// Counts a new connection unless that would pass `limit`; returns whether it was counted.
    func tryOpenConnection(limit: Int) -> Bool {
        while true {
            let current = httpConnections.load(ordering: .relaxed)
            if current >= limit { return false }
            if httpConnections.compareExchange(expected: current, desired: current + 1, ordering: .relaxed).exchanged {
                return true
            }
        }
    }

    func connectionClosed() { httpConnections.subtract(1, ordering: .relaxed) }

    func responded(status: Int) {
        statuses.withLock { $0[status, default: 0] += 1 }
    }

    /// The Prometheus text exposition.
    func render(head: Int64, earliest: Int64) -> String {
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for (suffix, value) in samples { lines.append("\(name)\(suffix) \(value)") }
        }
        metric(
            "eventlog_events_appended_total", "counter", "Events appended (committed) by publishes.",
            [("", String(appended.load(ordering: .relaxed)))]
        )
        let histogram = publishLatency.withLock { $0 }
        var buckets: [(String, String)] = []
        for (index, bound) in Metrics.latencyBuckets.enumerated() {
            buckets.append(("_bucket{le=\"\(bound)\"}", String(histogram.buckets[index])))
        }
        buckets.append(("_bucket{le=\"+Inf\"}", String(histogram.count)))
        buckets.append(("_sum", String(histogram.sum)))
        buckets.append(("_count", String(histogram.count)))
        metric(
            "eventlog_publish_duration_seconds", "histogram", "Time from a publish request to its durable commit.",
            buckets
        )
        metric(
            "eventlog_sse_connections", "gauge", "Open SSE streams.",
            [("", String(sseConnections.load(ordering: .relaxed)))]
        )
        metric(
            "eventlog_websocket_connections", "gauge", "Open WebSocket connections.",
            [("", String(webSocketConnections.load(ordering: .relaxed)))]
        )
        metric(
            "eventlog_connections", "gauge", "Open TCP connections.",
            [("", String(httpConnections.load(ordering: .relaxed)))]
        )
        metric(
            "eventlog_events_delivered_total", "counter", "Events written to subscribers (SSE and WebSocket).",
            [("", String(deliveredTotal.load(ordering: .relaxed)))]
        )
        metric(
            "eventlog_events_replayed_total", "counter", "Delivered events that were replayed before catching up.",
            [("", String(replayedTotal.load(ordering: .relaxed)))]
        )
        metric(
            "eventlog_websocket_events_delivered_total", "counter", "Events written to WebSocket subscribers.",
            [("", String(webSocketDelivered.load(ordering: .relaxed)))]
        )
        metric("eventlog_head", "gauge", "The largest committed id.", [("", String(head))])
        metric("eventlog_earliest", "gauge", "The smallest retained id.", [("", String(earliest))])
        let statusSamples = statuses.withLock { $0 }.sorted { $0.key < $1.key }.map {
            ("{status=\"\($0.key)\"}", String($0.value))
        }
        metric("eventlog_http_responses_total", "counter", "HTTP responses by status.", statusSamples)
        return lines.joined(separator: "\n") + "\n"
    }
}
