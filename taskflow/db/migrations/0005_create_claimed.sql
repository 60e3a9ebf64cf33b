-- Migration 5: a task may be created already claimed. When the instance that creates a
-- task has an idle processor, the INSERT writes it `in_progress` (attempt 1, with the
-- creator's lease) instead of `new` followed by a claim that rewrites the row. Its history
-- is still `new` then `in_progress`, seq 1 and 2, each at its own time: the triggers write
-- both events, so they stay the one owner of the lifecycle.

-- BEFORE INSERT, per row, only for rows not inserted `new`: the only other status a task
-- may be born with is `in_progress`, as attempt 1; its change is numbered (seq 2) and timed
-- after its creation (`created_at`, the time of its `new` event).
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

-- The history of an inserted row: its `new` event (seq 1, at `created_at`) and, for a row
-- created claimed, its `in_progress` event (seq 2, at `started_at`), in that order. The
-- NOTIFY names the statuses the statement left its tasks in: a batch created claimed does
-- not wake the dispatchers of other instances, as there is nothing `new` to claim.
CREATE OR REPLACE FUNCTION taskflow_tasks_inserted() RETURNS trigger
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
