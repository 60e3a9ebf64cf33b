-- Migration 6: drop tasks_new_idx. The claim's search for the oldest `new` tasks
-- (claim_tasks) and oldest_new are served by tasks_status_newest_idx (status, created_at
-- DESC, id DESC), scanned backward within status 'new', which the planner chose anyway:
-- pg_stat_user_indexes and the plans showed tasks_new_idx unused. One index fewer to
-- write for every task inserted `new`.
DROP INDEX tasks_new_idx;
