"""`python -m scheduler_seed serve [--scope S] [--host H] [--port P]`: the control plane on uvicorn.

Port 9095 for scope `mock`, 8095 otherwise (the seed's Scheduler API ports). Without `CONTROL_API_TOKENS` it binds
only to a loopback address and refuses any other with one line. Logs are JSON lines on stdout, as the workers'.
It runs on the event loop the CLI runs on (SCHEDULER_EVENT_LOOP), inside which uvicorn serves: uvicorn's own `loop`
option is for `uvicorn.run`, which makes a loop of its own.
"""

from __future__ import annotations

import argparse
import logging

import structlog

from scheduler_seed.server.auth import check_bind, parse_tokens
from scheduler_seed.server.config import ServerSettings, default_port
from scheduler_seed.server.notify import Notifier
from shared import event_loop, logs
from shared.control import Control
from shared.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the HTTP API and the Admin UI",
        description="The control plane over HTTP: the API (/docs), the Admin UI (/), the Alertmanager webhook "
        "(/alerts). Stopping it stops no job. Tokens: CONTROL_API_TOKENS=name:role:token,... (roles viewer, "
        "operator); without tokens it binds only to loopback.",
    )
    p.add_argument("--host", help="bind address (default CONTROL_API_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default CONTROL_API_PORT, else 9095 for scope mock, 8095 otherwise)")
    p.set_defaults(execute=execute)


def notifier_for(settings: Settings, scope: str) -> Notifier | None:
    """Where `POST /alerts` lines go: the Telegram bot when TELEGRAM_BOT_TOKEN is set (it then also answers the
    allowed chats' commands), else nowhere. A bot misconfigured (a token without an allowed chat, ...) stops the
    server with one line (ConfigError, exit 2)."""
    from scheduler_seed.server import telegram  # here: the other verbs import this module and need no aiogram

    return telegram.from_env(settings, scope)


async def execute(args: argparse.Namespace, control: Control) -> int:
    """Serve until interrupted (SIGINT/SIGTERM: uvicorn stops gracefully). The control layer's own session is
    not used: the server keeps a pool and a robust connection of its own."""
    settings = control.settings or Settings()
    server = ServerSettings()
    tokens = parse_tokens(server.control_api_tokens.get_secret_value())  # ConfigError: one line, exit 2
    host = args.host or server.control_api_host
    port = args.port or server.control_api_port or default_port(control.scope)
    check_bind(host, tokens)
    # imported here, not at the top: every other CLI verb imports this module and need not load FastAPI
    import uvicorn

    from scheduler_seed.server.app import create_app

    for handler in list(logging.getLogger().handlers):  # the CLI's own stderr handler: the server logs JSON lines
        logging.getLogger().removeHandler(handler)
    logs.configure(settings.log_level, loki_url=settings.loki_url, service="scheduler-api", scope=control.scope)
    app = create_app(settings, control.scope, tokens, server, notifier_for(settings, control.scope))
    structlog.get_logger(__name__).info(
        "api.listening", url=f"http://{host}:{port}/", scope=control.scope, loop=event_loop.running_loop_name()
    )
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    await uvicorn.Server(config).serve()
    return 0
