"""The email channel against a real SMTP server on 127.0.0.1 (aiosmtpd, STARTTLS required,
a trustme CA): one thread per incident, Message-IDs kept across retries, at-least-once."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels.base import ChannelError, Notice
from monitor.incidents.channels.email import (
    SEND_SETTLE_S,
    EmailChannel,
    message_id,
    thread_root,
)
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import PERMANENT_RETRY_S, OutboxWorker
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.metrics import Metrics
from monitor.store.base import OutboxAction, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, ManualClock, at, down, up
from tests.outbox_kit import drain
from tests.receivers_webhook_email import SmtpReceiver, TlsFiles, tls_files

LOGIN = ("monitor", "s3cret-Pa55word!")
FROM = "Fly Monitor <monitor@alerts.example>"
TO = ["oncall@example.com", "Ops <ops@example.com>"]
STATUS_URL = "https://status.example/status"
INCIDENT = Incident(
    id="production-20261101T120000Z",
    target="production",
    started_at=T0,
    probes_total=3,
    probes_failed=3,
    last_notice_at=T0,
)


def event(kind: EventKind, **changes: Any) -> IncidentEvent:
    """An event of the standard incident: opened at 2 min, a reminder at 30, resolved at 45."""
    minutes = {EventKind.OPENED: 2, EventKind.REMINDER: 30, EventKind.RESOLVED: 45}.get(kind, 10)
    incident, result = INCIDENT, down(at(minutes))
    if kind is EventKind.RESOLVED:
        incident, result = replace(INCIDENT, resolved_at=at(44)), up(at(45))
    key = f"{incident.id}:{kind}:{at(minutes):%Y%m%dT%H%M%S}"
    return replace(IncidentEvent(kind, incident, result, at(minutes), key=key), **changes)


OPENED, REMINDER, RESOLVED = (
    event(EventKind.OPENED),
    event(EventKind.REMINDER),
    event(EventKind.RESOLVED),
)


def config(port: int, **changes: Any) -> ChannelConfig:
    """A mail channel to 127.0.0.1 with STARTTLS and a login, a short time-out."""
    fields: dict[str, Any] = {
        "name": "mail",
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "from": FROM,
        "to": TO,
        "username": LOGIN[0],
        "secret_env": "SMTP_PASSWORD",
        "secret": LOGIN[1],
        "timeout": 1.0,
        "events": ["opened", "reminder", "resolved", "updated", "reopened"],
    }
    return ChannelConfig(**{**fields, **changes})


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """A throwaway CA the client trusts through SSL_CERT_FILE, as an operator would."""
    files = tls_files(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca_file))
    return files


@pytest.fixture
def smtp(tls: TlsFiles) -> Iterator[SmtpReceiver]:
    """An SMTP server that requires STARTTLS and a login."""
    with SmtpReceiver(tls, login=LOGIN) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real state file."""
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


def commit(store: SqliteStore, channel: EmailChannel, *events: IncidentEvent) -> list[str]:
    """Store the incident and the channel's steps for ``events``; their Message-IDs."""
    actions = [action for e in events for action in channel.plan(e)]
    state = TrackerState("production", Phase.OPEN, fail_streak=3, incident=INCIDENT)
    store.commit_cycle(PendingCycle(down(T0), 60.0, state, INCIDENT, actions))
    return [str(action.payload["message_id"]) for action in actions]


def deliver_all(store: SqliteStore, channel: EmailChannel) -> OutboxWorker:
    """Drain the channel's queue through a real worker; the worker, for its health."""
    clock = ManualClock(at(50))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    drain(worker, clock)
    return worker


# ---- planning ------------------------------------------------------------------------------


def test_ids_are_fixed_when_planned_and_the_opened_mail_is_the_thread_root() -> None:
    """The opened mail's Message-ID is the incident's root; later ones have their own, the
    same whenever planned, and name the root; all carry the From domain."""
    channel = EmailChannel(config(25), status_url=None)
    steps = [channel.plan(e)[0] for e in (OPENED, REMINDER, RESOLVED)]
    again = [channel.plan(e)[0] for e in (OPENED, REMINDER, RESOLVED)]
    root = thread_root("mail", INCIDENT.id, "alerts.example")
    assert [s.payload["message_id"] for s in steps] == [s.payload["message_id"] for s in again]
    assert steps[0].payload["message_id"] == root
    assert steps[0].payload["thread"] is None
    assert steps[1].payload["message_id"] == message_id("mail", REMINDER.key, "alerts.example")
    assert [s.payload["thread"] for s in steps[1:]] == [root, root]
    assert thread_root("other", INCIDENT.id, "alerts.example") != root  # per channel
    assert all(str(s.payload["message_id"]).endswith("@alerts.example>") for s in steps)
    assert {s.kind for s in steps} == {"mail"}


