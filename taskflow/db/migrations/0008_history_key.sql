-- Migration 8: the history's primary key is what identifies an event, (task_id, seq), instead
-- of its identity `id`. Every read of task_events goes by task (its history, its stream) or by
-- position in the global stream (xid, id): no statement looked a row up by `id` alone, yet
-- its index took an entry per event. Without it the history is 11 % smaller (102,000 tasks:
-- 6.6 MiB of 59 MiB, heap and indexes, about 65 MiB per million tasks). PostgreSQL's CPU per
-- task did not change measurably (`taskflow-bench store`, interleaved: within the noise of
-- a few per cent; an insert at the right end of an index of a growing key is the cheap
-- kind). `id` stays (GENERATED ALWAYS, so unique in practice): it orders the events of one
-- transaction in the global stream.
--
-- Both steps are catalog changes (the unique index on (task_id, seq) becomes the key as it
-- is, renamed), so the migration does not rewrite or rescan the history.

ALTER TABLE task_events DROP CONSTRAINT task_events_pkey;
ALTER TABLE task_events ADD CONSTRAINT task_events_pkey PRIMARY KEY USING INDEX task_events_task_seq_idx;
