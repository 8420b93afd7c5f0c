"""Slack: one message per incident, kept current, with its story in the thread.

Two ways to reach Slack, chosen by what ``secret_env`` holds; they do not behave alike:

* **A bot token** (``xoxb-...``, or a user token ``xoxp-...``) and ``channel``: the Web
  API at ``url`` (default ``https://slack.com/api``). Each incident is **one message**
  in the channel (``chat.postMessage`` when it opens), rewritten to the incident's
  current state (open, acknowledged, resolved with its duration) with ``chat.update``
  on every later event, while the events themselves (updates, reminders, reopen,
  acknowledgement, resolution) are **replies in its thread** (``chat.postMessage`` with
  ``thread_ts``). The bot needs ``chat:write`` and ``channels:history`` (or
  ``groups:history`` for a private channel); ``channel`` is best given as an ID
  (``C0123ABCD``): a name costs ``channels:read`` too, to find its ID once.
* **An incoming-webhook URL** (``https://hooks.slack.com/services/...``; the URL itself
  is the secret and is never logged): **one plain message per event**, with the
  incident's state and what happened. A webhook cannot thread, edit or read, so there
  is no single message per incident, no updates in place, and delivery is
  at-least-once: a crash between Slack posting a message and the monitor recording
  it may post that message again.

The Web API contract (docs.slack.dev: ``reference/methods/chat.postMessage``,
``chat.update``, ``conversations.history``, ``conversations.replies``,
``conversations.list``; ``apis/web-api`` for the transport) and how this channel keeps it:

* the token travels only in ``Authorization: Bearer``; write methods take a JSON body
  (``Content-Type: application/json; charset=utf-8``), read methods a query string;
* Slack answers HTTP 200 with ``{"ok": false, "error": ...}`` for most failures:
  ``ratelimited`` (or HTTP 429) holds the channel for ``Retry-After`` (60 s if unsaid);
  ``internal_error``, ``fatal_error``, ``service_unavailable``, ``request_timeout`` and
  5xx are retried; every other error (``invalid_auth``, ``channel_not_found``,
  ``not_in_channel``, ``is_archived``, ``msg_too_long``, ...) is a permanent refusal
  that stops the channel's queue until it is accepted again;
* Slack cannot deduplicate ``chat.postMessage``. Every message we post carries
  ``metadata`` ``{"event_type": "monitor_incident", "event_payload": {"incident_id",
  "key"}}``; a post or reply is leased (:data:`SETTLE_S`) and, when an earlier attempt
  may have landed (it failed, timed out, or the process died holding the lease), it is
  first looked for (``conversations.history`` from the step's creation, or
  ``conversations.replies`` of the thread, with ``include_all_metadata``) and adopted
  rather than posted twice. ``chat.update`` is idempotent and is simply repeated;
* a reply or update whose incident has no message yet (the channel was added while it
  was open, say) posts one, which becomes the incident's message.

Every text from a probed service is escaped as Slack asks (``&``, ``<``, ``>`` become
entities), so it cannot mention anyone (``<!channel>``, ``<@U...>``) or forge a link,
and a bare ``@`` gets a zero-width space.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from monitor.config import format_duration
from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels import http
from monitor.incidents.channels.base import GONE, ChannelError, Delivery, Notice
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import get_logger, secrets
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

log = get_logger("monitor.slack")

SERVICE = "Slack"
WEBHOOK_SERVICE = "Slack webhook"  # never the URL: it is the secret
POST, REPLY, UPDATE, MESSAGE = "post", "reply", "update", "message"
EVENT_TYPE = "monitor_incident"  # our messages' metadata event_type
NOTICE_EVENT_TYPE = "monitor_notice"
TOKEN_PREFIXES = ("xoxb-", "xoxp-")
# A post that timed out may still be running at Slack: nobody looks for it (and posts
# again when it is not there yet) before this long.
SETTLE_S = 30.0
# how far before a step's creation the look-up starts: our clock and Slack's may differ
CLOCK_SKEW_S = 60.0
LOOKUP_PAGE = 200  # messages per page of a look-up
LOOKUP_PAGES = 5  # pages looked through before giving up and posting
CHANNEL_LIST_PAGES = 50  # pages of conversations.list looked through for a channel name
SECTION_LIMIT = 3000  # Slack's limit for a section block's text
DETAIL_LIMIT = 300  # characters of one probe detail
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
ZWSP = "\u200b"

_RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})
_TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# permanent refusals the channel tells apart (the rest are "rejected")
_NAMED = frozenset(
    {"channel_not_found", "not_in_channel", "is_archived", "message_not_found", "thread_not_found"}
)
_AUTH = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "access_denied",
        "ekm_access_denied",
        "team_access_not_granted",
    }
)


# ---- words ------------------------------------------------------------------------------


def escape(value: str, limit: int = DETAIL_LIMIT) -> str:
    """Outside text for mrkdwn: one line, bounded, secrets masked, ``& < >`` as entities,
    and no ``@`` that could ever become a mention."""
    flat = " ".join(str(value)[: limit * 4 + 64].split())
    flat = secrets.redact(_CONTROL.sub("", flat))
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    escaped = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("@", "@" + ZWSP)


def link(url: str, label: str) -> str:
    """A mrkdwn link whose URL cannot end the link early."""
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{escape(label, 80)}>"


def _marker(event: IncidentEvent) -> str:
    """The severity in words (no emoji: screen readers and plain-text mail read it)."""
    if event.kind is EventKind.RESOLVED:
        return "[RESOLVED]"
    return f"[{event.severity.upper()}]"


def _failing(event: IncidentEvent) -> str:
    parts = [
        f"{text.describe_failure(c)} ({c.detail})" if c.detail else text.describe_failure(c)
        for c in event.result.failing
    ]
    return "; ".join(parts)


def state(event: IncidentEvent) -> dict[str, Any]:
    """The incident's message as it should read after ``event`` (mrkdwn, escaped)."""
    incident, result = event.incident, event.result
    target = escape(incident.target, 100)
    probes = f"{incident.probes_failed} of {incident.probes_total} probes failed"
    if incident.resolved_at is not None:
        duration = format_duration(max(incident.duration_s or 0, 1))
        headline = f"{_marker(event)} {target} was down for {duration}"
        lines = [
            f"From {text.utc(incident.started_at)} to {text.utc(incident.resolved_at)} ({probes})."
        ]
        fallback = f"{headline}."
        status = "resolved"
    else:
        failing = escape(_failing(event), 1200)
        words = "is down" if result.failing else "is degraded"
        headline = f"{_marker(event)} {target} {words}"
        lines = [f"Failing: {failing}"] if failing else []
        lines.append(f"Since {text.utc(incident.started_at)} ({probes}).")
        fallback = f"{headline}: {failing}" if failing else headline
        status = "open"
    return {
        "headline": headline,
        "lines": lines,
        "text": fallback,
        "state": status,
        "as_of": text.utc(event.decided_at),
    }


