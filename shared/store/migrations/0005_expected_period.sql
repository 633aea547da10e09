-- The period an operator expects between a job's runs when its cron expression names the slots: the cheat sheet of
-- 001_646fd6323acf08fa.txt gives `cron_expr` and `interval_seconds` together. The cron schedules; this number is
-- only what the job-state metrics (and so the "overdue" alert) take as the job's period. NULL: the schedule's own.
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS expected_period_sec integer
    CHECK (expected_period_sec IS NULL OR expected_period_sec > 0);
