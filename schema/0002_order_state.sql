-- eventlog schema, version 2: what precise gaps, snapshots and restores need.

-- The newest event of each (topic, key). An event without a key counts as the key spelled like its topic,
-- as compaction counts it. Kept by the triggers below in the statement that inserts or deletes the event,
-- so it is never out of step with `events`; `snapshot=latest` reads it in id order through `latest_id`.
CREATE TABLE latest (
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (topic, key)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX latest_id ON latest (id);

INSERT INTO latest (topic, key, id)
    SELECT topic, coalesce(key, topic), max(id) FROM events GROUP BY topic, coalesce(key, topic);

CREATE TRIGGER events_latest_insert AFTER INSERT ON events BEGIN
    INSERT INTO latest (topic, key, id) VALUES (new.topic, coalesce(new.key, new.topic), new.id)
        ON CONFLICT (topic, key) DO UPDATE SET id = excluded.id WHERE excluded.id > latest.id;
END;

CREATE TRIGGER events_latest_delete AFTER DELETE ON events BEGIN
    DELETE FROM latest WHERE id = old.id;
END;

-- Removal watermarks. For a selector text (an exact topic, a prefix `a/b/*`, or `*`), the largest id of an
-- event it matches that retention removed, and how many retention transactions removed such events; retention
-- raises the rows of the topic and of each prefix above it in the transaction that deletes. The row '' is a
-- floor for every selector: version 1 kept only a log-wide `earliest`, and an import knows only the export's.
CREATE TABLE removed (
    selector TEXT PRIMARY KEY NOT NULL,
    through INTEGER NOT NULL,
    removals INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

INSERT INTO removed (selector, through)
    SELECT '', CAST(value AS INTEGER) - 1 FROM meta WHERE name = 'earliest' AND CAST(value AS INTEGER) > 1;

DELETE FROM meta WHERE name = 'earliest';

-- Positions that name no event of this log: ids a restore or an import skipped, `after < id <= through`,
-- because the replaced file (or the backup's own history) had issued them. A client resuming inside one gets
-- `reset`, as one above the head does.
CREATE TABLE voids (
    after INTEGER PRIMARY KEY,
    through INTEGER NOT NULL
) STRICT;
