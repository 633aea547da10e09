"""The worker's HTTP endpoint without servers: /metrics is prometheus_client's exposition byte for byte,
/healthz is alive, /readyz without a worker that is up answers 503 with a JSON reason, and a failing check
answers one line of JSON, never a traceback."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from shared.metrics_http import serve
from shared.readiness import Readiness
from tests.support.ports import free_port


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_runs", "runs", ["status"], registry=registry).labels("ok").inc(3)
    Histogram("demo_seconds", "durations", registry=registry).observe(0.25)
    return registry


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.fixture
def ours(registry: CollectorRegistry) -> Iterator[str]:
    port = free_port()
    server = serve(port, registry, Readiness())
    assert server is not None
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/metrics", {}),
        ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
        ("/metrics", {"Accept-Encoding": "gzip"}),
        ("/metrics?name[]=demo_runs_total", {}),
        ("/", {}),
    ],
)
def test_metrics_are_byte_identical_to_prometheus_clients_server(
    registry: CollectorRegistry, ours: str, path: str, headers: dict[str, str]
) -> None:
    port = free_port()
    theirs, thread = start_http_server(port, registry=registry)
    try:
        expected = get(f"http://127.0.0.1:{port}{path}", headers)
    finally:
        theirs.shutdown()
        theirs.server_close()
        thread.join(5)
    assert unzipped(get(f"{ours}{path}", headers)) == unzipped(expected)
    assert expected[0] == 200 and expected[1]
    assert (expected[1][:2] == b"\x1f\x8b") == ("gzip" in headers.get("Accept-Encoding", ""))


def unzipped(answer: tuple[int, bytes, str]) -> tuple[int, bytes, str]:
    """A gzip answer with its body unpacked: gzip's header carries the second it was made in."""
    status, body, content_type = answer
    return (status, gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body, content_type)


def test_healthz_answers_alive(ours: str) -> None:
    status, body, content_type = get(f"{ours}/healthz")
    assert (status, json.loads(body), content_type) == (200, {"status": "alive"}, "application/json")


def test_readyz_before_the_worker_is_up_is_503_with_a_reason(ours: str) -> None:
    status, body, _ = get(f"{ours}/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "not ready" and answer["reason"].startswith("worker: starting")


def test_a_failing_readiness_check_answers_json_not_a_traceback(registry: CollectorRegistry) -> None:
    class Broken(Readiness):
        def verdict(self):  # type: ignore[no-untyped-def]
            raise KeyError("secret-internal-detail")

    port = free_port()
    server = serve(port, registry, Broken())
    assert server is not None
    try:
        status, body, _ = get(f"http://127.0.0.1:{port}/readyz")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 503
    assert json.loads(body) == {"status": "error", "reason": "/readyz: KeyError"}
    assert b"Traceback" not in body and b"secret-internal-detail" not in body


def test_port_zero_serves_nothing(registry: CollectorRegistry) -> None:
    assert serve(0, registry, Readiness()) is None
