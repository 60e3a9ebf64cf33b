-- Migration 2: one owner of the task lifecycle.
--
-- Every status change of a task, whichever statement makes it, passes through the triggers
-- below: `taskflow_task_changing` (BEFORE, per row) refuses an illegal transition and gives
-- the change the next per-task `seq`; `taskflow_tasks_inserted` / `taskflow_tasks_updated` /
-- `taskflow_tasks_deleted` (AFTER, per statement, with transition tables) write the history
-- rows, keep the per-status counters and send one NOTIFY per statement. The queries only
-- change the task row.
--
-- Also: the `cancelled` status, `cancel_requested_at`, and a `reason` on history events.

-- The status set and the legal transitions: written here once (and once in models.py, with
-- a test that the two agree).
CREATE FUNCTION taskflow_statuses() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['new', 'in_progress', 'completed', 'failed', 'cancelled'];

CREATE FUNCTION taskflow_is_terminal(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN status IN ('completed', 'failed', 'cancelled');

-- `in_progress` → `in_progress` is a lease takeover: a new attempt of a task whose holder died.
CREATE FUNCTION taskflow_transition_allowed(from_status text, to_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (from_status, to_status) IN (
    ('new', 'in_progress'), ('new', 'cancelled'),
    ('in_progress', 'in_progress'), ('in_progress', 'completed'), ('in_progress', 'failed'),
    ('in_progress', 'cancelled'),
    ('failed', 'new'), ('cancelled', 'new'));

-- The old guard: a terminal task never changed. Retry now may change it (see below).
DROP TRIGGER tasks_guard_terminal ON tasks;
DROP FUNCTION taskflow_guard_terminal();
DROP TABLE IF EXISTS taskflow_schema;

-- Statuses.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status = ANY (taskflow_statuses()));
ALTER TABLE task_events DROP CONSTRAINT task_events_status_check;
ALTER TABLE task_events
    ADD CONSTRAINT task_events_status_check CHECK (status = ANY (taskflow_statuses()));

-- The new columns of a task.
ALTER TABLE tasks
    -- Set while a cancel of the running attempt is pending.
    ADD COLUMN cancel_requested_at timestamptz,
    -- The reason given with the latest cancel or retry; copied onto their history events.
    ADD COLUMN reason text CHECK (char_length(reason) <= 500),
    -- The `seq` of the task's latest history event (1 for `new`).
    ADD COLUMN seq integer NOT NULL DEFAULT 1,
    -- The position of the task's latest event in the global stream: the transaction id that
    -- wrote it, never lower than the one of the event before (see task_events.xid).
    ADD COLUMN event_xid xid8 NOT NULL DEFAULT '3'::xid8;
-- (Constant defaults first, so adding the columns does not rewrite the table.)
ALTER TABLE tasks ALTER COLUMN event_xid SET DEFAULT pg_current_xact_id();

-- A retried task is `new` again with its earlier attempts counted.
ALTER TABLE tasks DROP CONSTRAINT tasks_new_shape;
ALTER TABLE tasks ADD CONSTRAINT tasks_new_shape CHECK (
    status <> 'new' OR (lease_owner IS NULL AND finished_at IS NULL AND result IS NULL
                        AND error IS NULL AND cancel_requested_at IS NULL));

ALTER TABLE tasks ADD CONSTRAINT tasks_cancelled_shape CHECK (
    status <> 'cancelled' OR (result IS NULL AND error IS NULL AND finished_at IS NOT NULL
                              AND lease_owner IS NULL AND cancel_requested_at IS NULL));
ALTER TABLE tasks ADD CONSTRAINT tasks_cancel_requested_shape CHECK (
    cancel_requested_at IS NULL OR status = 'in_progress');

-- The history gains its per-task sequence number, a reason, and its position in the global
-- stream. Events written before this migration are numbered in the order they were written.
ALTER TABLE task_events
    ADD COLUMN seq integer,
    ADD COLUMN reason text,
    -- The global stream is read in (xid, id) order, up to the oldest transaction still
    -- running (pg_snapshot_xmin): a transaction that commits late has an xid above that
    -- horizon until it ends, so a reader never passes it by.
    ADD COLUMN xid xid8 NOT NULL DEFAULT '3'::xid8;
ALTER TABLE task_events ALTER COLUMN xid DROP DEFAULT;

UPDATE task_events e SET seq = numbered.seq
FROM (SELECT id, row_number() OVER (PARTITION BY task_id ORDER BY id) AS seq FROM task_events)
    AS numbered
WHERE e.id = numbered.id;

UPDATE tasks t SET seq = counted.n
FROM (SELECT task_id, count(*) AS n FROM task_events GROUP BY task_id) AS counted
WHERE t.id = counted.task_id AND t.seq <> counted.n;

ALTER TABLE task_events ALTER COLUMN seq SET NOT NULL;
DROP INDEX task_events_task_idx;
CREATE UNIQUE INDEX task_events_task_seq_idx ON task_events (task_id, seq);
CREATE INDEX task_events_stream_idx ON task_events (xid, id);

-- Counts per status that cost the same with ten tasks as with ten million: a row per status,
-- plus deltas appended by each statement (no row that every writer must lock), folded into
-- the totals now and then by `fold_task_counts`.
CREATE TABLE task_counts (
    status text   PRIMARY KEY CHECK (status = ANY (taskflow_statuses())),
    n      bigint NOT NULL
);
CREATE TABLE task_count_deltas (
    status text   NOT NULL,
    delta  bigint NOT NULL
);
INSERT INTO task_counts (status, n)
SELECT s.status, (SELECT count(*) FROM tasks t WHERE t.status = s.status)
FROM unnest(taskflow_statuses()) AS s(status);

-- BEFORE UPDATE, per row, only for rows whose status or attempt changes or that are terminal.
CREATE FUNCTION taskflow_task_changing() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT taskflow_transition_allowed(OLD.status, NEW.status)
       OR (OLD.status = NEW.status AND OLD.attempts = NEW.attempts) THEN
        RAISE EXCEPTION 'task % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.seq := OLD.seq + 1;
    NEW.event_xid := greatest(pg_current_xact_id(), OLD.event_xid);
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_changing BEFORE UPDATE ON tasks FOR EACH ROW
    WHEN (OLD.status <> NEW.status OR OLD.attempts <> NEW.attempts
          OR taskflow_is_terminal(OLD.status))
    EXECUTE FUNCTION taskflow_task_changing();

-- The NOTIFY of a statement that wrote history: what changed, by ids only, so it stays far
-- below the 8000-byte limit whatever the batch size. Readers fetch the events of `xid`.
CREATE FUNCTION taskflow_notify_events(written bigint, statuses text[]) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('taskflow_events', json_build_object(
        'xid', pg_current_xact_id()::text, 'count', written, 'statuses', statuses)::text)
    WHERE written > 0;
$$;

CREATE FUNCTION taskflow_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO task_events (task_id, seq, status, attempt, at, xid)
    SELECT id, seq, status, attempts, created_at, event_xid FROM new_rows;
    GET DIAGNOSTICS written = ROW_COUNT;
    INSERT INTO task_count_deltas (status, delta)
    SELECT status, count(*) FROM new_rows GROUP BY status;
    PERFORM taskflow_notify_events(written, ARRAY(SELECT DISTINCT status FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION taskflow_tasks_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
    statuses text[];
BEGIN
    WITH changed AS (
        SELECT n.id, n.seq, n.status, n.attempts, n.event_xid, n.updated_at,
               o.status AS old_status, n.reason
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.seq <> o.seq
    ), events AS (
        INSERT INTO task_events (task_id, seq, status, attempt, at, xid, reason)
        SELECT id, seq, status, attempts, updated_at, event_xid,
               CASE WHEN status = 'cancelled' OR (status = 'new' AND old_status <> 'new')
                    THEN reason END
        FROM changed
        RETURNING status
    ), deltas AS (
        INSERT INTO task_count_deltas (status, delta)
        SELECT status, sum(delta) FROM (
            SELECT status, 1 AS delta FROM changed
            UNION ALL
            SELECT old_status, -1 FROM changed
        ) AS moves
        GROUP BY status HAVING sum(delta) <> 0
    )
    SELECT count(*), array_agg(DISTINCT status) INTO written, statuses FROM events;
    PERFORM taskflow_notify_events(written, statuses);
    RETURN NULL;
END $$;

CREATE FUNCTION taskflow_tasks_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_count_deltas (status, delta)
    SELECT status, -count(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskflow_tasks_inserted();
CREATE TRIGGER tasks_updated AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskflow_tasks_updated();
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskflow_tasks_deleted();
