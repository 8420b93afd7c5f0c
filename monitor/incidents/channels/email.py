"""Email: each incident event as one plain-text mail, threaded per incident, over SMTP.

The standard library does the work (``smtplib``, ``email.message.EmailMessage``);
the contract with the mail server is SMTP's (RFC 5321), with TLS as configured:

* ``tls = "starttls"`` (the default, port 587): connect in clear, require the server
  to offer STARTTLS (RFC 3207) and upgrade before anything else is sent, the login
  included; a server that does not offer it is refused, never used in clear;
* ``tls = "tls"`` (port 465): TLS from the first byte (RFC 8314's implicit TLS);
* ``tls = "none"`` (port 25): clear text, for a relay on the same host or network
  only; a password is never sent this way (the channel refuses ``username`` with it).

Certificates are verified against the system's trust store (``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` point OpenSSL elsewhere), with the host name checked.

Threading: every mail's ``Message-ID`` is fixed when the event is planned, from the
channel's name and the event key, so a retry sends the same id. The incident's thread
root is derived from the incident id alone (and the channel's name, so two mail
channels never share an id): the "opened" mail carries it as its own ``Message-ID``,
and every later mail names it in ``In-Reply-To`` and ``References`` with the subject
``Re: <the opened mail's subject>``, so mail clients show one conversation per
incident. Nothing needs to be stored for the thread; the opened mail's subject is kept
as the channel's handle (``ref``) only so replies repeat it word for word.

Delivery is **at-least-once**. SMTP has no idempotency key: if the server accepts the
message (its 250 after DATA) and the answer is lost, or the monitor dies before
recording it, the retry sends the mail again, with the same ``Message-ID`` (most mail
clients and many servers collapse such copies). Each send is leased for
:data:`SEND_SETTLE_S`, so two processes never send one step at the same time.

Replies map onto the outbox's categories: 4xx (421 included) is transient and
retried; 5xx is a permanent refusal that stops the channel's queue until a person
fixes it; a refused login (535) or a server that offers no login needs a human
(``auth``); connection failures, time-outs and TLS failures are transient, with
reasons ``network``, ``timeout`` and ``tls``. When every recipient is refused the
mail went nowhere: permanent if any refusal is 5xx, else retried; when only some are
refused, the others got it and it is not sent again (the refused ones are logged).
Error texts carry the reply code and a bounded piece of the server's reply, never the
password (a reply echoing it, plain or base64, is masked).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage

from monitor.config import format_duration
from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels.base import ChannelError, Delivery, Notice
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.logs import REDACTED, get_logger, secrets
from monitor.probing.results import TargetResult
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

log = get_logger("monitor.email")

MAIL = "mail"  # the channel's one step kind: send the event's mail
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
# A mail the server accepted may not have been recorded (we died waiting for its 250,
# or before the completion): nobody resends it before the first attempt has surely
# ended, which the SMTP time-out bounds.
SEND_SETTLE_S = 30.0
SUBJECT_PREFIX = "[monitor]"
REPLY_EXCERPT = 200  # characters of a server's reply quoted in errors
DETAIL_LIMIT = 300  # characters of a probed service's words in a mail
UNKNOWN_DOMAIN = "fly-monitor.invalid"  # Message-ID domain when ``from`` has none
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def domain_of(address: str) -> str:
    """The domain of a ``From`` address (``Ops <ops@example.com>`` -> ``example.com``)."""
    _, addr = email.utils.parseaddr(address)
    domain = addr.rpartition("@")[2]
    return domain if addr.count("@") == 1 and domain else UNKNOWN_DOMAIN


def message_id(channel: str, key: str, domain: str) -> str:
    """The ``Message-ID`` of one event's mail: the same on every retry."""
    digest = hashlib.sha256(f"{channel}\nevent\n{key}".encode()).hexdigest()
    return f"<{digest[:32]}@{domain}>"


def thread_root(channel: str, incident_id: str, domain: str) -> str:
    """The incident's thread root: the opened mail's ``Message-ID``, from the id alone."""
    digest = hashlib.sha256(f"{channel}\nincident\n{incident_id}".encode()).hexdigest()
    return f"<incident.{digest[:32]}@{domain}>"


def plain(value: str, limit: int = DETAIL_LIMIT) -> str:
    """Words from outside in a plain-text mail: one line, bounded, known secrets masked."""
    line = secrets.redact(_CONTROL.sub("", " ".join(str(value)[: limit * 4].split())))
    return line if len(line) <= limit else line[: limit - 1] + "…"