@pytest.mark.parametrize(
    ("changes", "planned"),
    [
        pytest.param({"events": None}, [True, False, True], id="default-opened-and-resolved"),
        pytest.param({"targets": ["staging"]}, [False, False, False], id="other-target"),
    ],
)
def test_plan_follows_the_subscription(changes: dict[str, Any], planned: list[bool]) -> None:
    """Only the subscribed events of the subscribed targets become mails."""
    channel = EmailChannel(config(25, **changes), status_url=None)
    assert [bool(channel.plan(e)) for e in (OPENED, REMINDER, RESOLVED)] == planned


def test_a_mail_is_leased_while_a_send_may_land() -> None:
    """SMTP cannot deduplicate: every send is leased, longer than the SMTP time-out."""
    channel = EmailChannel(config(25), status_url=None)
    [step] = channel.plan(OPENED)
    action = OutboxAction(1, "mail", INCIDENT.id, "production", step.kind, step.payload, T0, 0, T0)
    assert channel.settle_s(action) == SEND_SETTLE_S > 1.0


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        pytest.param(
            {"secret": None}, r"channels\[mail\]\.secret_env \(SMTP_PASSWORD\)", id="no-password"
        ),
        pytest.param(
            {"tls": "none"}, r"channels\[mail\]\.tls: a password is never sent", id="clear"
        ),
        pytest.param({"to": []}, r"channels\[mail\]\.to", id="no-recipient"),
    ],
)
def test_a_bad_configuration_is_refused(changes: dict[str, Any], complaint: str) -> None:
    """The constructor names the field; the password never appears in the complaint."""
    with pytest.raises(ValueError, match=complaint) as exc:
        EmailChannel(config(25, **changes), status_url=None)
    assert LOGIN[1] not in str(exc.value)


# ---- delivery through the outbox -------------------------------------------------------------


def test_an_incident_is_one_thread(smtp: SmtpReceiver, store: SqliteStore) -> None:
    """Opened, reminder and resolved: three mails over STARTTLS after a login; the later ones
    answer the opened one (In-Reply-To, References, "Re:" its subject)."""
    channel = EmailChannel(config(smtp.port), status_url=STATUS_URL)
    planned = commit(store, channel, OPENED, REMINDER, RESOLVED)
    store.set_issue(INCIDENT.id, 7, "https://github.com/acme/web/issues/7")
    deliver_all(store, channel)

    assert smtp.rejections == []
    opened, reminder, resolved = smtp.mails
    assert smtp.message_ids() == planned
    assert opened.subject == f"[monitor] {text.title(down(at(2)))}"
    assert opened.subject == "[monitor] production is down: /health returned 503"
    assert (opened.in_reply_to, opened.references) == (None, None)
    for later in (reminder, resolved):
        assert later.in_reply_to == opened.message_id
        assert later.references == opened.message_id
        assert later.subject == f"Re: {opened.subject}"
    assert all(mail.tls for mail in smtp.mails)  # STARTTLS, before the login
    assert {mail.login for mail in smtp.mails} == {"monitor"}
    assert smtp.mails[0].mail_from == "monitor@alerts.example"
    assert smtp.mails[0].rcpt_tos == ("oncall@example.com", "ops@example.com")
    assert opened.headers["Auto-Submitted"] == "auto-generated"

    assert "production is DOWN" in opened.body
    assert "/health returned 503" in opened.body
    assert "Since: 2026-11-01 12:00:00 UTC" in opened.body
    assert "Issue: https://github.com/acme/web/issues/7" in opened.body
    assert f"Status page: {STATUS_URL}" in opened.body
    assert "still failing after 30m" in reminder.body
    assert "RESOLVED: production was down for 44m" in resolved.body
    assert "Duration: 44m (2640 s)" in resolved.body


def test_without_the_opened_mail_a_reply_keeps_its_own_subject(
    smtp: SmtpReceiver, store: SqliteStore
) -> None:
    """A channel that gets only the resolve still threads it, under its own words."""
    channel = EmailChannel(config(smtp.port, events=["resolved"]), status_url=None)
    commit(store, channel, OPENED, RESOLVED)
    deliver_all(store, channel)
    [mail] = smtp.mails
    assert mail.subject == "Re: [monitor] production recovered after 44m"
    assert mail.in_reply_to == thread_root("mail", INCIDENT.id, "alerts.example")
    assert "Issue:" not in mail.body  # no issue known: no link


