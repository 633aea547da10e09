"""Topics and AMQP topic patterns, pure. A topic is dot-separated words; a pattern's word may be `*` (exactly one
word) or `#` (zero or more words). Seed 003 writes `**` for "any number of words": it is accepted and stored as `#`."""

from __future__ import annotations

import re
from functools import lru_cache

MAX_TOPIC_LEN = 255  # AMQP routing keys are short strings (255 bytes)
_WORD = re.compile(r"^[A-Za-z0-9_-]+$")


def check_topic(topic: str) -> str:
    """A concrete topic (no wildcard): non-empty words of letters, digits, `_` and `-`, joined by dots."""
    if not topic or len(topic.encode()) > MAX_TOPIC_LEN:
        raise ValueError(f"topic must be 1-{MAX_TOPIC_LEN} bytes")
    for word in topic.split("."):
        if not _WORD.match(word):
            raise ValueError(f"topic {topic!r}: word {word!r} is not letters, digits, '_' or '-'")
    return topic


def normalize_pattern(pattern: str) -> str:
    """A subscription pattern as RabbitMQ takes it (`**` -> `#`), or ValueError saying what is wrong."""
    if not isinstance(pattern, str) or not pattern or len(pattern.encode()) > MAX_TOPIC_LEN:
        raise ValueError(f"a pattern is 1-{MAX_TOPIC_LEN} bytes")
    words = ["#" if word == "**" else word for word in pattern.split(".")]
    for word in words:
        if word not in ("*", "#") and not _WORD.match(word):
            raise ValueError(
                f"pattern {pattern!r}: word {word!r} must be '*', '#', '**' or letters, digits, '_' and '-'"
            )
    return ".".join(words)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("."))


def matches(pattern: str, topic: str) -> bool:
    """Whether RabbitMQ's topic exchange routes `topic` to a binding with `pattern` (already normalized)."""
    return _match(_compiled(pattern), tuple(topic.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def outcome_topic(job_id: str, status: str) -> str:
    """The topic a run's outcome is published under: `job.<job_id>.<status>`."""
    return f"job.{job_id}.{status}"


def success_pattern(job_id: str) -> str:
    """What an `on_success` entry of job `job_id` subscribes the downstream job to."""
    return outcome_topic(job_id, "succeeded")
