"""What the broker holds for the soak's scope, for tracing a chain message that never reached a worker.

* `sample` (`--watch-queues`): every few seconds, each work queue of the scope that holds messages (ready and
  unacknowledged) and its consumers, one JSON line per sample in `queues.jsonl`;
* `snapshot` (with `--watch-queues`, or when a work queue was not drained at the end): every consumer of the
  scope's work queues with its channel, and every channel with its connection name (a worker names its connection
  after its worker id) and unacknowledged count, in `consumers.json`. A message held unacknowledged by a channel
  whose connection is no worker's, or by a worker that logged nothing for it, shows there.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.chaos.faultlog import iso, utcnow

Ctl = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


def is_work_queue(name: str, scope: str) -> bool:
    """`S.jobs.<queue>`: three dot-separated parts (delay, retry and event queues have four)."""
    return name.startswith(f"{scope}.jobs.") and name.count(".") == 2


async def _json(ctl: Ctl, *args: str) -> list[dict[str, Any]]:
    try:
        result = await ctl(*args, "--formatter", "json", timeout=30)
    except Exception:  # a node down: the next sample tries again
        return []
    if result.returncode != 0:
        return []
    try:
        rows: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    except ValueError:
        return []
    return rows


async def work_queues(ctl: Ctl, scope: str) -> list[dict[str, Any]]:
    rows = await _json(ctl, "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers", "leader")
    return [r for r in rows if is_work_queue(str(r.get("name", "")), scope)]


async def sample(ctl: Ctl, scope: str, path: Path, every_sec: float = 3.0) -> None:
    """Until cancelled: the scope's work queues that hold messages, with their consumer counts."""
    while True:
        began = time.monotonic()
        rows = await work_queues(ctl, scope)
        held = [r for r in rows if r.get("messages_ready") or r.get("messages_unacknowledged")]
        line = json.dumps({"at": iso(utcnow()), "queues": held}, sort_keys=True) + "\n"
        await asyncio.to_thread(_append, path, line)
        await asyncio.sleep(max(0.0, every_sec - (time.monotonic() - began)))


async def snapshot(ctl: Ctl, scope: str, path: Path) -> dict[str, Any]:
    """Consumers of the scope's work queues and the channels behind them, written to `path` and returned."""
    fields = ("queue_name", "channel_pid", "consumer_tag", "prefetch_count", "active", "activity_status")
    consumers = [
        c for c in await _json(ctl, "list_consumers", *fields) if is_work_queue(str(c.get("queue_name", "")), scope)
    ]
    channels = await _json(
        ctl, "list_channels", "pid", "connection", "name", "user", "messages_unacknowledged", "consumer_count"
    )
    connections = await _json(ctl, "list_connections", "pid", "name", "user", "client_properties")
    names = {c.get("pid"): _connection_name(c) for c in connections}
    for channel in channels:
        channel["connection_name"] = names.get(channel.get("connection"))
    data = {"at": iso(utcnow()), "queues": await work_queues(ctl, scope), "consumers": consumers,
            "channels": channels}  # fmt: skip
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    await asyncio.to_thread(path.write_text, text)
    return data


def _connection_name(connection: dict[str, Any]) -> str | None:
    props = connection.get("client_properties")
    if isinstance(props, list):  # [[key, type, value], ...]
        for entry in props:
            if isinstance(entry, list) and len(entry) == 3 and entry[0] == "connection_name":
                return str(entry[2])
    return str(connection.get("name")) if connection.get("name") else None


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line)
