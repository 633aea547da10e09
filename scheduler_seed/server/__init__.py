"""The control plane over HTTP: `python -m scheduler_seed serve` (DESIGN section 12).

An API (FastAPI), an Admin web UI and the Alertmanager webhook, all acting through `shared.control` over one
PostgreSQL pool and one robust RabbitMQ connection. It is a control plane, not a scheduler: stopping it stops no job
and no chain. `create_app` (`scheduler_seed.server.app`) builds the application; `serve` is the CLI verb that runs
it on uvicorn. This package imports nothing by itself, so the other CLI verbs do not pay for loading FastAPI.
"""
