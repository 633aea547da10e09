"""Broker addresses: `AMQP_URL` may name every node of a RabbitMQ cluster, and a connection moves to the next
one when its node fails (shared/failover.py). Pure parsing, no I/O.

Two spellings, both accepted:

* a comma list of full URLs: `amqp://u:p@h1:5672/v,amqp://u:p@h2:5673/v` (each may differ);
* the short form, one URL with several hosts: `amqp://u:p@h1:5672,h2:5673,h3/v?heartbeat=30` (user, password,
  virtual host and query shared by every node).

A single URL is the one-node case of either.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
_URL_START = re.compile(r",\s*(?=amqps?://)", re.IGNORECASE)


class BrokerUrlError(ValueError):
    """An AMQP_URL that names no usable node; the message never holds a password."""


def redact_password(url: str) -> str:
    """`url` with its password (if any) replaced by `***`. Works on multi-host netlocs, which urlsplit cannot
    give a port for."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = _split_netloc(rest)
    userinfo, at, hosts = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


def passwords(text: str) -> list[str]:
    """The password of every URL of a comma list (as written and percent-decoded), to mask them in messages."""
    found = []
    for part in _URL_START.split(text.strip()):
        _, sep, rest = part.partition("://")
        userinfo, at, _ = _split_netloc(rest)[0].rpartition("@") if sep else ("", "", "")
        if at and ":" in userinfo:
            secret = userinfo.split(":", 1)[1]
            found += [secret, unquote(secret)] if secret else []
    return [p for p in dict.fromkeys(found) if p]


def redact_all(text: str) -> str:
    """Every URL of a comma list, redacted."""
    return ",".join(redact_password(part) for part in _URL_START.split(text.strip()))


def parse_amqp_urls(text: str) -> list[str]:
    """The node URLs `text` names, in order. Raises BrokerUrlError with one line naming what is wrong."""
    text = text.strip()
    if not text:
        raise BrokerUrlError("AMQP_URL is empty: give amqp://user:password@host:port/vhost")
    urls: list[str] = []
    for position, part in enumerate(_URL_START.split(text), start=1):
        urls += _expand(part.strip(), position)
    return urls


def node_label(url: str) -> str:
    """`host:port` of a single-node URL: how logs name a node (no user, no password)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(scheme, 5672)}"


def _split_netloc(rest: str) -> tuple[str, str, str]:
    """(netloc, separator, tail) of what follows `scheme://`; the netloc ends at the first /, ? or #."""
    match = re.search(r"[/?#]", rest)
    if match is None:
        return rest, "", ""
    return rest[: match.start()], rest[match.start()], rest[match.start() + 1 :]


def _expand(part: str, position: int) -> list[str]:
    where = f"AMQP_URL entry {position} ({redact_password(part)!r})"
    scheme, sep, rest = part.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise BrokerUrlError(f"{where}: expected amqp:// or amqps:// URLs separated by commas")
    netloc, slash, tail = _split_netloc(rest)
    userinfo, at, hosts = netloc.rpartition("@")
    prefix = f"{scheme}://{userinfo}{at}"
    urls = []
    for host in hosts.split(","):
        host = host.strip()
        _check_host(host, where)
        urls.append(f"{prefix}{host}{slash}{tail}")
    return urls


def _check_host(host: str, where: str) -> None:
    if not host:
        raise BrokerUrlError(f"{where}: a host is empty (two commas in a row, or a comma at the end?)")
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        if end < 0:
            raise BrokerUrlError(f"{where}: unclosed [ in host {host!r}")
        port_text = host[end + 1 :].removeprefix(":")
    else:
        name, _, port_text = host.partition(":")
        if not name:
            raise BrokerUrlError(f"{where}: host {host!r} has no name")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise BrokerUrlError(f"{where}: port {port_text!r} of host {host!r} is not a number from 1 to 65535")
