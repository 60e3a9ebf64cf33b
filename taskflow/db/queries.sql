-- Named queries of taskflow, loaded once by taskflow.db.queries.
-- Each starts with `-- name: <name>`; TaskStore has one method per query.

-- name: migration_lock
-- Serialises migrations between instances starting at once.
SELECT pg_advisory_xact_lock(7204563201);

-- name: migrations_table
CREATE TABLE IF NOT EXISTS taskflow_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: schema_tables
-- Which of the migrations table and the tasks table exist.
SELECT to_regclass('taskflow_migrations') IS NOT NULL AS recorded,
       to_regclass('tasks') IS NOT NULL AS created;

-- name: schema_version
SELECT coalesce(max(version), 0) FROM taskflow_migrations;

-- name: record_migration
INSERT INTO taskflow_migrations (version, name) VALUES ($1, $2) ON CONFLICT DO NOTHING;

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

-- name: schema_present
SELECT to_regclass('tasks') IS NOT NULL AND to_regclass('task_events') IS NOT NULL;

-- name: insert_tasks
-- One statement for a whole intake batch (its history rows and the NOTIFY that wakes the
-- dispatchers of every instance are written by the lifecycle triggers). Rows whose
-- idempotency key exists are skipped. Rows marked in $8 are created already claimed by
-- owner $9 with a lease of $10 seconds (attempt 1; the triggers write their `new` and
-- `in_progress` events): the creating instance has an idle processor for each.
-- The conflict target names the keys that exist: the unique key on `idempotency_key` serves
-- it as it is, and so would a unique index of only the tasks that have a key (two index
-- entries fewer per key-less task, and 2 to 3 % less of PostgreSQL's CPU per task in
-- `taskflow-bench store`, within the noise). That index can come in a later migration,
-- once no instance still runs the conflict target without the WHERE, which cannot use it
-- (README, "PostgreSQL's cost per task").
-- The rows go in by idempotency key (then in the batch's order): an insert that meets a key
-- another transaction has inserted but not committed waits for it, so two batches taking
-- the same keys in different orders (two instances, a client retrying a burst) would
-- deadlock, and PostgreSQL would fail one of them whole. In one order, one of them waits.
INSERT INTO tasks (id, title, description, payload, source, idempotency_key, fingerprint,
                   status, attempts, lease_owner, lease_expires_at)
SELECT d.id, d.title, d.description, d.payload, d.source, d.idempotency_key, d.fingerprint,
       CASE WHEN d.claimed THEN 'in_progress' ELSE 'new' END,
       CASE WHEN d.claimed THEN 1 ELSE 0 END,
       CASE WHEN d.claimed THEN $9::text END,
       CASE WHEN d.claimed THEN now() + make_interval(secs => $10::float8) END
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[],
            $7::bytea[], $8::bool[]) WITH ORDINALITY
    AS d(id, title, description, payload, source, idempotency_key, fingerprint, claimed, n)
ORDER BY d.idempotency_key, d.n
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

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
-- The same page for some statuses ($4, without repeats): for each status its newest rows
-- after the cursor, from tasks_status_newest_idx read in its order, then the newest of
-- those. At most a page per status is read, whatever the statistics say. Written
-- `status = ANY($4)`, the planner could take tasks_newest_idx and filter, which reads every
-- newer task of another status (20,000 rows, 5 to 7 ms a page, for `completed` or `failed`
-- with 20,000 tasks waiting), or, with statistics taken while the status was rare, read all
-- of the status's tasks and sort them (38,000 rows, 46 ms). The status as a range and the
-- order led by it make the status index the only one that gives a status's rows in order,
-- as in claim_tasks.
SELECT t.* FROM unnest($4::text[]) AS s(status) CROSS JOIN LATERAL (
    SELECT * FROM tasks
    WHERE status >= s.status AND status <= s.status
      AND (created_at, id) < ($1::timestamptz, $2::uuid)
    ORDER BY status, created_at DESC, id DESC
    LIMIT $3
) AS t
ORDER BY t.created_at DESC, t.id DESC
LIMIT $3;

-- name: task_events
SELECT seq, status, attempt, at, reason FROM task_events WHERE task_id = $1 ORDER BY seq;

