-- Schema `scheduler`: job definitions, every run, idempotency keys and live workers.
CREATE TABLE scheduler.jobs (
    scope                 text        NOT NULL,
    job_id                text        NOT NULL,
    description           text        NOT NULL DEFAULT '',
    queue                 text        NOT NULL,
    cron_expr             text,
    timezone              text        NOT NULL DEFAULT 'UTC',
    interval_seconds      integer     CHECK (interval_seconds >= 1),
    align                 boolean     NOT NULL DEFAULT false,
    enabled               boolean     NOT NULL DEFAULT true,
    default_params        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    timeout_sec           double precision NOT NULL DEFAULT 300 CHECK (timeout_sec > 0),
    max_attempts          integer     NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    retry_backoff_sec     double precision NOT NULL DEFAULT 5 CHECK (retry_backoff_sec > 0),
    retry_backoff_max_sec double precision NOT NULL DEFAULT 300,
    max_parallel          integer     NOT NULL DEFAULT 1 CHECK (max_parallel >= 1),
    overlap               text        NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'buffer_one', 'allow_all')),
    jitter_sec            double precision NOT NULL DEFAULT 0 CHECK (jitter_sec >= 0),
    lock_group            text,
    misfire_grace_sec     double precision NOT NULL DEFAULT 300 CHECK (misfire_grace_sec >= 0),
    run_on_startup        boolean     NOT NULL DEFAULT false,
    reschedule_mode       text        NOT NULL DEFAULT 'queue' CHECK (reschedule_mode IN ('queue', 'none')),
    on_success            text[]      NOT NULL DEFAULT '{}',
    queue_type            text        NOT NULL DEFAULT 'classic' CHECK (queue_type IN ('classic', 'quorum')),
    epoch                 bigint      NOT NULL DEFAULT 0,
    pause_note            text,
    next_due_at           timestamptz,
    last_run_at           timestamptz,
    last_status           text,
    last_error            text,
    last_duration_ms      integer,
    last_lateness_ms      integer,
    last_success_at       timestamptz,
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, job_id),
    CHECK (reschedule_mode = 'none' OR ((cron_expr IS NULL) <> (interval_seconds IS NULL)))
);

CREATE TABLE scheduler.job_runs (
    run_id           uuid        PRIMARY KEY,
    scope            text        NOT NULL,
    job_id           text        NOT NULL,
    epoch            bigint,
    trigger_source   text        NOT NULL,
    scheduled_for    timestamptz NOT NULL,
    attempt          integer     NOT NULL DEFAULT 1,
    status           text        NOT NULL CHECK (status IN ('claimed', 'buffered', 'running', 'succeeded', 'failed',
                                     'timed_out', 'skipped_locked', 'skipped_misfire', 'abandoned', 'expired')),
    worker           text,
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_ms      integer,
    lateness_ms      integer,
    error            text,
    next_posted_for  timestamptz,
    upstream_run_id  uuid,
    origin_run_id    uuid,
    params           jsonb       NOT NULL DEFAULT '{}'::jsonb
);
-- A chain slot is claimed once: the deterministic run_id is the primary key and this index says it in words.
-- Across epochs too: a reseed can never make a slot that already ran run again.
CREATE UNIQUE INDEX job_runs_chain_slot ON scheduler.job_runs (scope, job_id, scheduled_for, attempt)
    WHERE epoch IS NOT NULL;
CREATE INDEX job_runs_by_job ON scheduler.job_runs (scope, job_id, scheduled_for DESC);
CREATE INDEX job_runs_active ON scheduler.job_runs (scope, job_id)
    WHERE status IN ('claimed', 'buffered', 'running');
CREATE INDEX job_runs_finished ON scheduler.job_runs (finished_at);

CREATE TABLE scheduler.idempotency_keys (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    run_id      uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON scheduler.idempotency_keys (expires_at);

-- A worker is alive while it holds the session advisory lock `lock_key` (Postgres drops it when the process dies).
CREATE TABLE scheduler.workers (
    worker_id     text        PRIMARY KEY,
    scope         text        NOT NULL,
    service       text        NOT NULL,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    queues        text[]      NOT NULL DEFAULT '{}',
    lock_key      bigint      NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
CREATE INDEX workers_scope ON scheduler.workers (scope);

-- True while some session holds the advisory lock `key` in this database (bigint keys: high half in classid).
CREATE FUNCTION scheduler.advisory_lock_held(key bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = ((key >> 32) & 4294967295)::oid
          AND objid = (key & 4294967295)::oid)
$$;

-- Take the first free session advisory lock among `keys`, in order, and stop there (one round trip).
CREATE FUNCTION scheduler.try_lock_any(keys bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF pg_try_advisory_lock(k) THEN
            RETURN k;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
