import Foundation
import Testing

@testable import EventLog

@Suite("Schema")
struct SchemaTests {
    /// The package's `schema/` directory, found from this file's path.
    static let schemaDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // EventLogTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
        .appendingPathComponent("schema", isDirectory: true)

    @Test("every embedded migration is byte for byte its file in schema/")
    func embeddedSchemaMatchesFiles() throws {
        #expect(!EmbeddedSchema.migrations.isEmpty)
        for migration in EmbeddedSchema.migrations {
            let file = try Data(contentsOf: Self.schemaDirectory.appendingPathComponent(migration.file))
            #expect(Array(migration.sql.utf8) == Array(file), "\(migration.file) differs from its embedded copy")
        }
        #expect(
            EmbeddedSchema.v0001
                == (try String(
                    contentsOf: Self.schemaDirectory.appendingPathComponent("0001_init.sql"), encoding: .utf8)))
    }

    @Test("every file in schema/ is embedded, numbered in order from 1")
    func everySchemaFileIsEmbedded() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.schemaDirectory.path)
            .filter { $0.hasSuffix(".sql") }
            .sorted()
        #expect(files == EmbeddedSchema.migrations.map(\.file))
        #expect(EmbeddedSchema.migrations.map(\.version) == Array(1...EmbeddedSchema.migrations.count))
        for migration in EmbeddedSchema.migrations {
            #expect(migration.file.hasPrefix(String(format: "%04d_", migration.version)))
        }
        #expect(Migrator.latestVersion == EmbeddedSchema.migrations.count)
    }

    @Test("a new log is at the latest schema version with its meta rows")
    func newLogHasSchemaVersionAndMeta() async throws {
        try await withTemporaryLog { log, directory in
            let path = directory.path("events.db")
            #expect(try sqlite3(path, "PRAGMA user_version;") == "\(Migrator.latestVersion)\n")
            let meta = try sqlite3(path, "SELECT name || '=' || length(value) FROM meta ORDER BY name;")
            #expect(meta == "epoch=32\nschema_version=1\ntoken_key=64\n")
            #expect(try sqlite3(path, "SELECT value FROM meta WHERE name = 'epoch';") == log.epoch + "\n")
        }
    }

    @Test("opening a database from a newer schema version fails with corrupt")
    func newerSchemaIsRefused() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("events.db")
            let log = try await EventLog.open(path: path)
            await log.close()
            try sqlite3(path, "PRAGMA user_version = \(Migrator.latestVersion + 1);")
            let error = await #expect(throws: EventLogError.self) { try await EventLog.open(path: path) }
            #expect(error?.code == .corrupt)
        }
    }

    @Test("opening a file that is not an event log read-only fails with corrupt")
    func foreignDatabaseIsRefused() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.path("other.db")
            try sqlite3(path, "CREATE TABLE t (x); PRAGMA journal_mode=WAL;")
            let error = await #expect(throws: EventLogError.self) {
                try await EventLog.open(path: path, options: .with { $0.readOnly = true })
            }
            #expect(error?.code == .corrupt)
        }
    }
}

@Suite("PostgreSQL schema")
struct PostgresSchemaTests {
    static let directory = SchemaTests.schemaDirectory.appendingPathComponent("postgres", isDirectory: true)

    @Test("every embedded PostgreSQL migration is byte for byte its file in schema/postgres/, numbered from 1")
    func embeddedMatchesFiles() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == PostgresSchema.migrations.map(\.file))
        #expect(PostgresSchema.migrations.map(\.version) == Array(1...PostgresSchema.migrations.count))
        for migration in PostgresSchema.migrations {
            let file = try Data(contentsOf: Self.directory.appendingPathComponent(migration.file))
            #expect(Array(migration.sql.utf8) == Array(file), "\(migration.file) differs from its embedded copy")
        }
    }
}