-- name: claim_tasks
-- Claims up to $3 tasks for owner $1 with a lease of $2 seconds: new tasks oldest first,
-- then tasks whose lease ran out (their holder died or stalled). Each claim is a new attempt.
-- $4 are the tasks this instance is still running: their lease may have run out (a paused
-- process, an outage longer than the lease) but the attempt is alive and will renew it or
-- be fenced, so this instance never starts a second attempt of a task next to its own.
-- An expired attempt with a cancel requested is not attempted again: it ends `cancelled`
-- (`lapsed`), and is returned with `cancelled` true instead of as a claim.
-- The UPDATE finds the picked rows by primary key (`= ANY(ARRAY(...))`): joined to the
-- CTE instead, the planner read the whole table into a hash (O(table) per claim).
-- The oldest new tasks come from tasks_status_newest_idx, scanned backward within 'new'.
-- Written `status = 'new' ORDER BY created_at`, the planner may take tasks_newest_idx
-- instead (the same order, when its statistics say every task is new, as they do at the
-- start of a drain) and then reads, and filters out, every task claimed since: 150,000
-- rows (100 ms) per claim two thirds into a drain of 200,000. The status as a range and
-- the order led by it are the same rows in the same order, and only the status index
-- provides that order.
WITH fresh AS (
    SELECT id FROM tasks WHERE status >= 'new' AND status <= 'new'
    ORDER BY status DESC, created_at LIMIT $3 FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, cancel_requested_at IS NOT NULL AS cancel FROM tasks
    WHERE status = 'in_progress' AND lease_expires_at < now() AND id <> ALL($4::uuid[])
    ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, recovered FROM (
        SELECT id, true AS recovered FROM expired WHERE NOT cancel
        UNION ALL SELECT id, false FROM fresh
    ) AS both_kinds LIMIT $3
), lapsed AS (
    UPDATE tasks t
    SET status = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
        lease_owner = NULL, lease_expires_at = NULL, cancel_requested_at = NULL
    WHERE t.id = ANY (ARRAY(SELECT id FROM expired WHERE cancel))
    RETURNING t.id, t.attempts, t.source
), claimed AS (
    UPDATE tasks t
    SET status = 'in_progress', attempts = t.attempts + 1, started_at = clock_timestamp(),
        updated_at = clock_timestamp(), lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => $2)
    WHERE t.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING t.id, t.attempts, t.source,
              t.id = ANY (ARRAY(SELECT id FROM picked WHERE recovered)) AS recovered
)
SELECT id, attempts, source, recovered, false AS cancelled FROM claimed
UNION ALL
SELECT id, attempts, source, false, true FROM lapsed;

-- name: claim_new_by_ids
-- Claims tasks this instance has just created, if nobody else has claimed them first.
-- "Still new" is written as "not leased and not terminal" (the same rows, by the shape
-- constraints): `status = 'new'` would let the planner scan tasks_status_newest_idx, every
-- waiting task, when its statistics say few are new (see "id-keyed statements" in
-- the README); this way the primary key is the only index it can use.
UPDATE tasks t
SET status = 'in_progress', attempts = t.attempts + 1, started_at = clock_timestamp(),
    updated_at = clock_timestamp(), lease_owner = $2,
    lease_expires_at = now() + make_interval(secs => $3)
WHERE t.id = ANY($1::uuid[]) AND t.lease_owner IS NULL AND NOT taskflow_is_terminal(t.status)
RETURNING t.id, t.attempts, t.source, false AS recovered;

