"""The control plane over HTTP: `python -m scheduler_seed serve` (DESIGN section 12).

An API (FastAPI), an Admin web UI and the Alertmanager webhook, all acting through `shared.control` over one
PostgreSQL pool and one robust RabbitMQ connection. It is a control plane, not a scheduler: stopping it stops no job
and no chain. `create_app` builds the application; `serve` is the CLI verb that runs it on uvicorn.
"""

from scheduler_seed.server.app import create_app

__all__ = ["create_app"]
