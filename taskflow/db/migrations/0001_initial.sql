-- Migration 1: the schema of taskflow before versioned migrations (kept as it was written,
-- so that a database created by that version is recognised as being at version 1).

CREATE TABLE IF NOT EXISTS tasks (
    id               uuid        PRIMARY KEY,
    title            text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description      text        CHECK (char_length(description) <= 10000),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    status           text        NOT NULL DEFAULT 'new'
                                 CHECK (status IN ('new', 'in_progress', 'completed', 'failed')),
    source           text        NOT NULL CHECK (source IN ('http', 'amqp')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    result           jsonb       CHECK (result IS NULL OR jsonb_typeof(result) = 'object'),
    error            text,
    -- Idempotency: one namespace for the HTTP header and the AMQP message_id;
    -- the fingerprint tells a repeat (same body) from a reuse (409).
    idempotency_key  text        UNIQUE CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    fingerprint      bytea,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- The lease of the attempt in progress: who holds it and until when.
    -- `attempts` is the fencing token: a write must name the attempt it belongs to.
    lease_owner      text,
    lease_expires_at timestamptz,

    CONSTRAINT tasks_new_shape CHECK (
        status <> 'new' OR (attempts = 0 AND lease_owner IS NULL AND started_at IS NULL
                            AND finished_at IS NULL AND result IS NULL AND error IS NULL)),
    CONSTRAINT tasks_in_progress_shape CHECK (
        status <> 'in_progress' OR (attempts >= 1 AND lease_owner IS NOT NULL
                                    AND lease_expires_at IS NOT NULL AND started_at IS NOT NULL
                                    AND finished_at IS NULL)),
    CONSTRAINT tasks_completed_shape CHECK (
        status <> 'completed' OR (result IS NOT NULL AND error IS NULL AND finished_at IS NOT NULL
                                  AND lease_owner IS NULL)),
    CONSTRAINT tasks_failed_shape CHECK (
        status <> 'failed' OR (error IS NOT NULL AND result IS NULL AND finished_at IS NOT NULL
                               AND lease_owner IS NULL))
);

-- GET /tasks, newest first, keyset pagination with or without a status filter.
CREATE INDEX IF NOT EXISTS tasks_newest_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_status_newest_idx ON tasks (status, created_at DESC, id DESC);
-- The claim query: oldest new tasks first, and leases that ran out.
CREATE INDEX IF NOT EXISTS tasks_new_idx ON tasks (created_at) WHERE status = 'new';
CREATE INDEX IF NOT EXISTS tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'in_progress';

-- The status history: one row per change, with its time and attempt.
CREATE TABLE IF NOT EXISTS task_events (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id  uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    status   text        NOT NULL CHECK (status IN ('new', 'in_progress', 'completed', 'failed')),
    attempt  integer     NOT NULL CHECK (attempt >= 0),
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS task_events_task_idx ON task_events (task_id, id);

-- A task never leaves a terminal status, whatever writes it.
CREATE OR REPLACE FUNCTION taskflow_guard_terminal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'task % is % and cannot change', OLD.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS tasks_guard_terminal ON tasks;
CREATE TRIGGER tasks_guard_terminal BEFORE UPDATE ON tasks
    FOR EACH ROW WHEN (OLD.status IN ('completed', 'failed')) EXECUTE FUNCTION taskflow_guard_terminal();
