-- Events (DESIGN section 13): a job's subscriptions and filter, and durable trigger counts.
-- triggers_on: AMQP topic patterns its event queue S.jobs.<job_id>.events is bound to S.events with (`#`, `*`);
-- filter: a CEL expression over the payload (checked when the definition is loaded, never here);
-- on_paused_event: what an event for the paused job does (drop it, or hold it in the event queue until resume).
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS triggers_on text[] NOT NULL DEFAULT '{}';
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS filter text;
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS on_paused_event text NOT NULL DEFAULT 'drop'
    CHECK (on_paused_event IN ('drop', 'hold'));

-- Executed runs per job and trigger source (scheduler, manual, event, retry, startup), counted by the statement that
-- records a run's outcome (no extra round trip). Kept when runs are pruned and when the job is deleted (history).
CREATE TABLE IF NOT EXISTS scheduler.trigger_counts (
    scope text NOT NULL,
    job_id text NOT NULL,
    trigger_source text NOT NULL,
    runs bigint NOT NULL DEFAULT 0,
    last_at timestamptz,
    PRIMARY KEY (scope, job_id, trigger_source)
);
