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
from datetime import datetime
from typing import Protocol, runtime_checkable

from monitor.incidents.events import IncidentEvent
from monitor.store.base import ChannelHandle, NewAction, OutboxAction


class ChannelError(Exception):
    """A delivery failed; ``reason`` is a metric label, ``retry_after_s`` a hint.

    How the outbox treats it:

    * transient (the default: 5xx, connection errors, time-outs): backoff with
      jitter, capped at :data:`~monitor.incidents.outbox.TRANSIENT_MAX_S`, and
      released at once by the service's next success;
    * ``retry_after_s``: nothing is sent to the service before then;
    * ``permanent`` (a 4xx other than 429): the channel's queue stops, ``/healthz``
      says why, and the head step is tried again only every
      :data:`~monitor.incidents.outbox.PERMANENT_RETRY_S` (someone may fix the key);
    * ``disable`` (a webhook's 410 Gone): the channel sends nothing more until the
      next start;
    * ``in_flight_s`` (a request sent that got no answer): nothing more of that queue
      is sent before then, so steps land in the order they were decided.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        auth: bool = False,
        permanent: bool = False,
        disable: bool = False,
        in_flight_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.auth = auth  # credentials or access: needs a human
        self.permanent = permanent or auth or disable
        self.disable = disable
        # the request was sent and got no answer: the service may still act on it for
        # this long, so neither its retry nor the incident's next step goes before (a
        # trigger landing after its resolve would open an alert nothing resolves)
        self.in_flight_s = in_flight_s


GONE = "gone"  # ChannelError reason: nothing left to act on (a deleted issue); drop the step


@dataclass(frozen=True, slots=True)
class MarkedIssue:
    """An open issue carrying our marker, found while reconciling."""

    number: int
    url: str | None
    target: str
    incident_id: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A message that is not about an incident: ``monitor notify`` and ``notify test``."""

    title: str
    body: str
    key: str  # stable per notice: a delivery id the service may deduplicate on
    test: bool = False  # ``notify test``: say clearly that nobody needs to act
    severity: str = "info"


class Delivery(Protocol):
    """What the outbox tells a channel about the step it delivers."""

    @property
    def handle(self) -> ChannelHandle | None:
        """What this channel recorded for the step's incident, if anything."""
        ...

    def issue(self, incident_id: str) -> ChannelHandle | None:
        """The incident's GitHub issue (number and URL), once it has one: a link to it."""
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


class NoticeChannel(Channel, Protocol):
    """A channel that also carries one-off messages (every paging channel does)."""

    def send_notice(self, notice: Notice) -> None:
        """Send ``notice`` now; raise :class:`ChannelError` unless the service accepted it."""
        ...


@runtime_checkable
class RefreshingChannel(Channel, Protocol):
    """A channel whose service forgets what is not repeated (Alertmanager's alerts).

    The outbox worker calls :meth:`refresh` every ``refresh_interval_s`` with the
    handle of each incident still open on this channel (what the step that fired
    it recorded), outside the queue: a repeat is idempotent by nature.
    """

    refresh_interval_s: float

    def refresh(self, handles: Sequence[tuple[str, ChannelHandle]], delivery: Delivery) -> None:
        """Send again what keeps each incident alive there (``delivery.issue`` links each
        incident's issue); raise :class:`ChannelError`."""
        ...


@dataclass(frozen=True, slots=True)
class PersonAction:
    """What a person did to an open incident where the channel can see it."""

    incident_id: str
    kind: str  # ACKNOWLEDGED (a label) or CLOSED (the issue, while the target fails)
    by: str | None  # a login, when the service says
    at: datetime


ACKNOWLEDGED = "acknowledged"
CLOSED = "closed"


@runtime_checkable
class WatchingChannel(Channel, Protocol):
    """A channel people act on (GitHub issues): looked at while incidents are open.

    The outbox worker calls :meth:`watch` every ``watch_interval_s`` (and at start)
    with the handle of each open incident, and records what it returns; the next
    probe cycle of that target reads it back (reminders stop, channels are told).
    """

    watch_interval_s: float

    def watch(self, handles: Sequence[tuple[str, ChannelHandle]]) -> list[PersonAction]:
        """What people did to these incidents; raise :class:`ChannelError`."""
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
