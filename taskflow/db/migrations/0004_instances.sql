-- Migration 4: the dashboard's data: the live instances, their rate samples, and the
-- title-prefix index of `GET /tasks?q=`.

-- Every running instance upserts itself at start-up and heartbeats here every few seconds
-- (busy processors, intake queue depth). Readers list those seen in the last few
-- heartbeats; rows of instances gone for long are deleted by the others' heartbeats.
CREATE TABLE instances (
    id             text        PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    processors     integer     NOT NULL CHECK (processors >= 0),
    busy           integer     NOT NULL DEFAULT 0 CHECK (busy >= 0),
    queue_depth    integer     NOT NULL DEFAULT 0 CHECK (queue_depth >= 0),
    queue_capacity integer     NOT NULL DEFAULT 0 CHECK (queue_capacity >= 0)
);

-- One row per heartbeat of each instance: the status changes it committed since its
-- previous heartbeat. Rates (`GET /stats`) and the 15-minute chart sum these few rows,
-- so their cost depends on the number of instances, never on the number of tasks.
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

-- `GET /tasks?q=` by case-insensitive title prefix: a range scan on this index. Writes to
-- `tasks` wait while it is built (0.8 s per million tasks); on a large table an operator
-- may build it first with CREATE INDEX CONCURRENTLY, and this then leaves it as it is.
CREATE INDEX IF NOT EXISTS tasks_title_prefix_idx ON tasks (lower(title) text_pattern_ops);
-- Statistics of the new expression now, not at the next auto-analyze: without them the
-- planner guesses how many titles a prefix matches, and a common prefix gets a slow plan.
ANALYZE tasks;
