"""Operator input as typed values: JSON objects, durations, instants. Pure; every error is a ValueError whose
message says what was expected."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

from shared.control.instants import instant
from shared.names import check_ident

__all__ = [
    "argtype",
    "instant",
    "json_object",
    "json_text",
    "json_value",
    "positive_int",
    "queue_name",
    "scope",
    "seconds",
    "whole_seconds",
]

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")


def argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser of this module as an argparse `type=`, keeping its message in the usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (params, a message body for a job)."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object like '{{\"key\": 1}}', got {type(value).__name__}")
    return value


def json_value(text: str) -> Any:
    """Any JSON value; the error names the line and column of the first problem."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None


def seconds(text: str) -> float:
    """A duration: plain seconds (`90`, `0.5`) or with a unit (`90s`, `5m`, `2h`, `1d`)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use seconds (90) or a unit (90s, 5m, 2h, 1d)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def whole_seconds(text: str) -> int:
    """A duration that must be a whole, positive number of seconds (an interval)."""
    value = seconds(text)
    if value != int(value) or value < 1:
        raise ValueError(f"{text!r} must be a whole number of seconds, at least 1")
    return int(value)


def positive_int(text: str) -> int:
    """A whole number >= 1 (a --limit)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1")
    return int(text)


def json_text(text: str) -> str:
    """JSON kept as the operator wrote it (a raw message body), once it is known to parse."""
    json_value(text)
    return text


def scope(text: str) -> str:
    """A scope slug (`mock`, `real`, ...)."""
    return check_ident(text, "scope")


def queue_name(text: str) -> str:
    """A work queue's short name (as in a job's `queue`)."""
    return check_ident(text, "queue name")
