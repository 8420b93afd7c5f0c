"""PagerDuty: incidents as alerts through the Events API v2.

The contract (PagerDuty's developer docs, ``events-API-v2/02-Trigger-Events.md`` and the
OpenAPI description ``reference/events-v2/openapiv3.json``) and how this channel keeps it:

* ``POST https://events.pagerduty.com/v2/enqueue`` (``url`` overrides it) with a JSON
  object: ``routing_key`` (the integration key, from ``secret_env``: added to the body
  at each attempt, never stored in a step), ``event_action`` (``trigger``,
  ``acknowledge`` or ``resolve``), ``dedup_key``, and for a trigger a ``payload`` with
  ``summary`` (at most 1024 characters), ``source``, ``severity`` (``critical``,
  ``error``, ``warning`` or ``info``: the target's ``severity``), ``timestamp``,
  ``component`` (the target), ``class`` and ``custom_details``; ``links`` (``href``,
  ``text``) to the incident's GitHub issue and the status page; ``client``.
* ``dedup_key`` is the incident id (at most 255 characters), so every step is
  idempotent on PagerDuty's side: a second trigger with the same key adds to the open
  alert instead of paging again, an acknowledge or resolve of a settled alert is
  dropped. No lease is needed (``settle_s`` is 0) and a retry is simply sent again.
* Steps: ``trigger`` for opened, reopened, updated (a re-trigger updates the open
  alert; after a resolve it opens a new one, which is what a reopen means), reminder
  and maintenance when subscribed; ``acknowledge`` for acknowledged; ``resolve`` for
  resolved, whose payload carries the measured duration in ``custom_details``.
* Replies: 202 ``{"status": "success", "dedup_key": ...}`` is done; 400 (an invalid
  event) is a permanent refusal that stops the channel's queue; 429 holds every
  target's steps for ``Retry-After`` (60 s when PagerDuty does not say); 5xx, time-outs
  and broken connections are retried with backoff.
* ``monitor notify`` sends an ``info`` trigger keyed by the notice, and leaves it open:
  someone reads and resolves it. ``monitor notify test`` sends a ``[TEST]`` trigger and
  resolves it right after, so a test never leaves an alert open (it may still page,
  depending on the service's urgency rules for ``info``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from monitor.clock import utcnow
from monitor.config import format_duration
from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels import http
from monitor.incidents.channels.base import ChannelError, Delivery, Notice
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import secrets
from monitor.probing.results import CheckResult
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

SERVICE = "PagerDuty"
CLIENT = "fly-monitor"
TRIGGER, ACKNOWLEDGE, RESOLVE = "trigger", "acknowledge", "resolve"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024  # PagerDuty's limit for payload.summary
DEDUP_KEY_LIMIT = 255  # PagerDuty's limit for dedup_key
DETAIL_LIMIT = 300  # characters of a probe's detail line in custom_details
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")

_ACTIONS = {
    EventKind.OPENED: TRIGGER,
    EventKind.UPDATED: TRIGGER,
    EventKind.REMINDER: TRIGGER,
    EventKind.REOPENED: TRIGGER,
    EventKind.MAINTENANCE: TRIGGER,
    EventKind.ACKNOWLEDGED: ACKNOWLEDGE,
    EventKind.RESOLVED: RESOLVE,
}


def dedup_key(key: str) -> str:
    """``key`` if PagerDuty takes it whole, else a prefix and a hash (still stable)."""
    if len(key) <= DEDUP_KEY_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: DEDUP_KEY_LIMIT - 17]}-{digest}"


def plain(value: str, limit: int) -> str:
    """Text from outside as PagerDuty shows it: one line, bounded, known secrets masked."""
    flat = " ".join(str(value)[: limit * 4 + 64].split())
    flat = secrets.redact(_CONTROL.sub("", flat))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def summary(event: IncidentEvent) -> str:
    """The alert's title: what is wrong with which target, in words."""
    incident, result = event.incident, event.result
    target = incident.target
    failing = ", ".join(text.describe_failure(c) for c in result.failing)
    what = failing or ("degraded" if result.ok else result.outcome.value)
    if event.kind is EventKind.RESOLVED:
        duration = format_duration(max(incident.duration_s or 0, 1))
        words = f"{target} recovered after {duration}"
    elif event.kind is EventKind.REOPENED:
        words = f"{target} is failing again: {what}"
    elif event.kind is EventKind.REMINDER:
        elapsed = format_duration(max(incident.elapsed_s(event.decided_at), 1))
        words = f"{target} is still down after {elapsed}: {what}"
    elif result.failing:
        words = f"{target} is down: {what}"
    else:
        words = f"{target} is {what}"
    return plain(words, SUMMARY_LIMIT)


def source(event: IncidentEvent) -> str:
    """The affected system, as PagerDuty asks: the host of the failing check, else the
    target's name."""
    checks = event.result.failing or list(event.result.checks)
    for check in checks:
        host = urlsplit(check.url).hostname
        if host:
            return host
    return event.target


def custom_details(event: IncidentEvent) -> dict[str, Any]:
    """What on-call reads under the alert: the failing checks and the incident's times."""
    incident = event.incident
    details: dict[str, Any] = {
        "incident_id": incident.id,
        "target": incident.target,
        "event": event.kind.value,
        "started_at": incident.started_at.isoformat(),
        "probes": f"{incident.probes_failed} of {incident.probes_total} failed",
        "failing": [_failing(check) for check in event.result.failing],
    }
    if event.detail:
        details["detail"] = plain(event.detail, DETAIL_LIMIT)
    if incident.resolved_at is not None and event.kind is EventKind.RESOLVED:
        duration_s = incident.duration_s or 0.0
        details["resolved_at"] = incident.resolved_at.isoformat()
        details["duration_s"] = round(duration_s, 3)
        details["duration"] = format_duration(max(duration_s, 1))
    return details