-- name: finish_tasks
-- Writes a batch of outcomes. Fenced: a row changes only while owner $6 still holds the
-- attempt named in the batch; the (id, attempt) pairs written are returned (a batch may
-- hold a stale and a current attempt of one task). Also returned: the pairs whose attempt
-- is already terminal. Only the holder of an attempt can finish it, so that is this
-- writer's own earlier try, committed although its answer was lost (a retry after a cut
-- connection): it counts as written and is not written twice. That look-up goes row by
-- row through the primary key (LATERAL ... LIMIT 1): as a join, the planner read every
-- finished task through the status index, O(finished tasks) per batch. The update names
-- the status, so that the planner may read the running tasks through tasks_lease_idx and
-- hash them (O(running tasks) per batch): cheaper in a drain than a primary-key probe per
-- outcome, which the planner costs above a scan of a mid-size table (measured: a drain 40 %
-- slower without it). With statistics that say few tasks run while many do, that read is
-- of every running task (README, "Id-keyed statements").
WITH data AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::text[])
        AS d(id, attempt, status, result, error)
), finished AS (
    UPDATE tasks t
    SET status = data.status, result = data.result, error = data.error,
        finished_at = clock_timestamp(), updated_at = clock_timestamp(),
        lease_owner = NULL, lease_expires_at = NULL, cancel_requested_at = NULL
    FROM data
    WHERE t.id = data.id AND t.attempts = data.attempt AND t.status = 'in_progress'
      AND t.lease_owner = $6
    RETURNING t.id, t.attempts
)
SELECT id, attempts FROM finished
UNION
SELECT data.id, data.attempt FROM data CROSS JOIN LATERAL (
    SELECT 1 FROM tasks t
    -- "Not new nor in progress" rather than the list of terminal statuses: that list is
    -- the predicate of tasks_prune_idx, and the planner would then scan the partial index
    -- of every finished task instead of probing the primary key.
    WHERE t.id = data.id AND t.attempts = data.attempt AND t.status NOT IN ('new', 'in_progress')
    LIMIT 1
) AS already_finished;

-- name: renew_leases
-- Also returns each attempt's `cancel_requested_at`: a cancel whose notification was lost
-- is seen here, within one renewal interval. Fenced by the lease alone (only an
-- `in_progress` task holds one, by the shape constraints), so that the primary key is the
-- only index it can use (README, "Id-keyed statements").
-- A row another transaction holds locked (a finish or a cancel in flight, which lock their
-- rows in an order of their own) is skipped, not waited for: waiting for it while holding
-- others could deadlock with that transaction. It is returned as still held, with its
-- `cancel_requested_at` as this statement's snapshot saw it, and renewed next time.
WITH locked AS (
    SELECT id FROM tasks WHERE id = ANY($1::uuid[]) AND lease_owner = $2
    ORDER BY id FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3)
    WHERE id = ANY($1::uuid[]) AND id IN (SELECT id FROM locked) AND lease_owner = $2
    RETURNING id, cancel_requested_at
)
SELECT id, cancel_requested_at FROM renewed
UNION ALL
SELECT id, cancel_requested_at FROM tasks
WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND id NOT IN (SELECT id FROM locked);

-- name: release_leases
-- Hands attempts back on shutdown: the lease ends now, so any instance claims them at once.
-- Fenced by the lease alone, as renew_leases.
UPDATE tasks SET lease_expires_at = now() - interval '1 microsecond'
WHERE id = ANY($1::uuid[]) AND lease_owner = $2
RETURNING id;

-- name: status_counts
-- The per-status totals plus the deltas not yet folded into them: a few small rows,
-- whatever the number of tasks.
SELECT c.status, (c.n + coalesce(d.delta, 0))::bigint AS n
FROM task_counts c
LEFT JOIN (SELECT status, sum(delta) AS delta FROM task_count_deltas GROUP BY status) AS d
    ON d.status = c.status;

-- name: fold_task_counts
-- Folds the deltas into the totals, by one instance at a time (the others skip).
WITH locked AS (
    SELECT pg_try_advisory_xact_lock(7204563202) AS ok
), folded AS (
    DELETE FROM task_count_deltas WHERE (SELECT ok FROM locked) RETURNING status, delta
), summed AS (
    SELECT status, sum(delta) AS delta FROM folded GROUP BY status
)
UPDATE task_counts c SET n = c.n + summed.delta FROM summed WHERE c.status = summed.status;

-- name: oldest_new
-- When the oldest waiting task was created (the backlog-age gauge, every few seconds), from
-- tasks_status_newest_idx scanned backward within 'new', as claim_tasks does and for the
-- same reason: written `min(created_at) WHERE status = 'new'`, with statistics taken while
-- every task was new the planner walked tasks_newest_idx from the oldest end and filtered
-- out every task finished since (40,000 rows, 58 ms, two thirds into a drain of 60,000).
SELECT created_at FROM tasks WHERE status >= 'new' AND status <= 'new'
ORDER BY status DESC, created_at LIMIT 1;

