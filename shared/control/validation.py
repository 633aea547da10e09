"""Job definitions checked at the door of the control layer: every problem named by its field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.control.errors import InvalidDefinition
from shared.definitions import JobDefinition
from shared.errors import ConfigError
from shared.jobsfile import load_jobs_file


def definition(data: Mapping[str, Any], source: str = "") -> JobDefinition:
    """Validate one job definition; InvalidDefinition with one line per problem and the fields at fault."""
    job = data.get("job_id", "?")
    try:
        return JobDefinition.model_validate(dict(data))
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        fields, problems = [], []
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"]) or "definition"
            fields.append(field)
            problems.append(f"{where}job {job!r}: {field}: {error['msg'].removeprefix('Value error, ')}")
        raise InvalidDefinition("\n".join(problems), fields) from None


def jobs_file(path: Path) -> list[JobDefinition]:
    """Every job of a jobs file, validated, with every `on_success` name declared in the same file."""
    try:
        definitions = load_jobs_file(path)
    except ConfigError as exc:  # a problem of the file as a whole names no field; a job's names its own
        text = str(exc)
        raise InvalidDefinition(text, [f for line in text.splitlines() if (f := _field_of(line))]) from None
    check_references(definitions, path)
    return definitions


def _field_of(line: str) -> str:
    """The field a jobs-file problem line names (`path: job 'x': field: why`), or ''."""
    parts = line.split(": ")
    return parts[2] if len(parts) > 3 and parts[1].startswith("job ") else ""


def check_references(definitions: list[JobDefinition], path: Path) -> None:
    """Every on_success job must be in the same file: a dangling name would only fail at run time."""
    known = {d.job_id for d in definitions}
    for each in definitions:
        for downstream in each.on_success:
            if downstream not in known:
                raise InvalidDefinition(
                    f"{path}: job {each.job_id!r}: on_success names {downstream!r}, not in the file", ["on_success"]
                )