def happening(event: IncidentEvent) -> str:
    """What the event says in the thread (mrkdwn, escaped); empty for an opening."""
    incident, result = event.incident, event.result
    at = text.utc(result.at)
    if event.kind is EventKind.UPDATED:
        failing = escape(_failing(event), 1200) or result.outcome.value
        return f"*The failure changed* at {at}: {escape(event.detail)}. Now: {failing}"
    if event.kind is EventKind.REMINDER:
        elapsed = format_duration(max(incident.elapsed_s(event.decided_at), 1))
        return (
            f"*Still open* after {elapsed} (since {text.utc(incident.started_at)}):"
            f" {incident.probes_failed} of {incident.probes_total} probes failed."
        )
    if event.kind is EventKind.RESOLVED:
        duration_s = incident.duration_s or 0
        return (
            f"*Resolved.* {escape(incident.target, 100)} was down for"
            f" {format_duration(max(duration_s, 1))} ({duration_s:.0f} s)."
        )
    if event.kind is EventKind.REOPENED:
        failing = escape(_failing(event), 1200) or result.outcome.value
        return (
            f"*Failing again* at {at}: {failing}. Reopened; the incident still counts"
            f" from {text.utc(incident.started_at)}."
        )
    if event.kind is EventKind.ACKNOWLEDGED:
        who = f" by {escape(event.actor, 60)}" if event.actor else ""
        detail = f": {escape(event.detail)}" if event.detail else ""
        return f"*Acknowledged*{who}{detail}"
    if event.kind is EventKind.MAINTENANCE:
        return f"*Maintenance window* {escape(event.detail)}. Nobody is paged meanwhile."
    return ""


