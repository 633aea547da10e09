"""Queues of a test scope that its job rows no longer name (a job deleted by the test, a queue declared by hand),
found through RabbitMQ's management HTTP API so a test's clean-up leaves nothing behind. Best effort: without the
management API the clean-up deletes what the rows name, as before."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
import urllib.request

MANAGEMENT_PORT = 15672


def _queue_names(amqp_url: str) -> list[str]:
    first = amqp_url.split(",")[0]
    url = urllib.parse.urlsplit(first)
    user = urllib.parse.unquote(url.username or "guest")
    password = urllib.parse.unquote(url.password or "guest")
    vhost = urllib.parse.unquote(url.path.lstrip("/")) or "/"
    api = f"http://{url.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}/api/queues/{urllib.parse.quote(vhost, safe='')}"
    request = urllib.request.Request(api + "?columns=name")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return [q["name"] for q in json.load(response)]


async def scope_queues(amqp_url: str, scope: str) -> list[str]:
    """Every queue named `<scope>.…` on the broker, or [] when the management API does not answer."""
    try:
        names = await asyncio.to_thread(_queue_names, amqp_url)
    except (OSError, ValueError):
        return []
    return [name for name in names if name.startswith(f"{scope}.")]
