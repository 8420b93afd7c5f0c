"""The Alertmanager channel: each open incident is an alert, sent to every member of an HA set.

The contract is Alertmanager's API v2 (``api/v2/openapi.yaml``, operation ``postAlerts``)
and its "Sending alerts" page (``docs/clients.md``):

* ``POST /api/v2/alerts`` takes a JSON array of ``postableAlert``: ``labels`` (required;
  they identify an alert, so posting the same label set again updates it rather than
  adding one), ``annotations`` (always those received last), ``startsAt`` and ``endsAt``
  (RFC 3339) and ``generatorURL`` (a back-link to what raised it). It answers 200, 400
  with the reason as a JSON string (an ``endsAt`` before ``startsAt``, an annotation name
  that is not a label name), or 500.
* Clients send an alert again for as long as it is active; one not heard of again ends
  at its ``endsAt``. Prometheus sends every minute with ``endsAt`` four intervals
  ahead; so do we, every ``resend_interval``. The "fire" step records what it sent in the
  incident's handle, and the outbox worker calls :meth:`AlertmanagerChannel.refresh` with
  the handles of the incidents still open, which posts them again with a new ``endsAt``.
* Members of an HA cluster do not share alerts (they gossip silences and the log of the
  notifications sent, so one of them notifies): a client posts every alert to every
  member. A step succeeds when one member took it; those that did not are logged and get
  it again at the next refresh. It fails when none did: transiently, unless every member
  refused it for good (a 400 from all, say), which stops the channel.
* Alertmanager then routes, groups, inhibits and silences as its owner configured it:
  this channel never reads or writes silences.

An optional bearer token (``secret_env``) is for an Alertmanager behind an authenticating
proxy; it travels only in the ``Authorization`` header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitor.clock import Clock, utcnow
from monitor.config import format_duration
from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels import http
from monitor.incidents.channels.base import GONE, ChannelError, Delivery, Notice
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import get_logger
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

log = get_logger("monitor.alertmanager")

ALERTS_PATH = "/api/v2/alerts"
INCIDENT_ALERT = "MonitorIncident"
NOTICE_ALERT = "MonitorNotice"
TEST_ALERT = "MonitorTest"
FIRE = "fire"  # step kind: post the alert (opened, reopened, updated)
RESOLVE = "resolve"  # step kind: post it with endsAt = the recovery
# endsAt is this many resend intervals ahead, as Prometheus does: a few lost refreshes
# do not end the alert, a monitor that died ends it within minutes
ENDS_AFTER_INTERVALS = 4
NOTICE_TTL_S = 300.0  # a notice is no incident: it ends by itself
DESCRIPTION_LIMIT = 1000

_STEPS = {
    EventKind.OPENED: FIRE,
    EventKind.REOPENED: FIRE,
    EventKind.UPDATED: FIRE,  # new annotations on the same label set
    EventKind.RESOLVED: RESOLVE,
}
# the fields of an alert that the handle keeps for the refresh (endsAt is set anew)
_KEPT = ("labels", "annotations", "startsAt", "generatorURL")


class AlertmanagerChannel:
    """Open incidents as firing alerts in Alertmanager, kept alive by re-sending them."""

    def __init__(
        self, config: ChannelConfig, *, status_url: str | None, clock: Clock = utcnow
    ) -> None:
        self.name: str = config.name
        self.kind: str = config.type
        self._config = config
        self._status_url = status_url
        self._clock = clock
        self._urls = [_alerts_url(url) for url in config.endpoints]
        if not self._urls:
            raise ValueError(f"channel {config.name}: an alertmanager channel needs url or urls")
        self._http = http.client(config.timeout)
        self._token = config.secret.get_secret_value() if config.secret is not None else None
        self._headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        # the worker re-sends open incidents this often (RefreshingChannel)
        self.refresh_interval_s = float(config.resend_interval)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    # ---- planning (pure) ------------------------------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """A "fire" or "resolve" step, its alert rendered now; nothing for other events
        (a reminder or an acknowledgement changes nothing in Alertmanager)."""
        step = _STEPS.get(event.kind)
        if step is None or not self._config.wants(event.target, event.kind.value):
            return []
        alert = self._incident_alert(event)
        if step == RESOLVE:
            resolved_at = event.incident.resolved_at or event.result.at
            alert["endsAt"] = rfc3339(resolved_at)
        payload = {"alert": alert, "status_url": event.status_url or self._status_url}
        return [NewAction(self.name, event.incident.id, event.target, step, payload)]

    def _incident_alert(self, event: IncidentEvent) -> dict[str, Any]:
        incident = event.incident
        status_url = event.status_url or self._status_url
        if event.kind is EventKind.RESOLVED:
            summary, description = f"{event.target} recovered", _recovery(event)
        else:
            summary, description = text.title(event.result), _what_fails(event)
        annotations = {"summary": summary, "description": description, "incident": incident.id}
        if status_url:
            annotations["status_url"] = status_url
        return {
            "labels": {
                "alertname": INCIDENT_ALERT,
                "target": event.target,
                "severity": event.severity,
            },
            "annotations": annotations,
            "startsAt": rfc3339(incident.started_at),
        }

    def settle_s(self, action: OutboxAction) -> float:
        """No lease: Alertmanager deduplicates an alert by its label set."""
        return 0.0

    # ---- delivery ---------------------------------------------------------------------------

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Post the step's alert to every member; a "fire" returns what the refresh repeats."""
        alert = _stored_alert(action)
        fired = _alert_from_ref(delivery.handle.ref if delivery.handle else None)
        if fired is not None:
            # the incident keeps the label set it first fired with: it is its identity
            # there, and a changed one would leave the old alert firing until its endsAt
            alert["labels"], alert["startsAt"] = fired["labels"], fired["startsAt"]
        _link_issue(alert, delivery.issue(action.incident_id), action.payload.get("status_url"))
        if action.kind == RESOLVE:
            self._post([alert])
            return None
        self._post([{**alert, "endsAt": self._ends_at()}])
        kept = {key: alert[key] for key in _KEPT if key in alert}
        return ChannelHandle(ref=json.dumps(kept, separators=(",", ":"), sort_keys=True))

    def refresh(self, handles: Sequence[tuple[str, ChannelHandle]], delivery: Delivery) -> None:
        """Post every open incident's alert again with ``endsAt`` moved ahead, linking the
        incident's issue once it has one (it is usually filed after the alert fired)."""
        alerts = []
        for incident_id, handle in handles:
            alert = _alert_from_ref(handle.ref)
            if alert is None:
                log.warning("alertmanager handle unreadable; not refreshed", incident=incident_id)
                continue
            _link_issue(alert, delivery.issue(incident_id), alert.get("generatorURL"))
            alerts.append({**alert, "endsAt": self._ends_at()})
        if alerts:
            self._post(alerts)

    def send_notice(self, notice: Notice) -> None:
        """A ``MonitorNotice`` (``MonitorTest``) alert that ends by itself in a few minutes."""
        now = self._clock()
        summary = f"[TEST] {notice.title}" if notice.test else notice.title
        description = notice.body
        if notice.test:
            description = f"{notice.body}\n\nThis is a test of the channel: nobody needs to act."
        alert: dict[str, Any] = {
            "labels": {
                "alertname": TEST_ALERT if notice.test else NOTICE_ALERT,
                "severity": notice.severity,
                # one alert per notice: two notices with one label set would be one alert,
                # the second only replacing the first's words, and nobody told of it
                "notice": notice.key,
            },
            "annotations": {"summary": summary, "description": description},
            "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + timedelta(seconds=NOTICE_TTL_S)),
        }
        if self._status_url:
            alert["generatorURL"] = self._status_url
        self._post([alert])

    def _ends_at(self) -> str:
        interval_s = ENDS_AFTER_INTERVALS * self.refresh_interval_s
        return rfc3339(self._clock() + timedelta(seconds=interval_s))

    def _scrubbed(self, exc: ChannelError) -> ChannelError:
        """``exc`` without the token, should a proxy quote our headers in its refusal."""
        if not self._token or self._token not in str(exc):
            return exc
        return ChannelError(
            exc.reason,
            str(exc).replace(self._token, "[redacted]"),
            retry_after_s=exc.retry_after_s,
            auth=exc.auth,
            permanent=exc.permanent,
            disable=exc.disable,
            in_flight_s=exc.in_flight_s,
        )

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        """POST ``alerts`` to every member; raise unless one of them took them."""
        content = json.dumps(alerts, separators=(",", ":")).encode("utf-8")
        refused: list[ChannelError] = []
        for url in self._urls:
            service = f"Alertmanager {member(url)}"
            try:
                http.post_json(self._http, service, url, None, self._headers, content=content)
            except ChannelError as exc:
                refused.append(self._scrubbed(exc))
        if len(refused) == len(self._urls):
            raise none_accepted(refused)
        for error in refused:
            # the members that took it notify; this one gets it at the next refresh
            log.warning(
                "alertmanager member did not take the alerts",
                sink=self.name,
                reason=error.reason,
                error=str(error),
            )