-- name: stale_statistics
-- The lifecycle tables whose planner statistics lag their content: changed (rows inserted,
-- updated or deleted since their last ANALYZE) by at least $1 rows and at least $2 times
-- the rows those statistics counted (reltuples is -1 before the first ANALYZE).
SELECT c.relname::text AS name
FROM pg_class c
JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid IN ('tasks'::regclass, 'task_events'::regclass)
  AND s.n_mod_since_analyze >= greatest($1::bigint, $2::float8 * greatest(c.reltuples, 0))
ORDER BY c.relname;

-- name: analyze_lock
-- The analyzer: one instance at a time (a transaction-level lock, as prune_lock).
SELECT pg_try_advisory_xact_lock(7204563211);

-- name: prune_lock
-- Retention: one batch at a time across every instance. A transaction-level lock, so that
-- it works through a transaction-mode pooler and a crash cannot leave it held.
SELECT pg_try_advisory_xact_lock(7204563210);

-- name: prune_finished
-- Retention: delete up to $2 terminal tasks whose finished_at is more than $1 seconds old,
-- oldest first; their history goes with them (the delete trigger), their idempotency key
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

-- name: cancel_tasks
-- Cancels the tasks $1 (reason $2) in one statement: `new` ones at once (`cancelled`), and
-- for `in_progress` ones the flag is set (the first request's time is kept) and a control
-- notification `<id>:<attempt>:<requested at, epoch s>` goes to the instance running the
-- attempt, on commit. The other tasks are returned `unchanged`, as this statement's snapshot
-- saw them (a row changed meanwhile by another transaction shows its old status: the
-- caller runs the statement again for those). `new` and `in_progress` are written by the
-- lease, as in claim_new_by_ids, so that the primary key is the only index to use.
-- The rows are locked first. With $3 false, without waiting (SKIP LOCKED): a row another
-- transaction holds (a finish or a lease renewal, which lock their rows in an order of their
-- own) is returned `busy`, and the caller runs the statement again for it alone with $3
-- true, which waits for its lock. A cancel that waited for a row while holding others could
-- deadlock with such a transaction; one that holds nothing else cannot.
WITH skipping AS (
    SELECT id FROM tasks WHERE id = ANY($1::uuid[]) AND NOT $3::bool
    ORDER BY id FOR UPDATE SKIP LOCKED
), waiting AS (
    SELECT id FROM tasks WHERE id = ANY($1::uuid[]) AND $3::bool ORDER BY id FOR UPDATE
), locked AS (
    SELECT id FROM skipping UNION ALL SELECT id FROM waiting
), cancelled AS (
    UPDATE tasks t
    SET status = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
        reason = $2
    WHERE t.id = ANY($1::uuid[]) AND t.id IN (SELECT id FROM locked)
      AND t.lease_owner IS NULL AND NOT taskflow_is_terminal(t.status)
    RETURNING t.*
), requested AS (
    UPDATE tasks t
    SET cancel_requested_at = coalesce(t.cancel_requested_at, clock_timestamp()),
        updated_at = clock_timestamp(), reason = $2
    WHERE t.id = ANY($1::uuid[]) AND t.id IN (SELECT id FROM locked)
      AND t.lease_owner IS NOT NULL
    RETURNING t.*
)
SELECT 'cancelled' AS outcome, * FROM cancelled
UNION ALL
-- pg_notify returns void, which is '' as text: the condition only sends the notification.
SELECT 'cancel_requested', * FROM requested
WHERE pg_notify('taskflow_control', concat_ws(':', id, attempts,
                extract(epoch FROM cancel_requested_at)))::text = ''
UNION ALL
SELECT 'unchanged', * FROM tasks
WHERE id = ANY($1::uuid[]) AND id IN (SELECT id FROM locked)
  AND id NOT IN (SELECT id FROM cancelled UNION ALL SELECT id FROM requested)
UNION ALL
SELECT 'busy', * FROM tasks
WHERE id = ANY($1::uuid[]) AND id NOT IN (SELECT id FROM locked);

-- name: retry_tasks
-- Retries the tasks $1 (reason $2) in one statement: `failed`/`cancelled` → `new`, with
-- `attempts` kept (the next claim is attempt `attempts + 1`) and the outcome cleared. The
-- others are returned `unchanged` (as in cancel_tasks, with this statement's snapshot).
-- "Failed or cancelled" is written as "neither new, running nor completed" (`<> ALL`, which
-- no index serves), so that the primary key is the only index to use.
-- The rows to retry are locked first, in id order, whatever the plan: an UPDATE locks its
-- rows in its plan's order (an index scan's is by id, a sequential scan's is the table's),
-- so two overlapping retries with different plans could each hold a row the other waits
-- for. No finish or lease renewal holds a failed or cancelled row, and a cancel does not
-- wait for one while it holds others, so waiting here, in id order, cannot deadlock.
WITH locked AS (
    SELECT id FROM tasks
    WHERE id = ANY($1::uuid[]) AND status NOT IN ('new', 'in_progress', 'completed')
    ORDER BY id FOR UPDATE
), retried AS (
    UPDATE tasks t
    SET status = 'new', result = NULL, error = NULL, finished_at = NULL,
        cancel_requested_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
        reason = $2, updated_at = clock_timestamp()
    WHERE t.id = ANY($1::uuid[]) AND t.id IN (SELECT id FROM locked)
      AND t.status NOT IN ('new', 'in_progress', 'completed')
    RETURNING t.*
)
SELECT 'retried' AS outcome, * FROM retried
UNION ALL
SELECT 'unchanged', * FROM tasks
WHERE id = ANY($1::uuid[]) AND id NOT IN (SELECT id FROM retried);

-- name: stream_events
-- The global event stream (taskflow.events): events after position ($1 xid, $2 id) in
-- (xid, id) order, only below a horizon that no transaction of this database can still
-- write under. That is `pg_snapshot_xmin` of this statement's snapshot, except that the
-- transactions positively known to belong to OTHER databases of the server (their backend
-- says so in pg_stat_activity) are skipped: xids are server-wide, and a long transaction
-- elsewhere on a shared server would otherwise hold every stream back. An xid not known to
-- be foreign (a backend that ended, or whose row is hidden) counts as ours: late, never
-- wrong. The horizon and the snapshot's xmax (every xid ever assigned is below it) come
-- back on every row, and on the one row of nulls when no event is found. Optional
-- filters: task $4, statuses $5.
WITH snapshot AS (
    SELECT pg_current_snapshot() AS s
), foreign_xids AS (
    SELECT backend_xid::text::bigint AS xid32 FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
), horizon AS (
    SELECT coalesce(
               (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snapshot.s) AS x
                WHERE x::text::bigint % 4294967296 NOT IN (SELECT xid32 FROM foreign_xids)),
               pg_snapshot_xmax(snapshot.s)::text::bigint) AS xmin,
           pg_snapshot_xmax(snapshot.s)::text::bigint AS xmax
    FROM snapshot
)
SELECT h.xmin AS horizon, h.xmax AS next_xid, e.id, e.xid, e.task_id, e.seq, e.status,
       e.attempt, e.at, e.reason
