"""Turning the tracker's transitions into incident events, with what the store knows."""

from __future__ import annotations

from datetime import datetime

from monitor.config import Settings
from monitor.figures.slo import Deployment
from monitor.incidents.events import (
    IncidentEvent,
    TimelineRow,
    event_key,
    event_kind,
)
from monitor.incidents.quorum import RegionView
from monitor.incidents.tracker import Transition
from monitor.logs import get_logger
from monitor.metrics import Metrics
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

    def build(
        self,
        transition: Transition,
        now: datetime,
        deployment: Deployment | None,
        regions: tuple[RegionView, ...] = (),
    ) -> IncidentEvent | None:
        """The event, or None for a transition only the log hears (a cancelled blip)."""
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
            timeline=self._timeline(transition),
            deployment=deployment,
            status_url=self._status_url,
            regions=regions,
        )

    def _timeline(self, transition: Transition) -> tuple[TimelineRow, ...]:
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
            )
            for r in rows
        ]
        timeline += [
            TimelineRow(
                c.started_at, c.check, c.outcome.value, c.status_code, c.duration_s, c.detail
            )
            for c in transition.result.checks
        ]
        return tuple(timeline[-TIMELINE_ROWS:])
