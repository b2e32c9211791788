-- A worker taking a task counts the calls earlier deliveries made
-- (max_attempts holds across redeliveries): look them up by task.
CREATE INDEX attempts_task_idx ON shoal.attempts (task_id);
