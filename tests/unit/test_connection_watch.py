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
    is_closed = False

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


def test_the_oldest_pending_confirm_ages_while_it_stays_the_oldest() -> None:
    oldest = connection_watch.Oldest()
    assert oldest.age("ch", 7, now=100.0) == 0.0
    assert oldest.age("ch", 7, now=112.5) == 12.5
    assert oldest.age("ch", 9, now=113.0) == 0.0  # 7 was confirmed: 9 is the oldest now, seen for the first time
    assert oldest.age("ch", None, now=114.0) == 0.0  # nothing pending
    assert oldest.age("ch", 9, now=115.0) == 0.0


class ConfirmChannel(FakeChannel):
    def __init__(self, pending: list[int]) -> None:
        super().__init__()
        self.confirmations = {tag: None for tag in pending}


async def test_a_connection_whose_oldest_confirm_waits_past_the_bound_is_closed_once() -> None:
    channel = ConfirmChannel([4, 5])
    watch = connection_watch.ConfirmWatch([channel], stall_sec=15)  # type: ignore[list-item]
    assert not await watch.check(channel, 0.0)  # type: ignore[arg-type]
    assert not await watch.check(channel, 14.0)  # type: ignore[arg-type]
    assert await watch.check(channel, 15.0)  # type: ignore[arg-type]
    (error,) = channel.connection.closed_with
    assert isinstance(error, BrokerStalled) and "10.0.0.7:5673" in str(error)


async def test_confirms_that_keep_coming_never_close_the_connection() -> None:
    channel = ConfirmChannel([1])
    watch = connection_watch.ConfirmWatch([channel], stall_sec=15)  # type: ignore[list-item]
    for second in range(60):
        channel.confirmations = {second + 1: None, second + 2: None}  # the oldest is confirmed each second
        assert not await watch.check(channel, float(second))  # type: ignore[arg-type]
    assert channel.connection.closed_with == []


async def test_a_blocked_connection_is_not_moved() -> None:
    channel = ConfirmChannel([4])
    unblocked = asyncio.Event()  # not set: the broker blocks the connection (an alarm)
    channel.connection._Connection__connection_unblocked = unblocked  # type: ignore[attr-defined]
    watch = connection_watch.ConfirmWatch([channel], stall_sec=15)  # type: ignore[list-item]
    assert not await watch.check(channel, 0.0)  # type: ignore[arg-type]
    assert not await watch.check(channel, 60.0)  # type: ignore[arg-type]
    assert channel.connection.closed_with == []


async def test_a_closed_connection_is_not_watched() -> None:
    channel = ConfirmChannel([4])
    channel.connection.closed_with.append(ConnectionError())  # lost already: the robust channel restores it
    watch = connection_watch.ConfirmWatch([channel], stall_sec=15)  # type: ignore[list-item]
    assert not await watch.check(channel, 0.0)  # type: ignore[arg-type]
    assert not await watch.check(channel, 60.0)  # type: ignore[arg-type]
    assert len(channel.connection.closed_with) == 1
