"""Plug-in contracts: what a sink of incidents must provide."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class IssueRef:
    """An issue that tracks an incident (number None for sinks without issues)."""

    number: int | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class MarkedIssue:
    """An open issue carrying our marker, found while reconciling."""

    number: int
    url: str | None
    target: str
    incident_id: str


class SinkError(Exception):
    """An action failed; ``reason`` is a metric label, ``retry_after_s`` a hint."""

    def __init__(
        self, reason: str, message: str, *, retry_after_s: float | None = None, auth: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.auth = auth  # credentials or repository access: needs a human


class IncidentSink(Protocol):
    """Where incidents are written: GitHub issues, or the journal (log lines)."""

    name: str

    def find_issue(
        self,
        target: str,
        incident_id: str,
        adoptable: Callable[[str], bool] | None = None,
    ) -> IssueRef | None:
        """The open issue carrying this incident's marker, else one of the target's
        open marked issues whose incident id ``adoptable`` accepts."""
        ...

    def open_issue(
        self, title: str, body: str, labels: Sequence[str], assignees: Sequence[str]
    ) -> IssueRef:
        """Create the issue."""
        ...

    def comment(self, issue: IssueRef, body: str, key: str, *, maybe_posted: bool = False) -> None:
        """Add a comment; with ``maybe_posted``, first look for one carrying ``key``."""
        ...

    def edit(self, issue: IssueRef, body: str, title: str | None = None) -> None:
        """Replace the body (and title)."""
        ...

    def close(self, issue: IssueRef, body: str | None = None) -> None:
        """Close as completed (replacing the body too, when given)."""
        ...

    def reopen(self, issue: IssueRef) -> None:
        """Reopen a closed issue."""
        ...

    def open_marked_issues(self) -> list[MarkedIssue]:
        """Every open issue that carries our marker (start-up reconcile)."""
        ...
