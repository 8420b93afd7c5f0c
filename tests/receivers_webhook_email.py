"""Real receivers on 127.0.0.1 for the webhook and email channels, with scripted faults.

:class:`WebhookReceiver` is an HTTP server that checks every request against the
Standard Webhooks contract (the headers, and the signature with the
``standardwebhooks`` package's own verifier) and against the channel's documented
body schema, refusing anything else (401 for a bad signature, 400 for a bad request),
and deduplicates by ``webhook-id`` the way the spec asks a receiver to.

:class:`SmtpReceiver` is an ``aiosmtpd`` server that requires STARTTLS (or speaks
implicit TLS) with a throwaway ``trustme`` CA, optionally requires a login, and
checks each message's headers (RFC 5322 ``Message-ID``, threading headers in pairs,
the envelope matching the headers), refusing a message that breaks them with 550.

Both inject faults, one per request in the order queued: a status the server answers
instead of acting, a delay longer than the client's time-out (the server acts, then
answers late), and "act, then cut": the server acts and drops the connection without
answering. Every wait is bounded, and :meth:`stop` ends every open connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.parser
import email.policy
import email.utils
import http.server
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HOST = "127.0.0.1"
SETTLE_LIMIT_S = 10.0  # the longest a test waits for a late handler to finish

# ---- webhooks ----------------------------------------------------------------------------

INCIDENT_TYPES = frozenset(
    {
        "incident.opened",
        "incident.updated",
        "incident.reminder",
        "incident.resolved",
        "incident.reopened",
        "incident.acknowledged",
        "incident.maintenance",
    }
)
NOTICE_TYPES = frozenset({"monitor.notice", "monitor.test"})
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MSG_ID = re.compile(r"^msg_[A-Za-z0-9_-]{8,}$")  # no "." (the spec's signed-content rule)
INCIDENT_FIELDS = {
    "incident_id": str,
    "target": str,
    "severity": str,
    "outcome": str,
    "started_at": str,
    "probes_total": int,
    "probes_failed": int,
    "failing": list,
    "detail": str,
}
NULLABLE_FIELDS = ("resolved_at", "duration_s", "actor", "issue_url", "status_url")
SEVERITIES = frozenset({"critical", "error", "warning", "info"})
FAILING_FIELDS = {"check", "reason", "status", "detail"}

HANDLED = "handled"  # the first delivery of this webhook-id: acted on
DUPLICATE = "duplicate"  # a webhook-id already handled: acknowledged, not acted on


Seen = tuple[str | None, str | None, str | None]  # webhook-id, -timestamp, -signature


class _QuietServer(http.server.ThreadingHTTPServer):
    """A threaded server whose handler errors (a client gone mid-answer) stay quiet."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Contract(ValueError):
    """A request that breaks the documented contract."""


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One request as the receiver saw it, and what it did with it."""

    webhook_id: str | None
    timestamp: str | None
    signature: str | None
    outcome: str  # handled, duplicate, a fault name, or "rejected"
    type: str | None = None


class WebhookReceiver:
    """A Standard Webhooks consumer on 127.0.0.1 that verifies, dedupes and misbehaves."""

    def __init__(self, secret: str) -> None:
        self._verifier = Webhook(secret)
        self._lock = threading.Lock()
        self._faults: collections.deque[tuple[str, float]] = collections.deque()
        self.attempts: list[WebhookAttempt] = []
        self.handled: dict[str, dict[str, Any]] = {}  # webhook-id -> the document acted on
        self.rejections: list[str] = []
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads ``attempts``

        self._server = _QuietServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- the test's side

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting and wait (bounded) for handlers still running."""
        self._server.shutdown()
        self.settle()
        self._server.server_close()

    def fail(self, *faults: str, delay_s: float = 2.0) -> None:
        """Queue faults for the next requests, one each: ``"500"``, ``"503"``, ``"429"``
        (Retry-After 7), ``"410"``, ``"400"``, ``"delay"`` (act, answer after ``delay_s``),
        ``"cut"`` (act, then close without answering)."""
        with self._lock:
            self._faults.extend((fault, delay_s) for fault in faults)

    def settle(self) -> None:
        """Wait until no request is being handled (a delayed one finishes first)."""
        deadline = time.monotonic() + SETTLE_LIMIT_S
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(0.05)

    def ids(self, outcome: str | None = None) -> list[str | None]:
        """The webhook-ids of every attempt (with this outcome), in arrival order."""
        with self._lock:
            return [a.webhook_id for a in self.attempts if outcome in (None, a.outcome)]

    # -- the server's side (handler threads)

    def _serve(self, request: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self._answer(request)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(min(length, 1024 * 1024))
        headers = {name.lower(): value for name, value in request.headers.items()}
        seen: Seen = (
            headers.get("webhook-id"),
            headers.get("webhook-timestamp"),
            headers.get("webhook-signature"),
        )
        try:
            document = self._verified(request.path, headers, body)
        except WebhookVerificationError as exc:
            self._refuse(request, 401, f"signature: {exc}", seen)
            return
        except Contract as exc:
            self._refuse(request, 400, f"contract: {exc}", seen)
            return
        with self._lock:
            fault, delay_s = self._faults.popleft() if self._faults else ("", 0.0)
        if fault.isdigit():
            self._record(WebhookAttempt(*seen, fault, document["type"]))
            extra = {"Retry-After": "7"} if fault == "429" else {}
            _reply(request, int(fault), {"error": f"injected {fault}"}, extra)
            return
        outcome = self._act(seen, document, fault)
        if fault == "cut":
            request.close_connection = True
            with contextlib.suppress(OSError):
                request.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "delay":
            time.sleep(delay_s)
        with contextlib.suppress(OSError):
            _reply(request, 200, {"outcome": outcome})

    def _act(self, seen: Seen, document: dict[str, Any], fault: str) -> str:
        """Handle a verified event once per webhook-id, as the spec asks a consumer to."""
        webhook_id = str(seen[0])
        with self._lock:
            outcome = DUPLICATE if webhook_id in self.handled else HANDLED
            if outcome == HANDLED:
                self.handled[webhook_id] = document
            self.attempts.append(WebhookAttempt(*seen, outcome, document["type"]))
        return outcome

    def _refuse(
        self,
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        why: str,
        seen: Seen,
    ) -> None:
        with self._lock:
            self.rejections.append(why)
        self._record(WebhookAttempt(*seen, "rejected"))
        _reply(request, status, {"error": why})

    def _record(self, attempt: WebhookAttempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def _verified(self, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The document, once the request keeps every part of the contract."""
        if path != "/hooks":
            raise Contract(f"unexpected path {path}")
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Contract("Content-Type must be application/json")
        webhook_id = headers.get("webhook-id", "")
        if not MSG_ID.match(webhook_id):
            raise Contract("webhook-id must be msg_ and an id without dots")
        if not headers.get("webhook-timestamp", "").isdigit():
            raise Contract("webhook-timestamp must be integer Unix seconds")
        if not re.fullmatch(r"(v1,[A-Za-z0-9+/=]+)( v1a?,[A-Za-z0-9+/=]+)*", headers.get(
            "webhook-signature", ""
        )):  # fmt: skip
            raise Contract("webhook-signature must be space-delimited v1,<base64>")
        # the package's own verifier: the signature, and the five-minute tolerance
        document = self._verifier.verify(body, headers)
        check_document(document)
        return dict(document)


def check_document(document: Any) -> None:
    """Raise :class:`Contract` unless ``document`` follows the channel's documented schema."""
    if not isinstance(document, dict) or set(document) != {"type", "timestamp", "data"}:
        raise Contract("the body must be {type, timestamp, data}")
    kind, data = document["type"], document["data"]
    if kind not in INCIDENT_TYPES | NOTICE_TYPES:
        raise Contract(f"unknown type {kind!r}")
    if not isinstance(document["timestamp"], str) or not ISO_UTC.match(document["timestamp"]):
        raise Contract("timestamp must be ISO 8601 UTC")
    if not isinstance(data, dict):
        raise Contract("data must be an object")
    if kind in NOTICE_TYPES:
        if not (isinstance(data.get("title"), str) and isinstance(data.get("body"), str)):
            raise Contract("a notice needs a title and a body")
        if data.get("test") is not (kind == "monitor.test"):
            raise Contract("data.test must say whether it is monitor.test")
        return
    for name, expected in INCIDENT_FIELDS.items():
        if not isinstance(data.get(name), expected):
            raise Contract(f"data.{name} must be a {expected.__name__}")
    for name in NULLABLE_FIELDS:
        if name not in data:
            raise Contract(f"data.{name} must be present (null when unknown)")
    if data["severity"] not in SEVERITIES:
        raise Contract("data.severity must be PagerDuty's enum")
    for stamp in ("started_at", "resolved_at"):
        if data[stamp] is not None and not ISO_UTC.match(data[stamp]):
            raise Contract(f"data.{stamp} must be ISO 8601 UTC")
    for check in data["failing"]:
        if not isinstance(check, dict) or set(check) != FAILING_FIELDS:
            raise Contract("each failing check is {check, reason, status, detail}")
    if kind == "incident.resolved" and (data["resolved_at"] is None or data["duration_s"] is None):
        raise Contract("a resolved incident has resolved_at and duration_s")


def _reply(
    request: http.server.BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    body = json.dumps(payload).encode()
    request.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


# ---- email ------------------------------------------------------------------------------

MESSAGE_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
REQUIRED_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


@dataclass(frozen=True, slots=True)
class Mail:
    """One message the server accepted (or acted on before a fault)."""

    message_id: str
    subject: str
    in_reply_to: str | None
    references: str | None
    mail_from: str
    rcpt_tos: tuple[str, ...]
    body: str
    tls: bool  # the message travelled over TLS (STARTTLS or implicit)
    login: str | None  # who logged in, if anyone
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TlsFiles:
    """A throwaway CA (its PEM on disk, for ``SSL_CERT_FILE``) and a server certificate."""

    ca: trustme.CA
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        """What the SMTP server presents: a certificate for 127.0.0.1."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(HOST).configure_cert(context)
        return context


def tls_files(directory: Path) -> TlsFiles:
    """A new CA, its certificate written to ``directory/ca.pem``."""
    ca = trustme.CA()
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TlsFiles(ca, path)


class _Controller(Controller):
    """aiosmtpd's controller on a socket bound beforehand: port 0, no race for a port."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        super().__init__(handler, hostname=HOST, port=sock.getsockname()[1], **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        server = SMTP(self.handler, **self.SMTP_kwargs)  # what the base class builds
        self.sessions.append(server)
        return server

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpReceiver:
    """An SMTP server on 127.0.0.1: STARTTLS required (or implicit TLS), login optional."""

    def __init__(
        self,
        tls: TlsFiles | None,
        *,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
        refuse_rcpt: dict[str, str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._faults: collections.deque[tuple[str, float]] = collections.deque()
        self._login = login
        self._refuse_rcpt = refuse_rcpt or {}
        self.mails: list[Mail] = []
        self.rejections: list[str] = []
        self.logins: list[tuple[str, bool]] = []  # (login, accepted)
        self.data_attempts = 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        self.port = sock.getsockname()[1]
        kwargs: dict[str, Any] = {"server_hostname": "mx.test", "timeout": 30}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls.server_context()
            # TLS from the first byte: aiosmtpd counts only STARTTLS as TLS for AUTH, and
            # warns about requiring AUTH without it, so AUTH is offered but not required
            kwargs["auth_require_tls"] = False
        elif tls is not None:
            kwargs.update(tls_context=tls.server_context(), require_starttls=True)
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=not implicit_tls)
        self._controller = _Controller(self, sock, **kwargs)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every open connection, then stop the loop and its thread."""

        async def close_all() -> None:
            for server in self._controller.sessions:
                if server.transport is not None:
                    server.transport.close()
            await asyncio.sleep(0.05)  # their connection_lost callbacks run meanwhile

        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(close_all(), self._controller.loop).result(5)
        self._controller.stop()

    def fail(self, *faults: str, delay_s: float = 2.0) -> None:
        """Queue faults for the next messages at DATA, one each: ``"451"``, ``"421"``,
        ``"554"`` (answered instead of accepting), ``"cut"`` (accept, then drop the
        connection without answering), ``"delay"`` (accept, answer after ``delay_s``)."""
        with self._lock:
            self._faults.extend((fault, delay_s) for fault in faults)

    def message_ids(self) -> list[str]:
        """The Message-ID of every copy received, in arrival order."""
        with self._lock:
            return [mail.message_id for mail in self.mails]

    # -- aiosmtpd hooks (the server's loop thread)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        assert self._login is not None
        login, password = data.login.decode(), data.password.decode()
        accepted = (login, password) == self._login
        with self._lock:
            self.logins.append((login, accepted))
        if accepted:
            return AuthResult(success=True, auth_data=login)
        # a careless server that quotes what it was given: the client must not repeat it
        return AuthResult(
            success=False, handled=False, message=f"535 5.7.8 bad credentials {login}:{password}"
        )

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._refuse_rcpt.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_attempts += 1
            fault, delay_s = self._faults.popleft() if self._faults else ("", 0.0)
        if fault.isdigit():
            return f"{fault} 4.3.0 injected" if fault.startswith("4") else f"{fault} 5.7.1 injected"
        try:
            mail = self._parse(server, session, envelope)
        except Contract as exc:
            with self._lock:
                self.rejections.append(str(exc))
            return f"550 5.6.0 contract: {exc}"
        with self._lock:
            self.mails.append(mail)
        if fault == "cut":
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # acted, then gone without a word
            await asyncio.sleep(SETTLE_LIMIT_S)  # cancelled when the connection is lost
        if fault == "delay":
            await asyncio.sleep(delay_s)
        return "250 2.0.0 OK: queued"

    def _parse(self, server: SMTP, session: Session, envelope: Envelope) -> Mail:
        content = envelope.original_content or b""
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(content)
        for name in REQUIRED_HEADERS:
            if message[name] is None:
                raise Contract(f"missing {name}")
        message_id = str(message["Message-ID"]).strip()
        if not MESSAGE_ID.match(message_id):
            raise Contract(f"Message-ID {message_id!r} is not <left@right>")
        in_reply_to, references = message["In-Reply-To"], message["References"]
        if (in_reply_to is None) != (references is None):
            raise Contract("In-Reply-To and References go together")
        for value in (in_reply_to, references):
            if value is not None and not all(MESSAGE_ID.match(v) for v in str(value).split()):
                raise Contract("threading headers name Message-IDs")
        from_addr = email.utils.parseaddr(str(message["From"]))[1]
        if envelope.mail_from != from_addr:
            raise Contract("MAIL FROM differs from the From header")
        to_addrs = {a for _, a in email.utils.getaddresses([str(message["To"])])}
        if not set(envelope.rcpt_tos) <= to_addrs:
            raise Contract("RCPT TO names someone the To header does not")
        if message.get_content_type() != "text/plain":
            raise Contract("the mail is plain text")
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        body = message.get_content()
        assert isinstance(body, str)
        return Mail(
            message_id=message_id,
            subject=str(message["Subject"]),
            in_reply_to=None if in_reply_to is None else str(in_reply_to),
            references=None if references is None else str(references),
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            body=body,
            tls=tls,
            login=session.auth_data if isinstance(session.auth_data, str) else None,
            headers={name: str(value) for name, value in message.items()},
        )
