-- Named queries of the operators' dashboard (taskflow.db.dashboard). Tables: migrations/0004.

-- name: heartbeat
-- One statement per heartbeat of instance $1: record it as seen now (inserting it again if
-- another instance deleted it meanwhile), add the sample of the status changes it committed
-- in the last $7 seconds, and delete instances gone for $12 seconds and samples past $13.
WITH seen AS (
    INSERT INTO instances AS i (id, started_at, processors, busy, queue_depth, queue_capacity)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET
        last_seen_at = now(), processors = EXCLUDED.processors, busy = EXCLUDED.busy,
        queue_depth = EXCLUDED.queue_depth, queue_capacity = EXCLUDED.queue_capacity
    RETURNING i.id
), sample AS (
    INSERT INTO instance_rates (instance_id, seconds, created, completed, failed, cancelled)
    SELECT $1, $7::real, $8, $9, $10, $11 WHERE $7::real > 0
    ON CONFLICT DO NOTHING
    RETURNING instance_id
), gone AS (
    DELETE FROM instances
    WHERE last_seen_at < now() - make_interval(secs => $12::float8) AND id <> $1
    RETURNING id
), expired AS (
    DELETE FROM instance_rates WHERE at < now() - make_interval(secs => $13::float8)
    RETURNING instance_id
)
SELECT (SELECT count(*) FROM gone) AS gone;

-- name: deregister
DELETE FROM instances WHERE id = $1;

-- name: live_instances
-- Instances seen in the last $1 seconds, oldest first.
SELECT id, started_at, last_seen_at, processors, busy, queue_depth, queue_capacity
FROM instances
WHERE last_seen_at >= now() - make_interval(secs => $1::float8)
ORDER BY started_at, id;

-- name: recent_changes
-- Status changes of every instance in the last $1 seconds (a few rows per instance).
SELECT coalesce(sum(created), 0)::bigint AS created,
       coalesce(sum(completed), 0)::bigint AS completed,
       coalesce(sum(failed), 0)::bigint AS failed,
       coalesce(sum(cancelled), 0)::bigint AS cancelled
FROM instance_rates
WHERE at > now() - make_interval(secs => $1::float8);

-- name: change_series
-- The same in buckets of $1 seconds covering the last $2 seconds, oldest first, empty
-- buckets included (the last one is the bucket in progress).
WITH step AS (
    SELECT make_interval(secs => $1::float8) AS width,
           floor((extract(epoch FROM now())::float8 - $2::float8) / $1::float8) * $1::float8
               AS first
), buckets AS (
    SELECT generate_series(to_timestamp(first), now(), width) AS bucket, width FROM step
)
SELECT b.bucket,
       coalesce(sum(r.created), 0)::bigint AS created,
       coalesce(sum(r.completed), 0)::bigint AS completed,
       coalesce(sum(r.failed), 0)::bigint AS failed,
       coalesce(sum(r.cancelled), 0)::bigint AS cancelled
FROM buckets b
LEFT JOIN instance_rates r ON r.at >= b.bucket AND r.at < b.bucket + b.width
GROUP BY b.bucket
ORDER BY b.bucket;

-- name: search_by_title
-- `GET /tasks?q=`: titles starting with $1 (already lower case), newest first, keyset.
-- They are exactly the range [$1, $2) of tasks_title_prefix_idx (byte order; $2 is $1 with
-- its last character incremented, or null when there is none: then starts_with decides).
-- Planned for its parameters each time (see DashboardStore), so these conditions fold away
-- or give the planner the prefix's real selectivity.
SELECT * FROM tasks
WHERE lower(title) ~>=~ $1 AND ($2::text IS NULL OR lower(title) ~<~ $2)
  AND ($2::text IS NOT NULL OR starts_with(lower(title), $1))
  AND (cardinality($6::text[]) = 0 OR status = ANY($6::text[]))
  AND (created_at, id) < ($3::timestamptz, $4::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $5;
