"""The bench's counters count the same PostgreSQL round trips and RabbitMQ messages whichever event loop the
process runs on: a worker on uvloop is measured as one on asyncio's loop is (uvloop's transports are C objects,
so counting by patching a transport's methods saw none of its writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from shared.settings import Settings
from tests.bench.counted import PUBLISHES
from tests.support.runtime import ROOT

pytestmark = pytest.mark.integration


def counted(settings: Settings, loop: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
    }
    argv = [sys.executable, "-m", "tests.bench.counted", loop]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    counts: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return counts


def test_the_counts_are_the_same_on_uvloop_and_on_asyncio(settings: Settings) -> None:
    on_asyncio = counted(settings, "asyncio")
    on_uvloop = counted(settings, "uvloop")
    assert (on_asyncio.pop("loop"), on_uvloop.pop("loop")) == ("asyncio", "uvloop")
    assert on_uvloop == on_asyncio
    assert on_uvloop["pg_connections"] == 1 and on_uvloop["pg_round_trips"] >= 4 and on_uvloop["pg_statements"] >= 5
    assert on_uvloop["amqp_publishes"] == on_uvloop["amqp_deliveries"] == on_uvloop["amqp_acks"] == PUBLISHES
