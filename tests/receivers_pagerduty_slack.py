"""PagerDuty's Events API v2 and Slack (Web API and incoming webhooks) on 127.0.0.1.

Each receiver checks every request against the service's published contract and
refuses what the service would refuse (recording it in ``violations``, which the
tests' fixtures require to stay empty), acts like the service (PagerDuty's alert
deduplication by ``dedup_key``; Slack's messages, threads and edits), and injects
faults on request: a status (5xx, 429 with ``Retry-After``, Slack's ``ok: false``),
a delay past the client's time-out after which the request still lands, and "act,
then cut the connection without replying".

Contracts, as published:

* PagerDuty: ``events-API-v2/02-Trigger-Events.md`` in PagerDuty/developer-docs and
  ``reference/events-v2/openapiv3.json`` in PagerDuty/api-schema (fields, enums,
  limits: ``summary`` <= 1024, ``dedup_key`` <= 255; 202/400/429/5xx).
* Slack: docs.slack.dev ``reference/methods/*`` and ``apis/web-api`` (Bearer token,
  JSON bodies for write methods, query strings for reads, ``ok``/``error``),
  ``messaging/message-metadata``, ``reference/block-kit`` (section text <= 3000,
  <= 50 blocks), ``messaging/formatting-message-text`` (``& < >`` escaped), and the
  incoming-webhook errors (``changelog/2016-05-17-changes-to-errors-for-incoming-webhooks``:
  400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410
  channel_is_archived, 500 rollup_error).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

PD_ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 characters, as PagerDuty's are
SLACK_TOKEN = "xoxb-1111111111-2222222222-receiverTestToken"
SLACK_CHANNEL_ID = "C0INCIDENTS"
SLACK_CHANNEL_NAME = "incidents"
SLACK_WEBHOOK_PATH = "/services/T0000TEAM/B0000HOOK/webhookSecretPart0123456789"


# ---- faults ----------------------------------------------------------------------------


class FaultKind(enum.Enum):
    """What an injected fault does to the request it matches."""

    STATUS = "status"  # reply with a canned status, headers and body; nothing happens
    DELAY = "delay"  # hold the request past the client's time-out, then act (it lands late)
    CUT_AFTER_ACT = "cut_after_act"  # act, then close the connection without replying


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; build it with the functions below."""

    kind: FaultKind
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


def status(code: int, body: Any = None, retry_after: str | None = None) -> Fault:
    """Reply ``code`` (JSON ``body`` if given) without acting."""
    headers: list[tuple[str, str]] = []
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        headers.append(("Content-Type", "application/json"))
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return Fault(FaultKind.STATUS, code, raw, tuple(headers))


def too_many_requests(retry_after_s: int | None = None) -> Fault:
    """429, with ``Retry-After`` when given."""
    wait = str(retry_after_s) if retry_after_s is not None else None
    return status(429, {"status": "throttle event", "message": "Requests are throttled"}, wait)


def slack_error(error: str, retry_after_s: int | None = None) -> Fault:
    """Slack's way: HTTP 200 with ``{"ok": false, "error": error}``."""
    wait = str(retry_after_s) if retry_after_s is not None else None
    return status(200, {"ok": False, "error": error}, wait)


def delay(seconds: float) -> Fault:
    """Hold the request ``seconds`` (past the client's time-out), then serve it."""
    return Fault(FaultKind.DELAY, delay_s=seconds)


def cut_after_act() -> Fault:
    """Perform the request, then close the connection without replying."""
    return Fault(FaultKind.CUT_AFTER_ACT)


# ---- the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as received."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    route: str  # what faults match on: PagerDuty's event_action, Slack's method


