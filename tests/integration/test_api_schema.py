"""schemathesis against the OpenAPI document of a real `serve` process: for every operation, generated requests
never get a 5xx and every response matches the document (status, content type, body schema). Bounded: a few
examples per operation, so the whole run takes well under a minute."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from scheduler_seed.server.app import create_app
from scheduler_seed.server.auth import Tokens
from shared.settings import Settings
from tests.support.api import OPERATOR_TOKEN, TOKENS, bearer, remove_scope, spawn_server, wait_healthy
from tests.support.ports import free_port
from tests.support.runtime import stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI writes OpenAPI 3.1
# The document as the app builds it (no server needed to collect the tests); requests go to the real process.
PORT = free_port()
BASE_URL = f"http://127.0.0.1:{PORT}"
schema = schemathesis.from_dict(create_app(Settings(), "schema", Tokens([])).openapi(), base_url=BASE_URL)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve` in a private scope with tokens (schemathesis also checks that auth is enforced) and one job to act
    on; its rows and queues are removed afterwards."""
    scope = "tschema" + str(free_port())
    proc = spawn_server(scope, PORT, Settings(), tmp_path_factory.mktemp("schema"), CONTROL_API_TOKENS=TOKENS)
    base = BASE_URL
    try:
        wait_healthy(base, proc)
        alpha = {"job_id": "alpha", "cron_expr": "0 0 1 1 *"}
        created = httpx.post(f"{base}/jobs", json=alpha, headers=bearer(OPERATOR_TOKEN), timeout=10)
        assert created.status_code == 201, created.text
        yield base
    finally:
        stop_process(proc)
        asyncio.run(remove_scope(Settings(), scope))


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_every_answer_matches_the_document(case: schemathesis.Case, server_url: str) -> None:
    case.headers = {**(case.headers or {}), **bearer(OPERATOR_TOKEN)}  # the ignored-auth check swaps it for a bad one
    response = case.call(timeout=30)
    case.validate_response(response)
    assert response.status_code < 500, response.text
