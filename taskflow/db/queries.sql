-- Named queries of taskflow, loaded once by taskflow.db.queries.
-- Each starts with `-- name: <name>`; TaskStore has one method per query.

-- name: apply_schema_lock
-- Serialises schema application between instances starting at once.
SELECT pg_advisory_xact_lock(7204563201);

-- name: schema_versioned
SELECT to_regclass('taskflow_schema') IS NOT NULL;

-- name: applied_schema_digest
SELECT digest FROM taskflow_schema LIMIT 1;

-- name: lock_for_schema
-- Before changing the schema next to running instances: take the strongest lock at once.
-- The DDL would otherwise upgrade its lock on `tasks` while their statements wait on it,
-- a deadlock in which PostgreSQL aborts one side.
DO $$
BEGIN
    IF to_regclass('tasks') IS NOT NULL AND to_regclass('task_events') IS NOT NULL THEN
        LOCK TABLE tasks, task_events IN ACCESS EXCLUSIVE MODE;
    END IF;
END $$;

-- name: record_schema_digest
WITH cleared AS (DELETE FROM taskflow_schema)
INSERT INTO taskflow_schema (digest) VALUES ($1);

-- name: schema_present
SELECT to_regclass('tasks') IS NOT NULL AND to_regclass('task_events') IS NOT NULL;

-- name: insert_tasks
-- One statement for a whole intake batch: tasks, their `new` history rows, and a wake-up
-- for the dispatchers of every instance. Rows whose idempotency key exists are skipped.
WITH data AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                         $6::text[], $7::bytea[])
        AS d(id, title, description, payload, source, idempotency_key, fingerprint)
), inserted AS (
    INSERT INTO tasks (id, title, description, payload, source, idempotency_key, fingerprint)
    SELECT id, title, description, payload, source, idempotency_key, fingerprint FROM data
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING *
), events AS (
    INSERT INTO task_events (task_id, status, attempt, at)
    SELECT id, 'new', 0, created_at FROM inserted
), wake AS (
    SELECT pg_notify('taskflow_new', '') WHERE EXISTS (SELECT 1 FROM inserted)
)
SELECT inserted.* FROM inserted LEFT JOIN wake ON true;

-- name: tasks_by_keys
SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[]);

-- name: get_task
SELECT * FROM tasks WHERE id = $1;

-- name: list_tasks
-- Keyset page, newest first: rows strictly after the cursor (created_at, id).
SELECT * FROM tasks
WHERE (created_at, id) < ($1::timestamptz, $2::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $3;

-- name: list_tasks_by_status
SELECT * FROM tasks
WHERE status = ANY($4::text[]) AND (created_at, id) < ($1::timestamptz, $2::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $3;

-- name: task_events
SELECT status, attempt, at FROM task_events WHERE task_id = $1 ORDER BY id;

-- name: claim_tasks
-- Claims up to $3 tasks for owner $1 with a lease of $2 seconds: new tasks oldest first,
-- then tasks whose lease ran out (their holder died or stalled). Each claim is a new attempt.
-- $4 are the tasks this instance is still running: their lease may have run out (a paused
-- process, an outage longer than the lease) but the attempt is alive and will renew it or
-- be fenced, so this instance never starts a second attempt of a task next to its own.
-- The UPDATE finds the picked rows by primary key (`= ANY(ARRAY(...))`): joined to the
-- CTE instead, the planner read the whole table into a hash (O(table) per claim).
WITH fresh AS (
    SELECT id FROM tasks WHERE status = 'new'
    ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id FROM tasks
    WHERE status = 'in_progress' AND lease_expires_at < now() AND id <> ALL($4::uuid[])
    ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT id FROM expired UNION ALL SELECT id FROM fresh) AS both_kinds LIMIT $3
), claimed AS (
    UPDATE tasks t
    SET status = 'in_progress', attempts = t.attempts + 1, started_at = clock_timestamp(),
        updated_at = clock_timestamp(), lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => $2)
    WHERE t.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING t.id, t.attempts, t.source, t.started_at, (t.attempts > 1) AS recovered
), events AS (
    INSERT INTO task_events (task_id, status, attempt, at)
    SELECT id, 'in_progress', attempts, started_at FROM claimed
)
SELECT id, attempts, source, recovered FROM claimed;

