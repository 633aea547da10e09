"""shared.connection_watch without servers: a call past its bound closes the connection under its channel (so the
robust owner reconnects) and raises BrokerStalled, an AMQP error (RabbitMQ unavailable: retry later); a call that
answers in time leaves the connection alone. The stall itself is reproduced on a private cluster in
tests/integration/test_ha_freeze.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared import connection_watch
from shared.connection_watch import BrokerStalled, bounded
from shared.dependencies import classify
from shared.vocabulary import Dependency


class FakeConnection:
    url = "amqp://user:secret@10.0.0.7:5673/"

    def __init__(self) -> None:
        self.closed_with: list[BaseException] = []

    @property
    def is_closed(self) -> bool:
        return bool(self.closed_with)

    async def close(self, exc: BaseException, timeout: float | None = None) -> None:
        self.closed_with.append(exc)


class FakeChannel:
    def __init__(self) -> None:
        self.connection = FakeConnection()

    async def get_underlay_channel(self) -> Any:
        return self


async def test_a_call_past_its_bound_closes_the_connection_and_raises_broker_stalled() -> None:
    channel = FakeChannel()
    with pytest.raises(BrokerStalled) as raised:
        await bounded(channel, "queue.purge S.jobs.a.delay", lambda: asyncio.sleep(5), within_sec=0.05)  # type: ignore[arg-type]
    assert channel.connection.closed_with == [raised.value]
    assert "10.0.0.7:5673" in str(raised.value) and "secret" not in str(raised.value)
    assert classify(raised.value) is Dependency.RABBITMQ


async def test_a_call_that_answers_in_time_leaves_the_connection_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_watch, "RPC_TIMEOUT_SEC", 1.0)  # the default is read at call time
    channel = FakeChannel()

    async def purge() -> int:
        await asyncio.sleep(0.01)
        return 3

    assert await bounded(channel, "queue.purge S.jobs.a.delay", purge) == 3  # type: ignore[arg-type]
    assert channel.connection.closed_with == []
