"""Turning the tracker's transitions into incident events, with what the store knows."""

from __future__ import annotations

from datetime import datetime

from monitor.config import Settings
from monitor.figures.slo import Deployment
from monitor.incidents.events import (
    EventKind,
    IncidentEvent,
    TimelineRow,
    event_key,
    event_kind,
)
from monitor.incidents.quorum import RegionView
from monitor.incidents.tracker import Incident, Transition
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.probing.results import TargetResult
from monitor.store.base import Store, StoreError
from monitor.store.codec import dt

TIMELINE_ROWS = 20
log = get_logger("monitor.daemon")


class EventBuilder:
    """Adds the incident's recent probes and links to each transition worth announcing."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        public = settings.status_page.public_url
        self._status_url = f"{public}/status" if public else None
        self._severity = {t.name: t.severity for t in settings.targets}

    def build(
        self,
        transition: Transition,
        now: datetime,
        deployment: Deployment | None,
        regions: tuple[RegionView, ...] = (),
        region: str = "local",
    ) -> IncidentEvent | None:
        """The event, or None for a transition only the log hears (a cancelled blip).

        ``regions``: every region's view when several probe; ``region``: where the
        probe behind the transition ran.
        """
        kind = event_kind(transition)
        incident = transition.incident
        if kind is None or incident is None:
            return None
        return IncidentEvent(
            kind=kind,
            incident=incident,
            result=transition.result,
            decided_at=now,
            key=event_key(transition),
            detail=transition.detail,
            timeline=self._timeline(transition, region),
            deployment=deployment,
            status_url=self._status_url,
            regions=regions,
            severity=self._severity.get(incident.target, "critical"),
        )

    def note(
        self,
        kind: EventKind,
        incident: Incident,
        result: TargetResult,
        now: datetime,
        detail: str,
        *,
        actor: str | None = None,
        tag: str = "",
    ) -> IncidentEvent:
        """An event no probe decided (a person acted, a window began), about an open
        incident; ``tag`` tells apart two of one kind decided in the same second."""
        return IncidentEvent(
            kind=kind,
            incident=incident,
            result=result,
            decided_at=now,
            key=f"{incident.id}:{kind}{tag}:{now:%Y%m%dT%H%M%S}",
            detail=detail,
            status_url=self._status_url,
            severity=self._severity.get(incident.target, "critical"),
            actor=actor,
        )

    def _timeline(self, transition: Transition, region: str) -> tuple[TimelineRow, ...]:
        incident = transition.incident
        assert incident is not None
        try:
            rows = self._store.recent_check_results(
                incident.target, since=incident.started_at, limit=TIMELINE_ROWS
            )
        except StoreError as exc:
            # the event still goes out, with what this probe alone knows
            self._metrics.store_errors.labels("read").inc()
            log.error("state database read failed; issue text without history", error=str(exc))
            rows = []
        timeline = [
            TimelineRow(
                dt(r["started_at"]),
                r["check_name"],
                r["outcome"],
                r["status"],
                r["duration_s"],
                r["detail"],
                r["region"],
            )
            for r in rows
        ]
        stored = {(row.at, row.check, row.region) for row in timeline}
        # this cycle's probe, unless it is already stored (another region's, judged now)
        timeline += [
            TimelineRow(
                c.started_at,
                c.check,
                c.outcome.value,
                c.status_code,
                c.duration_s,
                c.detail,
                region,
            )
            for c in transition.result.checks
            if (c.started_at, c.check, region) not in stored
        ]
        return tuple(timeline[-TIMELINE_ROWS:])
