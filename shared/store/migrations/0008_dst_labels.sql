-- A cron job's own daylight-saving rule (NULL: Debian cron's rule for its kind of job, README "Schedules"):
-- dst_gap: a wall time inside a spring-forward gap fires at the gap's end (shift_forward) or not at all (skip);
-- dst_overlap: a wall time that happens twice fires on its first pass, its second, or both.
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS dst_gap text
    CHECK (dst_gap IS NULL OR dst_gap IN ('shift_forward', 'skip'));
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS dst_overlap text
    CHECK (dst_overlap IS NULL OR dst_overlap IN ('first', 'second', 'both'));
-- Labels (`labels = { team = "billing" }`): what `--selector team=billing` picks jobs by. A JSON object of strings.
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS labels jsonb NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(labels) = 'object');
CREATE INDEX IF NOT EXISTS jobs_labels ON scheduler.jobs USING gin (labels);

-- More overlap policies: cancel_other (a new slot cancels the run in its way, then runs) and buffer_all (slots
-- wait for the lock one after another, at most buffer_max of them; beyond that they are skipped and recorded).
ALTER TABLE scheduler.jobs DROP CONSTRAINT IF EXISTS jobs_overlap_check;
ALTER TABLE scheduler.jobs ADD CONSTRAINT jobs_overlap_check
    CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_other', 'buffer_all'));
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS buffer_max integer NOT NULL DEFAULT 10
    CHECK (buffer_max >= 1);

-- A run stopped by cancel_other ends as `cancelled`. The status check is extended, not rewritten: other
-- migrations may have added statuses of their own to it.
DO $$
DECLARE
    current text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO current FROM pg_constraint
        WHERE conrelid = 'scheduler.job_runs'::regclass AND conname = 'job_runs_status_check';
    IF current IS NOT NULL AND position('''cancelled''' IN current) = 0 THEN
        ALTER TABLE scheduler.job_runs DROP CONSTRAINT job_runs_status_check;
        EXECUTE 'ALTER TABLE scheduler.job_runs ADD CONSTRAINT job_runs_status_check '
            || replace(current, 'ARRAY[', 'ARRAY[''cancelled''::text, ');
    END IF;
END $$;

-- Cancel requests (overlap=cancel_other): the slot that finds the lock taken asks the run holding it to stop.
-- The row is what the running worker checks when it starts watching (so a request made before it listened is
-- not missed) and who asked; a NOTIFY on channel `scheduler_cancel` (payload: the run id) tells it at once.
CREATE TABLE IF NOT EXISTS scheduler.run_cancels (
    run_id        uuid        PRIMARY KEY,
    scope         text        NOT NULL,
    job_id        text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  uuid,
    reason        text        NOT NULL
);
CREATE INDEX IF NOT EXISTS run_cancels_scope_at ON scheduler.run_cancels (scope, requested_at);
