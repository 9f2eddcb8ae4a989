import Foundation
import TestSupport
import Testing

@testable import EventLog

/// A directory of its own under the system temp directory, removed by ``remove()``.
struct TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventlog-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    func path(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// Runs `body` with a fresh directory that is removed afterwards, whatever happens.
func withTemporaryDirectory<T>(_ body: (TemporaryDirectory) async throws -> T) async throws -> T {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    return try await body(directory)
}

/// Runs `body` with a log in a fresh file, closes the log and removes the directory afterwards.
func withTemporaryLog<T>(
    options: EventLog.Options = EventLog.Options(),
    _ body: (EventLog, TemporaryDirectory) async throws -> T
) async throws -> T {
    try await withTemporaryDirectory { directory in
        let log = try await EventLog.open(path: directory.path("events.db"), options: options)
        do {
            let result = try await body(log, directory)
            await log.close()
            return result
        } catch {
            await log.close()
            throw error
        }
    }
}

extension EventLog.Options {
    /// Default options with a few fields changed.
    static func with(_ change: (inout EventLog.Options) -> Void) -> EventLog.Options {
        var options = EventLog.Options()
        change(&options)
        return options
    }
}

extension EventLog {
    /// Every event after `position` that matches `selectors`, page by page. Checks on the way
    /// that pages continue one another: no id twice, ids ascending.
    func readAll(after position: Int64 = 0, selectors: SelectorSet = .all, limit: Int = 1000) async throws -> [Event] {
        var events: [Event] = []
        var position = position
        while true {
            let page = try await read(after: position, selectors: selectors, limit: limit)
            #expect(page.events.count <= limit)
            if let first = page.events.first, let last = events.last {
                #expect(first.id > last.id)
            }
            events.append(contentsOf: page.events)
            #expect(page.next >= position)
            if page.events.isEmpty && page.next >= page.head { return events }
            position = page.next
        }
    }
}

/// Runs the sqlite3 command-line shell on `path`, as another process would touch the file.
/// Returns its standard output.
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
    guard process.terminationStatus == 0 else {
        throw SQLite3ShellError(status: process.terminationStatus, sql: sql)
    }
    return String(decoding: data, as: UTF8.self)
}

struct SQLite3ShellError: Error {
    let status: Int32
    let sql: String
}

/// Runs `operation`, giving up after `timeout`. Returns nil when the time ran out first (the
/// operation is then cancelled).
func withTimeout<T: Sendable>(
    _ timeout: Duration,
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        return try await group.next() ?? nil
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held. The bound only keeps a broken
/// test from hanging.
func eventually(_ timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}
