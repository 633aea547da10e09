-- What the jobs file said about each job at its last `seed` (the declared columns, as JSON). `seed` compares it with
-- the file and the live row to tell a runtime change (pause, set, the HTTP API) from a file edit: a field the file
-- changed since the last seed and nobody changed at runtime takes the file's value; a field changed at runtime keeps
-- its live value (reported as drift) until `seed --reset`. NULL: never seeded from a file (created through the
-- control layer, or seeded before this column existed).
ALTER TABLE scheduler.jobs ADD COLUMN seeded_definition jsonb;
