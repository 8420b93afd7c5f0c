"""The journal channel: incidents as log lines, for running without a GitHub token."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.incidents import text
from monitor.incidents.channels.base import Delivery
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import get_logger
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

log = get_logger("monitor.journal")

JOURNAL = "journal"
_HEADLINES = {
    EventKind.OPENED: "journal: incident opened",
    EventKind.UPDATED: "journal: incident update",
    EventKind.REMINDER: "journal: incident update",
    EventKind.RESOLVED: "journal: incident closed",
    EventKind.REOPENED: "journal: incident reopened",
    EventKind.ACKNOWLEDGED: "journal: incident acknowledged",
    EventKind.MAINTENANCE: "journal: maintenance window on an open incident",
}


class JournalChannel:
    """Writes every incident event to the log; the store keeps the incidents."""

    name = JOURNAL
    kind = JOURNAL

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """One log line per event, worded now."""
        payload = {
            "title": text.title(event.result),
            "text": _first_line(text.event_comment(event)),
        }
        return [NewAction(self.name, event.incident.id, event.target, event.kind.value, payload)]

    def settle_s(self, action: OutboxAction) -> float:
        """A log line cannot land twice by accident: no lease."""
        return 0.0

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Log the event; the journal keeps no handle."""
        if action.kind == "report":  # the weekly KPI report, without a repository to file it
            log.info(
                "KPI report",
                title=text.payload_text(action.payload, "title"),
                text=text.payload_text(action.payload, "body"),
            )
            return None
        kind = EventKind(action.kind)
        fields = {
            "incident": action.incident_id,
            "target": action.target,
            "text": text.payload_text(action.payload, "text"),
        }
        if kind is EventKind.OPENED:
            fields["title"] = text.payload_text(action.payload, "title")
        log.warning(_HEADLINES[kind], **fields)
        return None


def _first_line(body: str) -> str:
    lines = [line for line in body.splitlines() if line and not line.startswith("<!--")]
    return lines[0] if lines else ""
