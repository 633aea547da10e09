"""Run one pipeline step (`params.step`) as `python -m services.daily_pipeline.scripts.<step>`.

The child gets its own process group, killed whole when the step's timeout (`params.timeout_sec`, else the
job's `timeout_sec`) passes, and only the environment it needs: the outside systems' settings, never the
broker or database credentials of the worker.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.clients.config import ClientConfig
from shared.context import RunContext
from shared.errors import SchedulerError
from shared.registry import HandlerFn
from shared.schedule import validate_timezone
from shared.settings import Settings

Step = Literal["seed_fresh_data", "generate_cases"]
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
PASSED_PREFIXES = ("MARKET_", "LLM_", "PIPELINE_", "OUTSIDE_")


class StepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: Step
    universe: str = Field(default="kospi200", min_length=1, max_length=64)
    tickers: list[str] = Field(default_factory=list, max_length=2000)
    days: int = Field(default=30, ge=2, le=3650, description="daily candles fetched per ticker")
    max_cases: int = Field(default=5, ge=1, le=100)
    market_tz: str = Field(default="Asia/Seoul", description="the trading day is the run's date in this zone")
    timeout_sec: float | None = Field(default=None, gt=0, le=86400, description="default: the job's timeout")

    @field_validator("market_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        return validate_timezone(value)


class StepTimedOut(SchedulerError):
    """The step's script ran past its timeout; its whole process group was killed."""


def trading_day(at: datetime, zone: str) -> str:
    """The date of the run in the market's zone: 23:00 UTC on Sunday is Monday in Seoul."""
    return at.astimezone(ZoneInfo(zone)).date().isoformat()


def step_argv(params: StepParams, at: datetime, data_dir: str) -> list[str]:
    argv = [sys.executable, "-m", f"services.daily_pipeline.scripts.{params.step}", "--data-dir", data_dir]
    if params.step == "seed_fresh_data":
        argv += ["--date", trading_day(at, params.market_tz), "--universe", params.universe, "--days", str(params.days)]
        if params.tickers:
            argv += ["--tickers", ",".join(params.tickers)]
    else:
        argv += ["--max-cases", str(params.max_cases)]
    return argv


def child_env(environ: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)}


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    data_dir = config.pipeline_data_dir

    async def handle(ctx: RunContext, params: StepParams) -> None:
        argv = step_argv(params, ctx.scheduled_for, data_dir)
        timeout = params.timeout_sec or ctx.timeout_sec
        env = {**child_env(dict(os.environ)), "PIPELINE_DATA_DIR": data_dir}
        try:
            result = await ctx.run_subprocess(argv, timeout_sec=timeout, env=env)
        except TimeoutError:
            raise StepTimedOut(f"{params.step} ran past {timeout:g} s; its process group was killed") from None
        for line in result.stdout.strip().splitlines()[-5:]:
            ctx.log.info("pipeline.step_output", step=params.step, line=line[:300])
        ctx.log.info("pipeline.step_succeeded", step=params.step, upstream_run_id=str(ctx.upstream_run_id or ""))

    return handle
