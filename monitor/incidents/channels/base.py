"""The channel contract: where incident events go (GitHub issues, the journal, ...).

A channel does two things, at two different times:

* :meth:`Channel.plan`, when the monitor decides an event: turn it into the
  channel's own steps (GitHub: open, comment, edit, close, reopen), rendered
  now and stored in the outbox in the probe cycle's transaction;
* :meth:`Channel.deliver`, later, in the channel's own outbox worker: perform
  one step, as often as it takes. Every step must be safe to repeat: a step
  whose first attempt may have landed (a create, a comment) is looked for
  before it is sent again, or the service deduplicates it by key.

Each channel keeps its own handle per incident (an issue number, a message
reference, or nothing) and its own queue, so one failing channel never delays
another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from monitor.incidents.events import IncidentEvent
from monitor.store.base import ChannelHandle, NewAction, OutboxAction


class ChannelError(Exception):
    """A delivery failed; ``reason`` is a metric label, ``retry_after_s`` a hint."""

    def __init__(
        self, reason: str, message: str, *, retry_after_s: float | None = None, auth: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.auth = auth  # credentials or access: needs a human


GONE = "gone"  # ChannelError reason: nothing left to act on (a deleted issue); drop the step


@dataclass(frozen=True, slots=True)
class MarkedIssue:
    """An open issue carrying our marker, found while reconciling."""

    number: int
    url: str | None
    target: str
    incident_id: str


class Delivery(Protocol):
    """What the outbox tells a channel about the step it delivers."""

    @property
    def handle(self) -> ChannelHandle | None:
        """What this channel recorded for the step's incident, if anything."""
        ...

    def is_recorded(self, incident_id: str) -> bool:
        """True when the store knows the incident (an unknown one may be adopted)."""
        ...


class Channel(Protocol):
    """Receives incident events; keeps its own per-incident handle."""

    name: str  # unique: the outbox queue, metric label and CLI argument
    kind: str  # the channel type: github, journal, ...

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """The steps that deliver ``event``, rendered now (pure: no I/O)."""
        ...

    def settle_s(self, action: OutboxAction) -> float:
        """How long nobody may retry ``action`` once it is sent (0: no lease needed).

        A step the service may complete after we die mid-request, and that we find
        again by looking (a created issue, a comment), is leased for this long
        before it is sent, so a second process cannot send it twice meanwhile.
        """
        ...

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Perform one step; return the handle to record (None: nothing new).

        Raises :class:`ChannelError`; reason :data:`GONE` drops the step.
        """
        ...


@runtime_checkable
class IssueChannel(Channel, Protocol):
    """A channel of issues that outlive the monitor: reconciled at start-up."""

    def open_marked_issues(self) -> list[MarkedIssue]:
        """Every open issue that carries our marker."""
        ...

    def close_steps(self, issue: MarkedIssue, text: str, key: str) -> Sequence[NewAction]:
        """The steps that close ``issue`` with a comment saying ``text``."""
        ...
