"""A sweep's item that fails alone (shared.watchdog.loop.each_alone): logged and passed over, unless a server is
gone. No servers."""

from __future__ import annotations

import asyncpg
import pytest
import structlog

from shared.watchdog.loop import each_alone


def test_an_items_own_failure_is_logged_and_the_sweep_goes_on() -> None:
    done = []
    with structlog.testing.capture_logs() as logs:
        for item in ("a", "b", "c"):
            with each_alone("sweep.item_failed", item=item):
                if item == "b":
                    raise ValueError("bad row")
                done.append(item)
    assert done == ["a", "c"]
    assert [(e["event"], e["item"], e["error"]) for e in logs] == [("sweep.item_failed", "b", "ValueError: bad row")]


def test_a_server_that_is_gone_stops_the_sweep() -> None:
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError), each_alone("sweep.item_failed", item="a"):
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
