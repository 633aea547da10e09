"""Seeding over a live definition (`shared.control.drift`), the `set --run-on-startup` parser and the warning
for unknown SCHEDULER_* variables: pure code, no servers."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler_seed.changes import boolean
from shared.control.drift import chain_affected, groups, merge
from shared.control.results import FieldDrift
from shared.definitions import JobDefinition
from shared.settings import Settings, unknown_scheduler_variables, unknown_variables_line
from shared.store.jobs import DEFINITION_COLUMNS, declared

BASE = declared(JobDefinition(job_id="tick", cron_expr="1 * * * *", timeout_sec=60))


def edit(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.mark.parametrize(
    ("name", "seeded", "live", "file", "values", "applied", "drift"),
    [
        ("nothing_changed", BASE, BASE, BASE, {}, (), ()),
        ("file_edit_without_runtime_change_takes_the_file", BASE, BASE, edit(timeout_sec=90), {"timeout_sec": 90},
         ("timeout_sec",), ()),
        ("runtime_change_stays_and_is_drift", BASE, edit(timeout_sec=30), BASE, {"timeout_sec": 30}, (),
         (FieldDrift("timeout_sec", 60, 30, False),)),
        ("both_changed_the_live_value_stays_and_says_so", BASE, edit(timeout_sec=30), edit(timeout_sec=90),
         {"timeout_sec": 30}, (), (FieldDrift("timeout_sec", 90, 30, True),)),
        ("both_changed_to_the_same_value_is_no_drift", BASE, edit(timeout_sec=30), edit(timeout_sec=30),
         {"timeout_sec": 30}, (), ()),
        ("a_pause_stays", BASE, edit(enabled=False), BASE, {"enabled": False}, (),
         (FieldDrift("enabled", True, False, False),)),
        ("file_and_runtime_change_different_fields_both_apply", BASE, edit(enabled=False),
         edit(description="new words"), {"enabled": False, "description": "new words"}, ("description",),
         (FieldDrift("enabled", True, False, False),)),
        ("no_seed_recorded_every_difference_counts_as_runtime", None, edit(timeout_sec=30), edit(description="x"),
         {"timeout_sec": 30, "description": ""}, (),
         (FieldDrift("description", "x", "", False), FieldDrift("timeout_sec", 60, 30, False))),
    ],
)  # fmt: skip
def test_merge_keeps_runtime_changes_and_applies_file_edits(
    name: str,
    seeded: dict[str, Any] | None,
    live: dict[str, Any],
    file: dict[str, Any],
    values: dict[str, Any],
    applied: tuple[str, ...],
    drift: tuple[FieldDrift, ...],
) -> None:
    merged = merge(file, live, seeded)
    assert merged.values == {**file, **values}, name
    assert merged.applied == applied, name
    assert sorted(merged.drift, key=lambda d: d.field) == list(drift), name
    assert merged.reset == (), name


def test_reset_gives_every_field_the_files_value_and_reports_what_it_undid() -> None:
    live = edit(enabled=False, timeout_sec=30)
    file = edit(timeout_sec=90, description="new words")
    merged = merge(file, live, BASE, reset=True)
    assert merged.values == file
    assert merged.drift == ()
    assert merged.applied == ("description",)  # a plain file edit: applied, as without reset
    assert sorted(merged.reset, key=lambda d: d.field) == [
        FieldDrift("enabled", True, False, False),
        FieldDrift("timeout_sec", 90, 30, True),
    ]


def test_a_schedule_moves_as_one_so_a_runtime_switch_to_an_interval_never_meets_a_file_cron() -> None:
    live = edit(cron_expr=None, interval_seconds=90)  # `set --interval 90` at runtime
    file = edit(cron_expr="2 * * * *")  # the file moved the cron
    merged = merge(file, live, BASE)
    assert (merged.values["cron_expr"], merged.values["interval_seconds"]) == (None, 90)
    JobDefinition.model_validate({"job_id": "tick", **merged.values})  # a valid definition
    assert {d.field for d in merged.drift} == {"cron_expr", "interval_seconds"}

    untouched = merge(file, BASE, BASE)  # nobody changed the schedule at runtime: the file's cron applies
    assert (untouched.values["cron_expr"], untouched.values["interval_seconds"]) == ("2 * * * *", None)


def test_groups_cover_every_column_once() -> None:
    parts = groups(list(DEFINITION_COLUMNS))
    flat = [field for group in parts for field in group]
    assert sorted(flat) == sorted(DEFINITION_COLUMNS) and len(flat) == len(set(flat))
    assert ("cron_expr", "interval_seconds", "reschedule_mode") in parts


@pytest.mark.parametrize(
    ("changes", "affected"),
    [
        ({"timeout_sec": 1.0}, False),
        ({"default_params": {"a": 1}}, False),
        ({"overlap": "buffer_one"}, False),
        ({"run_on_startup": True}, False),
        ({"cron_expr": "2 * * * *"}, True),
        ({"timezone": "Asia/Seoul"}, True),
        ({"enabled": False}, True),
        ({"jitter_sec": 3.0}, True),
        ({"queue": "other"}, True),
    ],
)
def test_only_what_the_chain_depends_on_replaces_it(changes: dict[str, Any], affected: bool) -> None:
    assert chain_affected(BASE, edit(**changes)) is affected


@pytest.mark.parametrize(("text", "value"), [("true", True), ("Yes", True), ("1", True), ("off", False)])
def test_set_reads_a_boolean(text: str, value: bool) -> None:
    assert boolean(text) is value


def test_set_refuses_a_word_that_is_not_a_boolean() -> None:
    with pytest.raises(ValueError, match="expected true or false, got 'maybe'"):
        boolean("maybe")


def test_unknown_scheduler_variables_are_named_with_the_closest_known_name() -> None:
    environ = {
        "SCHEDULER_SCOPE": "real",
        "SCHEDULER_ACTOR": "deploy",
        "SCHEDULER_RUN_IMMEDIATELY": "true",
        "SCHEDULER_RUN_IMEDIATELY": "true",
        "SCHEDULER_WIDGETS": "3",
        "PATH": "/bin",
    }
    assert unknown_scheduler_variables(environ) == [
        ("SCHEDULER_RUN_IMEDIATELY", "SCHEDULER_RUN_IMMEDIATELY"),
        ("SCHEDULER_WIDGETS", None),
    ]
    assert unknown_variables_line(environ) == (
        "unknown environment variables ignored: SCHEDULER_RUN_IMEDIATELY (did you mean SCHEDULER_RUN_IMMEDIATELY?), "
        "SCHEDULER_WIDGETS"
    )
    assert unknown_variables_line({"SCHEDULER_SCOPE": "real"}) is None


def test_run_immediately_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_RUN_IMMEDIATELY", raising=False)
    assert Settings().scheduler_run_immediately is False
    monkeypatch.setenv("SCHEDULER_RUN_IMMEDIATELY", "true")
    assert Settings().scheduler_run_immediately is True
