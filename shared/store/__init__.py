"""PostgreSQL: the record (jobs, runs, workers, idempotency keys) and the lock (advisory locks)."""
