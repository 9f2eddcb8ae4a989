import Foundation

@testable import EventLog

/// A PostgreSQL server for the tests: `EVENTLOG_TEST_POSTGRES` (a URL to any database of it, as a superuser),
/// which tools/test.sh sets to the throwaway cluster it starts. Without it the PostgreSQL tests do not run.
/// Shared by the test targets (the store's tests and the maintenance tests).
public enum TestPostgres {
    public static let serverURL: String? = {
        let value = ProcessInfo.processInfo.environment["EVENTLOG_TEST_POSTGRES"] ?? ""
        return value.isEmpty ? nil : value
    }()

    public static var isAvailable: Bool { serverURL != nil }

    /// The URL of database `name` on the test server.
    public static func url(database name: String) -> String {
        let server = serverURL!
        let query = server.firstIndex(of: "?").map { String(server[$0...]) } ?? ""
        let base = server.firstIndex(of: "?").map { String(server[..<$0]) } ?? server
        let slash = base.range(of: "/", options: .backwards, range: base.range(of: "://")!.upperBound..<base.endIndex)
        return (slash.map { String(base[..<$0.lowerBound]) } ?? base) + "/" + name + query
    }

    /// Runs the blocking `body` on a thread of its own (not on the cooperative pool) and returns its result.
    public static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// Runs `body` with the URL of a new, empty database, dropped afterwards.
    public static func withDatabase<T>(_ body: (String) async throws -> T) async throws -> T {
        let name = "eventlog_test_" + Migrator.randomHex(bytes: 6)
        let admin = try PGConnection(url: serverURL!)
        try admin.execute("CREATE DATABASE \(name)")
        defer {
            _ = try? admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            admin.close()
        }
        return try await body(url(database: name))
    }

    /// Runs `body` with `count` logs (nodes) open on one new database; closes them afterwards.
    public static func withNodes<T>(
        _ count: Int, options: EventLog.Options = EventLog.Options(),
        _ body: ([EventLog], String) async throws -> T
    ) async throws -> T {
        try await withDatabase { url in
            var nodes: [EventLog] = []
            do {
                for _ in 0..<count { nodes.append(try await EventLog.open(path: url, options: options)) }
                let result = try await body(nodes, url)
                for node in nodes { await node.close() }
                return result
            } catch {
                for node in nodes { await node.close() }
                throw error
            }
        }
    }
}
