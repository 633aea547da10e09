"""A worker's log lines reach Loki with low-cardinality labels only, and a Loki that is down or hangs changes
nothing for the worker: its job still runs slot after slot. Loki is a local HTTP server speaking the push API."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aio_pika
import asyncpg
import pytest
import structlog

from shared import logs
from shared.loki import LABEL_KEYS, LokiQueueHandler
from shared.settings import Settings
from tests.support.ports import free_port
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration


class FakeLoki:
    """POST /loki/api/v1/push (JSON), as Loki answers it: 204. Keeps every stream it received."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.paths.append(self.path)
                    fake.streams.extend(body["streams"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def lines(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """(labels, parsed JSON line) of everything pushed so far."""
        with self._lock:
            return [(s["stream"], json.loads(line)) for s in self.streams for _, line in s["values"]]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeLoki]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def hanging_loki() -> Iterator[str]:
    """Accepts connections and never answers a request."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@contextlib.contextmanager
def worker_logs(loki_url: str, scope: str) -> Iterator[LokiQueueHandler]:
    """What Worker.run() sets up: JSON on stdout plus the Loki push; undone afterwards."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    handler = logs.configure("INFO", loki_url=loki_url, service="probe", scope=scope)
    assert handler is not None
    try:
        yield handler
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
        structlog.configure(**config)


async def succeeded(control: Control, job_id: str) -> list[asyncpg.Record]:
    return [r for r in await control.runs(job_id) if r["status"] == "succeeded"]


async def test_run_lines_reach_loki_labelled_with_service_scope_job_trigger_and_level_only(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=1)
    with FakeLoki().running() as loki, worker_logs(loki.url, scope) as handler:
        async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
            await wait_until(lambda: _has(control, "tick", 2), 30, "two successful runs")
        run_ids = {str(r["run_id"]) for r in await succeeded(control, "tick")}

        def finished_lines() -> set[str]:
            return {line["run_id"] for _, line in loki.lines() if line["event"] == "run.finished" and "run_id" in line}

        await wait_until(lambda: _true(run_ids <= finished_lines()), 30, "every run's run.finished line in Loki")
        pushed = loki.lines()

    assert set(loki.paths) == {"/loki/api/v1/push"}
    for labels, line in pushed:
        assert set(labels) <= set(LABEL_KEYS), labels
        assert labels["service"] == "probe" and labels["scope"] == scope and "level" in labels
        assert line["level"] == labels["level"]
    run_lines = [(labels, line) for labels, line in pushed if line.get("run_id") in run_ids]
    assert {line["event"] for _, line in run_lines} >= {"run.finished"}
    assert all("lateness_ms" in line and "scheduled_for" in line for _, line in run_lines)
    for labels, line in run_lines:
        assert set(labels) == set(LABEL_KEYS)  # exactly the five
        assert labels["job_id"] == "tick" and labels["trigger_source"] == "scheduler"
        assert line["job_id"] == "tick" and line["attempt"] == 1 and line["scope"] == scope
        assert line["run_id"] not in labels.values()
    assert handler.stats.total_dropped() == 0


@pytest.mark.parametrize("down", ["closed port", "hanging server"])
async def test_a_loki_that_is_down_does_not_slow_or_break_the_worker(
    down: str,
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    # a short misfire grace: a worker held up by its logging would skip slots instead of running them late
    await control.seed(job_id="tick", interval_seconds=1, misfire_grace_sec=2)
    with contextlib.ExitStack() as stack:
        url = f"http://127.0.0.1:{free_port()}" if down == "closed port" else stack.enter_context(hanging_loki())
        handler = stack.enter_context(worker_logs(url, scope))
        async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
            await wait_until(lambda: _has(control, "tick", 6), 60, "six successful runs")
        assert handler.stats.pushed == 0
        assert handler.entries.qsize() <= handler.entries.maxsize  # bounded: lines beyond it are dropped, not kept
        if down == "closed port":
            await wait_until(lambda: _true(handler.stats.dropped.get("push_failed", 0) > 0), 30, "failed pushes")
    rows = await control.runs("tick")
    assert not {r["status"] for r in rows} & {"skipped_misfire", "failed", "timed_out"}
    slots = [r["scheduled_for"] for r in rows if r["status"] == "succeeded"]
    assert all((b - a).total_seconds() == 1.0 for a, b in itertools.pairwise(slots))  # no slot lost
    assert slots_run_more_than_once(rows) == []


async def _has(control: Control, job_id: str, n: int) -> bool:
    return len(await succeeded(control, job_id)) >= n


async def _true(value: bool) -> bool:
    return value
