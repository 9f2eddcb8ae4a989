/// Brings a PostgreSQL database to the newest eventlog schema: the files of `schema/postgres/`, each applied in
/// one transaction with the version in `eventlog.meta.schema_version`. Several nodes starting at once take turns
/// on a transaction-level advisory lock, so each migration runs once.
enum PostgresMigrator {
    /// An arbitrary constant: the advisory lock key of eventlog's migrations.
    static let lockKey = 0x6576_656E_746C_6F67

    /// The schema version of the database: 0 before eventlog created its schema.
    static func version(_ connection: PGConnection) throws -> Int {
        guard try connection.scalarText("SELECT to_regclass('eventlog.meta')::text") != nil else { return 0 }
        return Int(try connection.scalarText("SELECT value FROM eventlog.meta WHERE name = 'schema_version'") ?? "0")
            ?? 0
    }

    /// Applies the missing migrations. A new database also gets its epoch and resume-token signing key.
    static func migrate(_ connection: PGConnection) throws {
        try connection.transaction {
            try connection.query("SELECT pg_advisory_xact_lock($1)", [String(lockKey)])
            let current = try version(connection)
            if current > PostgresSchema.latestVersion {
                throw EventLogError(
                    .corrupt,
                    "the database has eventlog schema version \(current), newer than this build's \(PostgresSchema.latestVersion)"
                )
            }
            for migration in PostgresSchema.migrations where migration.version > current {
                try connection.execute(migration.sql)
                if migration.version == 1 {
                    try connection.query(
                        "INSERT INTO eventlog.meta (name, value) VALUES ('epoch', $1), ('token_key', $2)",
                        [Migrator.randomHex(bytes: 16), Migrator.randomHex(bytes: 32)])
                }
                try connection.query(
                    """
                    INSERT INTO eventlog.meta (name, value) VALUES ('schema_version', $1)
                    ON CONFLICT (name) DO UPDATE SET value = excluded.value
                    """,
                    [String(migration.version)])
            }
        }
    }
}
