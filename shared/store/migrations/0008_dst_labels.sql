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
