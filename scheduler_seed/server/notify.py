"""Where alert lines go: anything with `start`, `stop` and `notify` (the Telegram bot is one)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Notifier(Protocol):
    """A sink for one-line notifications, started and stopped with the server."""

    async def start(self) -> None:
        """Begin serving (connect, start polling); called once when the server starts."""

    async def stop(self) -> None:
        """Stop and release everything; called once when the server stops."""

    async def notify(self, text: str) -> None:
        """Deliver one line of text to whoever is listening."""
