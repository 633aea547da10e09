"""The mock executor of `000_655093b4cfd23bb8.txt`: sleep, then succeed or fail at random.

Every example service uses it in `SERVICE_MODE=mock`; it never touches the outside world.
"""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, ConfigDict, Field

from shared.context import RunContext


class MockParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    sleep_sec: float = Field(default=0.2, ge=0, le=3600)
    fail_rate: float = Field(default=0.0, ge=0, le=1)


class MockFailure(RuntimeError):
    """The failure the mock executor draws at random."""


async def mock_run(ctx: RunContext, params: MockParams) -> None:
    ctx.log.info("mock.started", sleep_sec=params.sleep_sec, fail_rate=params.fail_rate)
    await asyncio.sleep(params.sleep_sec)
    if random.random() < params.fail_rate:
        raise MockFailure(f"mock failure (fail_rate={params.fail_rate})")
    ctx.log.info("mock.succeeded")
