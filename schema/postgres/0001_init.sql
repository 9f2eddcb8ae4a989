-- eventlog PostgreSQL schema, version 1: one log shared by any number of eventlogd nodes.
-- Everything lives in the schema `eventlog`; the version is meta.schema_version.
CREATE SCHEMA IF NOT EXISTS eventlog;

CREATE TABLE eventlog.meta (
    name text PRIMARY KEY,
    value text NOT NULL
);

-- One row. A group commit takes its ids by raising `head` in its transaction: the row lock is held until
-- COMMIT, so commits are serialized in id order and a reader never sees id N+1 committed before id N. A
-- rolled-back group takes its ids back with it, so ids have no holes but those retention and compaction make.
-- `time` is the last group's commit time (times never go back, even when a node's clock does); `removals`
-- counts the transactions that deleted events.
CREATE TABLE eventlog.counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    head bigint NOT NULL DEFAULT 0,
    time bigint NOT NULL DEFAULT 0,
    removals bigint NOT NULL DEFAULT 0
);

INSERT INTO eventlog.counter DEFAULT VALUES;

-- As in SQLite's schema: NULL data is a tombstone; data_format 0 is text, 1 canonical JSON; time is the
-- commit time in Unix milliseconds. Topics and keys compare bytewise (COLLATE "C"), as selectors need.
CREATE TABLE eventlog.events (
    id bigint PRIMARY KEY,
    topic text COLLATE "C" NOT NULL,
    type text NOT NULL,
    key text COLLATE "C",
    data text,
    data_format smallint NOT NULL DEFAULT 0 CHECK (data_format IN (0, 1)),
    time bigint NOT NULL,
    idempotency_key text,
    request_hash bigint
);

CREATE INDEX events_topic_id ON eventlog.events (topic, id);

CREATE UNIQUE INDEX events_topic_idempotency_key ON eventlog.events (topic, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The newest event of each (topic, key); an event without a key counts as the key spelled like its topic.
-- Kept by the statement triggers below, in the statement that inserts or deletes events.
CREATE TABLE eventlog.latest (
    topic text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (topic, key)
);

CREATE UNIQUE INDEX latest_id ON eventlog.latest (id);

CREATE FUNCTION eventlog.latest_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO eventlog.latest (topic, key, id)
        SELECT DISTINCT ON (topic, coalesce(key, topic)) topic, coalesce(key, topic), id
        FROM inserted ORDER BY topic, coalesce(key, topic), id DESC
        ON CONFLICT (topic, key) DO UPDATE SET id = excluded.id WHERE excluded.id > eventlog.latest.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_latest_insert AFTER INSERT ON eventlog.events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION eventlog.latest_insert();

CREATE FUNCTION eventlog.latest_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM eventlog.latest l USING deleted d WHERE l.id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_latest_delete AFTER DELETE ON eventlog.events
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION eventlog.latest_delete();

-- Removal watermarks per selector text (a topic, a prefix `a/b/*`, `*`) and the floor '', as in SQLite.
CREATE TABLE eventlog.removed (
    selector text COLLATE "C" PRIMARY KEY,
    through bigint NOT NULL,
    removals bigint NOT NULL DEFAULT 0
);

-- Positions that name no event of this log (after < id <= through): ids an import skipped.
CREATE TABLE eventlog.voids (
    after bigint PRIMARY KEY,
    through bigint NOT NULL
);

-- Events published from an application's own transaction (eventlog.publish). eventlogd moves them into
-- the log in `seq` order and deletes them, in one transaction. `seq` comes from the row of outbox_counter,
-- whose lock the publishing transaction holds until it ends: publishing transactions commit in `seq` order,
-- so `seq` order is commit order, and a rolled-back transaction leaves no hole.
CREATE TABLE eventlog.outbox (
    seq bigint PRIMARY KEY,
    topic text NOT NULL,
    type text NOT NULL,
    key text,
    data jsonb,
    idempotency_key text
);

CREATE TABLE eventlog.outbox_counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL DEFAULT 0
);

INSERT INTO eventlog.outbox_counter DEFAULT VALUES;

-- Publishes an event from the caller's transaction: it enters the log if and only if that transaction
-- commits, and gets its id when eventlogd moves it. `data` is any JSON value: a JSON string becomes a text
-- event, `null` (or SQL NULL) a tombstone. Returns the outbox sequence number.
CREATE FUNCTION eventlog.publish(
    topic text, type text, key text, data jsonb, idempotency_key text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    assigned bigint;
BEGIN
    IF $1 IS NULL OR octet_length($1) NOT BETWEEN 1 AND 256
        OR $1 !~ '^[A-Za-z0-9._~:@!$+=-]+(/[A-Za-z0-9._~:@!$+=-]+)*$' THEN
        RAISE EXCEPTION 'eventlog.publish: invalid topic %', quote_literal(coalesce($1, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    IF $2 IS NOT NULL AND (octet_length($2) NOT BETWEEN 1 AND 128 OR $2 ~ '[\r\n]' OR $2 LIKE 'eventlog.%') THEN
        RAISE EXCEPTION 'eventlog.publish: invalid type %', quote_literal($2) USING ERRCODE = '22023';
    END IF;
    IF $3 IS NOT NULL AND (octet_length($3) NOT BETWEEN 1 AND 1024 OR $3 ~ '[\r\n]') THEN
        RAISE EXCEPTION 'eventlog.publish: invalid key %', quote_literal($3) USING ERRCODE = '22023';
    END IF;
    IF $5 IS NOT NULL AND (octet_length($5) NOT BETWEEN 1 AND 256 OR $5 ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'eventlog.publish: invalid idempotency key %', quote_literal($5) USING ERRCODE = '22023';
    END IF;
    UPDATE eventlog.outbox_counter SET seq = seq + 1 RETURNING seq INTO assigned;
    INSERT INTO eventlog.outbox (seq, topic, type, key, data, idempotency_key)
        VALUES (assigned, $1, coalesce($2, 'message'), $3, $4, $5);
    PERFORM pg_notify('eventlog_outbox', assigned::text);
    RETURN assigned;
END
$$;