@dataclass(frozen=True)
class Reply:
    """What a request gets back."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status_code: int, data: Any) -> Reply:
    """A JSON reply."""
    return Reply(status_code, json.dumps(data).encode(), (("Content-Type", "application/json"),))


class Invalid(Exception):
    """A request the service refuses: ``error`` is its word for it."""

    def __init__(self, error: str, why: str, *, violation: bool = True) -> None:
        super().__init__(why)
        self.error = error
        self.violation = violation  # False: a refusal a test may cause on purpose


class Receiver:
    """A real HTTP server on 127.0.0.1 with a fault queue; subclasses are the services."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._faults: list[tuple[str, Fault, int | None]] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[Request] = []
        self.violations: list[str] = []  # contract breaches by the client under test
        self.in_flight = 0  # requests being handled (a delayed one lands later)

    # ---- lifecycle

    def start(self) -> Self:
        """Listen on a free port in a thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        server = self._server
        # a short poll: stopping waits for it, once per test
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.02), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed requests give up."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ---- faults

    def inject(self, fault: Fault, route: str = "", count: int | None = 1) -> None:
        """Apply ``fault`` to the next ``count`` requests whose route is ``route`` ("" for
        any; ``count=None``: until cleared)."""
        with self._lock:
            self._faults.append((route, fault, count))

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """Faults not yet used up."""
        with self._lock:
            return len(self._faults)

    def _take_fault(self, route: str) -> Fault | None:
        for index, (wanted, fault, count) in enumerate(self._faults):
            if wanted and wanted != route:
                continue
            if count is not None:
                if count <= 1:
                    del self._faults[index]
                else:
                    self._faults[index] = (wanted, fault, count - 1)
            return fault
        return None

    def settled(self, timeout_s: float = 5.0) -> None:
        """Wait (wall clock, bounded) until no request is being handled."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self.in_flight == 0:
                    return
            if time.monotonic() > deadline:
                raise AssertionError("a request is still being handled")
            time.sleep(0.01)

    # ---- handling

    def serve(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        """Answer one request; None: close the connection without replying."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        route = self.route(method, parts.path, headers, body)
        request = Request(method, parts.path, query, headers, body, route)
        with self._lock:
            self.requests.append(request)
            fault = self._take_fault(route)
            self.in_flight += 1
        try:
            if fault is not None and fault.kind is FaultKind.DELAY:
                if self._stopping.wait(fault.delay_s):
                    return None
                fault = None
            if fault is not None and fault.kind is FaultKind.STATUS:
                return Reply(fault.status, fault.body, fault.headers)
            with self._lock:
                reply = self.handle(request)
            if fault is not None and fault.kind is FaultKind.CUT_AFTER_ACT:
                return None
            return reply
        finally:
            with self._lock:
                self.in_flight -= 1

    def violation(self, why: str) -> None:
        """Record a breach of the contract by the client."""
        self.violations.append(why)

    def route(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """What faults match on."""
        raise NotImplementedError

    def handle(self, request: Request) -> Reply:
        """Validate and act (under the lock)."""
        raise NotImplementedError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, receiver: Receiver) -> None:
        self.receiver = receiver
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock handler threads waiting on keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or vanish are part of the job


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.receiver.serve(self.command, self.path, headers, body)
        if reply is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ---- shared checks -----------------------------------------------------------------------


def _json_object(request: Request, media: str = "application/json") -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != media:
        raise Invalid("invalid_post_type", f"Content-Type {content_type!r} is not {media}")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("invalid_json", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Invalid("json_not_object", "the body is not a JSON object")
    return data


def _is_url(value: object, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in schemes and bool(parts.netloc)


# ---- PagerDuty ---------------------------------------------------------------------------

PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_TOP_LEVEL = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "client",
    "client_url",
    "links",
    "images",
}
PD_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}


@dataclass
class Alert:
    """One PagerDuty alert: the states it went through, and every event applied to it."""

    dedup_key: str
    states: list[str] = field(default_factory=lambda: ["triggered"])
    events: list[str] = field(default_factory=lambda: ["trigger"])

    @property
    def open(self) -> bool:
        """Triggered or acknowledged: later events with its key apply to it."""
        return self.states[-1] != "resolved"


class FakePagerDuty(Receiver):
    """``POST /v2/enqueue``: validates each event and deduplicates alerts by key."""

    path = "/v2/enqueue"

    def __init__(self, routing_keys: tuple[str, ...] = (PD_ROUTING_KEY,)) -> None:
        super().__init__()
        self.routing_keys = set(routing_keys)
        self.events: list[dict[str, Any]] = []  # accepted events, as sent
        self.alerts: dict[str, list[Alert]] = {}  # by dedup_key, oldest first
        self.dropped: list[dict[str, Any]] = []  # acknowledge/resolve of no open alert

    @property
    def endpoint(self) -> str:
        """The URL to configure."""
        return self.url + self.path

    def route(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return ""
        action = data.get("event_action") if isinstance(data, dict) else None
        return action if isinstance(action, str) else ""

    def actions(self, key: str) -> list[str]:
        """The accepted event_actions with ``key``, in order."""
        return [e["event_action"] for e in self.events if e.get("dedup_key") == key]

    def histories(self, key: str) -> list[list[str]]:
        """Each alert of ``key``: the states it went through (repeats folded)."""
        return [alert.states for alert in self.alerts.get(key, [])]

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != self.path:
            self.violation(f"{request.method} {request.path}: not the Events API v2")
            return json_reply(404, {"status": "not found"})
        try:
            event = _json_object(request)
            self._validate(event)
        except Invalid as exc:
            if exc.violation:
                self.violation(str(exc))
            return json_reply(
                400,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": [str(exc)],
                },
            )
        key = event.get("dedup_key") or str(uuid.uuid4())
        self.events.append(event)
        self._apply(event["event_action"], key, event)
        return json_reply(
            202, {"status": "success", "message": "Event processed", "dedup_key": key}
        )

    def _apply(self, action: str, key: str, event: dict[str, Any]) -> None:
        """PagerDuty's de-duplication: events with an open alert's key apply to it."""
        alerts = self.alerts.setdefault(key, [])
        current = alerts[-1] if alerts and alerts[-1].open else None
        if current is None:
            if action == "trigger":
                alerts.append(Alert(key))
            else:
                self.dropped.append(event)
            return
        current.events.append(action)
        new_state = {"acknowledge": "acknowledged", "resolve": "resolved"}.get(action)
        if new_state is not None and current.states[-1] != new_state:
            current.states.append(new_state)

    def _validate(self, event: dict[str, Any]) -> None:
        unknown = set(event) - PD_TOP_LEVEL
        if unknown:
            raise Invalid("invalid", f"unknown fields {sorted(unknown)}")
        key = event.get("routing_key")
        if not isinstance(key, str) or not key:
            raise Invalid("invalid", "routing_key: required, a non-empty string")
        if key not in self.routing_keys:
            raise Invalid("invalid", "routing_key: no such integration", violation=False)
        action = event.get("event_action")
        if action not in PD_ACTIONS:
            raise Invalid("invalid", f"event_action: {action!r} is not one of {PD_ACTIONS}")
        dedup = event.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
            raise Invalid("invalid", "dedup_key: a string of 1 to 255 characters")
        if action != "trigger" and dedup is None:
            raise Invalid("invalid", f"dedup_key: required for {action}")
        payload = event.get("payload")
        if action == "trigger" and payload is None:
            raise Invalid("invalid", "payload: required for trigger")
        if payload is not None:
            self._validate_payload(payload)
        for name in ("client", "client_url"):
            if name in event and not isinstance(event[name], str):
                raise Invalid("invalid", f"{name}: a string")
        if "client_url" in event and not _is_url(event["client_url"]):
            raise Invalid("invalid", "client_url: a URL")
        self._validate_links(event.get("links", []))
        self._validate_images(event.get("images", []))

    @staticmethod
    def _validate_payload(payload: object) -> None:
        if not isinstance(payload, dict):
            raise Invalid("invalid", "payload: an object")
        unknown = set(payload) - PD_PAYLOAD
        if unknown:
            raise Invalid("invalid", f"payload: unknown fields {sorted(unknown)}")
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            raise Invalid("invalid", "payload.summary: required, 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            raise Invalid("invalid", "payload.source: required, a non-empty string")
        if payload.get("severity") not in PD_SEVERITIES:
            raise Invalid("invalid", f"payload.severity: one of {PD_SEVERITIES}")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                raise Invalid("invalid", "payload.timestamp: ISO 8601") from None
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                raise Invalid("invalid", f"payload.{name}: a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            raise Invalid("invalid", "payload.custom_details: an object")

    @staticmethod
    def _validate_links(links: object) -> None:
        if not isinstance(links, list):
            raise Invalid("invalid", "links: an array")
        for item in links:
            if not isinstance(item, dict) or set(item) - {"href", "text"}:
                raise Invalid("invalid", "links[]: objects with href and text")
            if not _is_url(item.get("href")):
                raise Invalid("invalid", "links[].href: required, a URL")
            if "text" in item and not isinstance(item["text"], str):
                raise Invalid("invalid", "links[].text: a string")

    @staticmethod
    def _validate_images(images: object) -> None:
        if not isinstance(images, list):
            raise Invalid("invalid", "images: an array")
        for item in images:
            if not isinstance(item, dict) or set(item) - {"src", "href", "alt"}:
                raise Invalid("invalid", "images[]: objects with src, href and alt")
            if not _is_url(item.get("src"), ("https",)):
                raise Invalid("invalid", "images[].src: required, an HTTPS URL")


# ---- Slack ---------------------------------------------------------------------------------

SLACK_WRITE = ("chat.postMessage", "chat.update")
SLACK_READ = ("conversations.history", "conversations.replies", "conversations.list")
SLACK_POST_ARGS = {
    "channel",
    "text",
    "blocks",
    "attachments",
    "metadata",
    "thread_ts",
    "reply_broadcast",
    "unfurl_links",
    "unfurl_media",
    "mrkdwn",
    "parse",
    "link_names",
    "username",
    "icon_emoji",
    "icon_url",
}
SLACK_UPDATE_ARGS = {
    "channel",
    "ts",
    "text",
    "blocks",
    "attachments",
    "metadata",
    "parse",
    "link_names",
}
TS = re.compile(r"^\d{10}\.\d{6}$")
MENTION = re.compile(r"<(!channel|!here|!everyone|!subteam\^|@[UW])")
BLOCK_TYPES = {"section", "context", "divider", "header"}
METADATA_TYPE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
BOT_ID = "B0RECEIVER"


class FakeSlack(Receiver):
    """Slack's Web API at ``/api/<method>`` and one incoming webhook at its secret path."""

    def __init__(
        self,
        tokens: tuple[str, ...] = (SLACK_TOKEN,),
        channels: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.channels = dict(channels or {SLACK_CHANNEL_ID: SLACK_CHANNEL_NAME})
        self._clock = clock
        self._last_ts = Decimal(0)
        self.messages: dict[str, list[dict[str, Any]]] = {cid: [] for cid in self.channels}
        self.webhook_messages: list[dict[str, Any]] = []
        self.updates: list[tuple[str, str]] = []  # (channel, ts) of each chat.update

    @property
    def api_url(self) -> str:
        """The Web API's base URL, as ``url`` is configured."""
        return self.url + "/api"

    @property
    def webhook_url(self) -> str:
        """The incoming webhook's URL (the secret)."""
        return self.url + SLACK_WEBHOOK_PATH

    def route(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        if path == SLACK_WEBHOOK_PATH:
            return "webhook"
        return path.removeprefix("/api/")

    # ---- what tests look at

    def parents(self, channel: str = SLACK_CHANNEL_ID) -> list[dict[str, Any]]:
        """Top-level messages in a channel, oldest first."""
        return [m for m in self.messages[channel] if m.get("thread_ts") in (None, m["ts"])]

    def replies(self, ts: str, channel: str = SLACK_CHANNEL_ID) -> list[dict[str, Any]]:
        """Replies in the thread of ``ts``, oldest first."""
        return [m for m in self.messages[channel] if m.get("thread_ts") == ts and m["ts"] != ts]

    def add_message(
        self,
        channel: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Put a message there as if someone (an earlier attempt) had posted it."""
        with self._lock:
            return self._store(
                channel, {"text": text, "metadata": metadata, "thread_ts": thread_ts}
            )

    # ---- handling

    def handle(self, request: Request) -> Reply:
        if request.route == "webhook":
            return self._webhook(request)
        method = request.route
        if method not in SLACK_WRITE + SLACK_READ:
            self.violation(f"{request.method} {request.path}: not a method we expect")
            return json_reply(404, {"ok": False, "error": "unknown_method"})
        try:
            self._authorize(request)
            args = self._arguments(request, method)
            result = getattr(self, "_" + method.replace(".", "_"))(args)
        except Invalid as exc:
            if exc.violation:
                self.violation(f"{method}: {exc}")
            return json_reply(200, {"ok": False, "error": exc.error})
        return json_reply(200, {"ok": True, **result})

    def _authorize(self, request: Request) -> None:
        if "token" in request.query:
            self.violation("token in the URL")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise Invalid("not_authed", "no Authorization: Bearer header")
        if auth.removeprefix("Bearer ") not in self.tokens:
            raise Invalid("invalid_auth", "unknown token", violation=False)

    def _arguments(self, request: Request, method: str) -> dict[str, Any]:
        if method in SLACK_WRITE:
            if request.method != "POST":
                raise Invalid("invalid_post_type", f"{method} is a POST")
            content_type = request.headers.get("content-type", "").lower().replace(" ", "")
            if content_type != "application/json;charset=utf-8":
                raise Invalid("invalid_charset", f"Content-Type {content_type!r}")
            args = _json_object(request)
            if "token" in args:
                self.violation("token in the body")
            return args
        if request.method != "GET" or request.body:
            raise Invalid("invalid_arguments", f"{method} takes a query string (no JSON body)")
        return {name: values[-1] for name, values in request.query.items()}

    # ---- the methods

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        _only(args, SLACK_POST_ARGS)
        channel = self._channel(args.get("channel"), names=True)
        self._check_content(args)
        thread_ts = args.get("thread_ts")
        if thread_ts is not None:
            if not isinstance(thread_ts, str) or not TS.match(thread_ts):
                raise Invalid("invalid_thread_ts", f"thread_ts {thread_ts!r}")
            if self._find(channel, thread_ts) is None:
                raise Invalid("thread_not_found", f"no message {thread_ts} to reply to")
        metadata = args.get("metadata")
        if metadata is not None:
            _check_metadata(metadata)
        message = self._store(
            channel,
            {
                "text": args.get("text", ""),
                "blocks": args.get("blocks"),
                "metadata": metadata,
                "thread_ts": thread_ts,
            },
        )
        return {
            "channel": channel,
            "ts": message,
            "message": self._public(self._find(channel, message), True),
        }

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        _only(args, SLACK_UPDATE_ARGS)
        channel = self._channel(args.get("channel"), names=False)
        ts = args.get("ts")
        if not isinstance(ts, str) or not TS.match(ts):
            raise Invalid("invalid_arguments", f"ts {ts!r}")
        message = self._find(channel, ts)
        if message is None:
            raise Invalid("message_not_found", f"no message {ts}", violation=False)
        self._check_content(args)
        if "metadata" in args:
            _check_metadata(args["metadata"])
            message["metadata"] = args["metadata"]
        message["text"] = args.get("text", "")
        message["blocks"] = args.get("blocks")
        message["edited"] = {"user": BOT_ID, "ts": self._next_ts()}
        self.updates.append((channel, ts))
        return {
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": self._public(message, True),
        }

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), names=False)
        with_metadata = _flag(args.get("include_all_metadata"))
        found = [m for m in self.parents(channel) if _in_window(m["ts"], args)]
        found.reverse()  # newest first
        return self._page(found, args, with_metadata)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), names=False)
        ts = args.get("ts")
        if not isinstance(ts, str) or not TS.match(ts):
            raise Invalid("invalid_arguments", f"ts {ts!r}")
        parent = self._find(channel, ts)
        if parent is None:
            raise Invalid("thread_not_found", f"no message {ts}", violation=False)
        thread = [parent] + [m for m in self.replies(ts, channel) if _in_window(m["ts"], args)]
        return self._page(thread, args, _flag(args.get("include_all_metadata")))

    def _conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {"id": cid, "name": name, "is_channel": True, "is_archived": False, "is_private": False}
            for cid, name in self.channels.items()
        ]
        start = _cursor(args.get("cursor"))
        limit = _limit(args.get("limit"))
        page, rest = rows[start : start + limit], rows[start + limit :]
        cursor = _encode_cursor(start + limit) if rest else ""
        return {"channels": page, "response_metadata": {"next_cursor": cursor}}

    # ---- the incoming webhook

    def _webhook(self, request: Request) -> Reply:
        def text_reply(code: int, body: str) -> Reply:
            return Reply(code, body.encode(), (("Content-Type", "text/html"),))

        if request.method != "POST":
            self.violation("webhook: not a POST")
            return text_reply(405, "invalid_method")
        try:
            data = _json_object(request)
        except Invalid as exc:
            self.violation(f"webhook: {exc}")
            return text_reply(400, "invalid_payload")
        for name in ("thread_ts", "metadata", "channel", "token"):
            if name in data:
                self.violation(f"webhook: {name} has no place in a webhook message")
        try:
            self._check_content(data)
        except Invalid as exc:
            self.violation(f"webhook: {exc}")
            return text_reply(400, "no_text" if exc.error == "no_text" else "invalid_payload")
        self.webhook_messages.append(data)
        return text_reply(200, "ok")

    # ---- shared

    def _channel(self, value: object, *, names: bool) -> str:
        if not isinstance(value, str) or not value:
            raise Invalid("channel_not_found", "channel: required")
        if value in self.channels:
            return value
        if names:
            for cid, name in self.channels.items():
                if value.lstrip("#") == name:
                    return cid
        raise Invalid("channel_not_found", f"channel {value!r}", violation=False)

    def _check_content(self, args: Mapping[str, Any]) -> None:
        text = args.get("text")
        blocks = args.get("blocks")
        if not text and not blocks:
            raise Invalid("no_text", "text or blocks: required")
        if text is not None and (not isinstance(text, str) or len(text) > 40_000):
            raise Invalid("msg_too_long", "text: a string of at most 40,000 characters")
        if args.get("link_names") or args.get("parse") == "full":
            self.violation("link_names/parse=full would turn names into mentions")
        if blocks is not None:
            _check_blocks(blocks)
        everything = json.dumps({"text": text, "blocks": blocks})
        if MENTION.search(everything):
            self.violation(f"a mention: {MENTION.search(everything)}")

    def _next_ts(self) -> str:
        seconds = self._clock().timestamp() if self._clock else time.time()
        now = Decimal(f"{seconds:.6f}")
        self._last_ts = max(now, self._last_ts + Decimal("0.000001"))
        return f"{self._last_ts:.6f}"

    def _store(self, channel: str, fields: dict[str, Any]) -> str:
        ts = self._next_ts()
        self.messages[channel].append({"type": "message", "ts": ts, "bot_id": BOT_ID, **fields})
        return ts

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages[channel] if m["ts"] == ts), None)

    @staticmethod
    def _public(message: dict[str, Any] | None, with_metadata: bool) -> dict[str, Any]:
        assert message is not None
        shown = {k: v for k, v in message.items() if v is not None}
        if not with_metadata:
            shown.pop("metadata", None)
        return shown

    def _page(
        self, messages: list[dict[str, Any]], args: Mapping[str, Any], with_metadata: bool
    ) -> dict[str, Any]:
        start = _cursor(args.get("cursor"))
        limit = _limit(args.get("limit"))
        page, rest = messages[start : start + limit], messages[start + limit :]
        return {
            "messages": [self._public(m, with_metadata) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": _encode_cursor(start + limit) if rest else ""},
        }


def _only(args: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(args) - allowed
    if unknown:
        raise Invalid("invalid_arg_name", f"unknown arguments {sorted(unknown)}")


def _check_blocks(blocks: object) -> None:
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        raise Invalid("invalid_blocks", "blocks: 1 to 50 blocks")
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise Invalid("invalid_blocks", f"block {block!r}")
        if block["type"] == "section":
            _check_text(block.get("text"), 3000)
        if block["type"] == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                raise Invalid("invalid_blocks", "context: 1 to 10 elements")
            for element in elements:
                _check_text(element, 3000)
        if block["type"] == "header":
            _check_text(block.get("text"), 150, ("plain_text",))


def _check_text(
    value: object, limit: int, kinds: tuple[str, ...] = ("mrkdwn", "plain_text")
) -> None:
    if not isinstance(value, dict) or value.get("type") not in kinds:
        raise Invalid("invalid_blocks", f"text object {value!r}")
    words = value.get("text")
    if not isinstance(words, str) or not 0 < len(words) <= limit:
        raise Invalid("invalid_blocks", f"text of 1 to {limit} characters")


def _check_metadata(metadata: object) -> None:
    if (
        not isinstance(metadata, dict)
        or set(metadata) != {"event_type", "event_payload"}
        or not isinstance(metadata["event_type"], str)
        or not METADATA_TYPE.match(metadata["event_type"])
        or not isinstance(metadata["event_payload"], dict)
    ):
        raise Invalid("invalid_metadata_format", f"metadata {metadata!r}")


def _flag(value: object) -> bool:
    return str(value).lower() in ("true", "1")


def _in_window(ts: str, args: Mapping[str, Any]) -> bool:
    inclusive = _flag(args.get("inclusive"))
    oldest, latest = args.get("oldest"), args.get("latest")
    value = Decimal(ts)
    if oldest is not None:
        bound = Decimal(str(oldest))
        if value < bound or (value == bound and not inclusive):
            return False
    if latest is not None:
        bound = Decimal(str(latest))
        if value > bound or (value == bound and not inclusive):
            return False
    return True


def _limit(value: object) -> int:
    try:
        limit = int(str(value)) if value is not None else 100
    except ValueError:
        raise Invalid("invalid_limit", f"limit {value!r}") from None
    if not 1 <= limit <= 999:
        raise Invalid("invalid_limit", f"limit {value!r}")
    return limit


def _cursor(value: object) -> int:
    if not value:
        return 0
    try:
        return int(base64.b64decode(str(value)).decode().removeprefix("offset:"))
    except ValueError:
        raise Invalid("invalid_cursor", f"cursor {value!r}") from None


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()
