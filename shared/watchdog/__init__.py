"""The watchdog: runs in every worker, active in one per scope (`leadership`). Each pass of the active one runs
independent sweeps, one module each:

- `abandoned`: runs whose worker died are marked abandoned, and retried when attempts remain;
- `retries`: retries that never arrived (their record says they were due) are published again;
- `buffers`: buffered slots whose message never came back are closed;
- `reseed`: chains that are lost are reseeded (a job whose row no longer validates is skipped, alone), their
  lost slots recorded as `missed` in the slot ledger;
- `resume`: jobs paused with `--until` are resumed when that time comes (audited as the actor `watchdog`);
- `pruning`: now and then, history older than the retention is deleted;
- `vacuum`: while the server's autovacuum is off, the scheduler tables are vacuumed by autovacuum's rule.

`loop.Watchdog` runs them; `standard_sweeps` builds the set a worker runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aio_pika.abc import AbstractChannel

from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.store.vacuum import VacuumSetting
from shared.watchdog.abandoned import AbandonedRuns
from shared.watchdog.buffers import StaleBuffers
from shared.watchdog.leadership import Leadership
from shared.watchdog.loop import Sweep, Watchdog
from shared.watchdog.pruning import Pruning
from shared.watchdog.reseed import LostChains, lost_chains
from shared.watchdog.resume import TimedResume
from shared.watchdog.retries import LostRetries
from shared.watchdog.vacuum import Vacuuming

__all__ = ["Leadership", "Sweep", "Watchdog", "lost_chains", "standard_sweeps"]


def standard_sweeps(
    scope: str,
    channel: AbstractChannel,
    publisher: Publisher,
    metrics: Metrics,
    *,
    lost_after_sec: float,
    retention_days: float,
    clock: Callable[[], datetime],
    cap_sec: float = 30.0,
    vacuum: VacuumSetting = "auto",
) -> list[Sweep]:
    """The sweeps of a worker's watchdog, in pass order (abandoned runs first: their retries are the most urgent)."""
    return [
        AbandonedRuns(scope, publisher, metrics, clock, cap_sec=cap_sec),
        LostRetries(scope, publisher, metrics, lost_after_sec=lost_after_sec, clock=clock),
        StaleBuffers(scope),
        LostChains(scope, channel, publisher, metrics, lost_after_sec=lost_after_sec, clock=clock),
        TimedResume(scope, channel, metrics, clock=clock),
        Pruning(scope, retention_days),
        Vacuuming(vacuum),
    ]
