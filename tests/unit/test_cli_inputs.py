"""What an operator types (durations, times, JSON) and what the CLI prints (tables, spans): pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_seed import inputs, render, seed
from scheduler_seed.errors import UsageError
from shared.definitions import load_definition

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"), [("90", 90), ("0.5", 0.5), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400)]
)
def test_durations_take_seconds_or_a_unit(text: str, expected: float) -> None:
    assert inputs.seconds(text) == expected


@pytest.mark.parametrize("text", ["", "5 minutes", "-3", "1w", "abc"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        inputs.seconds(text)


def test_an_interval_is_whole_seconds() -> None:
    assert inputs.whole_seconds("2m") == 120
    with pytest.raises(ValueError, match="whole number"):
        inputs.whole_seconds("1.5")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-2h", NOW - timedelta(hours=2)),
        ("-30m", NOW - timedelta(minutes=30)),
        ("2026-03-02T08:00", datetime(2026, 3, 1, 23, 0, tzinfo=UTC)),  # read in the job's zone, Asia/Seoul
        ("2026-03-02T08:00Z", datetime(2026, 3, 2, 8, 0, tzinfo=UTC)),
        ("2026-03-02T08:00+01:00", datetime(2026, 3, 2, 7, 0, tzinfo=UTC)),
    ],
)
def test_instants_are_iso_now_or_before_now(text: str, expected: datetime) -> None:
    assert inputs.instant(text, NOW, "Asia/Seoul") == expected


def test_a_bad_instant_lists_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        inputs.instant("yesterday", NOW, "UTC")


def test_params_must_be_a_json_object_and_errors_point_at_the_column() -> None:
    assert inputs.json_object('{"sleep_sec": 1}') == {"sleep_sec": 1}
    with pytest.raises(ValueError, match="JSON object"):
        inputs.json_object("[1]")
    with pytest.raises(ValueError, match="line 1 column 2"):
        inputs.json_object("{")


def test_a_raw_body_is_kept_as_written() -> None:
    assert inputs.json_text('{"job_id":  "x"}') == '{"job_id":  "x"}'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (3.25, "3.2s"), (42, "42s"), (185, "3m05s"), (7800, "2h10m"), (360000, "4d4h")],
)
def test_spans_are_short(seconds: float, text: str) -> None:
    assert render.span(seconds) == text


def test_tables_pad_columns_and_show_missing_values_as_dash() -> None:
    text = render.table(["JOB", "LAST"], [["buy-scanner", None], ["x", "multi\nline"]])
    assert text.splitlines() == ["JOB          LAST", "buy-scanner  -", "x            multi line"]


def test_relative_times() -> None:
    assert render.ago(NOW - timedelta(seconds=90), NOW) == "1m30s ago"
    assert render.upcoming([NOW + timedelta(seconds=5), NOW + timedelta(seconds=65)], NOW) == "in 5.0s, 1m05s"
    assert render.ago(None, NOW) == "never"


def test_seed_refuses_an_on_success_job_that_is_not_in_the_file() -> None:
    first = load_definition({"job_id": "step1", "interval_seconds": 5, "on_success": ["step2"]})
    with pytest.raises(UsageError, match="'step2'"):
        seed.check_references([first], Path("jobs.toml"))
    second = load_definition({"job_id": "step2", "reschedule_mode": "none"})
    seed.check_references([first, second], Path("jobs.toml"))
