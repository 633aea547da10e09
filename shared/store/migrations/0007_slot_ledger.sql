-- The slot ledger, timed pause and catch-up (README "Slot ledger"):
-- job_runs gains the gap statuses `paused` and `missed` (slots of the schedule that got no run);
-- the CHECK below is the whole list of statuses: a later migration that adds one must repeat all of these.
ALTER TABLE scheduler.job_runs DROP CONSTRAINT IF EXISTS job_runs_status_check;
ALTER TABLE scheduler.job_runs ADD CONSTRAINT job_runs_status_check CHECK (status IN (
    'claimed', 'buffered', 'running', 'succeeded', 'failed', 'timed_out', 'skipped_locked', 'skipped_misfire',
    'abandoned', 'expired', 'paused', 'missed'));

-- catch-up policy: what a job does with the slots it missed (an outage, a pause, a late message):
-- none = record them and go on at the next slot (the behaviour before this column), latest = run the most recent
-- once, all = run up to catchup_max of them (the most recent ones, oldest first) at most catchup_rate_per_sec.
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS catchup text NOT NULL DEFAULT 'none'
    CHECK (catchup IN ('none', 'latest', 'all'));
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS catchup_max integer NOT NULL DEFAULT 10
    CHECK (catchup_max >= 1);
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS catchup_rate_per_sec double precision NOT NULL DEFAULT 1
    CHECK (catchup_rate_per_sec > 0);

-- timed pause: the watchdog resumes the job at paused_until; paused_from is the first slot the pause kept from
-- running (the ledger's `paused` rows start there on resume).
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS paused_until timestamptz;
ALTER TABLE scheduler.jobs ADD COLUMN IF NOT EXISTS paused_from timestamptz;
CREATE INDEX IF NOT EXISTS jobs_paused_until ON scheduler.jobs (scope, paused_until) WHERE paused_until IS NOT NULL;
