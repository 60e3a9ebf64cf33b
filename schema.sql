-- taskflow schema, as a whole: what the migrations in taskflow/db/migrations/ build, in
-- one readable file (tests/integration/test_migrations.py checks that the two agree).
-- Start-up applies the migrations, not this file; it is for reading and for tools.
-- Rules the application relies on are constraints here, so an illegal state cannot be stored.

-- The status set and the legal transitions, written once (and once in models.py).
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

CREATE TABLE tasks (
    id                  uuid        PRIMARY KEY,
    title               text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description         text        CHECK (char_length(description) <= 10000),
    payload             jsonb       NOT NULL DEFAULT '{}'::jsonb
                                    CHECK (jsonb_typeof(payload) = 'object'),
    status              text        NOT NULL DEFAULT 'new',
    source              text        NOT NULL CHECK (source IN ('http', 'amqp')),
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    result              jsonb       CHECK (result IS NULL OR jsonb_typeof(result) = 'object'),
    error               text,
    -- Idempotency: one namespace for the HTTP header and the AMQP message_id;
    -- the fingerprint tells a repeat (same body) from a reuse (409).
    idempotency_key     text        UNIQUE
                                    CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    fingerprint         bytea,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at          timestamptz,
    finished_at         timestamptz,
    -- The lease of the attempt in progress: who holds it and until when.
    -- `attempts` is the fencing token: a write must name the attempt it belongs to.
    lease_owner         text,
    lease_expires_at    timestamptz,
    -- Set while a cancel of the running attempt is pending.
    cancel_requested_at timestamptz,
    -- The reason given with the latest cancel or retry; copied onto their history events.
    reason              text        CHECK (char_length(reason) <= 500),
    -- The `seq` of the task's latest history event (1 for `new`).
    seq                 integer     NOT NULL DEFAULT 1,
    -- The position of the task's latest event in the global stream: the transaction id that
    -- wrote it, never lower than the one of the event before (see task_events.xid).
    event_xid           xid8        NOT NULL DEFAULT pg_current_xact_id(),

    CONSTRAINT tasks_status_check CHECK (status = ANY (taskflow_statuses())),
    CONSTRAINT tasks_new_shape CHECK (
        status <> 'new' OR (lease_owner IS NULL AND finished_at IS NULL AND result IS NULL
                            AND error IS NULL AND cancel_requested_at IS NULL)),
    CONSTRAINT tasks_in_progress_shape CHECK (
        status <> 'in_progress' OR (attempts >= 1 AND lease_owner IS NOT NULL
                                    AND lease_expires_at IS NOT NULL AND started_at IS NOT NULL
                                    AND finished_at IS NULL)),
    CONSTRAINT tasks_completed_shape CHECK (
        status <> 'completed' OR (result IS NOT NULL AND error IS NULL AND finished_at IS NOT NULL
                                  AND lease_owner IS NULL)),
    CONSTRAINT tasks_failed_shape CHECK (
        status <> 'failed' OR (error IS NOT NULL AND result IS NULL AND finished_at IS NOT NULL
                               AND lease_owner IS NULL)),
    CONSTRAINT tasks_cancelled_shape CHECK (
        status <> 'cancelled' OR (result IS NULL AND error IS NULL AND finished_at IS NOT NULL
                                  AND lease_owner IS NULL AND cancel_requested_at IS NULL)),
    CONSTRAINT tasks_cancel_requested_shape CHECK (
        cancel_requested_at IS NULL OR status = 'in_progress')
);

