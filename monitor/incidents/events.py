"""Incident events: what every channel is told, as plain data.

The tracker decides transitions; the daemon turns each into one
:class:`IncidentEvent`, with what the probe and the store know at that moment
(the timeline, the deployment it followed). Channels render events in their
own words, so an event carries data, not text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from monitor.figures.slo import Deployment
from monitor.incidents.quorum import RegionView
from monitor.incidents.tracker import Incident, Transition, TransitionKind
from monitor.probing.results import TargetResult


class EventKind(enum.StrEnum):
    """What happened to an incident, in the words channels subscribe to."""

    OPENED = "opened"  # a failure was confirmed: a new incident
    UPDATED = "updated"  # the failure changed character (another check, another reason)
    REMINDER = "reminder"  # still open after reminder_interval
    RESOLVED = "resolved"  # recovered for close_after probes; the duration is final
    REOPENED = "reopened"  # failed again within reopen_window of its resolve
    ACKNOWLEDGED = "acknowledged"  # a person took it (the label, or closed it)
    MAINTENANCE = "maintenance"  # a window began while it was open: nobody is paged


_FROM_TRANSITION = {
    TransitionKind.OPENED: EventKind.OPENED,
    TransitionKind.CHANGED: EventKind.UPDATED,
    TransitionKind.REMINDER: EventKind.REMINDER,
    TransitionKind.RESOLVED: EventKind.RESOLVED,
    TransitionKind.REOPENED: EventKind.REOPENED,
}


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One probe of the incident's timeline."""

    at: datetime
    check: str
    outcome: str
    status: int | None
    duration_s: float
    detail: str
    region: str = ""  # where the probe ran (shown when several regions probe)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One event of one incident, for every channel that subscribes to its kind."""

    kind: EventKind
    incident: Incident  # as it stands after the event
    result: TargetResult  # the probe that caused it (the latest, for a reminder)
    decided_at: datetime  # when the monitor decided it: texts say "as of" this
    # stable for this event, whatever the retries: comment markers and delivery ids
    key: str
    detail: str = ""  # for UPDATED: what changed
    timeline: tuple[TimelineRow, ...] = ()  # recent probes since the incident started
    deployment: Deployment | None = None  # the version change the incident followed
    status_url: str | None = None  # the public status page, when configured
    # each region's view when several probe (none for a lone instance): who sees what
    regions: tuple[RegionView, ...] = ()
    severity: str = "critical"  # the target's, in PagerDuty's words
    actor: str | None = None  # ACKNOWLEDGED: who (a GitHub login)

    @property
    def target(self) -> str:
        """The target the incident is about."""
        return self.incident.target


def event_kind(transition: Transition) -> EventKind | None:
    """The event a transition announces; None for what only the log hears (a blip)."""
    if transition.incident is None:
        return None
    return _FROM_TRANSITION.get(transition.kind)


def event_key(transition: Transition) -> str:
    """The event's stable key: incident, transition and the probe time, to the second."""
    assert transition.incident is not None
    return f"{transition.incident.id}:{transition.kind}:{transition.at:%Y%m%dT%H%M%S}"
