"""Maintenance: prunes run history and expired idempotency keys of the scope (queue `maintenance`)."""

from services.common import Route, ServiceSpec
from services.maintenance.prune import PruneParams, build

SPEC = ServiceSpec("maintenance", (Route("maintenance", PruneParams, build),))
