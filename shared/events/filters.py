"""CEL filters on event payloads, pure: compiled once at load (a bad expression is refused there), evaluated per
event with the payload bound as `event`. cel-python (`celpy`) is the implementation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError

MAX_FILTER_LEN = 2000


class Verdict(StrEnum):
    PASS = "pass"  # the filter is true (or there is none)
    FILTERED = "filtered"  # false: the event is not for this job
    ERROR = "error"  # the expression failed on this payload (a missing field, a wrong type, not a bool)


@dataclass(frozen=True, slots=True)
class FilterResult:
    verdict: Verdict
    detail: str = ""


class FilterError(ValueError):
    """A CEL expression that does not compile."""


@lru_cache(maxsize=1024)
def compile_filter(expression: str) -> Any:
    """The runnable program of `expression`, or FilterError with the parser's one-line reason."""
    if not expression.strip() or len(expression) > MAX_FILTER_LEN:
        raise FilterError(f"a filter is 1-{MAX_FILTER_LEN} characters")
    env = celpy.Environment()
    try:
        return env.program(env.compile(expression))
    except CELParseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise FilterError(f"not a CEL expression: {first}") from None
    except Exception as exc:  # the library's other refusals (unknown function at plan time, ...)
        raise FilterError(f"not a CEL expression: {type(exc).__name__}: {str(exc)[:200]}") from None


def evaluate(expression: str | None, payload: dict[str, Any]) -> FilterResult:
    """The verdict of `expression` on `payload` (no expression: PASS). Never raises."""
    if expression is None:
        return FilterResult(Verdict.PASS)
    try:
        value = compile_filter(expression).evaluate({"event": json_to_cel(payload)})
    except Exception as exc:  # CELEvalError and whatever a payload makes the evaluator raise
        return FilterResult(Verdict.ERROR, _one_line(exc))
    if isinstance(value, Exception):
        return FilterResult(Verdict.ERROR, _one_line(value))
    if not isinstance(value, bool | celtypes.BoolType):  # an int (celpy's IntType is one too) is no verdict
        return FilterResult(Verdict.ERROR, f"filter gave {type(value).__name__}, not a bool")
    return FilterResult(Verdict.PASS if value else Verdict.FILTERED)


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return f"{type(exc).__name__}: {text}"[:300]
