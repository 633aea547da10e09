"""`make bench-compare` runs the before tree on a database of its own: made when missing, dropped at the end only
when the comparison made it (a database that was there before is the operator's)."""

from __future__ import annotations

import secrets

import pytest

from shared.settings import Settings
from tests.bench import compare

pytestmark = pytest.mark.integration


def _exists(url: str, name: str) -> bool:
    created = compare._admin(url, name, "create") == "created"  # creating tells whether it was there
    if created:
        compare.drop_database(url, name)
    return not created


def test_the_before_database_is_made_once_and_dropped(settings: Settings) -> None:
    url = settings.database_url.get_secret_value()
    name = "tcmp" + secrets.token_hex(4)
    before_url, created = compare.own_database(url, name)
    try:
        assert created and before_url.rsplit("/", 1)[1].split("?")[0] == name
        assert compare.own_database(url, name)[1] is False  # there already: not made again, not ours to drop
        assert _exists(url, name)
    finally:
        compare.drop_database(url, name)
    assert not _exists(url, name)
