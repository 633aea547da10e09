"""The control plane on private servers: the seed's cheat sheet posted verbatim in scope `mock` (which the
machine's shared servers keep for the demo), and PostgreSQL stopped under a running server and at its start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from shared.settings import Settings
from tests.chaos.servers import PrivatePostgres, PrivateRabbit
from tests.support.api import CHEAT_SHEET_MOCK, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def private() -> Iterator[tuple[PrivateRabbit, PrivatePostgres]]:
    rabbit, pg = PrivateRabbit(), PrivatePostgres()
    try:
        rabbit.start()
        pg.start()
        yield rabbit, pg
    finally:
        rabbit.stop()
        pg.remove()


def private_settings(private: tuple[PrivateRabbit, PrivatePostgres]) -> Settings:
    rabbit, pg = private
    return Settings(amqp_url=SecretStr(rabbit.url()), database_url=SecretStr(pg.dsn()), scheduler_scope="mock")  # type: ignore[call-arg]


async def test_the_cheat_sheet_bodies_work_verbatim_in_scope_mock(
    private: tuple[PrivateRabbit, PrivatePostgres],
) -> None:
    async with serving(private_settings(private), "mock") as api:
        headers = {"Content-Type": "application/json"}
        answers = [await api.post("/jobs", content=body.encode(), headers=headers) for body in CHEAT_SHEET_MOCK]
        assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
        by_id = {a.json()["job_id"]: a.json() for a in answers}
        assert {j["scheduled_by"] for j in by_id.values()} == {"cron_expr"}
        assert by_id["mock-buy-scanner"]["queue"] == "mock.jobs.buy-scanner"
        assert by_id["mock-buy-scanner"]["expected_period_sec"] == 120
        assert by_id["mock-scout"]["expected_period_sec"] == 86400
        assert by_id["mock-price-start"]["expected_period_sec"] is None  # its interval_seconds is a param
        assert by_id["mock-price-start"]["queue"] == by_id["mock-price-stop"]["queue"] == "mock.jobs.price-monitor"

        start = (await api.get("/jobs/mock-price-start")).json()["job"]
        assert start["default_params"] == {"action": "start", "interval_seconds": 86400}
        assert start["cron_expr"] == "0 0 * * *" and start["interval_seconds"] is None
        assert (await api.get("/jobs/mock-buy-scanner")).json()["job"]["description"] == "Mock buy scanner auto"

        again = await api.post("/jobs", content=CHEAT_SHEET_MOCK[0].encode(), headers=headers)
        assert again.status_code == 200 and again.json()["changed"] is False
        listed = (await api.get("/jobs")).json()
        assert sorted(j["job_id"] for j in listed) == sorted(by_id) and all(j["next_slots"] for j in listed)

        # the real variant of the same body, in this (mock) server: refused, naming the field
        real = json.loads(CHEAT_SHEET_MOCK[0]) | {"job_id": "buy-scanner", "queue": "real.jobs.buy-scanner"}
        refused = await api.post("/jobs", json=real)
        assert refused.status_code == 422 and refused.json()["fields"] == ["queue"]


async def test_postgres_down_is_503_with_a_reason_and_the_server_recovers_by_itself(
    private: tuple[PrivateRabbit, PrivatePostgres],
) -> None:
    _, pg = private
    settings = private_settings(private)
    async with serving(settings, "mock") as api:
        assert (await api.get("/jobs")).status_code == 200
        await pg.astop()
        try:
            health = await api.get("/healthz")
            assert health.status_code == 200 and health.json()["postgres"] == "down"
            assert health.json()["status"] == "degraded" and health.json()["rabbitmq"] == "up"
            for response in (
                await api.get("/jobs"),
                await api.post("/jobs/mock-scout/pause", json={"note": "db down"}),
                await api.get("/audit"),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "unavailable" and "PostgreSQL" in response.json()["detail"]
                assert "Traceback" not in response.text

            # a server started while PostgreSQL is down starts, answers, and says why it cannot act
            async with serving(settings, "mock", connected=False) as fresh:
                assert (await fresh.get("/healthz")).json()["postgres"] == "down"
                cold = await fresh.get("/jobs/mock-scout")
                assert cold.status_code == 503 and "PostgreSQL" in cold.json()["detail"]
                pg.spawn()
                await pg.wait_ready()

                async def reconnected(client: httpx.AsyncClient) -> bool:
                    return (await client.get("/jobs")).status_code == 200

                for client in (api, fresh):
                    for _ in range(100):
                        if await reconnected(client):
                            break
                        await asyncio.sleep(0.3)
                    assert await reconnected(client), "the server did not reconnect to PostgreSQL"
        finally:
            if pg.proc is None or pg.proc.poll() is not None:
                pg.spawn()
                await pg.wait_ready()
