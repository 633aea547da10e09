"""Prune the scope's history: finished runs older than the retention, and expired idempotency keys.

The retention is `params.retention_days`, else RUN_RETENTION_DAYS. Runs still claimed, buffered or running
are never pruned (shared.store.runs.prune), and keys only once they have expired, so the duplicate-order guard
keeps working for as long as each key was claimed for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.clients.config import ClientConfig
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings
from shared.store import idempotency, runs
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
            pruned_runs = await runs.prune(conn, ctx.scope, days)
            pruned_keys = await idempotency.prune(conn, ctx.scope) if params.prune_keys else 0
        finally:
            await conn.close()
        ctx.log.info("maintenance.pruned", runs=pruned_runs, keys=pruned_keys, retention_days=days)

    return handle
