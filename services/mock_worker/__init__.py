"""A generic mock worker: serves every work queue of a jobs file with the mock executor (used by `make demo`)."""