def _failing(check: CheckResult) -> dict[str, Any]:
    return {
        "check": check.check,
        "reason": check.reason.value,
        "status": check.status_code,
        "detail": plain(check.detail, DETAIL_LIMIT),
    }


def _event_class(event: IncidentEvent) -> str:
    if event.kind is EventKind.RESOLVED:
        return "recovered"
    failing = event.result.failing
    return failing[0].reason.value if failing else event.result.outcome.value


class PagerDutyChannel:
    """Incident events as one PagerDuty alert per incident, keyed by the incident id."""

    def __init__(self, config: ChannelConfig, *, status_url: str | None) -> None:
        if config.secret is None or not config.secret.get_secret_value().strip():
            raise ValueError(
                f"channels[{config.name}].secret_env ({config.secret_env or 'not set'}): a"
                " pagerduty channel needs the integration's routing key"
            )
        self.name: str = config.name
        self.kind: str = config.type
        self._config = config
        self._routing_key = config.secret.get_secret_value().strip()
        self._url = config.endpoint or ""
        self._status_url = status_url
        self._http = http.client(config.timeout)

    def close(self) -> None:
        """Release the HTTP client's connections (the process's end, or a test's)."""
        self._http.close()

    # ---- planning: when the event is decided ------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """One event per subscribed incident event, rendered now (without the key)."""
        if not self._config.wants(event.target, event.kind.value):
            return []
        action = _ACTIONS[event.kind]
        body: dict[str, Any] = {
            "event_action": action,
            "dedup_key": dedup_key(event.incident.id),
            "client": CLIENT,
        }
        status_url = event.status_url or self._status_url
        if status_url:
            body["client_url"] = status_url
            body["links"] = [{"href": status_url, "text": "Status page"}]
        if action != ACKNOWLEDGE:  # an acknowledge is the key alone
            severity = event.severity if event.severity in SEVERITIES else "critical"
            body["payload"] = {
                "summary": summary(event),
                "source": source(event),
                "severity": severity,
                "timestamp": event.decided_at.isoformat(),
                "component": event.target,
                "class": _event_class(event),
                "custom_details": custom_details(event),
            }
        return [NewAction(self.name, event.incident.id, event.target, action, body)]

    # ---- delivery: in the outbox worker ------------------------------------------------

    def settle_s(self, action: OutboxAction) -> float:
        """No lease: PagerDuty deduplicates every step by its dedup_key."""
        return 0.0

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Send the stored event with the routing key, linking the issue as it stands now."""
        body = dict(action.payload)
        if body.get("event_action") not in (TRIGGER, ACKNOWLEDGE, RESOLVE):
            raise ChannelError(
                "invalid", f"unreadable PagerDuty step {action.kind!r}", permanent=True
            )
        issue = delivery.issue(action.incident_id)
        if issue is not None and issue.url:
            label = f"GitHub issue #{issue.number}" if issue.number else "GitHub issue"
            links = body.get("links")
            body["links"] = [{"href": issue.url, "text": label}] + (
                list(links) if isinstance(links, list) else []
            )
        self._send(body)
        return None

    def send_notice(self, notice: Notice) -> None:
        """An ``info`` trigger keyed by the notice; a test is resolved right after."""
        key = dedup_key(notice.key)
        title = plain(notice.title, 200)
        if notice.test:
            title = f"[TEST] {title}: nobody needs to act"
        severity = notice.severity if notice.severity in SEVERITIES else "info"
        details: dict[str, Any] = {"body": plain(notice.body, 2000), "test": notice.test}
        trigger: dict[str, Any] = {
            "event_action": TRIGGER,
            "dedup_key": key,
            "client": CLIENT,
            "payload": {
                "summary": plain(title, SUMMARY_LIMIT),
                "source": CLIENT,
                "severity": severity,
                "timestamp": utcnow().isoformat(),
                "component": CLIENT,
                "class": "test" if notice.test else "notice",
                "custom_details": details,
            },
        }
        if self._status_url:
            trigger["client_url"] = self._status_url
            trigger["links"] = [{"href": self._status_url, "text": "Status page"}]
        self._send(trigger)
        if notice.test:
            try:
                self._send({"event_action": RESOLVE, "dedup_key": key})
            except ChannelError as exc:
                raise ChannelError(
                    exc.reason,
                    f"the test alert was sent but not resolved (resolve it by hand): {exc}",
                    retry_after_s=exc.retry_after_s,
                    auth=exc.auth,
                    permanent=exc.permanent,
                ) from None

    def _send(self, body: Mapping[str, Any]) -> None:
        """POST one event with the routing key; ChannelError (never quoting the key)."""
        try:
            response = self._http.post(self._url, json={**body, "routing_key": self._routing_key})
        except httpx.HTTPError as exc:
            raise http.transport_error(SERVICE, exc, self._http.timeout.read or 0.0) from None
        # before the reply is read (and cut to an excerpt): an echoed key goes whole
        error = http.refusal(SERVICE, http.without(response, self._routing_key))
        if error is not None:
            raise error
