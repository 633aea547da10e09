-- Every operator change (from the CLI, the HTTP API, the bot, the watchdog's own actions): who, when, what, on which
-- job, the values before and after, and the note given. Kept when the job is deleted: it is history.
CREATE TABLE scheduler.audit (
    id bigserial PRIMARY KEY,
    scope text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    action text NOT NULL,
    job_id text,
    before jsonb,
    after jsonb,
    note text
);
CREATE INDEX audit_scope_at ON scheduler.audit (scope, at DESC);
CREATE INDEX audit_scope_job_at ON scheduler.audit (scope, job_id, at DESC);
