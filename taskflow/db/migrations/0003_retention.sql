-- Migration 3: retention. The pruner (taskflow/retention.py, query prune_finished) looks
-- for terminal tasks finished before a cutoff, oldest first: a partial index on
-- finished_at over terminal tasks only, so that finding a batch reads a few index pages
-- whatever the number of new and running tasks. Its predicate is written exactly as in
-- prune_finished, so that the planner can use it.
CREATE INDEX tasks_prune_idx ON tasks (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
