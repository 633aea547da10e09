"""Loki push (DESIGN section 10): the JSON lines of stdout, also shipped to Loki by a background thread.

Nothing on the logging path waits for Loki. `emit` renders the line in the caller's thread (where the run's
context variables are), puts it in a bounded queue and returns; when the queue is full the line is dropped and
counted. A thread takes lines off the queue in batches and pushes each batch in one request through
python-logging-loki's v1 emitter, with short timeouts. A failed batch is dropped and counted and the thread backs
off, so a Loki that is down or hangs costs the worker the lost lines and nothing else.

Labels are low-cardinality only: service, scope, job_id, trigger_source, level. Everything else (run_id,
attempt, error, ...) stays in the JSON line, where LogQL's `| json` finds it.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging.handlers import QueueHandler
from typing import Any

import requests
import structlog
from logging_loki.emitter import LokiEmitterV1

from shared.settings import redact_url
from shared.vocabulary import TriggerSource

log = structlog.get_logger("shared.loki")

LABEL_KEYS = ("service", "scope", "job_id", "trigger_source", "level")
PUSH_PATH = "/loki/api/v1/push"
OVERFLOW_JOB_ID = "_other"
REPORT_EVERY_SEC = 10.0
_MEMO_MAX = 10_000
_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TRIGGER_SOURCES = frozenset(t.value for t in TriggerSource)
_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})

Labels = tuple[tuple[str, str], ...]


def push_url(base: str) -> str:
    """LOKI_URL is Loki's base URL (`http://loki:3100`); a URL that already names the push path is kept."""
    base = base.rstrip("/")
    return base if base.endswith(PUSH_PATH) else base + PUSH_PATH


@dataclass(frozen=True, slots=True)
class Entry:
    """One log line on its way to Loki."""

    labels: Labels
    ts_ns: int
    line: str


class LabelMaker:
    """The labels of a line: service and scope of the process, job_id and trigger_source of the run, level.

    A job id bound from a message is shape-checked but may name no job (a message published by hand): past
    `max_job_ids` distinct values the label becomes `_other`, so no input can create streams without bound.
    """

    def __init__(self, static: Mapping[str, str], max_job_ids: int = 1000) -> None:
        self.static = {k: str(v) for k, v in static.items() if k in ("service", "scope") and v}
        self.max_job_ids = max_job_ids
        self._job_ids: set[str] = set()
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], Labels] = {}

    def labels(self, event: Mapping[str, Any], level: str) -> Labels:
        key = (event.get("scope"), event.get("job_id"), event.get("trigger_source"), level)
        try:
            found = self._memo.get(key)
        except TypeError:  # an unhashable value bound by someone: no memo for it
            return self._labels(event, level)
        if found is None:
            found = self._labels(event, level)
            if len(self._memo) < _MEMO_MAX:
                self._memo[key] = found
        return found

    def _labels(self, event: Mapping[str, Any], level: str) -> Labels:
        found = dict(self.static)
        if "scope" not in found and _JOB_ID.match(str(event.get("scope", ""))):
            found["scope"] = str(event["scope"])
        job_id = event.get("job_id")
        if isinstance(job_id, str) and _JOB_ID.match(job_id):
            found["job_id"] = self._bounded_job_id(job_id)
        trigger = event.get("trigger_source")
        if trigger is not None and str(trigger) in _TRIGGER_SOURCES:
            found["trigger_source"] = str(trigger)
        found["level"] = level if level in _LEVELS else "info"
        return tuple((key, found[key]) for key in LABEL_KEYS if key in found)

    def _bounded_job_id(self, job_id: str) -> str:
        if job_id in self._job_ids:
            return job_id
        with self._lock:
            if len(self._job_ids) >= self.max_job_ids:
                return OVERFLOW_JOB_ID
            self._job_ids.add(job_id)
        return job_id


def batch_payload(entries: Sequence[Entry]) -> dict[str, Any]:
    """Loki's JSON push body: one stream per label set, values in time order."""
    streams: dict[Labels, list[tuple[int, str]]] = {}
    for entry in entries:
        streams.setdefault(entry.labels, []).append((entry.ts_ns, entry.line))
    return {
        "streams": [
            {"stream": dict(labels), "values": [[str(ts), line] for ts, line in sorted(values, key=lambda v: v[0])]}
            for labels, values in streams.items()
        ]
    }


class PushFailed(Exception):
    """Loki did not take the batch; `retryable` is False when sending it again cannot help (HTTP 4xx)."""

    def __init__(self, detail: str, retryable: bool) -> None:
        super().__init__(detail)
        self.retryable = retryable


class BatchEmitter(LokiEmitterV1):  # type: ignore[misc]
    """python-logging-loki's v1 emitter (its session, URL and success code), pushing a batch per request with a
    timeout: the package's own call has none, and one request per line would cost a worker too much."""

    def __init__(self, url: str, timeout: tuple[float, float]) -> None:
        super().__init__(push_url(url))
        self.timeout = timeout

    def push(self, entries: Sequence[Entry]) -> None:
        try:
            response = self.session.post(self.url, json=batch_payload(entries), timeout=self.timeout)
        except requests.RequestException as exc:
            self.close()  # a fresh connection next time
            raise PushFailed(type(exc).__name__, retryable=True) from exc
        status = response.status_code
        if status == self.success_response_code or 200 <= status < 300:
            return
        detail = f"HTTP {status}: {response.text[:200]}"
        raise PushFailed(detail, retryable=status == 429 or status >= 500)