@pytest.mark.parametrize(
    ("faults", "copies", "reason"),
    [
        pytest.param(["451"], 1, "deferred", id="451-then-accepted"),
        pytest.param(["421"], 1, "deferred", id="421-then-accepted"),
        pytest.param(["cut"], 2, "network", id="act-then-cut"),
        pytest.param(["delay"], 2, "timeout", id="answer-after-timeout"),
        pytest.param(["451", "cut"], 2, "network", id="451-then-cut"),
    ],
)
def test_a_retried_mail_keeps_its_message_id(
    smtp: SmtpReceiver, store: SqliteStore, faults: list[str], copies: int, reason: str
) -> None:
    """A retry sends the same Message-ID. After a cut or a late answer the server already
    had the mail: it gets a second copy with that id (email is at-least-once)."""
    channel = EmailChannel(config(smtp.port), status_url=None)
    [planned] = commit(store, channel, OPENED)
    smtp.fail(*faults, delay_s=2.5)
    clock = ManualClock(at(3))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    with capture_logs() as logs:
        drain(worker, clock)
    assert smtp.message_ids() == [planned] * copies
    assert smtp.data_attempts == len(faults) + 1
    assert [e["reason"] for e in logs if "reason" in e][-1] == reason
    assert store.pending_actions() == []
    assert smtp.rejections == []


def test_a_timed_out_send_is_not_retried_before_its_lease(
    smtp: SmtpReceiver, store: SqliteStore
) -> None:
    """A send that timed out may still land: nobody sends it again within the lease."""
    channel = EmailChannel(config(smtp.port), status_url=None)
    commit(store, channel, OPENED)
    smtp.fail("delay", delay_s=2.5)
    clock = ManualClock(at(3))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    assert worker.run_once() == 0
    [waiting] = store.pending_actions()
    assert waiting.next_attempt_at >= clock() + timedelta(seconds=SEND_SETTLE_S)


def test_554_stops_the_channel(smtp: SmtpReceiver, store: SqliteStore) -> None:
    """A permanent refusal sends nothing more until the head is tried again, and says so."""
    channel = EmailChannel(config(smtp.port), status_url=None)
    commit(store, channel, OPENED, REMINDER)
    smtp.fail("554")
    clock = ManualClock(at(50))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    with capture_logs() as logs:
        assert worker.run_once() == 0
        clock.advance(PERMANENT_RETRY_S / 2)
        assert worker.run_once() == 0
    assert worker.health.stopped is not None
    assert worker.health.stopped.startswith("554 from SMTP server 127.0.0.1:")
    assert not worker.health.disabled
    [line] = [entry for entry in logs if entry.get("sink") == "mail"]
    assert line["event"] == "outbox action refused; channel stopped until it is accepted again"
    assert smtp.data_attempts == 1
    assert smtp.mails == []
    clock.advance(PERMANENT_RETRY_S)
    drain(worker, clock)  # the server accepts again: the queue resumes
    assert len(smtp.mails) == 2


def test_implicit_tls(tls: TlsFiles, store: SqliteStore) -> None:
    """tls = "tls" speaks TLS from the first byte (SMTP_SSL), with a login."""
    with SmtpReceiver(tls, implicit_tls=True, login=LOGIN) as smtp:
        channel = EmailChannel(config(smtp.port, tls="tls"), status_url=None)
        commit(store, channel, OPENED)
        deliver_all(store, channel)
        [mail] = smtp.mails
    assert mail.tls
    assert mail.login == "monitor"


def test_a_server_that_requires_starttls_refuses_clear_text(
    smtp: SmtpReceiver, store: SqliteStore
) -> None:
    """The receiver really requires STARTTLS: a clear-text channel is refused (530)."""
    channel = EmailChannel(config(smtp.port, tls="none", username=None), status_url=None)
    with pytest.raises(ChannelError) as exc:
        channel.send_notice(Notice("t", "b", key="n-1"))
    assert exc.value.permanent
    assert str(exc.value).startswith("530 from SMTP server")
    assert smtp.mails == []


