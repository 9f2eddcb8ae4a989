import Foundation
import Synchronization
import TestSupport
import Testing

@testable import EventLog

/// A directory of its own under the system temp directory, removed afterwards.
struct TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventlog-maint-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    func path(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }
}

/// Runs `body` with a fresh directory that is removed afterwards, whatever happens.
func withTemporaryDirectory<T>(_ body: (TemporaryDirectory) async throws -> T) async throws -> T {
    let directory = try TemporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory.url) }
    return try await body(directory)
}

/// Runs blocking work (``LogMaintenance`` blocks its thread) on a thread of its own, off the cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Polls `condition` until it holds. The bound only keeps a broken test from hanging.
func waitUntil(
    _ condition: () -> Bool,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within 60 seconds", sourceLocation: sourceLocation)
            throw ConditionNotMet()
        }
        try await Task.sleep(for: .milliseconds(2))
    }
}

/// Thrown by ``waitUntil(_:sourceLocation:)`` when its bound passes.
struct ConditionNotMet: Error {}

/// Opens `path` with ``LogMaintenance`` on a thread of its own and runs `body` with it.
func maintain<T: Sendable>(
    _ path: String,
    readOnly: Bool = false,
    batching: MaintenanceBatching? = nil,
    _ body: @escaping @Sendable (LogMaintenance) throws -> T
) async throws -> T {
    try await onThread {
        var options = LogMaintenance.Options()
        options.readOnly = readOnly
        if let batching { options.batching = batching }
        let maintenance = try LogMaintenance(path: path, options: options)
        defer { maintenance.close() }
        return try body(maintenance)
    }
}

/// Creates a log at `path` with `events` appended in order, and closes it.
@discardableResult
func makeLog(_ path: String, _ events: [NewEvent]) async throws -> (epoch: String, ids: [Int64]) {
    let log = try await EventLog.open(path: path)
    var ids: [Int64] = []
    if !events.isEmpty { ids = try await log.append(batch: events).map(\.event.id) }
    let epoch = log.epoch
    await log.close()
    return (epoch, ids)
}

/// An event on `topic` with JSON data `{"n":n}`.
func event(_ topic: String, key: String? = nil, _ n: Int, idempotencyKey: String? = nil) -> NewEvent {
    NewEvent(topic: topic, key: key, data: .json("{\"n\":\(n)}"), idempotencyKey: idempotencyKey)
}

/// A tombstone for `key` on `topic`.
func tombstone(_ topic: String, key: String? = nil) -> NewEvent {
    NewEvent(topic: topic, type: "deleted", key: key, data: nil)
}

/// Direct SQL on the file, as another connection would do it.
func withConnection<T>(_ path: String, _ body: (Connection) throws -> T) throws -> T {
    let connection = try Connection(path: path, mode: .readWrite)
    defer { connection.close() }
    return try body(connection)
}

/// The ids in the file, ascending.
func storedIDs(_ path: String, where condition: String = "1") throws -> [Int64] {
    try withConnection(path) { connection in
        try connection.rows("SELECT id FROM events WHERE \(condition) ORDER BY id") { $0.int64(0) }
    }
}

/// `meta.earliest` and the head (`sqlite_sequence`) in the file.
func bounds(_ path: String) throws -> (earliest: Int64, head: Int64) {
    try withConnection(path) { connection in
        (try SQLiteEventStore.readEarliest(connection), try SQLiteEventStore.readHead(connection))
    }
}

/// Sets the commit time of the events with ids in `ids` to `milliseconds`.
func setTime(_ path: String, ids: ClosedRange<Int64>, to milliseconds: Int64) throws {
    try withConnection(path) { connection in
        try connection.run(
            "UPDATE events SET time = ? WHERE id BETWEEN ? AND ?",
            [
                .int(milliseconds), .int(ids.lowerBound), .int(ids.upperBound),
            ])
    }
}

let day: Int64 = 86_400_000

/// Runs the sqlite3 command-line shell on `path`, as a separate process would touch the file.
@discardableResult
func sqlite3(_ path: String, _ sql: String) throws -> String {
    let process = Subprocess()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    process.arguments = [path, sql]
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw SQLite3ShellError(status: process.terminationStatus, sql: sql) }
    return String(decoding: data, as: UTF8.self)
}

struct SQLite3ShellError: Error {
    let status: Int32
    let sql: String
}

/// Append latencies, for printing percentiles.
struct LatencySummary: CustomStringConvertible {
    let sorted: [Duration]

    init(_ samples: [Duration]) { sorted = samples.sorted() }

    func percentile(_ p: Double) -> Duration {
        guard !sorted.isEmpty else { return .zero }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
    }

    var description: String {
        func ms(_ duration: Duration) -> String {
            let value = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
            return String(format: "%.2f ms", value)
        }
        return "\(sorted.count) appends: p50 \(ms(percentile(0.5))), p90 \(ms(percentile(0.9))), "
            + "p99 \(ms(percentile(0.99))), max \(ms(sorted.last ?? .zero))"
    }
}

/// Batching for a test that counts transactions: the row limit decides, never the 10 ms lock time (which a
/// loaded machine passes inside a ten-row transaction, splitting it in two).
let countedBatching = MaintenanceBatching(maxRows: 1000, maxLockTime: .seconds(60))

/// Exports the log at `path` (a file or a PostgreSQL URL) to `file`.
func export(_ path: String, to file: String) async throws -> ExportReport {
    try await maintain(path, readOnly: true) { maintenance in
        _ = FileManager.default.createFile(atPath: file, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: file))
        defer { try? handle.close() }
        return try maintenance.export(to: handle)
    }
}

/// Imports `file` into the log at `path` (a file or a PostgreSQL URL).
func importFile(_ file: String, into path: String, keepEpoch: Bool = false) async throws -> ImportReport {
    try await onThread {
        let handle = try #require(FileHandle(forReadingAtPath: file))
        defer { try? handle.close() }
        return try LogMaintenance.importEvents(from: handle, into: path, keepEpoch: keepEpoch)
    }
}

/// Text with a newline, quotes and non-ASCII; JSON; a tombstone; keys; idempotency keys. Then the first
/// two events go to retention and the newest one is deleted (as compaction of an expired tombstone
/// would), so earliest, head and the largest id all differ.
func makeVariedLog(_ path: String) async throws -> EventLog {
    let log = try await EventLog.open(path: path)
    _ = try await log.append(batch: [
        event("old/1", 0), event("old/1", 1),
        NewEvent(
            topic: "orders/1", type: "created", key: "o-1", data: .text("line 1\nline \"2\"\t€ 😀"),
            idempotencyKey: "req-1"),
        NewEvent(
            topic: "orders/1", type: "updated", key: "o-1",
            data: .json("{\"a\":[1,2.5e3,true,null],\"b\":\"x\\\"y\"}")),
        NewEvent(topic: "orders/2", data: .text("")),
        NewEvent(topic: "orders/2", type: "deleted", data: nil, idempotencyKey: "req-2"),
        event("orders/3", 6),
    ])
    _ = try await log.retain(RetentionPolicy(maxEvents: 5))
    try withConnection(path) { try $0.run("DELETE FROM events WHERE id = 7") }
    return log
}
