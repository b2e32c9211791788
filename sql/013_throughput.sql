-- Cheaper task state changes: every task's row is updated twice (queued by
-- the scheduler, done or failed by a worker), and each update of a row
-- whose indexed columns change writes an entry into every index of the
-- table. tasks_pending_idx had status in its predicate, so no status change
-- could be a heap-only (HOT) update; intake's look-up of a job's pending
-- tasks (once per job) reads them through tasks_chunk_idx instead. With
-- room left free on each page (fillfactor), both updates stay on the row's
-- page and write no index entry.
DROP INDEX shoal.tasks_pending_idx;
ALTER TABLE shoal.tasks SET (fillfactor = 50);