def section(mrkdwn: str) -> dict[str, Any]:
    """A section block, cut to Slack's limit at a space (never inside an entity)."""
    if len(mrkdwn) > SECTION_LIMIT:
        cut = mrkdwn.rfind(" ", 0, SECTION_LIMIT - 2)
        mrkdwn = mrkdwn[: cut if cut > 0 else SECTION_LIMIT - 2] + " …"
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def context(mrkdwn: str) -> dict[str, Any]:
    """A context block: the small grey line under a message."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:SECTION_LIMIT]}]}


# ---- the incident's message in the channel ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parent:
    """The incident's message: where it is, and who acknowledged the incident."""

    channel: str
    ts: str
    acknowledged_by: str | None = None

    @classmethod
    def of(cls, handle: ChannelHandle | None) -> Parent | None:
        """The message a handle records, if it records one."""
        if handle is None or not handle.ref:
            return None
        try:
            data = json.loads(handle.ref)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        channel, ts, ack = data.get("channel"), data.get("ts"), data.get("acknowledged_by")
        if not isinstance(channel, str) or not isinstance(ts, str):
            return None
        return cls(channel, ts, ack if isinstance(ack, str) else None)

    def handle(self) -> ChannelHandle:
        """What the store keeps for the incident."""
        data = {"channel": self.channel, "ts": self.ts}
        if self.acknowledged_by is not None:
            data["acknowledged_by"] = self.acknowledged_by
        return ChannelHandle(ref=json.dumps(data, separators=(",", ":")))


def maybe_sent(action: OutboxAction) -> bool:
    """True when an earlier attempt at ``action`` may have reached Slack.

    It failed (``attempts``), or a process leased it and never recorded an outcome: a
    step is due at its creation until a lease moves it, so a later due time with no
    attempt counted means someone sent it and died.
    """
    return action.attempts > 0 or action.next_attempt_at > action.created_at


def _carries(message: object, incident_id: str, key: str) -> bool:
    if not isinstance(message, dict):
        return False
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE:
        return False
    found = metadata.get("event_payload")
    return (
        isinstance(found, dict)
        and found.get("incident_id") == incident_id
        and found.get("key") == key
    )


def _metadata(incident_id: str, key: str) -> dict[str, Any]:
    return {"event_type": EVENT_TYPE, "event_payload": {"incident_id": incident_id, "key": key}}