class ShipStats:
    """Lines pushed and dropped (by reason), for tests and for the metrics callbacks."""

    def __init__(
        self,
        on_pushed: Callable[[int], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        self.pushed = 0
        self.dropped: dict[str, int] = {}
        self.failures = 0
        self._on_pushed = on_pushed
        self._on_dropped = on_dropped
        self._lock = threading.Lock()

    def add_pushed(self, n: int) -> None:
        with self._lock:
            self.pushed += n
        if self._on_pushed is not None:
            self._on_pushed(n)

    def add_dropped(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        if self._on_dropped is not None:
            self._on_dropped(reason, n)

    def total_dropped(self) -> int:
        with self._lock:
            return sum(self.dropped.values())


class Shipper(threading.Thread):
    """Takes entries off the queue in batches and pushes them; backs off while Loki fails."""

    def __init__(
        self,
        entries: queue.Queue[Entry],
        emitter: BatchEmitter,
        stats: ShipStats,
        *,
        batch_size: int,
        backoff_max_sec: float,
        linger_sec: float,
    ) -> None:
        super().__init__(name="loki-shipper", daemon=True)
        self.entries = entries
        self.emitter = emitter
        self.stats = stats
        self.batch_size = batch_size
        self.backoff_max_sec = backoff_max_sec
        self.linger_sec = linger_sec
        self.stopping = threading.Event()
        self.flush_deadline = float("inf")
        self._backoff = 0.0
        self._reported_drops = 0
        self._reported_at = float("-inf")

    def run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._send(batch)
            self._report_drops()
            if self.stopping.is_set() and (
                self.entries.empty() or self._backoff or time.monotonic() > self.flush_deadline
            ):
                self._drop_rest()
                self.emitter.close()
                return
            if self._backoff:
                self.stopping.wait(self._backoff)

    def stop(self, flush_timeout_sec: float) -> None:
        """Push what is queued for at most `flush_timeout_sec` (not at all while Loki fails), then end."""
        self.flush_deadline = time.monotonic() + flush_timeout_sec
        self.stopping.set()
        self.join(flush_timeout_sec)  # a push hanging past that is abandoned with the daemon thread

    def _take(self) -> list[Entry]:
        try:
            batch = [self.entries.get(timeout=0.25)]
        except queue.Empty:
            return []
        # Let lines gather before draining: waking up for every line costs the worker far more than the push.
        if self.entries.qsize() < self.batch_size:
            self.stopping.wait(self.linger_sec)
        while len(batch) < self.batch_size:
            try:
                batch.append(self.entries.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[Entry]) -> None:
        try:
            self.emitter.push(batch)
        except PushFailed as exc:
            self.stats.add_dropped("push_failed" if exc.retryable else "rejected", len(batch))
            self.stats.failures += 1
            if exc.retryable:
                if not self._backoff:
                    log.warning("loki.push_failed", error=str(exc), url=redact_url(self.emitter.url))
                self._backoff = min(self.backoff_max_sec, max(0.5, self._backoff * 2))
            else:
                log.warning("loki.push_rejected", error=str(exc), lines=len(batch))
            return
        self.stats.add_pushed(len(batch))
        if self._backoff:
            log.info("loki.push_recovered", url=redact_url(self.emitter.url), dropped_so_far=self.stats.total_dropped())
        self._backoff = 0.0

    def _report_drops(self) -> None:
        """At most one line per REPORT_EVERY_SEC about lines lost (this line goes to stdout only)."""
        dropped = self.stats.total_dropped()
        if dropped > self._reported_drops and time.monotonic() - self._reported_at >= REPORT_EVERY_SEC:
            log.warning("loki.lines_dropped", total=dropped, by_reason=dict(self.stats.dropped))
            self._reported_drops = dropped
            self._reported_at = time.monotonic()

    def _drop_rest(self) -> None:
        left = 0
        while True:
            try:
                self.entries.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            self.stats.add_dropped("shutdown", left)


class LokiQueueHandler(QueueHandler):
    """A logging handler that never blocks: it renders the line, queues it (bounded) and returns."""

    def __init__(
        self,
        url: str,
        static: Mapping[str, str],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        timeout: tuple[float, float] = (1.0, 3.0),
        backoff_max_sec: float = 15.0,
        linger_sec: float = 0.25,
        flush_timeout_sec: float = 2.0,
        stats: ShipStats | None = None,
    ) -> None:
        self.entries: queue.Queue[Entry] = queue.Queue(maxsize=capacity)
        super().__init__(self.entries)
        self.labels = LabelMaker(static)
        self.stats = stats or ShipStats()
        self.flush_timeout_sec = flush_timeout_sec
        self.shipper = Shipper(
            self.entries,
            BatchEmitter(url, timeout),
            self.stats,
            batch_size=batch_size,
            backoff_max_sec=backoff_max_sec,
            linger_sec=linger_sec,
        )
        self.shipper.start()
        # the shipper's own lines (and those of the HTTP library under it) would feed back into the queue
        self.addFilter(lambda record: record.thread != self.shipper.ident)

    def prepare(self, record: logging.LogRecord) -> Any:
        """The record as an Entry, built in the caller's thread: that is where the run's context variables are."""
        line = self.format(record)
        event = record.msg if isinstance(record.msg, dict) else structlog.contextvars.get_contextvars()
        return Entry(self.labels.labels(event, record.levelname.lower()), int(record.created * 1e9), line)

    def enqueue(self, record: Any) -> None:
        """Queue the entry, or drop and count it when the queue is full: never wait."""
        try:
            self.entries.put_nowait(record)
        except queue.Full:
            self.stats.add_dropped("queue_full", 1)

    def close(self) -> None:
        """Flush for at most `flush_timeout_sec`, then stop the shipper (also called by logging at exit)."""
        if self.shipper.is_alive():
            self.shipper.stop(self.flush_timeout_sec)
        super().close()
