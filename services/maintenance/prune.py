"""Prune the scope's history: finished runs older than the retention, and expired idempotency keys, by the same
rule as the watchdog (`shared.store.sweeps.prune_history`).

The retention is `params.retention_days`, else RUN_RETENTION_DAYS. Runs still claimed, buffered or running
are never pruned, and keys only once they have expired, so the duplicate-order guard
keeps working for as long as each key was claimed for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.clients.config import ClientConfig
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings
from shared.store import sweeps
from shared.store.pool import connect


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: float | None = Field(default=None, gt=0, le=36500, description="default: RUN_RETENTION_DAYS")
    prune_keys: bool = True


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    dsn = settings.database_url.get_secret_value()

    async def handle(ctx: RunContext, params: PruneParams) -> None:
        days = params.retention_days or settings.run_retention_days
        # A connection of its own (once a day): the run's lock connection is not the handler's to use.
        conn = await connect(dsn, application_name=f"maintenance-{ctx.scope}")
        try:
            # dead workers' rows are the watchdog's to forget (it runs in every worker): this job keeps to history
            pruned = await sweeps.prune_history(
                conn, ctx.scope, days, keys=params.prune_keys, dead_workers_after_sec=None
            )
        finally:
            await conn.close()
        ctx.log.info("maintenance.pruned", runs=pruned.runs, keys=pruned.idempotency_keys, retention_days=days)

    return handle
