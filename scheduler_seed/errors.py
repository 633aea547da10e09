"""What the CLI can fail with, and the exit code each failure means.

0 done   1 tried and failed (a server down, a run that failed)   2 the command cannot be done as given
3 the job is running now (run-now without --queue)
"""

from __future__ import annotations

from shared.errors import SchedulerError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNNING = 3


class CliError(SchedulerError):
    """An outcome the operator reads as one line on stderr; `exit_code` is what the process returns."""

    exit_code = EXIT_FAILED


class UsageError(CliError):
    """Bad arguments, a bad jobs file, an unknown job or message id: nothing was changed."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """RabbitMQ or PostgreSQL does not answer (the message names the redacted URL and how to start it)."""


class RunningNow(CliError):
    """run-now found a live run of the job (the 409 of `000_655093b4cfd23bb8.txt`)."""

    exit_code = EXIT_RUNNING
