"""Bearer tokens with roles (DESIGN section 12): `CONTROL_API_TOKENS` = `name:role:token,...`.

`viewer` may read (GET), `operator` may do everything. Tokens are compared in constant time, every configured one
each time, so neither a match nor its position leaks through timing. The audit names the token's name, never the
token. With no tokens at all the server is open, and so it binds only to a loopback address (`check_bind`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import ConfigError
from shared.names import check_ident

COOKIE = "control_token"  # the Admin UI's login keeps the token in an HttpOnly, SameSite=Strict cookie


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: a token's name and role (`local` when no tokens are configured)."""

    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        return self.role is Role.OPERATOR or needed is Role.VIEWER


LOCAL = Principal("local", Role.OPERATOR)


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    role: Role
    digest: bytes  # sha256 of the token: equal lengths for compare_digest, the token itself not kept


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """The configured tokens; `identify` finds whose a presented token is."""

    def __init__(self, entries: list[_Token]) -> None:
        self._entries = entries

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def identify(self, presented: str | None) -> Principal | None:
        """The principal of a presented token, None if it matches none (constant time over all tokens)."""
        if not presented:
            return None
        digest = _digest(presented)
        found: _Token | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry
        return None if found is None else Principal(found.name, found.role)


def parse_tokens(text: str) -> Tokens:
    """Parse `name:role:token,...`; ConfigError naming the entry (by position and name, never the token)."""
    entries: list[_Token] = []
    problems: list[str] = []
    for position, raw in enumerate((p.strip() for p in text.split(",")), start=1):
        if not raw:
            continue
        parts = raw.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            problems.append(f"entry {position}: want name:role:token")
            continue
        name, role, token = parts[0].strip(), parts[1].strip(), parts[2]
        try:
            check_ident(name, "token name")
        except ValueError as exc:
            problems.append(f"entry {position}: {exc}")
            continue
        if role not in Role.__members__.values():
            problems.append(f"entry {position} ({name}): role {role!r} is not viewer or operator")
        elif len(token) < 16:
            problems.append(f"entry {position} ({name}): the token is shorter than 16 characters")
        elif name in {e.name for e in entries}:
            problems.append(f"entry {position} ({name}): the name is used twice")
        elif _digest(token) in {e.digest for e in entries}:
            problems.append(f"entry {position} ({name}): the same token as another entry")
        else:
            entries.append(_Token(name, Role(role), _digest(token)))
    if problems:
        raise ConfigError("CONTROL_API_TOKENS: " + "; ".join(problems))
    return Tokens(entries)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse an open server on a non-loopback address (ConfigError, one line)."""
    if not tokens.enabled and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without tokens: set CONTROL_API_TOKENS=name:role:token,... "
            "or bind to 127.0.0.1"
        )
