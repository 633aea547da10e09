"""Output for people: plain-text tables, short times and durations. Pure: strings in, strings out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; None renders as '-'."""
    cells = [[cell_text(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    return " ".join(str(value).split())  # one line per row, whatever the value holds


def when(instant: datetime | None) -> str:
    """UTC, to the second: `2025-06-02 23:00:05Z`."""
    if instant is None:
        return "-"
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    """A short human duration: `850ms`, `12s`, `3m05s`, `2h10m`, `4d3h`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, sec = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def ago(instant: datetime | None, now: datetime) -> str:
    if instant is None:
        return "never"
    delta = (now - instant).total_seconds()
    return f"{span(delta)} ago" if delta >= 0 else f"in {span(-delta)}"


def upcoming(instants: Sequence[datetime], now: datetime) -> str:
    """`in 3.0s, 8.0s, 13s`: how far away each instant is."""
    if not instants:
        return "-"
    return "in " + ", ".join(span(max(0.0, (i - now).total_seconds())) for i in instants)


def millis(value: int | None) -> str:
    return "-" if value is None else span(value / 1000)


def shorten(text: str | None, limit: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def iso(instant: datetime | None) -> str | None:
    """For --json output."""
    return None if instant is None else instant.astimezone(UTC).isoformat()
