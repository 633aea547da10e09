"""Log lines and their Loki labels, the push payload, and a Loki that is down, hangs or refuses: local sockets only."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from shared import logs
from shared.loki import (
    LABEL_KEYS,
    OVERFLOW_JOB_ID,
    Entry,
    LabelMaker,
    LokiQueueHandler,
    batch_payload,
    push_url,
)
from shared.metrics import Metrics


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide logging: put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server.getsockname()[1]


@contextmanager
def answering(status: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A push endpoint answering `status`; yields its port and the bodies it received."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, bodies
    finally:
        server.shutdown()
        server.server_close()


def record(msg: Any, level: int = logging.INFO, name: str = "job") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


# -- labels and payload ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://loki:3100", "http://loki:3100/loki/api/v1/push"),
        ("http://loki:3100/", "http://loki:3100/loki/api/v1/push"),
        ("https://logs.example/loki/api/v1/push", "https://logs.example/loki/api/v1/push"),
    ],
)
def test_loki_url_is_the_base_url(base: str, url: str) -> None:
    assert push_url(base) == url


def test_run_lines_get_exactly_the_five_labels_and_nothing_else() -> None:
    maker = LabelMaker({"service": "buy_scanner", "scope": "mock", "worker": "w-1"})
    event = {"event": "run.finished", "job_id": "buy-scanner", "trigger_source": "scheduler", "attempt": 2,
             "run_id": "0b6c8f2e-8a5e-4c4f-9a43-9d1c0d7c1f10", "error": "ValueError: boom"}  # fmt: skip
    labels = dict(maker.labels(event, "warning"))
    assert tuple(labels) == LABEL_KEYS
    assert labels == {
        "service": "buy_scanner", "scope": "mock", "job_id": "buy-scanner", "trigger_source": "scheduler",
        "level": "warning",
    }  # fmt: skip


def test_lines_outside_a_run_carry_only_service_scope_and_level() -> None:
    maker = LabelMaker({"service": "trading", "scope": "real"})
    assert dict(maker.labels({"event": "worker.ready"}, "info")) == {
        "service": "trading",
        "scope": "real",
        "level": "info",
    }


def test_values_that_are_not_ids_never_become_labels() -> None:
    maker = LabelMaker({"service": "s", "scope": "mock"})
    labels = dict(maker.labels({"job_id": "Robert'); DROP TABLE", "trigger_source": "cosmic-ray"}, "verbose"))
    assert labels == {"service": "s", "scope": "mock", "level": "info"}


def test_job_id_label_values_are_capped() -> None:
    maker = LabelMaker({"service": "s", "scope": "mock"}, max_job_ids=3)
    seen = {dict(maker.labels({"job_id": f"job-{i}"}, "info"))["job_id"] for i in range(50)}
    assert seen == {"job-0", "job-1", "job-2", OVERFLOW_JOB_ID}
    assert dict(maker.labels({"job_id": "job-1"}, "info"))["job_id"] == "job-1"


def test_payload_has_one_stream_per_label_set_with_values_in_time_order() -> None:
    a = (("service", "s"), ("level", "info"))
    b = (("service", "s"), ("level", "error"))
    payload = batch_payload([Entry(a, 30, "third"), Entry(b, 20, "other"), Entry(a, 10, "first")])
    streams = {json.dumps(s["stream"], sort_keys=True): s["values"] for s in payload["streams"]}
    assert streams == {
        json.dumps(dict(a), sort_keys=True): [["10", "first"], ["30", "third"]],
        json.dumps(dict(b), sort_keys=True): [["20", "other"]],
    }


# -- configure(): stdout and the queue handler ----------------------------------------------------------------


def test_run_lines_on_stdout_are_json_bound_with_the_run_context() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        logs.configure("INFO", service="svc", scope="mock")
        structlog.contextvars.bind_contextvars(
            scope="mock", job_id="scout-daily", run_id="r-1", trigger_source="manual", attempt=1
        )
        structlog.get_logger("job").info("run.started", lateness_ms=1.5)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "run.started" and line["level"] == "info" and line["service"] == "svc"
    assert {k: line[k] for k in ("scope", "job_id", "run_id", "trigger_source", "attempt")} == {
        "scope": "mock", "job_id": "scout-daily", "run_id": "r-1", "trigger_source": "manual", "attempt": 1,
    }  # fmt: skip


def test_loki_gets_the_same_line_as_stdout_with_labels_from_the_run_context() -> None:
    with answering(204) as (port, bodies), redirect_stdout(io.StringIO()) as out:
        handler = logs.configure("INFO", loki_url=f"http://127.0.0.1:{port}", service="svc", scope="mock")
        assert handler is not None
        structlog.contextvars.bind_contextvars(job_id="news-crawler", trigger_source="retry", run_id="r-2")
        structlog.get_logger("job").warning("run.finished", status="failed")
        logging.getLogger("some.library").error("plain %s line", "stdlib")  # not structlog: context still applies
        wait_for(lambda: handler.stats.pushed >= 2)
        handler.close()
    streams = [s for body in bodies for s in body["streams"]]
    pushed = {line for s in streams for _, line in s["values"]}
    assert set(out.getvalue().strip().splitlines()) <= pushed
    for stream in streams:
        assert stream["stream"]["job_id"] == "news-crawler" and stream["stream"]["trigger_source"] == "retry"
        assert set(stream["stream"]) == set(LABEL_KEYS)
    assert {s["stream"]["level"] for s in streams} == {"warning", "error"}


def test_a_loki_that_hangs_fills_the_bounded_queue_and_further_lines_are_dropped_and_counted() -> None:
    with hanging_port() as port:
        handler = LokiQueueHandler(
            f"http://127.0.0.1:{port}", {"service": "s"}, capacity=20, batch_size=10, timeout=(1.0, 30.0)
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        try:
            for i in range(500):  # emit returns for every line although nothing is ever delivered
                handler.handle(record(f"line {i}"))
            assert handler.entries.qsize() <= 20
            assert handler.stats.pushed == 0
            assert handler.stats.dropped["queue_full"] >= 500 - 20 - 10
        finally:
            handler.close()


def test_a_loki_that_is_down_costs_lines_not_errors_and_is_counted_in_metrics() -> None:
    metrics = Metrics(CollectorRegistry())
    with redirect_stdout(io.StringIO()):
        handler = logs.configure("INFO", loki_url=f"http://127.0.0.1:{closed_port()}", metrics=metrics, service="s")
        assert handler is not None
        for i in range(20):
            structlog.get_logger("job").info("tick", i=i)
        wait_for(lambda: handler.stats.dropped.get("push_failed", 0) > 0)
        handler.close()
    assert metrics.registry is not None
    failed = metrics.registry.get_sample_value("scheduler_log_lines_dropped_total", {"reason": "push_failed"})
    assert failed is not None and failed >= 1
    assert metrics.registry.get_sample_value("scheduler_log_lines_dropped_total", {"reason": "queue_full"}) == 0
    assert metrics.registry.get_sample_value("scheduler_log_lines_pushed_total", {}) == 0


def test_a_batch_loki_refuses_is_dropped_as_rejected_and_the_next_one_is_sent() -> None:
    with answering(400) as (port, bodies):
        handler = LokiQueueHandler(f"http://127.0.0.1:{port}", {"service": "s"}, linger_sec=0.01)
        handler.setFormatter(logging.Formatter("%(message)s"))
        try:
            handler.handle(record("first"))
            wait_for(lambda: handler.stats.dropped.get("rejected", 0) == 1)
            handler.handle(record("second"))
            wait_for(lambda: len(bodies) == 2)  # no back-off after a refusal: retrying could not help anyway
        finally:
            handler.close()


def test_closing_flushes_what_is_queued() -> None:
    with answering(204) as (port, bodies):
        handler = LokiQueueHandler(f"http://127.0.0.1:{port}", {"service": "s"}, linger_sec=5.0)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(5):
            handler.handle(record(f"line {i}"))
        handler.close()  # well before the linger is over
        lines = [line for body in bodies for s in body["streams"] for _, line in s["values"]]
    assert lines == [f"line {i}" for i in range(5)]
    assert not handler.shipper.is_alive()


def test_the_shippers_own_lines_never_feed_back_into_the_queue() -> None:
    with hanging_port() as port:
        handler = LokiQueueHandler(f"http://127.0.0.1:{port}", {"service": "s"})
        try:
            lines: list[logging.LogRecord] = []
            own = record("loki.push_failed", logging.WARNING, "shared.loki")
            own.thread = handler.shipper.ident
            for rec in (own, record("from a run")):
                if handler.filter(rec):
                    lines.append(rec)
            assert [r.msg for r in lines] == ["from a run"]
        finally:
            handler.close()
