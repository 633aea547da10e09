"""The probe handler used by the runtime tests: sleeps, fails on demand, runs a child process, writes marks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.context import RunContext


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    sleep_sec: float = 0.0
    fail_until_attempt: int = 0  # fail while ctx.attempt <= this
    child_sec: float = 0.0  # run `sleep child_sec` as a child process (killed with its group on timeout)
    pid_file: str = ""  # where the child's pid is written
    mark_dir: str = ""  # a file per run is written here: start and end times
    action: str = ""


async def probe(ctx: RunContext, params: ProbeParams) -> None:
    mark = Path(params.mark_dir) / f"{ctx.run_id}" if params.mark_dir else None
    if mark is not None:
        mark.write_text(f"{ctx.job_id} {params.action} {os.getpid()}\n")
    if params.child_sec:
        cmd = f"echo $$ > {params.pid_file}; exec sleep {params.child_sec}"
        await ctx.run_subprocess(["sh", "-c", cmd])
    await asyncio.sleep(params.sleep_sec)
    if ctx.attempt <= params.fail_until_attempt:
        raise RuntimeError(f"probe failure on attempt {ctx.attempt}")


def probe_sync(ctx: RunContext, params: ProbeParams) -> None:
    import time

    time.sleep(params.sleep_sec)
    if ctx.attempt <= params.fail_until_attempt:
        raise RuntimeError(f"probe failure on attempt {ctx.attempt}")
