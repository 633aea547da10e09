"""`python -m tests.bench.profile_summary FILE`: where a worker's CPU went, from py-spy's raw (collapsed) output.

Prints the share of samples by area (logging, pydantic, asyncpg, aio-pika/aiormq, prometheus, JSON, the event
loop, ...) and the functions with the most inclusive and self samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

AREAS = (
    ("logging (structlog + stdlib)", re.compile(r"structlog/|logging/|shared/logs\.py")),
    ("pydantic", re.compile(r"pydantic")),
    ("prometheus_client", re.compile(r"prometheus_client/")),
    ("asyncpg", re.compile(r"asyncpg/")),
    ("aio-pika / aiormq / pamqp", re.compile(r"aio_pika/|aiormq/|pamqp/")),
    ("json", re.compile(r"json/")),
    ("uuid / hashlib / datetime", re.compile(r"uuid\.py|hashlib|_strptime|datetime")),
)
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def frames(stack: str) -> list[str]:
    return [_FRAME_LINE.sub(")", frame) for frame in stack.split(";")]


def area_of(stack: list[str]) -> str:
    """The area of the innermost frame that belongs to one (so pydantic called from logging counts as logging's)."""
    for frame in stack:
        for name, pattern in AREAS:
            if pattern.search(frame):
                return name
    leaf = stack[-1] if stack else ""
    if "asyncio/" in leaf or "selectors" in leaf:
        return "event loop"
    return "framework and other"


def summarize(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        stack = frames(match["stack"])
        total += count
        for frame in set(stack):
            inclusive[frame] += count
        own[stack[-1]] += count
        areas[area_of(stack)] += count
    out = [f"{total} samples", "", "by area (outermost library frame):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    out += ["", "inclusive:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.file, args.top))


if __name__ == "__main__":
    main()
