"""Signed webhooks: each incident event as one JSON POST, per the Standard Webhooks spec.

The contract (https://github.com/standard-webhooks/standard-webhooks,
``spec/standard-webhooks.md``, version 1.0.0) and how this channel keeps it:

* the secret is ``whsec_`` and base64 of 24 to 64 random bytes, checked when the
  channel is built; signing is the ``standardwebhooks`` package's own
  (``Webhook(secret).sign``): HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}``,
  sent as ``webhook-signature: v1,<base64>``;
* ``webhook-id`` identifies the *event*, not the attempt: ``msg_`` and a hash of the
  channel name and the event key, fixed when the event is planned, so every retry
  carries the same id and a receiver deduplicates on it (the spec: "use the
  webhook-id header as an idempotency key"). ``webhook-timestamp`` (integer Unix
  seconds) and the signature are made at each attempt: receivers refuse a timestamp
  more than five minutes from their clock. Delivery is at-least-once with a stable
  id, so no lease is needed (``settle_s`` is 0): the receiver drops a repeat;
* 2xx is success; 410 Gone means "stop sending": the channel is disabled until the
  next start and says so; 429 (with ``Retry-After``), 5xx, time-outs and broken
  connections are retried; a redirect or any other 4xx stops the channel's queue
  (a person must fix the URL or the receiver).

The body (``Content-Type: application/json``, compact JSON, the same schema for every
event; ``null`` where a value is not known)::

    {
      "type": "incident.opened",      // incident.opened | incident.updated |
                                      // incident.reminder | incident.resolved |
                                      // incident.reopened | incident.acknowledged |
                                      // incident.maintenance | monitor.notice |
                                      // monitor.test
      "timestamp": "2026-11-01T12:02:00Z",  // when the monitor decided the event (UTC)
      "data": {                       // for incident.* types:
        "incident_id": "production-20261101T120000Z",
        "target": "production",
        "severity": "critical",       // the target's: critical | error | warning | info
        "outcome": "down",            // the latest probe's: up | degraded | down
        "started_at": "2026-11-01T12:00:00Z",  // the first failed probe
        "resolved_at": null,          // the first good probe of the closing streak
        "duration_s": null,           // resolved_at - started_at, once resolved
        "probes_total": 3,
        "probes_failed": 3,
        "failing": [                  // the checks that are down (empty at resolve)
          {"check": "health", "reason": "status", "status": 503,
           "detail": "expected [200], got 503"}
        ],
        "detail": "",                 // updated: what changed; maintenance: the window;
                                      // acknowledged: how
        "actor": null,                // acknowledged: who (a GitHub login), if known
        "issue_url": null,            // the incident's GitHub issue, once it has one
        "status_url": null,           // the public status page, when configured
        "regions": [                  // present only when several regions probe
          {"region": "ams", "outcome": "down", "fresh": true,
           "since": "2026-11-01T12:00:00Z", "at": "2026-11-01T12:01:50Z"}
        ]
      }
    }

``monitor.notice`` (``monitor notify``) and ``monitor.test`` (``monitor notify test``:
nobody needs to act) carry ``data: {"title", "body", "severity", "test"}``.

Reasons (``reason`` in ``failing``) are the probe's closed set: ``dns``, ``connect``,
``tls``, ``timeout``, ``status``, ``condition``, ``invalid_json``, ``too_large``,
``slow``, ``error``. ``detail`` texts come from the probed service: they are cut to
300 characters and known secrets are masked, but they are not otherwise trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from monitor.config.schema import ChannelConfig
from monitor.incidents.channels import http
from monitor.incidents.channels.base import ChannelError, Delivery, Notice
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import secrets
from monitor.probing.results import CheckResult
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix every such secret has, not a secret
SECRET_MIN_BYTES = 24  # the spec: "at least 24 bytes (192 bits, 512 maximum)"
SECRET_MAX_BYTES = 64
DETAIL_LIMIT = 300  # characters of a probe's detail line in ``failing``
POST = "post"  # the channel's one step kind: send the event

EVENT_TYPES = {
    EventKind.OPENED: "incident.opened",
    EventKind.UPDATED: "incident.updated",
    EventKind.REMINDER: "incident.reminder",
    EventKind.RESOLVED: "incident.resolved",
    EventKind.REOPENED: "incident.reopened",
    EventKind.ACKNOWLEDGED: "incident.acknowledged",
    EventKind.MAINTENANCE: "incident.maintenance",
}
NOTICE_TYPE = "monitor.notice"
TEST_TYPE = "monitor.test"


def signer(config: ChannelConfig) -> Webhook:
    """The signer for ``config.secret``; a ValueError (never quoting the secret) unless it
    is a Standard Webhooks symmetric secret."""
    where = f"channels[{config.name}].secret_env ({config.secret_env or 'not set'})"
    if config.secret is None:
        raise ValueError(f"{where}: a webhook channel needs a signing secret")
    secret = config.secret.get_secret_value()
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"{where}: the signing secret must start with {SECRET_PREFIX} followed by"
            " base64 (a Standard Webhooks secret)"
        )
    key = secret.removeprefix(SECRET_PREFIX)
    try:
        # unpadded base64 is accepted, as the package's own verifier accepts it
        raw = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the part after {SECRET_PREFIX} is not valid base64") from None
    if not SECRET_MIN_BYTES <= len(raw) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"{where}: the signing key is {len(raw)} bytes; Standard Webhooks asks for"
            f" {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes"
        )
    return Webhook(raw)


def message_id(channel: str, key: str) -> str:
    """``msg_`` and a hash of the channel and the event key: the same on every retry."""
    digest = hashlib.sha256(f"{channel}\n{key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def iso(moment: datetime | None) -> str | None:
    """``2026-11-01T12:00:00Z`` (UTC, to the second), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident_data(event: IncidentEvent, status_url: str | None) -> dict[str, Any]:
    """The ``data`` of an ``incident.*`` document, without its issue (known at delivery)."""
    incident, result = event.incident, event.result
    data: dict[str, Any] = {
        "incident_id": incident.id,
        "target": incident.target,
        "severity": event.severity,
        "outcome": result.outcome.value,
        "started_at": iso(incident.started_at),
        "resolved_at": iso(incident.resolved_at),
        "duration_s": incident.duration_s,
        "probes_total": incident.probes_total,
        "probes_failed": incident.probes_failed,
        "failing": [_failing_check(check) for check in result.failing],
        "detail": _untrusted(event.detail),
        "actor": event.actor,
        "issue_url": None,
        "status_url": event.status_url or status_url,
    }
    if event.regions:
        data["regions"] = [
            {
                "region": view.region,
                "outcome": view.outcome.value,
                "fresh": view.fresh,
                "since": iso(view.since),
                "at": iso(view.at),
            }
            for view in event.regions
        ]
    return data


