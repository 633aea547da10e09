-- Retries owed by failed (or abandoned) attempts: the retry message as published and when it is due, recorded
-- before the message is published, so that a retry lost on the way (a worker that dies between its record and the
-- publish, a message RabbitMQ drops while dead-lettering it: at most once on classic queues) is found by the
-- watchdog (shared.watchdog.retries) and published again. A row leaves once the next attempt's row is there or the
-- retry is moot (the job was deleted, paused or reseeded since); `reposts` counts how often it was published again
-- (the sweep gives up, loudly, after a few). A small table of its own: scheduler.job_runs is not touched.
CREATE TABLE IF NOT EXISTS scheduler.owed_retries (
    run_id         uuid        NOT NULL,  -- the failed attempt
    scheduled_for  timestamptz NOT NULL,  -- its slot (and job_runs' partition key)
    scope          text        NOT NULL,
    job_id         text        NOT NULL,
    attempt        integer     NOT NULL,  -- the failed attempt's number: the retry is attempt + 1
    epoch          bigint,                -- the failed attempt's chain epoch (NULL: a run outside a chain)
    message        jsonb       NOT NULL,  -- the retry message as published
    due_at         timestamptz NOT NULL,
    reposts        integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, scheduled_for)
);
CREATE INDEX IF NOT EXISTS owed_retries_due ON scheduler.owed_retries (scope, due_at);