def none_accepted(refused: Sequence[ChannelError]) -> ChannelError:
    """The error when no member took the alerts: permanent only if each refused for good."""
    message = "no Alertmanager took the alerts: " + "; ".join(str(exc) for exc in refused)
    transient = [exc for exc in refused if not exc.permanent]
    if not transient:
        return ChannelError(
            refused[0].reason,
            message,
            permanent=True,
            auth=any(exc.auth for exc in refused),
            disable=all(exc.disable for exc in refused),
        )
    waits = [exc.retry_after_s for exc in transient]
    # a hold only when every member asked for one: the first to come back gets the alerts
    retry_after = min(w for w in waits if w is not None) if None not in waits else None
    # a post still in flight at any member must land before the incident's next step
    in_flight = max(exc.in_flight_s for exc in refused)
    return ChannelError(
        transient[0].reason, message, retry_after_s=retry_after, in_flight_s=in_flight
    )


def rfc3339(moment: datetime) -> str:
    """``2026-11-01T12:00:00.000Z``: Alertmanager keeps milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def member(url: str) -> str:
    """A member's URL as logs and errors show it: no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    base = parts.path.removesuffix(ALERTS_PATH)
    return f"{parts.scheme}://{host}{port}{base}"


def _alerts_url(url: str) -> str:
    """The alerts endpoint under a member's base URL (which may carry a route prefix)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(ALERTS_PATH):
        path += ALERTS_PATH
    return urlunsplit(parts._replace(path=path))


def _what_fails(event: IncidentEvent) -> str:
    incident, result = event.incident, event.result
    checks = [
        f"{check.check}: {text.describe_failure(check)} ({check.reason.value}: {check.detail})"
        for check in result.failing
    ] or [f"{event.target} is {result.outcome.value}"]
    words = "; ".join(checks) + "."
    if event.kind is EventKind.UPDATED and event.detail:
        words = f"Changed: {event.detail}. {words}"
    words += (
        f" Failing since {text.utc(incident.started_at)}:"
        f" {incident.probes_failed} of {incident.probes_total} probes failed."
    )
    return text.defuse(words, DESCRIPTION_LIMIT)


def _recovery(event: IncidentEvent) -> str:
    incident = event.incident
    duration_s = incident.duration_s or 0.0
    ended = incident.resolved_at or event.result.at
    return (
        f"{event.target} was down for {format_duration(max(duration_s, 1))}"
        f" ({duration_s:.0f} s), from {text.utc(incident.started_at)} to {text.utc(ended)}:"
        f" {incident.probes_failed} of {incident.probes_total} probes failed."
    )


def _stored_alert(action: OutboxAction) -> dict[str, Any]:
    """The alert ``plan`` rendered, as a fresh dict; a step without one is dropped."""
    alert = action.payload.get("alert")
    if not isinstance(alert, dict) or not _is_alert(alert):
        raise ChannelError(GONE, f"step {action.id} carries no alert to send")
    return dict(alert)


def _alert_from_ref(ref: str | None) -> dict[str, Any] | None:
    """The alert a "fire" step recorded in the handle, or None."""
    if not ref:
        return None
    try:
        alert = json.loads(ref)
    except ValueError:
        return None
    return alert if isinstance(alert, dict) and _is_alert(alert) else None


def _is_alert(alert: Mapping[str, Any]) -> bool:
    return (
        isinstance(alert.get("labels"), dict)
        and isinstance(alert.get("annotations"), dict)
        and isinstance(alert.get("startsAt"), str)
    )


def _link_issue(alert: dict[str, Any], issue: ChannelHandle | None, fallback: object) -> None:
    """Annotate ``alert`` with the incident's issue, the back-link Alertmanager shows."""
    if issue is not None and issue.url:
        alert["annotations"] = {**alert["annotations"], "issue_url": issue.url}
    back_link = (issue.url if issue is not None else None) or fallback
    if isinstance(back_link, str) and back_link:
        alert["generatorURL"] = back_link
