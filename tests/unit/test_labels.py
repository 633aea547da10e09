"""Labels and label selectors (pure), the preview's slot difference (pure), and labels under the seed's drift rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.control import drift
from shared.control.preview import diff_slots
from shared.definitions import load_definition
from shared.errors import ConfigError
from shared.labels import SelectorError, parse_selector, validate_labels

BILLING = {"team": "billing", "tier": "batch"}


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("team=billing", BILLING, True),
        ("team==billing", BILLING, True),
        ("team=ops", BILLING, False),
        ("team!=ops", BILLING, True),
        ("team!=billing", BILLING, False),
        ("owner!=x", BILLING, True),  # absent counts as "not x", as in Kubernetes
        ("team", BILLING, True),
        ("owner", BILLING, False),
        ("!owner", BILLING, True),
        ("!team", BILLING, False),
        ("team=billing,tier=batch", BILLING, True),
        ("team=billing, tier!=batch", BILLING, False),
        ("team=", {"team": ""}, True),
        ("team=billing", {}, False),
    ],
)
def test_selector_matches(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("team=billing,", "empty term"),
        ("team=billing,,tier=x", "empty term"),
        ("=billing", "label key ''"),
        ("team=bill ing", "label value 'bill ing'"),
        ("team in (a,b)", "team in (a"),
        ("team=-x", "label value '-x'"),
        ("!", "label key ''"),
        ("a" * 64 + "=x", "label key"),
    ],
)
def test_bad_selector_is_one_clear_error(text: str, names: str) -> None:
    with pytest.raises(SelectorError, match="selector") as caught:
        parse_selector(text)
    assert names in str(caught.value)
    assert "\n" not in str(caught.value)


def test_selector_prints_back_as_parsed() -> None:
    assert str(parse_selector("team==billing, !owner,tier!=web,zone")) == "team=billing,!owner,tier!=web,zone"


def test_labels_in_a_definition() -> None:
    job = load_definition({"job_id": "j", "interval_seconds": 60, "labels": {"tier": "batch", "team": "billing"}})
    assert job.labels == {"team": "billing", "tier": "batch"}
    assert load_definition({"job_id": "j", "interval_seconds": 60}).labels == {}
    with pytest.raises(ConfigError, match="labels"):
        load_definition({"job_id": "j", "interval_seconds": 60, "labels": {"team": 3}})
    with pytest.raises(ConfigError, match="labels"):
        load_definition({"job_id": "j", "interval_seconds": 60, "labels": ["team"]})
    with pytest.raises(ValueError, match="at most 32"):
        validate_labels({f"k{i}": "v" for i in range(33)})


def test_labels_follow_the_seed_drift_rules() -> None:
    seeded = {"labels": {"team": "billing"}, "timeout_sec": 60.0}
    # edited in the file only: applied
    merged = drift.merge({"labels": {"team": "ops"}, "timeout_sec": 60.0}, seeded, seeded)
    assert merged.values["labels"] == {"team": "ops"} and merged.applied == ("labels",)
    # changed at runtime (`set --labels`): kept, reported as drift; `reset` puts the file's back
    live = {"labels": {"team": "payments"}, "timeout_sec": 60.0}
    merged = drift.merge(seeded, live, seeded)
    assert merged.values["labels"] == {"team": "payments"} and [d.field for d in merged.drift] == ["labels"]
    merged = drift.merge(seeded, live, seeded, reset=True)
    assert merged.values["labels"] == {"team": "billing"} and [d.field for d in merged.reset] == ["labels"]
    # labels are not part of the chain; the daylight-saving rule is
    assert not drift.chain_affected(seeded, live)
    assert drift.chain_affected({"dst_gap": None}, {"dst_gap": "skip"})


T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def hours(*values: float) -> list[datetime]:
    return [T0 + timedelta(hours=v) for v in values]


def test_diff_slots_compares_up_to_the_shorter_span() -> None:
    # hourly -> every 30 min: 4 slots each; the new ones end at 2 h, so hourly slots at 3 h and 4 h are not "gone"
    found = diff_slots(hours(1, 2, 3, 4), hours(0.5, 1, 1.5, 2))
    assert found.horizon == T0 + timedelta(hours=2)
    assert found.appear == hours(0.5, 1.5)
    assert found.disappear == []
    assert not found.unchanged
    # a shifted minute: everything moves
    found = diff_slots(hours(1, 2, 3), hours(1.25, 2.25, 3.25))
    assert (found.appear, found.disappear) == (hours(1.25, 2.25), hours(1, 2, 3))
    assert diff_slots(hours(1, 2), hours(1, 2)).unchanged
    # paused (no slots) -> running: every new slot appears; and the other way round
    assert diff_slots([], hours(1, 2)).appear == hours(1, 2)
    assert diff_slots(hours(1, 2), []).disappear == hours(1, 2)
    assert diff_slots([], []).unchanged
