"""The exception hierarchy of the framework: one root, one subclass per kind of failure an operator can act on."""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error the framework raises on purpose."""


class ConfigError(SchedulerError):
    """A setting, job definition or schedule is invalid. The message says which field and why."""


class TopologyMismatch(SchedulerError):
    """A queue or exchange exists in RabbitMQ with arguments other than the ones this code declares."""

    def __init__(self, name: str, argument: str, detail: str) -> None:
        self.name = name
        self.argument = argument
        self.detail = detail
        super().__init__(
            f"queue or exchange {name!r} exists with a different {argument!r} ({detail}); "
            f"RabbitMQ arguments are immutable: drain and delete {name!r} "
            "(rabbitmqctl delete_queue, or the management UI) and start again to redeclare it"
        )


class QueueTypeMismatch(TopologyMismatch):
    """A queue exists as one type (classic or quorum) and this code declares it as the other."""

    def __init__(self, name: str, declared: str, existing: str) -> None:
        self.declared = declared
        self.existing = existing
        scope = name.split(".", 1)[0]
        SchedulerError.__init__(
            self,
            f"queue {name!r} exists as a {existing} queue but its jobs declare {declared} (queue_type, or "
            f"SCHEDULER_QUEUE_TYPE for jobs that set none); a queue's type cannot change in place: run "
            f"`python -m scheduler_seed migrate-queues --scope {scope} --to {declared}` to move the scope's queues, "
            f"or declare the jobs as {existing}",
        )
        self.name = name
        self.argument = "x-queue-type"
        self.detail = f"declared {declared}, existing {existing}"


class DependencyUnavailable(SchedulerError):
    """RabbitMQ or PostgreSQL cannot be reached (after retries where retrying applies)."""


class UnknownJob(SchedulerError):
    """A job id that has no row in scheduler.jobs for the scope."""

    def __init__(self, scope: str, job_id: str) -> None:
        self.scope = scope
        self.job_id = job_id
        super().__init__(f"unknown job {job_id!r} in scope {scope!r}")
