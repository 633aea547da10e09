"""Instants as operators write them: `now`, a time before now (`now-2h`), or ISO 8601. Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$")


def instant(text: str, now: datetime, timezone: str) -> datetime:
    """`now`, a time before now (`now-2h`, `now-30m`; `-2h` when written `--from=-2h`), or ISO 8601.

    An ISO time without an offset is read in `timezone` (the job's), so `2025-06-02T08:00` means 08:00 where
    the job's cron runs. Returns UTC; ValueError saying which forms are accepted."""
    stripped = text.strip()
    if stripped.lower() == "now":
        return now
    relative = _RELATIVE.match(stripped.lower())
    if relative is not None:
        return now - timedelta(seconds=float(relative[1]) * _UNITS[relative[2]])
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2025-06-02T08:00, 2025-06-02T08:00+09:00), 'now' or 'now-2h'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)


_AHEAD = re.compile(r"^(?:now)?\s*\+?\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$")


def later(text: str, now: datetime, timezone: str) -> datetime:
    """A time after now, for `pause --until`: a duration ahead (`2h`, `+30m`, `now+1d`) or ISO 8601 (without an
    offset, in `timezone`). Returns UTC; ValueError saying which forms are accepted."""
    ahead = _AHEAD.match(text.strip().lower())
    if ahead is not None:
        return now + timedelta(seconds=float(ahead[1]) * _UNITS[ahead[2]])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration ahead (30m, 2h, now+1d) or ISO 8601 (2025-06-02T08:00+09:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)
