"""The vacuum sweep's decisions: autovacuum's trigger, and in `auto` following the server's setting (asked again
every `recheck_sec`, each change logged once)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.store.vacuum import Rule, TableGarbage
from shared.watchdog.vacuum import Vacuuming
from tests.support.logcapture import capture_logs

RULE = Rule(threshold=50, scale_factor=0.2, analyze_threshold=50, analyze_scale_factor=0.1)


@pytest.mark.parametrize(
    ("live", "dead", "vacuum"),
    [(0, 50, False), (0, 51, True), (1000, 250, False), (1000, 251, True), (1_000_000, 150_000, False)],
)
def test_a_table_is_vacuumed_past_threshold_plus_scale_times_live(live: int, dead: int, vacuum: bool) -> None:
    assert RULE.needs_vacuum(TableGarbage("s.t", live, dead, 0)) is vacuum


@pytest.mark.parametrize(("live", "changed", "analyze"), [(1000, 150, False), (1000, 151, True), (0, 51, True)])
def test_a_table_is_analyzed_past_its_own_trigger(live: int, changed: int, analyze: bool) -> None:
    assert RULE.needs_analyze(TableGarbage("s.t", live, 0, changed)) is analyze


class Server:
    def __init__(self, autovacuum: bool) -> None:
        self.autovacuum = autovacuum
        self.asked = 0

    async def autovacuum_on(self, conn: Any) -> bool:
        self.asked += 1
        return self.autovacuum


async def test_auto_asks_the_server_again_after_recheck_sec_and_logs_each_change_once() -> None:
    server, clock = Server(autovacuum=False), [0.0]
    sweep = Vacuuming("auto", recheck_sec=300, autovacuum_on=server.autovacuum_on, monotonic=lambda: clock[0])
    with capture_logs() as logs:
        assert await sweep.active(None) is True
        clock[0] = 100
        assert await sweep.active(None) is True and server.asked == 1  # not asked again yet
        server.autovacuum = True
        clock[0] = 300
        assert await sweep.active(None) is False and server.asked == 2
        clock[0] = 600
        assert await sweep.active(None) is False and server.asked == 3
    assert [e["event"] for e in logs] == ["postgres.autovacuum_off", "postgres.autovacuum_on"]


async def test_a_server_that_vacuums_from_the_start_is_not_logged() -> None:
    server = Server(autovacuum=True)
    sweep = Vacuuming("auto", autovacuum_on=server.autovacuum_on)
    with capture_logs() as logs:
        assert await sweep.active(None) is False
    assert logs == []


@pytest.mark.parametrize(("mode", "active"), [("always", True), ("off", False)])
async def test_always_and_off_do_not_ask_the_server(mode: Any, active: bool) -> None:
    server = Server(autovacuum=False)
    assert await Vacuuming(mode, autovacuum_on=server.autovacuum_on).active(None) is active
    assert server.asked == 0