def _failing_check(check: CheckResult) -> dict[str, Any]:
    return {
        "check": check.check,
        "reason": check.reason.value,
        "status": check.status_code,
        "detail": _untrusted(check.detail),
    }


def _untrusted(text: str) -> str:
    """A probed service's words: one line, bounded, known secrets masked."""
    return secrets.redact(" ".join(text.split())[:DETAIL_LIMIT])


class WebhookChannel:
    """Incident events as signed JSON POSTs to one URL; the receiver dedupes by id."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        status_url: str | None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if config.url is None:
            raise ValueError(f"channels[{config.name}].url: required for a webhook channel")
        self.name: str = config.name
        self.kind: str = config.type
        self._config = config
        self._url = config.url
        self._status_url = status_url
        self._signer = signer(config)
        # the signature's timestamp is checked against the receiver's clock, so it is
        # the real time, whatever clock decides events
        self._wall_clock = wall_clock
        self._service = f"webhook {config.name}"  # never the URL: it may carry a token
        self._http = http.client(config.timeout)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    # ---- planning: when the event is decided ------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """One POST per subscribed event, its document and id fixed now."""
        if not self._config.wants(event.target, event.kind.value):
            return []
        payload = {
            "webhook_id": message_id(self.name, event.key),
            "type": EVENT_TYPES[event.kind],
            "timestamp": iso(event.decided_at),
            "data": incident_data(event, self._status_url),
        }
        return [NewAction(self.name, event.incident.id, event.target, POST, payload)]

    # ---- delivery: in the outbox worker ------------------------------------------------

    def settle_s(self, action: OutboxAction) -> float:
        """No lease: a repeat carries the same webhook-id, which the receiver drops."""
        return 0.0

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """POST the event, signed now; the incident's issue link as it stands now."""
        payload = action.payload
        msg_id, data = payload.get("webhook_id"), payload.get("data")
        if action.kind != POST or not isinstance(msg_id, str) or not isinstance(data, Mapping):
            raise ChannelError(
                "invalid", f"unreadable webhook step {action.kind!r}", permanent=True
            )
        issue = delivery.issue(action.incident_id)
        document = {
            "type": payload.get("type"),
            "timestamp": payload.get("timestamp"),
            "data": {**data, "issue_url": issue.url if issue is not None else None},
        }
        self._post(msg_id, document)
        return None

    def send_notice(self, notice: Notice) -> None:
        """A ``monitor.notice`` (or ``monitor.test``) document, sent now."""
        title = f"[TEST] {notice.title}" if notice.test else notice.title
        body = notice.body
        if notice.test:
            body = (body + "\n\n" if body else "") + "This is a test: nobody needs to act."
        document = {
            "type": TEST_TYPE if notice.test else NOTICE_TYPE,
            "timestamp": iso(datetime.fromtimestamp(self._wall_clock(), UTC)),
            "data": {
                "title": title,
                "body": body,
                "severity": notice.severity,
                "test": notice.test,
            },
        }
        self._post(message_id(self.name, f"notice:{notice.key}"), document)

    def _post(self, msg_id: str, document: Mapping[str, Any]) -> None:
        """Sign ``document`` for this attempt and POST it; ChannelError unless 2xx."""
        body = json.dumps(document, separators=(",", ":"))
        sent_at = datetime.fromtimestamp(int(self._wall_clock()), UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(msg_id, sent_at, body),
        }
        http.post_json(
            self._http, self._service, self._url, None, headers=headers, content=body.encode()
        )
