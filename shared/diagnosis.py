"""What `doctor` concludes from what it found: one `Finding` per check, from plain facts. Pure code; the
facts are gathered by `shared.control.doctor`.

The checks are what the safety of the design rests on: a broker that dead-letters at-least-once (RabbitMQ 3.10
or later, with the `quorum_queue` and `stream_queue` feature flags), every chain queue present with the arguments
this code declares and never expiring as a whole, quorum work queues without a delivery limit that would drop
a requeued chain message, a number of queues the broker is meant to carry, per-message TTL that expires in a
consumer-less queue, clocks that agree, and a schema at its newest migration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MIN_VERSION = (3, 10)
NEEDED_FLAGS = ("quorum_queue", "stream_queue")  # 3.10: at-least-once dead-lettering needs stream_queue
SKEW_LIMIT_SEC = 1.0
# RabbitMQ's guidance: every quorum queue is a Raft group with its own process and WAL traffic; keep them to a
# few thousand per node. Classic queues are cheaper, but beyond about a hundred thousand memory and
# recovery time at boot become the issue.
QUORUM_QUEUES_LIMIT = 3_000
QUEUES_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    text: str

    @property
    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check}: {self.text}"


def clean(findings: Iterable[Finding]) -> bool:
    return all(f.ok for f in findings)


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def broker_version(version: str | None) -> Finding:
    if version is None:
        return Finding("broker", False, "RabbitMQ did not say its version")
    if parse_version(version) < MIN_VERSION:
        return Finding("broker", False, f"RabbitMQ {version}: at-least-once dead-lettering needs 3.10 or later")
    return Finding("broker", True, f"RabbitMQ {version}")


def feature_flags(flags: Mapping[str, str] | None, unavailable: str | None) -> Finding:
    """`flags`: name -> state from the management API; `unavailable`: why it could not be read."""
    if flags is None:
        return Finding("feature flags", False, f"not checked: {unavailable}")
    missing = [name for name in NEEDED_FLAGS if flags.get(name) != "enabled"]
    if missing:
        states = ", ".join(f"{name} {flags.get(name, 'unknown')}" for name in missing)
        return Finding(
            "feature flags", False,
            f"{states}: quorum queues with at-least-once dead-lettering need them; "
            f"rabbitmqctl enable_feature_flag {missing[0]}",
        )  # fmt: skip
    return Finding("feature flags", True, ", ".join(f"{name} enabled" for name in NEEDED_FLAGS))


def queue_arguments(
    name: str, what: str, expected: Mapping[str, Any], found: Mapping[str, Any] | None, optional: bool = False
) -> Finding:
    """One chain queue: present (unless `optional`: a retry queue comes with the job's first retry), and with
    exactly the arguments this code declares (no `x-expires`)."""
    check = f"{what} {name}"
    if found is None and optional:
        return Finding(check, True, "not declared yet (declared on the job's first retry or buffered slot)")
    if found is None:
        return Finding(check, False, "missing: seed the scope again (or `seed --reset`) to declare it")
    if "x-expires" in found:
        return Finding(check, False, f"x-expires = {found['x-expires']}: the queue would vanish with its messages")
    differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if differing:
        named = "; ".join(
            f"{k}: expected {expected.get(k, 'none')!r}, found {found.get(k, 'none')!r}" for k in differing
        )
        return Finding(check, False, f"arguments differ ({named}): drain and delete it, then seed again")
    return Finding(check, True, "present, arguments as declared")


def policy_expiry(name: str, what: str, policy: Mapping[str, Any] | None) -> Finding | None:
    """A policy that makes a chain queue expire as a whole (None when nothing to say)."""
    if policy and "expires" in policy:
        return Finding(f"{what} {name}", False, f"a policy sets expires = {policy['expires']}: its messages would go")
    return None


def delivery_limit(name: str, arguments: Mapping[str, Any], policy: Mapping[str, Any] | None) -> Finding:
    """A quorum work queue drops a message requeued more often than its delivery limit (it has no dead-letter
    target): a chain message handed back while PostgreSQL was down would be lost until the watchdog reseeds."""
    limit = arguments.get("x-delivery-limit", (policy or {}).get("delivery-limit"))
    check = f"delivery limit {name}"
    if limit is None:
        return Finding(check, True, "none: a requeued message is never dropped")
    return Finding(
        check, False,
        f"{limit}: a chain message requeued {limit} times (a worker stopping, a database outage) is dropped; "
        "remove the x-delivery-limit argument or delivery-limit policy",
    )  # fmt: skip


def queue_count(total: int | None, quorum: int | None, scope_queues: int) -> Finding:
    if total is None:
        return Finding("queues", True, f"{scope_queues} in this scope (broker totals not read)")
    text = f"{total} on the broker ({quorum or 0} quorum), {scope_queues} in this scope"
    if (quorum or 0) > QUORUM_QUEUES_LIMIT:
        return Finding("queues", False, f"{text}: over {QUORUM_QUEUES_LIMIT} quorum queues per node is past guidance")
    if total > QUEUES_LIMIT:
        return Finding("queues", False, f"{text}: over {QUEUES_LIMIT} queues per node is past guidance")
    return Finding("queues", True, text)


def ttl_canary(queue_type: str, arrived_after_sec: float | None, bound_sec: float, ttl_ms: int) -> Finding:
    check = f"ttl canary {queue_type}"
    if arrived_after_sec is None:
        return Finding(
            check, False,
            f"a message with a {ttl_ms} ms TTL in a consumer-less {queue_type} queue was not dead-lettered within "
            f"{bound_sec:g} s: delay queues of this type would never fire",
        )  # fmt: skip
    return Finding(check, True, f"{ttl_ms} ms TTL expired and dead-lettered after {arrived_after_sec:.2f} s")


def clock_skew(what: str, skew_sec: float | None, resolution_sec: float = 0.0) -> Finding:
    """`skew_sec`: the other clock minus this host's, measured to within `resolution_sec`."""
    check = f"clock {what}"
    if skew_sec is None:
        return Finding(check, False, "not measured")
    allowed = SKEW_LIMIT_SEC + resolution_sec
    text = f"{skew_sec:+.3f} s against this host"
    if abs(skew_sec) > allowed:
        return Finding(check, False, f"{text}: more than {allowed:g} s; run NTP (chrony) on every host")
    return Finding(check, True, text)


def migrations(applied: set[int] | None, shipped: list[int]) -> Finding:
    """`applied`: the versions in scheduler.schema_migrations (None: no schema); `shipped`: this code's."""
    head = max(shipped)
    if applied is None:
        return Finding("migrations", False, f"schema not created (head is {head:04d}): start a worker or seed")
    missing = sorted(set(shipped) - applied)
    if missing:
        named = ", ".join(f"{v:04d}" for v in missing)
        return Finding("migrations", False, f"{named} not applied (head is {head:04d}): start a worker or seed")
    newest = max(applied, default=head)
    if newest > head:
        return Finding("migrations", True, f"at head ({head:04d}); the schema has newer ones (to {newest:04d})")
    return Finding("migrations", True, f"at head ({head:04d})")
