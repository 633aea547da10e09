"""The exit code of every way a command can end, decided in one place (`exit_code`).

0 done   1 tried and failed (a server down, a run that failed)   2 the command cannot be done as given
(bad arguments, a bad jobs file, an unknown job or message id: nothing was changed)   3 the job is running now
(run-now without --queue), or another migrate-queues of the scope is under way
"""

from __future__ import annotations

from shared.control.errors import ErrorKind, InvalidRequest

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNNING = 3

UsageError = InvalidRequest
"""What the CLI itself refuses before acting (the control layer's own refusal, so both end the same way)."""

EXIT_CODES = {
    ErrorKind.NOT_FOUND: EXIT_USAGE,
    ErrorKind.INVALID: EXIT_USAGE,
    ErrorKind.CONFLICT: EXIT_RUNNING,
    ErrorKind.UNAVAILABLE: EXIT_FAILED,
    ErrorKind.FAILED: EXIT_FAILED,
}


def exit_code(kind: ErrorKind | None) -> int:
    """The exit code for a failure of this kind (None: an unexpected error, a failure)."""
    return EXIT_FAILED if kind is None else EXIT_CODES[kind]
