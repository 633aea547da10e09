-- scheduler.job_runs partitioned by day on scheduled_for (native range partitioning), so that retention drops
-- whole days (no DELETE, no dead tuples, no vacuum debt) and the insert cost does not grow with the history.
--
-- * One partition per UTC day, `scheduler.job_runs_pYYYYMMDD`, created ahead by `scheduler.ensure_run_partitions`
--   (the watchdog's pruning sweep and the maintenance service call it); `scheduler.job_runs_default` takes any row
--   outside them (a backfill of a slot older than the oldest partition), and is pruned by DELETE as before.
-- * Every unique index of a partitioned table includes the partition key: the primary key becomes
--   (run_id, scheduled_for). A chain slot keeps its own unique index (scope, job_id, scheduled_for, attempt). A run
--   that does not belong to a chain (run-now, event, startup: epoch IS NULL) is deduplicated on its run id across
--   partitions by `scheduler.run_id_free`, which the claim statements call for those rows only.
-- * The existing table is converted in place: its rows are copied into the partitioned table, whatever columns,
--   CHECK constraints and indexes earlier migrations gave it (indexes are re-created from their definitions).

CREATE FUNCTION scheduler.run_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'job_runs_p' || to_char(day, 'YYYYMMDD') $$;

DO $$
DECLARE
    defs text[];
    def text;
    first_day date;
    day date;
BEGIN
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid)), '{}') INTO defs
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'scheduler.job_runs'::regclass AND NOT i.indisprimary;
    EXECUTE (
        SELECT coalesce(string_agg(format('DROP INDEX scheduler.%I', c.relname), '; '), 'SELECT 1')
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'scheduler.job_runs'::regclass AND NOT i.indisprimary
    );
    ALTER TABLE scheduler.job_runs RENAME TO job_runs_unpartitioned;
    ALTER TABLE scheduler.job_runs_unpartitioned RENAME CONSTRAINT job_runs_pkey TO job_runs_unpartitioned_pkey;
    CREATE TABLE scheduler.job_runs (
        LIKE scheduler.job_runs_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE
    ) PARTITION BY RANGE (scheduled_for);
    ALTER TABLE scheduler.job_runs ADD PRIMARY KEY (run_id, scheduled_for);
    FOREACH def IN ARRAY defs LOOP
        EXECUTE def;  -- the same name, on the new (partitioned) table
    END LOOP;
    CREATE TABLE scheduler.job_runs_default PARTITION OF scheduler.job_runs DEFAULT;

    -- a partition per day of the recent history (at most 90 days back) and a week ahead; older rows go to the default
    SELECT greatest(coalesce(min(scheduled_for AT TIME ZONE 'UTC')::date, current_date), current_date - 90)
    INTO first_day FROM scheduler.job_runs_unpartitioned;
    day := first_day;
    WHILE day <= current_date + 7 LOOP
        EXECUTE format(
            'CREATE TABLE scheduler.%I PARTITION OF scheduler.job_runs FOR VALUES FROM (%L) TO (%L)',
            scheduler.run_partition_name(day), day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC'
        );
        day := day + 1;
    END LOOP;
    INSERT INTO scheduler.job_runs SELECT * FROM scheduler.job_runs_unpartitioned;
    DROP TABLE scheduler.job_runs_unpartitioned;
END $$;

-- Create the missing daily partitions from `first_day` to `last_day` (UTC days); returns how many were created.
-- Rows of such a day that sit in the default partition move into the new partition. A partition is built detached
-- (with a CHECK of its range, so attaching it does not scan it) and attached: inserts go on meanwhile.
CREATE FUNCTION scheduler.ensure_run_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    made integer := 0;
    name text;
    lo timestamptz;
    hi timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('scheduler.job_runs partitions'));
    WHILE day <= last_day LOOP
        name := scheduler.run_partition_name(day);
        IF to_regclass(format('scheduler.%I', name)) IS NULL THEN
            lo := day::timestamp AT TIME ZONE 'UTC';
            hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
            EXECUTE format(
                'CREATE TABLE scheduler.%I (LIKE scheduler.job_runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                ' INCLUDING STORAGE, CONSTRAINT %I CHECK (scheduled_for >= %L AND scheduled_for < %L))',
                name, name || '_range', lo, hi
            );
            EXECUTE format(
                'WITH moved AS (DELETE FROM scheduler.job_runs_default WHERE scheduled_for >= %L'
                ' AND scheduled_for < %L RETURNING *) INSERT INTO scheduler.%I SELECT * FROM moved',
                lo, hi, name
            );
            EXECUTE format(
                'ALTER TABLE scheduler.job_runs ATTACH PARTITION scheduler.%I FOR VALUES FROM (%L) TO (%L)',
                name, lo, hi
            );
            EXECUTE format('ALTER TABLE scheduler.%I DROP CONSTRAINT %I', name, name || '_range');
            made := made + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN made;
END $$;

-- The daily partitions whose whole day is before `before`, oldest first, with what pruning needs to know about
-- each without reading it row by row (every answer comes from an index: the scope range, an active row, the
-- latest finish).
CREATE FUNCTION scheduler.run_partitions_before(before timestamptz, active text[])
RETURNS TABLE (name text, upper_bound timestamptz, min_scope text, max_scope text, has_active boolean,
               last_finished timestamptz, approx_rows bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname, c.reltuples,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'scheduler.job_runs'::regclass AND c.relname LIKE 'job_runs\_p%'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN part.hi IS NULL OR part.hi > before;
        name := part.relname;
        upper_bound := part.hi;
        approx_rows := greatest(part.reltuples, 0)::bigint;
        -- the statuses spelled as a constant, so the partial index of active rows answers
        EXECUTE format('SELECT min(scope), max(scope), max(finished_at),'
                       ' EXISTS (SELECT 1 FROM scheduler.%I WHERE status = ANY(%L::text[])) FROM scheduler.%I',
                       name, active, name)
            INTO min_scope, max_scope, last_finished, has_active;
        RETURN NEXT;
    END LOOP;
END $$;

-- Whether no run has `id` yet (in any partition), for a run outside a chain (epoch IS NULL) about to be inserted:
-- such a run id is not unique by an index (the primary key includes scheduled_for, which copies of an event
-- message need not share). A transaction lock on the id serializes two inserts of the same id; the lookup runs
-- after it is granted, on a fresh snapshot (a VOLATILE function's statement), so it sees the other one committed.
CREATE FUNCTION scheduler.run_id_free(id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(('x' || substr(replace(id::text, '-', ''), 1, 16))::bit(64)::bigint);
    RETURN NOT EXISTS (SELECT 1 FROM scheduler.job_runs WHERE run_id = id);
END $$;