class EmailChannel:
    """Incident events as mails over SMTP, one thread per incident; at-least-once."""

    def __init__(self, config: ChannelConfig, *, status_url: str | None) -> None:
        where = f"channels[{config.name}]"
        for key in ("host", "from_"):
            if not getattr(config, key):
                raise ValueError(f"{where}.{key.rstrip('_')}: required for an email channel")
        if not config.to:
            raise ValueError(f"{where}.to: required for an email channel")
        if config.username and config.secret is None:
            raise ValueError(
                f"{where}.secret_env ({config.secret_env or 'not set'}): a username needs"
                " its password in the environment variable secret_env names"
            )
        if config.username and config.tls == "none":
            raise ValueError(f"{where}.tls: a password is never sent without TLS")
        self.name: str = config.name
        self.kind: str = config.type
        self._config = config
        self._host = config.host or ""
        self._port = config.port or DEFAULT_PORTS[config.tls]
        self._from = config.from_ or ""
        self._envelope_from = email.utils.parseaddr(self._from)[1]
        self._recipients = [email.utils.parseaddr(to)[1] or to for to in config.to]
        self._domain = domain_of(self._from)
        self._status_url = status_url
        self._where = f"SMTP server {self._host}:{self._port}"
        # the system's trust store (SSL_CERT_FILE honoured); host names checked
        self._tls = ssl.create_default_context() if config.tls != "none" else None

    # ---- planning: when the event is decided ------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """One mail per subscribed event; its id, thread and text fixed now."""
        if not self._config.wants(event.target, event.kind.value):
            return []
        incident = event.incident
        root = thread_root(self.name, incident.id, self._domain)
        opened = event.kind is EventKind.OPENED
        payload = {
            "message_id": root if opened else message_id(self.name, event.key, self._domain),
            "thread": None if opened else root,
            "subject": f"{SUBJECT_PREFIX} {_headline(event)}",
            "date": email.utils.format_datetime(event.decided_at.astimezone(UTC)),
            "body": _body(event, event.status_url or self._status_url),
            "footer": _footer(event),
        }
        return [NewAction(self.name, incident.id, event.target, MAIL, payload)]

    # ---- delivery: in the outbox worker ------------------------------------------------

    def settle_s(self, action: OutboxAction) -> float:
        """A sent mail cannot be looked for: lease it while the first attempt may run."""
        return SEND_SETTLE_S

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Send the event's mail; the opened mail's subject becomes the thread's handle."""
        payload = action.payload
        fields = [payload.get(k) for k in ("message_id", "subject", "date", "body", "footer")]
        if action.kind != MAIL or not all(isinstance(v, str) for v in fields):
            raise ChannelError("invalid", f"unreadable mail step {action.kind!r}", permanent=True)
        msg_id, subject, date, body, footer = (str(v) for v in fields)
        thread = payload.get("thread")
        reply = isinstance(thread, str)
        if reply:  # as a mail client answers: "Re:" and the subject of the thread's root
            known = delivery.handle
            subject = "Re: " + (known.ref if known is not None and known.ref else subject)
        issue = delivery.issue(action.incident_id)
        if issue is not None and issue.url:  # known only now: GitHub may file it later
            body += f"Issue: {issue.url}\n"
        self._send(self._message(subject, body + footer, msg_id, date, thread))
        return None if reply else ChannelHandle(ref=subject)

    def send_notice(self, notice: Notice) -> None:
        """A one-off mail (``monitor notify``); a test says that nobody needs to act."""
        title = f"[TEST] {notice.title}" if notice.test else notice.title
        body = notice.body
        if notice.test:
            body = "This is a test of the monitor's email channel: nobody needs to act.\n\n" + body
        message = self._message(
            f"{SUBJECT_PREFIX} {plain(title, 200)}",
            body.rstrip() + f"\n\n-- \nSent by fly-monitor, channel {self.name}.\n",
            message_id(self.name, f"notice:{notice.key}", self._domain),
            email.utils.format_datetime(datetime.now(UTC)),
            None,
        )
        self._send(message)

    def _message(
        self, subject: str, body: str, msg_id: str, date: str, thread: object
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = ", ".join(self._config.to)
        message["Subject"] = subject
        message["Date"] = date
        message["Message-ID"] = msg_id
        if isinstance(thread, str):
            message["In-Reply-To"] = thread
            message["References"] = thread
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        message.set_content(body)
        return message

    # ---- SMTP ----------------------------------------------------------------------------

    def _send(self, message: EmailMessage) -> None:
        """One SMTP session: connect, secure, log in, send, quit; ChannelError on failure."""
        client: smtplib.SMTP | None = None
        try:
            client = self._connect()
            refused = client.send_message(
                message, from_addr=self._envelope_from, to_addrs=self._recipients
            )
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()  # the mail is accepted: a failed goodbye changes nothing
        except (smtplib.SMTPException, OSError) as exc:
            raise self._translate(exc) from None  # the cause may quote the server: not chained
        finally:
            if client is not None:
                client.close()
        if refused:
            log.warning(
                "mail sent, but some recipients were refused",
                sink=self.name,
                refused=sorted(refused),
                accepted=len(self._recipients) - len(refused),
            )

    def _connect(self) -> smtplib.SMTP:
        timeout_s = self._config.timeout
        if self._config.tls == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self._host, self._port, timeout=timeout_s, context=self._tls
            )
        else:
            client = smtplib.SMTP(self._host, self._port, timeout=timeout_s)
        try:
            if self._config.tls == "starttls":
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise ChannelError(
                        "tls",
                        f'{self._where} does not offer STARTTLS (tls = "starttls"):'
                        " nothing is sent in clear",
                        permanent=True,
                    )
                client.starttls(context=self._tls)
                client.ehlo()
            if self._config.username and self._config.secret is not None:
                client.login(self._config.username, self._config.secret.get_secret_value())
        except BaseException:
            client.close()
            raise
        return client

    def _translate(self, exc: smtplib.SMTPException | OSError) -> ChannelError:
        """One place where smtplib's and the socket's errors become ours."""
        where = self._where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ChannelError(
                "auth", f"{exc.smtp_code} from {where}: login refused: {self._reply(exc)}",
                auth=True,
            )  # fmt: skip
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ChannelError("unsupported", f"{where}: {exc}", auth=True)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._recipients_refused(exc)
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._response(exc.smtp_code, self._reply(exc))
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            if isinstance(exc.__context__, TimeoutError):  # smtplib's wording of a read time-out
                return ChannelError("timeout", f"{where} did not answer in time")
            return ChannelError("network", f"{where} closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPException):
            if "authentication" in str(exc).lower():  # login() found no mechanism to use
                return ChannelError("auth", f"{where}: {exc}", auth=True)
            return ChannelError("error", f"{where}: {type(exc).__name__}: {exc}")
        if isinstance(exc, TimeoutError):
            return ChannelError("timeout", f"{where} did not answer in time")
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            reason = getattr(exc, "reason", None) or type(exc).__name__
            detail = getattr(exc, "verify_message", None)  # "certificate has expired", ...
            reason += f" ({detail})" if detail else ""
            return ChannelError("tls", f"TLS with {where} failed: {reason}")
        return ChannelError(
            "network", f"connection to {where} failed: {exc.strerror or type(exc).__name__}"
        )

    def _response(self, code: int, reply: str) -> ChannelError:
        message = f"{code} from {self._where}: {reply}"
        if 400 <= code < 500:  # 421 (closing), 450/451 (try later, greylisting), 452
            return ChannelError("deferred", message)
        if 500 <= code < 600:
            return ChannelError("rejected", message, permanent=True)
        return ChannelError("network", message)  # -1: smtplib read no reply code

    def _recipients_refused(self, exc: smtplib.SMTPRecipientsRefused) -> ChannelError:
        codes = [code for code, _ in exc.recipients.values()]
        refusals = "; ".join(
            f"{address}: {code} {self._scrub(_decoded(reply))}"
            for address, (code, reply) in sorted(exc.recipients.items())
        )
        message = f"every recipient refused by {self._where}: {refusals}"
        if all(400 <= code < 500 for code in codes):  # greylisting: try again later
            return ChannelError("deferred", message)
        return ChannelError("rejected", message, permanent=True)

    def _reply(self, exc: smtplib.SMTPResponseException) -> str:
        return self._scrub(_decoded(exc.smtp_error))

    def _scrub(self, reply: str) -> str:
        """A server's reply, bounded, without the password in any form it might echo."""
        secret = self._config.secret
        if secret is not None:
            password = secret.get_secret_value()
            user = self._config.username or ""
            forms = (
                password,
                base64.b64encode(password.encode()).decode(),  # AUTH LOGIN
                base64.b64encode(f"\0{user}\0{password}".encode()).decode(),  # AUTH PLAIN
            )
            for form in sorted(forms, key=len, reverse=True):
                if len(form) >= 4:
                    reply = reply.replace(form, REDACTED)
        # masked before the whitespace is tidied, which could split a password with spaces
        return secrets.redact(" ".join(reply.split()))[:REPLY_EXCERPT] or "(no text)"


def _decoded(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


# ---- the words ------------------------------------------------------------------------------


def _headline(event: IncidentEvent) -> str:
    """What the subject says when this mail starts a thread (replies reuse the opener's)."""
    incident, result = event.incident, event.result
    if event.kind is EventKind.RESOLVED:
        duration = format_duration(max(incident.duration_s or 0, 1))
        return f"{incident.target} recovered after {duration}"
    if event.kind is EventKind.ACKNOWLEDGED:
        return f"{incident.target}: incident acknowledged"
    if event.kind is EventKind.MAINTENANCE:
        return f"{incident.target}: maintenance window during an open incident"
    return text.title(result)


def _body(event: IncidentEvent, status_url: str | None) -> str:
    """The plain-text mail: what happened, what fails, since when, where to look."""
    incident, result = event.incident, event.result
    lines = [_opening(event), ""]
    failing = _failing(result)
    if failing:
        lines += ["What fails:", *failing, ""]
    lines.append(f"Since: {text.utc(incident.started_at)} (the first failed probe)")
    if incident.resolved_at is not None:
        seconds = incident.duration_s or 0.0
        lines.append(f"Recovered: {text.utc(incident.resolved_at)}")
        lines.append(f"Duration: {format_duration(max(seconds, 1))} ({seconds:.0f} s)")
        lines.append(f"Probes: {incident.probes_failed} of {incident.probes_total} failed")
    else:
        lines.append(
            f"Last probe: {text.utc(result.at)}: {result.outcome.value}"
            f" ({incident.probes_failed} of {incident.probes_total} probes failed)"
        )
    if event.regions:
        lines.append(f"Regions: {text.regions_line(event.regions)}")
    if status_url:
        lines.append(f"Status page: {status_url}")
    return "\n".join(lines) + "\n"  # the issue link follows, when the mail is sent


def _footer(event: IncidentEvent) -> str:
    """The signature block: who sent it, as of when, about which incident."""
    return (
        f"\n-- \nSent by fly-monitor (severity {event.severity}), as of"
        f" {text.utc(event.decided_at)}.\nIncident {event.incident.id}.\n"
    )


def _opening(event: IncidentEvent) -> str:
    incident, result = event.incident, event.result
    target = incident.target
    state = "DEGRADED" if result.ok else "DOWN"
    if event.kind is EventKind.OPENED:
        return f"{target} is {state}: a new incident."
    if event.kind is EventKind.UPDATED:
        return f"The failure of {target} changed: {plain(event.detail)}."
    if event.kind is EventKind.REMINDER:
        elapsed = format_duration(max(incident.elapsed_s(event.decided_at), 1))
        return f"{target} is still failing after {elapsed}; the incident is open."
    if event.kind is EventKind.RESOLVED:
        return (
            f"RESOLVED: {target} was down for {format_duration(max(incident.duration_s or 0, 1))}."
        )
    if event.kind is EventKind.REOPENED:
        return (
            f"{target} is {state} again: the incident is reopened; it still counts from"
            f" {text.utc(incident.started_at)}."
        )
    if event.kind is EventKind.ACKNOWLEDGED:
        who = f" by {plain(event.actor, 60)}" if event.actor else ""
        return (
            f"Acknowledged{who}: {plain(event.detail)}. Reminders stop; the recovery is still sent."
        )
    return f"Maintenance window {plain(event.detail)}: nobody is paged for {target} meanwhile."


def _failing(result: TargetResult) -> list[str]:
    rows = []
    for check in result.failing:
        status = f" (HTTP {check.status_code})" if check.status_code else ""
        rows.append(
            f"- {plain(check.check, 64)}: {plain(text.describe_failure(check), 200)}{status}:"
            f" {plain(check.detail)}"
        )
    return rows
