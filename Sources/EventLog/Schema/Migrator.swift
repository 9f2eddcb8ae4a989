import Foundation

/// Brings a database to the newest schema version. The version is kept in `PRAGMA user_version`
/// (https://sqlite.org/pragma.html#pragma_user_version) and mirrored in `meta.schema_version`.
enum Migrator {
    /// The newest schema version this build knows.
    static var latestVersion: Int { EmbeddedSchema.migrations.last?.version ?? 0 }

    /// Applies the missing migrations, each in its own transaction. A fresh database also gets its
    /// epoch, `earliest` and the resume-token signing key.
    static func migrate(_ connection: Connection) throws {
        let current = Int(try connection.scalarInt("PRAGMA user_version") ?? 0)
        if current > latestVersion {
            throw EventLogError(
                .corrupt,
                "the database has schema version \(current), newer than this build's \(latestVersion)"
            )
        }
        for migration in EmbeddedSchema.migrations where migration.version > current {
            try connection.execute("BEGIN IMMEDIATE")
            do {
                try connection.execute(migration.sql)
                if migration.version == 1 {
                    try connection.run(
                        "INSERT INTO meta (name, value) VALUES ('epoch', ?), ('earliest', '1'), ('token_key', ?)",
                        [.text(randomHex(bytes: 16)), .text(randomHex(bytes: 32))]
                    )
                }
                try connection.run(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)",
                    [.text(String(migration.version))]
                )
                try connection.execute("PRAGMA user_version = \(migration.version)")
                try connection.execute("COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Random bytes as lowercase hex, from the system's CSPRNG.
    static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var text = ""
        for _ in 0..<count {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text += byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
        }
        return text
    }
}