-- GET /tasks, newest first, keyset pagination with or without a status filter. The second
-- also serves the claim query's oldest new tasks first (scanned backward within 'new').
CREATE INDEX tasks_newest_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_status_newest_idx ON tasks (status, created_at DESC, id DESC);
-- The claim query: leases that ran out.
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'in_progress';
-- Retention: terminal tasks by the time they finished (the pruner's prune_finished).
CREATE INDEX tasks_prune_idx ON tasks (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
-- GET /tasks?q=: a case-insensitive title prefix is a range scan here.
CREATE INDEX tasks_title_prefix_idx ON tasks (lower(title) text_pattern_ops);

-- The status history: one row per change, numbered per task (`seq`, gap-free, in commit
-- order), written only by the lifecycle triggers below. An event is (task_id, seq); `id`
-- only orders the events of one transaction in the global stream.
CREATE TABLE task_events (
    id       bigint      GENERATED ALWAYS AS IDENTITY,
    -- No foreign key: only the triggers below write here, from rows they hold, and the
    -- delete trigger removes a task's history with it (a key cost a lookup per event).
    task_id  uuid        NOT NULL,
    status   text        NOT NULL,
    attempt  integer     NOT NULL CHECK (attempt >= 0),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq      integer     NOT NULL,
    reason   text,
    -- The global stream is read in (xid, id) order, up to the oldest transaction still
    -- running (pg_snapshot_xmin): a transaction that commits late has an xid above that
    -- horizon until it ends, so a reader never passes it by.
    xid      xid8        NOT NULL,

    CONSTRAINT task_events_pkey PRIMARY KEY (task_id, seq),
    CONSTRAINT task_events_status_check CHECK (status = ANY (taskflow_statuses()))
);

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
INSERT INTO task_counts (status, n) SELECT unnest(taskflow_statuses()), 0;

-- The lifecycle: every status change, whichever statement makes it, passes through these.
-- BEFORE UPDATE, per row, only for rows whose status or attempt changes or that are terminal:
-- refuses an illegal transition and numbers the change.
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

-- BEFORE INSERT, per row, only for rows not inserted `new`: a task created by an instance
-- with an idle processor is inserted already claimed, and `in_progress` as attempt 1 is the
-- only other status a task may be born with; its change is numbered (seq 2) and timed after
-- its creation.
CREATE FUNCTION taskflow_task_created_claimed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'in_progress' OR NEW.attempts <> 1 THEN
        RAISE EXCEPTION 'task % cannot be created % (attempt %)', NEW.id, NEW.status, NEW.attempts
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.seq := 2;
    NEW.started_at := clock_timestamp();
    NEW.updated_at := NEW.started_at;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_creating BEFORE INSERT ON tasks FOR EACH ROW
    WHEN (NEW.status <> 'new')
    EXECUTE FUNCTION taskflow_task_created_claimed();

-- The NOTIFY of a statement that wrote history: what changed, by ids only, so it stays far
-- below the 8000-byte limit whatever the batch size. Readers fetch the events of `xid`.
CREATE FUNCTION taskflow_notify_events(written bigint, statuses text[]) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('taskflow_events', json_build_object(
        'xid', pg_current_xact_id()::text, 'count', written, 'statuses', statuses)::text)
    WHERE written > 0;
$$;

-- AFTER, per statement, with transition tables: the history rows, the counts, one NOTIFY.
-- An inserted row gets its `new` event (seq 1, at `created_at`) and, when it was created
-- claimed, its `in_progress` event (seq 2, at `started_at`), in that order. The NOTIFY names
-- the statuses the statement left its tasks in (a batch created claimed wakes no dispatcher).
CREATE FUNCTION taskflow_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO task_events (task_id, seq, status, attempt, at, xid)
    SELECT n.id, e.seq, e.status, e.attempt, e.at, n.event_xid
    FROM new_rows n
    CROSS JOIN LATERAL (VALUES
        (1, 'new', CASE WHEN n.seq = 1 THEN n.attempts ELSE 0 END, n.created_at),
        (2, n.status, n.attempts, n.started_at)
    ) AS e (seq, status, attempt, at)
    WHERE e.seq <= n.seq;
    GET DIAGNOSTICS written = ROW_COUNT;
    INSERT INTO task_count_deltas (status, delta)
    SELECT status, count(*) FROM new_rows GROUP BY status;
    PERFORM taskflow_notify_events(written, ARRAY(SELECT DISTINCT status FROM new_rows));
    RETURN NULL;
END $$;

-- An updated row whose change was numbered (seq moved) gets its event; the counts move by
-- the new rows' statuses minus the old rows' (an unchanged row cancels itself out); a
-- statement that changed no status (a lease renewal) writes nothing more.
CREATE FUNCTION taskflow_tasks_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
    statuses text[];
BEGIN
    WITH events AS (
        INSERT INTO task_events (task_id, seq, status, attempt, at, xid, reason)
        SELECT n.id, n.seq, n.status, n.attempts, n.updated_at, n.event_xid,
               CASE WHEN n.status = 'cancelled' OR (n.status = 'new' AND o.status <> 'new')
                    THEN n.reason END
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.seq <> o.seq
        RETURNING status
    )
    SELECT count(*), array_agg(DISTINCT status) INTO written, statuses FROM events;
    IF written > 0 THEN
        INSERT INTO task_count_deltas (status, delta)
        SELECT status, sum(delta) FROM (
            SELECT status, count(*) AS delta FROM new_rows GROUP BY status
            UNION ALL
            SELECT status, -count(*) FROM old_rows GROUP BY status
        ) AS moves
        GROUP BY status HAVING sum(delta) <> 0;
        PERFORM taskflow_notify_events(written, statuses);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION taskflow_tasks_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_events WHERE task_id IN (SELECT id FROM old_rows);
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

-- The dashboard's instances registry: each instance upserts its row at start-up and
-- heartbeats every few seconds; readers list those seen within a few heartbeats.
CREATE TABLE instances (
    id             text        PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    processors     integer     NOT NULL CHECK (processors >= 0),
    busy           integer     NOT NULL DEFAULT 0 CHECK (busy >= 0),
    queue_depth    integer     NOT NULL DEFAULT 0 CHECK (queue_depth >= 0),
    queue_capacity integer     NOT NULL DEFAULT 0 CHECK (queue_capacity >= 0)
);

-- One row per heartbeat of each instance: the status changes it committed since the one
-- before. `GET /stats` rates and the dashboard's chart sum these few rows.
CREATE TABLE instance_rates (
    at          timestamptz NOT NULL DEFAULT now(),
    instance_id text        NOT NULL,
    seconds     real        NOT NULL CHECK (seconds > 0),
    created     integer     NOT NULL DEFAULT 0,
    completed   integer     NOT NULL DEFAULT 0,
    failed      integer     NOT NULL DEFAULT 0,
    cancelled   integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (at, instance_id)
);

-- The migrations applied (this file corresponds to all of them).
CREATE TABLE taskflow_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
