"""Which event loop a long-lived process runs on: SCHEDULER_EVENT_LOOP, chosen once at start-up.

`auto` (the default) runs on uvloop when it is installed (the `fast` extra) and on asyncio's own loop otherwise;
`uvloop` insists on it, and a process asked for uvloop without it installed stops with one line
(`EventLoopUnavailable`, a ConfigError) before it connects anywhere; `asyncio` never loads uvloop. The same code runs on
either; uvloop spends less CPU per run in the loop itself, about a quarter of a worker's time on asyncio's.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from shared.errors import ConfigError

EventLoopSetting = Literal["auto", "uvloop", "asyncio"]
LoopName = Literal["uvloop", "asyncio"]
T = TypeVar("T")


class EventLoopUnavailable(ConfigError):
    """SCHEDULER_EVENT_LOOP=uvloop and uvloop cannot be imported."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"SCHEDULER_EVENT_LOOP=uvloop but uvloop cannot be imported ({reason}): install it "
            "(pip install 'rabbit-chain-scheduler[fast]', or uvloop>=0.19), or set SCHEDULER_EVENT_LOOP=auto "
            "or asyncio"
        )


@dataclass(frozen=True)
class LoopChoice:
    """The loop chosen for a setting: its name and the factory asyncio.Runner takes (None: asyncio's own)."""

    name: LoopName
    setting: EventLoopSetting
    factory: Callable[[], asyncio.AbstractEventLoop] | None


def choose(setting: EventLoopSetting) -> LoopChoice:
    """The loop `setting` asks for; raises EventLoopUnavailable for `uvloop` when it cannot be imported."""
    if setting == "asyncio":
        return LoopChoice("asyncio", setting, None)
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if setting == "uvloop":
            raise EventLoopUnavailable(str(exc)) from None
        return LoopChoice("asyncio", setting, None)
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return LoopChoice("uvloop", setting, factory)


def run(main: Coroutine[Any, Any, T], choice: LoopChoice) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=choice.factory) as runner:
        return runner.run(main)


def running_loop_name() -> LoopName:
    """The loop this coroutine runs on, read from the loop itself (a test may serve on its own loop)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
