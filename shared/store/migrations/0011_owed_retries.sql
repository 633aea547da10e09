-- A retry owed by a failed (or abandoned) attempt: the retry message as published and when it is due. Recorded
-- before the message is published, so a retry lost on the way (a worker that dies between its record and the
-- publish, a dead-lettering RabbitMQ drops in a crash: at most once on classic queues) is found by the watchdog
-- (shared.watchdog.retries) and published again. Cleared once the next attempt's row is there or the retry is
-- moot (the job was deleted, paused or reseeded since); retry_reposts counts how often it was published again (the
-- sweep gives up, loudly, after a few: a retry that keeps not arriving is not lost on the way).
ALTER TABLE scheduler.job_runs ADD COLUMN IF NOT EXISTS retry_due_at timestamptz;
ALTER TABLE scheduler.job_runs ADD COLUMN IF NOT EXISTS retry_message jsonb;
ALTER TABLE scheduler.job_runs ADD COLUMN IF NOT EXISTS retry_reposts smallint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS job_runs_retry_due ON scheduler.job_runs (scope, retry_due_at)
    WHERE retry_due_at IS NOT NULL;
