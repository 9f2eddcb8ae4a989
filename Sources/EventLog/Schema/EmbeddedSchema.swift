/// The versioned schema, embedded from `schema/*.sql`. `SchemaTests` checks that each copy here is
/// byte for byte the file in `schema/`: edit the file, then paste it here.
enum EmbeddedSchema {
    /// Migrations in order; migration N brings the database to schema version N.
    static let migrations: [(version: Int, file: String, sql: String)] = [
        (1, "0001_init.sql", v0001)
    ]

    static let v0001 = #"""
        -- eventlog schema, version 1.
        -- Ids come from AUTOINCREMENT, so SQLite keeps the largest id ever used in sqlite_sequence and
        -- never hands it out again, even after every row is deleted (https://sqlite.org/autoinc.html).
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            type TEXT NOT NULL,
            key TEXT,
            -- NULL data is a tombstone for its key.
            data TEXT,
            -- 0: data is plain text; 1: data is a JSON value in canonical form.
            data_format INTEGER NOT NULL DEFAULT 0 CHECK (data_format IN (0, 1)),
            -- Commit time, milliseconds since 1970-01-01T00:00:00Z.
            time INTEGER NOT NULL,
            idempotency_key TEXT,
            -- Hash of the request that created the event, to tell a retry from a conflicting reuse of a key.
            request_hash INTEGER
        ) STRICT;

        CREATE INDEX events_topic_id ON events (topic, id);

        CREATE UNIQUE INDEX events_topic_idempotency_key ON events (topic, idempotency_key)
            WHERE idempotency_key IS NOT NULL;

        CREATE TABLE meta (
            name TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL
        ) STRICT, WITHOUT ROWID;

        """#
}
