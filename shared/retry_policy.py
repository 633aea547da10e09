"""The retry policy: whether another attempt follows a run, when, and under which run id. The worker (after a
run), the watchdog (after an abandoned run) and the control layer (following a run to its outcome) all ask here,
so they cannot disagree about whether a retry is coming.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from shared import schedule
from shared.vocabulary import RETRYABLE, RunStatus

PARAMS_INVALID = "params invalid"
"""How the error of a run whose params do not validate begins: running it again cannot help, it is not retried."""


def is_permanent(error: str | None) -> bool:
    """An outcome no retry can change (the params do not validate against the handler's model)."""
    return error is not None and error.startswith(PARAMS_INVALID)


def will_retry(status: RunStatus, attempt: int, max_attempts: int, error: str | None = None) -> bool:
    """Whether attempt `attempt` ending in `status` (with `error`) is followed by attempt + 1."""
    return status in RETRYABLE and attempt < max_attempts and not is_permanent(error)


def retry_delay(attempt: int, base_sec: float, cap_sec: float, rand: float) -> float:
    """Seconds before attempt + 1: exponential from `base_sec`, capped, equal jitter (`schedule.backoff_delay`)."""
    return schedule.backoff_delay(attempt, base_sec, cap_sec, rand)


def retry_run_id(
    scope: str, job_id: str, epoch: int | None, slot: datetime, previous_run_id: uuid.UUID, attempt: int
) -> uuid.UUID:
    """The run id of attempt `attempt` (>= 2): derived from the slot for slot runs (they carry an epoch), else
    from the previous attempt's run id. Whoever publishes a retry, it claims the same row."""
    if epoch is not None:
        return schedule.derive_run_id(scope, job_id, epoch, slot, attempt)
    return uuid.uuid5(previous_run_id, f"attempt-{attempt}")


def run_id_of_attempt(
    scope: str, job_id: str, epoch: int | None, slot: datetime, first: uuid.UUID, n: int
) -> uuid.UUID:
    """The run id of attempt `n` of the run whose first attempt is `first`."""
    run_id = first
    for attempt in range(2, n + 1):
        run_id = retry_run_id(scope, job_id, epoch, slot, run_id, attempt)
    return run_id
