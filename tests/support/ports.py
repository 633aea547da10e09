"""A free TCP port on the loopback, for the private servers and stand-ins tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on right now (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