class SlackChannel:
    """Incident events in a Slack channel: by bot token (threads) or webhook (messages)."""

    def __init__(self, config: ChannelConfig, *, status_url: str | None) -> None:
        secret = config.secret.get_secret_value().strip() if config.secret else ""
        where = f"channels[{config.name}].secret_env ({config.secret_env or 'not set'})"
        self.name: str = config.name
        self.kind: str = config.type
        self._config = config
        self._status_url = status_url
        self._token: str | None = None
        self._webhook: str | None = None
        if secret.startswith(TOKEN_PREFIXES):
            if not config.channel:
                raise ValueError(f"channels[{config.name}].channel: required with a bot token")
            self._token = secret
            self._api = (config.endpoint or "").rstrip("/")
        elif secret.startswith(("https://", "http://")):
            self._webhook = secret
        else:
            raise ValueError(
                f"{where}: a slack channel needs a bot token (xoxb-...) or an incoming"
                " webhook URL (https://hooks.slack.com/services/...)"
            )
        self._channel_id: str | None = None  # the configured channel's ID, once known
        self._http = http.client(config.timeout)

    @property
    def threaded(self) -> bool:
        """True with a bot token: one message per incident, events in its thread."""
        return self._token is not None

    def close(self) -> None:
        """Release the HTTP client's connections (the process's end, or a test's)."""
        self._http.close()

    # ---- planning: when the event is decided ------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """Bot: post on opening, else a reply and an update. Webhook: one message."""
        if not self._config.wants(event.target, event.kind.value):
            return []
        payload: dict[str, Any] = {
            **state(event),
            "key": event.key,
            "body": happening(event),
            "status_url": event.status_url or self._status_url,
        }

        def step(kind: str, *, supersede: bool = False, **extra: Any) -> NewAction:
            return NewAction(
                self.name,
                event.incident.id,
                event.target,
                kind,
                {**payload, **extra},
                supersede=supersede,
            )

        if not self.threaded:
            return [step(MESSAGE)]
        if event.kind is EventKind.OPENED:
            return [step(POST)]
        ack: dict[str, Any] = {}
        if event.kind is EventKind.ACKNOWLEDGED:
            ack = {"acknowledged_by": event.actor or "someone"}
        elif event.kind is EventKind.REOPENED:
            ack = {"clear_acknowledged": True}
        # the update's own key: should it have to post, its message is not the reply's
        return [step(REPLY, **ack), step(UPDATE, supersede=True, key=f"{event.key}:state")]

    # ---- delivery: in the outbox worker ------------------------------------------------

    def settle_s(self, action: OutboxAction) -> float:
        """Posts and replies may land after we die mid-request: lease them.

        An update is repeatable, and a webhook message cannot be looked for: no lease.
        """
        return SETTLE_S if self.threaded and action.kind in (POST, REPLY) else 0.0

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Perform one step; a post (or a fallback post) returns the incident's message."""
        if not self.threaded:
            self._webhook_send(self._standalone(action, delivery, with_body=True))
            return None
        parent = Parent.of(delivery.handle)
        if action.kind == POST:
            if parent is not None:
                return None  # already posted (and recorded) for this incident
            return self._post_parent(action, delivery, with_body=False).handle()
        if action.kind == REPLY:
            return self._reply(action, delivery, parent)
        if action.kind == UPDATE:
            if parent is None:
                return self._post_parent(action, delivery, with_body=False).handle()
            self._update(action, delivery, parent)
            return None
        raise ChannelError("invalid", f"unknown Slack step {action.kind!r}", permanent=True)

    def _post_parent(self, action: OutboxAction, delivery: Delivery, *, with_body: bool) -> Parent:
        """Post the incident's message in the configured channel, unless it is there."""
        payload = action.payload
        key = text.payload_text(payload, "key")
        if maybe_sent(action):
            found = self._look_in_channel(action.incident_id, key, action)
            if found is not None:
                log.warning(
                    "slack message already posted; adopting it",
                    sink=self.name,
                    incident=action.incident_id,
                    key=key,
                )
                return found
        message = self._standalone(action, delivery, with_body=with_body)
        reply = self._write(
            "chat.postMessage",
            {
                "channel": self._config.channel,
                **message,
                "metadata": _metadata(action.incident_id, key),
                "unfurl_links": False,
                "unfurl_media": False,
            },
        )
        posted = Parent(_string(reply, "channel"), _string(reply, "ts"))
        self._channel_id = posted.channel
        return posted

    def _reply(
        self, action: OutboxAction, delivery: Delivery, parent: Parent | None
    ) -> ChannelHandle | None:
        payload = action.payload
        if parent is None:  # no message for the incident yet: this one becomes it
            return self._acknowledged(
                self._post_parent(action, delivery, with_body=True), payload
            ).handle()
        key = text.payload_text(payload, "key")
        if not (maybe_sent(action) and self._in_thread(parent, action.incident_id, key, action)):
            body = text.payload_text(payload, "body")
            self._write(
                "chat.postMessage",
                {
                    "channel": parent.channel,
                    "thread_ts": parent.ts,
                    "text": body,
                    "blocks": [section(body)],
                    "metadata": _metadata(action.incident_id, key),
                    "unfurl_links": False,
                    "unfurl_media": False,
                },
            )
        after = self._acknowledged(parent, payload)
        return after.handle() if after != parent else None

    def _update(self, action: OutboxAction, delivery: Delivery, parent: Parent) -> None:
        message = self._message(action, delivery, parent.acknowledged_by, with_body=False)
        try:
            self._write("chat.update", {"channel": parent.channel, "ts": parent.ts, **message})
        except ChannelError as exc:
            if exc.reason != "message_not_found":
                raise
            # someone deleted the incident's message: nothing left to rewrite
            raise ChannelError(GONE, "the incident's Slack message no longer exists") from None

    @staticmethod
    def _acknowledged(parent: Parent, payload: Mapping[str, Any]) -> Parent:
        by = payload.get("acknowledged_by")
        if isinstance(by, str):
            return Parent(parent.channel, parent.ts, by)
        if payload.get("clear_acknowledged"):
            return Parent(parent.channel, parent.ts)
        return parent

    # ---- rendering at delivery: the links known now -----------------------------------------

    def _standalone(
        self, action: OutboxAction, delivery: Delivery, *, with_body: bool
    ) -> dict[str, Any]:
        by = action.payload.get("acknowledged_by")
        return self._message(action, delivery, by if isinstance(by, str) else None, with_body)

    def _message(
        self, action: OutboxAction, delivery: Delivery, acknowledged_by: str | None, with_body: bool
    ) -> dict[str, Any]:
        """``text`` and ``blocks`` of the incident's message, as it stands now."""
        payload = action.payload
        headline = text.payload_text(payload, "headline")
        lines = payload.get("lines")
        detail = [str(line) for line in lines] if isinstance(lines, list) else []
        fallback = text.payload_text(payload, "text")
        if acknowledged_by and payload.get("state") == "open":
            detail.append(f"Acknowledged by {escape(acknowledged_by, 60)}.")
            fallback += " (acknowledged)"
        blocks = [section("\n".join([f"*{headline}*", *detail]))]
        body = text.payload_text(payload, "body")
        if with_body and body:
            blocks.append(section(body))
        blocks.append(context(self._links(action, delivery)))
        return {"text": fallback, "blocks": blocks}

    def _links(self, action: OutboxAction, delivery: Delivery) -> str:
        parts = []
        issue = delivery.issue(action.incident_id)
        if issue is not None and issue.url:
            parts.append(link(issue.url, f"GitHub issue #{issue.number}"))
        status_url = text.payload_text(action.payload, "status_url")
        if status_url:
            parts.append(link(status_url, "Status page"))
        parts.append(f"Incident {escape(action.incident_id, 120)}")
        as_of = text.payload_text(action.payload, "as_of")
        if as_of:
            parts.append(f"as of {as_of}")
        return " · ".join(parts)

    # ---- look-ups before a repeat -------------------------------------------------------------

    def _look_in_channel(self, incident_id: str, key: str, action: OutboxAction) -> Parent | None:
        channel = self._configured_channel_id()
        params = {"channel": channel, **self._window(action)}
        ts = self._find("conversations.history", params, incident_id, key)
        return Parent(channel, ts) if ts is not None else None

    def _in_thread(self, parent: Parent, incident_id: str, key: str, action: OutboxAction) -> bool:
        params = {"channel": parent.channel, "ts": parent.ts, **self._window(action)}
        try:
            found = self._find("conversations.replies", params, incident_id, key)
        except ChannelError as exc:
            if exc.reason != "thread_not_found":
                raise
            return False  # the thread has no replies yet (or its message is gone)
        if found is not None:
            log.warning(
                "slack reply already posted; not posting it again",
                sink=self.name,
                incident=incident_id,
                key=key,
            )
        return found is not None

    @staticmethod
    def _window(action: OutboxAction) -> dict[str, str]:
        oldest = action.created_at.timestamp() - CLOCK_SKEW_S
        return {"oldest": f"{oldest:.6f}", "include_all_metadata": "true"}

    def _find(
        self, method: str, params: Mapping[str, str], incident_id: str, key: str
    ) -> str | None:
        """The ts of our message for ``key`` among a bounded number of pages, or None."""
        query = {**params, "limit": str(LOOKUP_PAGE)}
        for _ in range(LOOKUP_PAGES):
            page = self._read(method, query)
            messages = page.get("messages")
            for message in messages if isinstance(messages, list) else []:
                if _carries(message, incident_id, key):
                    return str(message.get("ts"))
            cursor = _next_cursor(page)
            if not page.get("has_more") or not cursor:
                return None
            query["cursor"] = cursor
        log.warning(
            "too many messages to look through; posting without knowing",
            sink=self.name,
            incident=incident_id,
            key=key,
        )
        return None

    def _configured_channel_id(self) -> str:
        """The configured channel's ID: as given, learned from a post, or looked up."""
        configured = self._config.channel or ""
        if _CHANNEL_ID.match(configured):
            return configured
        if self._channel_id is not None:
            return self._channel_id
        name = configured.lstrip("#")
        query = {
            "types": "public_channel,private_channel",
            "exclude_archived": "true",
            "limit": str(LOOKUP_PAGE),
        }
        for _ in range(CHANNEL_LIST_PAGES):
            page = self._read("conversations.list", query)
            channels = page.get("channels")
            for found in channels if isinstance(channels, list) else []:
                if isinstance(found, dict) and found.get("name") == name:
                    self._channel_id = str(found.get("id"))
                    return self._channel_id
            cursor = _next_cursor(page)
            if not cursor:
                break
            query["cursor"] = cursor
        raise ChannelError(
            "channel_not_found",
            f"Slack: no channel #{escape(name, 80)} visible to the bot (configure its ID,"
            " or invite the bot)",
            permanent=True,
        )

    # ---- the wire -------------------------------------------------------------------------

    def _write(self, method: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """A write method with a JSON body; the reply's fields, or ChannelError."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json; charset=utf-8",
        }
        body = json.dumps(args, separators=(",", ":")).encode()
        url = f"{self._api}/{method}"
        return self._answer(method, self._exchange(SERVICE, "POST", url, headers, content=body))

    def _read(self, method: str, params: Mapping[str, str]) -> dict[str, Any]:
        """A read method with a query string (Slack's read methods take no JSON)."""
        headers = {"Authorization": f"Bearer {self._token}"}
        url = f"{self._api}/{method}"
        return self._answer(method, self._exchange(SERVICE, "GET", url, headers, params=params))

    def _exchange(
        self, service: str, verb: str, url: str, headers: Mapping[str, str], **request: Any
    ) -> httpx.Response:
        """One request; its reply with the secret masked, or ChannelError unless 2xx."""
        try:
            response = self._http.request(verb, url, headers=headers, **request)
        except httpx.HTTPError as exc:
            raise http.transport_error(service, exc, self._http.timeout.read or 0.0) from None
        # before the reply is read (and cut to an excerpt): an echoed secret goes whole
        response = http.without(response, self._token or self._webhook or "")
        error = http.refusal(service, response)
        if error is not None:
            raise error
        return response

    @staticmethod
    def _answer(method: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise ChannelError("malformed", f"Slack {method}: the reply is not JSON") from None
        if not isinstance(data, dict):
            raise ChannelError("malformed", f"Slack {method}: the reply is not an object")
        if data.get("ok") is True:
            return data
        raise refused(method, str(data.get("error") or "unknown"), response)

    def _webhook_send(self, message: Mapping[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        try:
            self._exchange(WEBHOOK_SERVICE, "POST", self._webhook or "", headers, content=body)
        except ChannelError as exc:
            if not exc.disable:
                raise
            # 410 channel_is_archived: someone may unarchive it, so keep asking
            raise ChannelError(
                "archived",
                "410 from the Slack webhook: channel_is_archived (unarchive the channel or"
                " configure another webhook)",
                permanent=True,
            ) from None

    # ---- one-off messages -----------------------------------------------------------------

    def send_notice(self, notice: Notice) -> None:
        """A message in the channel now; a test says that nobody needs to act."""
        marker = "[TEST]" if notice.test else f"[{escape(notice.severity, 20).upper()}]"
        title = f"{marker} {escape(notice.title, 200)}"
        body = escape(notice.body, 2000) if notice.body else ""
        if notice.test:
            body = (body + "\n" if body else "") + "This is a test: nobody needs to act."
        blocks = [section("\n".join([f"*{title}*", body]) if body else f"*{title}*")]
        message = {"text": f"{title}: {body}" if body else title, "blocks": blocks}
        if not self.threaded:
            self._webhook_send(message)
            return
        self._write(
            "chat.postMessage",
            {
                "channel": self._config.channel,
                **message,
                "metadata": {
                    "event_type": NOTICE_EVENT_TYPE,
                    "event_payload": {"key": notice.key, "test": notice.test},
                },
                "unfurl_links": False,
                "unfurl_media": False,
            },
        )


def refused(method: str, error: str, response: httpx.Response) -> ChannelError:
    """What Slack's ``{"ok": false, "error": ...}`` means for the outbox."""
    code = escape(error, 80)
    if error in _RATE_LIMITED:
        wait = http.retry_after_s(response.headers) or 60.0
        return ChannelError("rate_limited", f"Slack {method}: {code}", retry_after_s=wait)
    if error in _TRANSIENT:
        return ChannelError(
            "server_error",
            f"Slack {method}: {code}",
            retry_after_s=http.retry_after_s(response.headers),
        )
    if error in _AUTH:
        return ChannelError("auth", f"Slack {method}: {code}", auth=True)
    # a metric label: Slack's codes are many, only those the channel acts on are named
    reason = error if error in _NAMED else "rejected"
    return ChannelError(reason, f"Slack {method}: {code}", permanent=True)


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ChannelError("malformed", f"Slack's reply has no {key}")
    return value


def _next_cursor(page: Mapping[str, Any]) -> str:
    meta = page.get("response_metadata")
    cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
    return cursor if isinstance(cursor, str) else ""