-- name: claim_new_by_ids
-- Claims tasks this instance has just created, if nobody else has claimed them first.
WITH claimed AS (
    UPDATE tasks t
    SET status = 'in_progress', attempts = t.attempts + 1, started_at = clock_timestamp(),
        updated_at = clock_timestamp(), lease_owner = $2,
        lease_expires_at = now() + make_interval(secs => $3)
    WHERE t.id = ANY($1::uuid[]) AND t.status = 'new'
    RETURNING t.id, t.attempts, t.source, t.started_at
), events AS (
    INSERT INTO task_events (task_id, status, attempt, at)
    SELECT id, 'in_progress', attempts, started_at FROM claimed
)
SELECT id, attempts, source, false AS recovered FROM claimed;

-- name: finish_tasks
-- Writes a batch of outcomes. Fenced: a row changes only while owner $6 still holds the
-- attempt named in the batch; the (id, attempt) pairs written are returned (a batch may
-- hold a stale and a current attempt of one task). Also returned: the pairs whose attempt
-- is already terminal. Only the holder of an attempt can finish it, so that is this
-- writer's own earlier try, committed although its answer was lost (a retry after a cut
-- connection): it counts as written and is not written twice. That look-up goes row by
-- row through the primary key (LATERAL ... LIMIT 1): as a join, the planner read every
-- finished task through the status index, O(finished tasks) per batch.
WITH data AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::text[])
        AS d(id, attempt, status, result, error)
), finished AS (
    UPDATE tasks t
    SET status = data.status, result = data.result, error = data.error,
        finished_at = clock_timestamp(), updated_at = clock_timestamp(),
        lease_owner = NULL, lease_expires_at = NULL
    FROM data
    WHERE t.id = data.id AND t.attempts = data.attempt AND t.status = 'in_progress'
      AND t.lease_owner = $6
    RETURNING t.id, t.status, t.attempts, t.finished_at
), events AS (
    INSERT INTO task_events (task_id, status, attempt, at)
    SELECT id, status, attempts, finished_at FROM finished
)
SELECT id, attempts FROM finished
UNION
SELECT data.id, data.attempt FROM data CROSS JOIN LATERAL (
    SELECT 1 FROM tasks t
    WHERE t.id = data.id AND t.attempts = data.attempt AND t.status IN ('completed', 'failed')
    LIMIT 1
) AS already_finished;

-- name: renew_leases
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'in_progress'
RETURNING id;

-- name: release_leases
-- Hands attempts back on shutdown: the lease ends now, so any instance claims them at once.
UPDATE tasks SET lease_expires_at = now() - interval '1 microsecond'
WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'in_progress'
RETURNING id;

-- name: status_counts
-- One index-only count per status (tasks_status_newest_idx), never a scan of the table:
-- a GROUP BY over all rows would be planned as a (parallel) sequential scan.
SELECT s.status, (SELECT count(*) FROM tasks t WHERE t.status = s.status) AS n
FROM unnest(ARRAY['new', 'in_progress', 'completed', 'failed']) AS s(status);

-- name: oldest_new
SELECT min(created_at) FROM tasks WHERE status = 'new';

-- name: prune_lock
-- Retention: one batch at a time across every instance. A transaction-level lock, so that
-- it works through a transaction-mode pooler and a crash cannot leave it held.
SELECT pg_try_advisory_xact_lock(7204563210);

-- name: prune_finished
-- Retention: delete up to $2 terminal tasks whose finished_at is more than $1 seconds old,
-- oldest first; their history goes with them (ON DELETE CASCADE), their idempotency key
-- is a column of the row. The predicate is the one of the partial index tasks_prune_idx.
WITH doomed AS (
    SELECT id FROM tasks
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND finished_at < now() - make_interval(secs => $1::integer)
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone;
