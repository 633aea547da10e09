"""Queues of a test scope that its job rows no longer name (a job deleted by the test, a queue declared by hand),
found through RabbitMQ's management HTTP API (the doctor's client) so a test's clean-up leaves nothing behind. Best
effort: without the management API the clean-up deletes what the rows name, as before."""

from __future__ import annotations

import urllib.parse

from shared.control.doctor import Management, ManagementUnavailable


async def scope_queues(amqp_url: str, scope: str) -> list[str]:
    """Every queue named `<scope>.…` on the broker, or [] when the management API does not answer."""
    management = Management.for_amqp_url(amqp_url)
    try:
        queues = await management.get(f"/api/queues/{urllib.parse.quote(management.vhost, safe='')}?columns=name")
    except ManagementUnavailable:
        return []
    return [q["name"] for q in queues or [] if q["name"].startswith(f"{scope}.")]
