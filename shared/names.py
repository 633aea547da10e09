"""Identifier rules shared by job ids, queue short names and scopes.

A job id never contains a dot, so `S.jobs.<job_id>.delay` can never be another job's work queue, and never
contains a quote or a space, so it cannot escape a queue name, a SQL literal or a log label.
"""

from __future__ import annotations

import re

IDENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_IDENT = re.compile(IDENT_PATTERN)


def is_valid_ident(value: str) -> bool:
    """True when `value` may be used as a scope, job id or queue short name."""
    return bool(_IDENT.fullmatch(value))


def check_ident(value: str, what: str) -> str:
    """Return `value` unchanged, or raise ValueError with a readable reason."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (no dots, spaces or quotes)"
        )
    return value
