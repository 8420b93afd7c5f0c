"""The store's contract: what the rest of the monitor needs from its database.

Two implementations stand behind it (SQLite, the embedded default, and
PostgreSQL past one machine); callers hold a :class:`Store` and never know
which. Every time is an aware UTC datetime here; each backend chooses its own
column types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.figures.slo import IncidentRecord

# (the Store Protocol follows in the next commit; the SQLite class stands in meanwhile)


class StoreError(Exception):
    """The state database failed (disk full, read-only, locked, corrupt)."""


@dataclass(frozen=True, slots=True)
class OutboxAction:
    """A GitHub action that was decided and must be performed exactly once."""

    id: int
    incident_id: str
    target: str
    kind: str  # open | comment | edit | close | reopen
    payload: Mapping[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """An incident as stored, with its issue once it has one."""

    id: str
    target: str
    started_at: datetime
    resolved_at: datetime | None
    issue_number: int | None
    issue_url: str | None
    probes_total: int
    probes_failed: int
    reopened: int
    deployment: Mapping[str, Any] | None

    @property
    def record(self) -> IncidentRecord:
        """The value the SLO maths takes."""
        version = (self.deployment or {}).get("to_version")
        return IncidentRecord(
            target=self.target,
            incident_id=self.id,
            started_at=self.started_at,
            resolved_at=self.resolved_at,
            deployment_version=version,
        )


@dataclass(frozen=True, slots=True)
class NewAction:
    """An action to enqueue: what, for which incident, with what payload."""

    incident_id: str
    target: str
    kind: str
    payload: Mapping[str, Any]


from monitor.store.sqlite import Store as Store  # noqa: E402  - temporary, during the move
