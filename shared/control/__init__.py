"""The control layer: every operator action (create or update, seed a file, pause, resume, set, delete,
run now, backfill, status, runs, parked messages, publish) as one library API with typed results and errors.

`Control` is the entry; `results` holds what the actions return, `errors` what they raise and `kind_of`,
which sorts any failure into not found / invalid / conflict / unavailable / failed.
"""

from shared.control.api import Control
from shared.control.errors import (
    ActionFailed,
    DependencyDown,
    ErrorKind,
    InvalidDefinition,
    InvalidRequest,
    MoveUnderWay,
    RunningNow,
    UnknownJob,
    UnknownParkedMessage,
    kind_of,
)
from shared.control.session import Session, wait_for_servers

__all__ = [
    "ActionFailed",
    "Control",
    "DependencyDown",
    "ErrorKind",
    "InvalidDefinition",
    "InvalidRequest",
    "MoveUnderWay",
    "RunningNow",
    "Session",
    "UnknownJob",
    "UnknownParkedMessage",
    "kind_of",
    "wait_for_servers",
]
