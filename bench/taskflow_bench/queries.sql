-- Named queries of `taskflow-bench`, loaded once by taskflow_bench.database.
-- `{database}` is a quoted identifier filled in by the bench (DDL takes no parameters).

-- name: create_database
CREATE DATABASE {database};

-- name: drop_database
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: analyze
ANALYZE tasks, task_events;

-- name: progress
-- How many tasks exist and how many are terminal.
SELECT count(*) AS total,
       count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS terminal
FROM tasks;

-- name: processing_window
-- The first start and the last finish of the terminal tasks, by PostgreSQL's clock.
SELECT count(*) AS tasks, min(started_at) AS first_start, max(finished_at) AS last_finish
FROM tasks WHERE status IN ('completed', 'failed');

-- name: creation_window
-- When the tasks from source $1 were created, between the $2 and $3 quantiles
-- (0.1 and 0.9: the steady part of a run, without its start-up and its tail).
SELECT count(*) AS tasks,
       percentile_disc($2::float8) WITHIN GROUP (ORDER BY created_at) AS first,
       percentile_disc($3::float8) WITHIN GROUP (ORDER BY created_at) AS last
FROM tasks WHERE source = $1;

-- name: end_to_end_window
-- The terminal tasks from source $1: the first creation and the last finish.
SELECT count(*) AS tasks, min(created_at) AS first, max(finished_at) AS last
FROM tasks WHERE source = $1 AND status IN ('completed', 'failed');

-- name: incomplete_histories
-- Terminal tasks whose history is not exactly new → in_progress → completed|failed.
SELECT count(*) FROM (
    SELECT t.id
    FROM tasks t LEFT JOIN task_events e ON e.task_id = t.id
    WHERE t.status IN ('completed', 'failed')
    GROUP BY t.id, t.status
    HAVING array_agg(e.status ORDER BY e.seq) <> ARRAY['new', 'in_progress', t.status]
) AS bad;

-- name: source_count
SELECT count(*) FROM tasks WHERE source = $1;

-- name: running_ids
-- The tasks in progress, and how many there are.
SELECT id FROM tasks WHERE status = 'in_progress';

-- name: cancelled_at
-- When each of the tasks $1 became `cancelled` (NULL while it is not), by PostgreSQL's clock.
SELECT id, CASE WHEN status = 'cancelled' THEN finished_at END AS cancelled_at
FROM tasks WHERE id = ANY($1::uuid[]);

-- name: vacuum_analyze
-- After a bulk load: what autovacuum would have done by the time a table holds that many
-- tasks (visibility map and hint bits set, statistics gathered), so that the first reads
-- of the measurement do not pay for it.
VACUUM (ANALYZE) tasks, task_events;

-- name: clock
SELECT now();

-- name: backend_pid
SELECT pg_backend_pid();

-- name: unfinished
-- Tasks not yet terminal, through the status index: cheap whatever the number of stored
-- terminal tasks (unlike `progress`, a scan of the whole table).
SELECT count(*) FROM tasks WHERE status IN ('new', 'in_progress');

-- name: finished_window
-- The first start and the last finish of the tasks finished since $1 (the predicate is the
-- one of tasks_prune_idx, so that stored tasks finished long before are never read).
SELECT count(*) AS tasks, min(started_at) AS first_start, max(finished_at) AS last_finish
FROM tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= $1;

-- name: finished_before
-- How many terminal tasks finished before $1 are left (retention's candidates).
SELECT count(*) FROM tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1;

-- name: sample_ids
-- $1 task ids taken at random from the whole table.
SELECT id FROM tasks ORDER BY random() LIMIT $1;

-- name: allow_finished_inserts
-- The bench stores outcomes directly (COPY of terminal rows): a task is otherwise born
-- `new` or claimed, and the trigger tasks_creating refuses anything else.
ALTER TABLE tasks DISABLE TRIGGER tasks_creating;

-- name: forbid_finished_inserts
ALTER TABLE tasks ENABLE TRIGGER tasks_creating;