def test_a_server_without_starttls_gets_nothing(tls: TlsFiles) -> None:
    """tls = "starttls" never falls back to clear text when the server does not offer it."""
    with SmtpReceiver(None) as plain:
        channel = EmailChannel(config(plain.port), status_url=None)
        with pytest.raises(ChannelError) as exc:
            channel.send_notice(Notice("t", "b", key="n-1"))
        assert plain.mails == []
        assert plain.logins == []
    assert (exc.value.reason, exc.value.permanent) == ("tls", True)


def test_an_untrusted_certificate_is_a_tls_error(
    smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server whose certificate the trust store does not vouch for gets nothing."""
    (tmp_path / "other").mkdir()
    stranger = tls_files(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger.ca_file))
    channel = EmailChannel(config(smtp.port), status_url=None)
    with pytest.raises(ChannelError) as exc:
        channel.send_notice(Notice("t", "b", key="n-1"))
    assert (exc.value.reason, exc.value.permanent) == ("tls", False)
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
    assert smtp.logins == []


@pytest.mark.parametrize(
    ("refusals", "outcome"),
    [
        pytest.param({"ops@example.com": "550 5.1.1 no such user"}, "sent", id="some-refused"),
        pytest.param(
            {a: "550 5.1.1 no such user" for a in ("oncall@example.com", "ops@example.com")},
            "permanent",
            id="all-refused",
        ),
        pytest.param(
            {a: "450 4.2.0 greylisted" for a in ("oncall@example.com", "ops@example.com")},
            "transient",
            id="all-greylisted",
        ),
    ],
)
def test_refused_recipients(tls: TlsFiles, refusals: dict[str, str], outcome: str) -> None:
    """Some recipients refused: the others got it, no resend; all refused: nobody got it,
    retried when only deferred, stopped when refused for good."""
    with SmtpReceiver(tls, login=LOGIN, refuse_rcpt=refusals) as smtp:
        channel = EmailChannel(config(smtp.port), status_url=None)
        with capture_logs() as logs:
            try:
                channel.send_notice(Notice("t", "b", key="n-1"))
                result = "sent"
            except ChannelError as exc:
                result = "permanent" if exc.permanent else "transient"
        assert result == outcome
        assert len(smtp.mails) == (outcome == "sent")
    if outcome == "sent":
        [line] = logs
        assert line["refused"] == ["ops@example.com"]


# ---- notices and the password ------------------------------------------------------------------


@pytest.mark.parametrize("test", [pytest.param(True, id="test"), pytest.param(False, id="notice")])
def test_send_notice(smtp: SmtpReceiver, test: bool) -> None:
    """``notify`` mails the title and body; ``notify test`` says plainly it is a test."""
    channel = EmailChannel(config(smtp.port), status_url=None)
    channel.send_notice(Notice("Deploy freeze", "No deploys until Monday.", key="k", test=test))
    [mail] = smtp.mails
    assert mail.subject == ("[monitor] [TEST] Deploy freeze" if test else "[monitor] Deploy freeze")
    assert ("nobody needs to act" in mail.body) is test
    assert "No deploys until Monday." in mail.body
    assert mail.in_reply_to is None
    assert mail.tls


def test_the_password_appears_in_no_log_or_error(tls: TlsFiles, store: SqliteStore) -> None:
    """A refused login, even from a server that quotes the credentials back, leaves no
    trace of the password (plain or base64) in errors, logs or stored steps."""
    wrong = ("monitor", "n0t-the-Pa55word")
    with SmtpReceiver(tls, login=wrong) as smtp:
        channel = EmailChannel(config(smtp.port), status_url=None)
        commit(store, channel, OPENED)
        stored = json.dumps([a.payload for a in store.pending_actions()])
        clock = ManualClock(at(3))
        worker = OutboxWorker(store, channel, Metrics(), clock=clock)
        with capture_logs() as logs:
            assert worker.run_once() == 0
        with pytest.raises(ChannelError) as exc:
            channel.send_notice(Notice("t", "b", key="n-1"))
        # smtplib tries each mechanism the server offers (PLAIN, LOGIN) before giving up
        assert set(smtp.logins) == {("monitor", False)}
    assert (exc.value.reason, exc.value.auth) == ("auth", True)
    assert str(exc.value).startswith("535 from SMTP server")
    assert worker.health.auth_problem
    plain = base64.b64encode(f"\0{LOGIN[0]}\0{LOGIN[1]}".encode()).decode()
    forms = (LOGIN[1], base64.b64encode(LOGIN[1].encode()).decode(), plain)
    for seen in (str(exc.value), repr(logs), str(worker.health.last_error), stored):
        for form in forms:
            assert form not in seen