FROM horizon h
LEFT JOIN LATERAL (
    SELECT id, xid::text::bigint AS xid, task_id, seq, status, attempt, at, reason
    FROM task_events
    WHERE (xid, id) > ($1::bigint::text::xid8, $2::bigint) AND xid < h.xmin::text::xid8
      AND ($4::uuid IS NULL OR task_id = $4::uuid)
      AND (cardinality($5::text[]) = 0 OR status = ANY($5::text[]))
    ORDER BY xid, id
    LIMIT $3
) e ON true
ORDER BY e.xid, e.id;

-- name: task_stream_start
-- Where a task's stream stands: its status and the seq of its latest event.
SELECT status, seq FROM tasks WHERE id = $1;

-- name: task_events_after
-- A task's events after seq $2, oldest first, with their position in the global stream.
SELECT id, xid::text::bigint AS xid, task_id, seq, status, attempt, at, reason
FROM task_events WHERE task_id = $1 AND seq > $2 ORDER BY seq;

-- name: task_events_since
-- The events of several tasks ($1) after a seq for each ($2), by task and seq: the live
-- feed of the task streams (per task, seq order is commit order; no horizon needed).
SELECT e.id, e.xid::text::bigint AS xid, e.task_id, e.seq, e.status, e.attempt, e.at, e.reason
FROM unnest($1::uuid[], $2::int[]) AS w(task_id, seq)
JOIN task_events e ON e.task_id = w.task_id AND e.seq > w.seq
ORDER BY e.task_id, e.seq;
