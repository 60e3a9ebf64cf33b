-- Migration 7: the history costs less to write. Measured on 20,000 tasks claimed and finished
-- in batches of 1,000 (minimum of 3 runs): 2,045 ms of statements before, 1,527 ms without
-- the foreign key, 1,651 ms with both changes below, PostgreSQL's whole CPU in the drain
-- benchmark having doubled since migration 2.
--
-- 1. task_events no longer references tasks. Its only writer is the lifecycle triggers,
--    which write events of rows they have in hand, so the key checked nothing, yet it cost
--    a `SELECT ... FOR KEY SHARE` on tasks per event. ON DELETE CASCADE deleted the history
--    row by row; the delete trigger now does it once per statement.
-- 2. The update trigger counts per status from the transition tables (new rows minus old
--    rows: a row whose status did not change adds and removes itself) instead of from the
--    joined and materialised set of changed rows, and a statement that changed no status
--    (a lease renewal) writes no delta and sends no NOTIFY.

ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;

CREATE OR REPLACE FUNCTION taskflow_tasks_updated() RETURNS trigger
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

CREATE OR REPLACE FUNCTION taskflow_tasks_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_events WHERE task_id IN (SELECT id FROM old_rows);
    INSERT INTO task_count_deltas (status, delta)
    SELECT status, -count(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;
