"""The queue type of a work queue (classic or quorum), decided once for the seeder, the worker and the CLI. Pure code.

The type belongs to a work queue and to the delay and retry queues feeding it (a quorum delay queue dead-letters
at-least-once only into a queue that confirms). A job sets `queue_type`, or takes the scope's default
(`SCHEDULER_QUEUE_TYPE`, classic unless set); every job of one work queue must end up with the same type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from shared.definitions import JobDefinition, QueueType
from shared.errors import ConfigError
from shared.topology import QueueType as TypeName

MIGRATE_HINT = "python -m scheduler_seed migrate-queues --scope {scope} --to {to}"


@dataclass(frozen=True, slots=True)
class Member:
    """One job as far as queue types go: which work queue it feeds and with which type."""

    job_id: str
    queue: str
    queue_type: str


def with_default(definitions: Iterable[JobDefinition], default: str) -> list[JobDefinition]:
    """Each definition with the scope's default type where it does not set `queue_type` itself."""
    resolved = []
    for definition in definitions:
        if "queue_type" not in definition.model_fields_set:
            definition = definition.model_copy(update={"queue_type": QueueType(default)})
        resolved.append(definition)
    return resolved


def disagreements(members: Iterable[Member]) -> dict[str, dict[str, list[str]]]:
    """Per work queue whose jobs disagree: type -> the job ids declaring it (sorted)."""
    by_queue: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for member in members:
        by_queue[member.queue][member.queue_type].append(member.job_id)
    return {
        queue: {kind: sorted(jobs) for kind, jobs in sorted(kinds.items())}
        for queue, kinds in sorted(by_queue.items())
        if len(kinds) > 1
    }


def check_agreement(members: Iterable[Member], where: str = "") -> None:
    """ConfigError naming every work queue whose jobs declare different queue types, and the jobs of each."""
    found = disagreements(members)
    if not found:
        return
    prefix = f"{where}: " if where else ""
    lines = []
    for queue, kinds in found.items():
        named = "; ".join(f"{kind}: {', '.join(map(repr, jobs))}" for kind, jobs in kinds.items())
        lines.append(
            f"{prefix}work queue {queue!r}: its jobs declare different queue types ({named}); "
            "every job of one work queue must have the same queue_type (or none, for SCHEDULER_QUEUE_TYPE)"
        )
    raise ConfigError("\n".join(lines))


def for_queues(queues: Iterable[str], members: Iterable[Member], default: str) -> dict[str, TypeName]:
    """The type of each work queue in `queues`: its jobs' (which must agree), or `default` for a queue no job uses."""
    members = list(members)
    check_agreement(members)
    of_queue = {member.queue: member.queue_type for member in members}
    return {queue: cast(TypeName, of_queue.get(queue, default)) for queue in queues}


def change_refusal(scope: str, queue: str, existing: str, wanted: str, jobs: Iterable[str]) -> str:
    """The one line refusing a definition that would change a live work queue's type in place."""
    named = ", ".join(map(repr, sorted(jobs)))
    return (
        f"work queue {queue!r} (jobs {named}) is {existing}; the definition makes it {wanted}, and RabbitMQ cannot "
        f"change a queue's type in place: run `{MIGRATE_HINT.format(scope=scope, to=wanted)} --queue {queue}` "
        "(it drains, redeclares and reseeds the chains), then seed again"
    )
