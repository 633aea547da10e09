"""Fixtures of the integration tests that several files share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.ha_servers import RabbitCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """A private three-node RabbitMQ cluster (tests.chaos.ha_servers), one per test file that asks for it."""
    servers = RabbitCluster()
    try:
        yield servers.start()
    finally:
        servers.stop()
