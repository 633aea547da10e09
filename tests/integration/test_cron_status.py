"""Cron as Debian cron reads it, end to end: the chain's first slot and `status` show the corrected slots, and an
expression cron would read otherwise is refused naming the field, storing nothing (real RabbitMQ and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from shared.control import Control, ErrorKind, InvalidDefinition, UnknownJob, kind_of
from shared.settings import Settings


@pytest.fixture
async def control(settings: Settings, cleanup_scope: str) -> AsyncIterator[Control]:
    async with Control(settings, cleanup_scope) as opened:
        yield opened


async def test_one_value_ranges_are_one_value_in_the_chain_and_in_status(control: Control) -> None:
    # croniter 7 alone reads '3-3' and '20-20' as '*': the job would run every minute of every day.
    created = await control.put({"job_id": "monthly", "cron_expr": "3-3 9 20-20 * *", "timezone": "Asia/Seoul"})
    (status,) = await control.status()
    assert status.next_slots[0] == created.first_slot
    seoul = ZoneInfo("Asia/Seoul")
    walls = [slot.astimezone(seoul) for slot in status.next_slots]
    assert len(walls) == 3
    assert all((wall.day, wall.hour, wall.minute) == (20, 9, 3) for wall in walls)
    assert len({(wall.year, wall.month) for wall in walls}) == 3  # one a month


async def test_a_starred_day_field_means_both_days_must_match(control: Control) -> None:
    await control.put({"job_id": "tuesdays", "cron_expr": "1 0 */3 * 2", "timezone": "America/New_York"})
    (status,) = await control.status()
    new_york = ZoneInfo("America/New_York")
    walls = [slot.astimezone(new_york) for slot in status.next_slots]
    assert len(walls) == 3
    assert all(wall.strftime("%a") == "Tue" and wall.day % 3 == 1 and wall.hour == 0 for wall in walls), walls


async def test_a_step_after_a_single_value_is_refused_naming_the_field(control: Control) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        await control.put({"job_id": "odd", "cron_expr": "5/15 * * * *"})
    assert caught.value.fields == ("cron_expr",)
    assert "minute field '5/15'" in str(caught.value)
    assert "such as '5-59/15'" in str(caught.value)
    assert kind_of(caught.value) is ErrorKind.INVALID
    with pytest.raises(UnknownJob):
        await control.job("odd")
