"""Run a script as a child process that dies with its whole process group on timeout or cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import SchedulerError

TAIL_BYTES = 4000


@dataclass(frozen=True, slots=True)
class ProcessResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class ProcessFailed(SchedulerError):
    def __init__(self, result: ProcessResult) -> None:
        self.result = result
        tail = result.stderr.strip().splitlines()[-3:]
        super().__init__(f"{result.argv[0]} exited with {result.returncode}: {' | '.join(tail)}")


def _tail(data: bytes) -> str:
    return data[-TAIL_BYTES:].decode("utf-8", "replace")


async def _kill_group(proc: asyncio.subprocess.Process, grace_sec: float) -> None:
    """SIGTERM the group, then SIGKILL what is left after `grace_sec`: grandchildren die too."""
    for sig, wait in ((signal.SIGTERM, grace_sec), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the leader is gone; make sure its group is too
            return
        except TimeoutError:
            continue


async def run_process(
    argv: Sequence[str],
    *,
    timeout_sec: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
    kill_grace_sec: float = 2.0,
) -> ProcessResult:
    """Run `argv` in its own session (process group).

    After `timeout_sec` raise TimeoutError; on cancellation re-raise; in both cases the whole group is killed
    first. With `check`, a non-zero exit raises ProcessFailed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_sec):
            out, err = await proc.communicate()
    except BaseException:
        await asyncio.shield(_kill_group(proc, kill_grace_sec))
        raise
    result = ProcessResult(tuple(argv), proc.returncode or 0, _tail(out), _tail(err))
    if check and result.returncode != 0:
        raise ProcessFailed(result)
    return result
