"""The webhook channel against a real Standard Webhooks receiver on 127.0.0.1: signed
requests, one webhook-id per event whatever the retries, 410 disabling the channel."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from monitor.config.schema import ChannelConfig
from monitor.incidents.channels.base import ChannelError, Notice
from monitor.incidents.channels.webhook import WebhookChannel, message_id
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import PERMANENT_RETRY_S, OutboxWorker
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.metrics import Metrics
from monitor.store.base import OutboxAction, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, ManualClock, at, down, up
from tests.outbox_kit import drain
from tests.receivers_webhook_email import DUPLICATE, HANDLED, WebhookReceiver

KEY = base64.b64encode(bytes(range(7, 39))).decode()  # 32 bytes
SECRET = f"whsec_{KEY}"
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


EVENTS = [event(EventKind.OPENED), event(EventKind.REMINDER), event(EventKind.RESOLVED)]


def config(url: str, **changes: Any) -> ChannelConfig:
    """A webhook channel with a short time-out (the receiver's delay outlasts it)."""
    fields: dict[str, Any] = {
        "name": "hooks",
        "type": "webhook",
        "url": url,
        "secret_env": "HOOK_SECRET",
        "secret": SECRET,
        "timeout": 0.5,
        "events": ["opened", "reminder", "resolved", "updated", "reopened", "acknowledged"],
    }
    return ChannelConfig(**{**fields, **changes})


def moving_wall_clock() -> Iterator[float]:
    """Real time, one second further at each call: every attempt gets its own timestamp."""
    return (time.time() + step for step in itertools.count())


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A verifying receiver that shares the channel's secret."""
    with WebhookReceiver(SECRET) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real state file."""
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def built() -> Iterator[list[WebhookChannel]]:
    """Channels a test builds, closed afterwards (each holds an HTTP connection pool)."""
    channels: list[WebhookChannel] = []
    yield channels
    for channel in channels:
        channel.close()


@pytest.fixture
def channel_for(built: list[WebhookChannel]) -> Callable[..., WebhookChannel]:
    """Build the channel under test, pointed at a receiver, each attempt a second later."""

    def build(receiver: WebhookReceiver, **changes: Any) -> WebhookChannel:
        clock = moving_wall_clock()
        channel = WebhookChannel(
            config(receiver.url, **changes), status_url=STATUS_URL, wall_clock=lambda: next(clock)
        )
        built.append(channel)
        return channel

    return build


def commit(store: SqliteStore, channel: WebhookChannel, *events: IncidentEvent) -> list[str]:
    """Store the incident and the channel's steps for ``events``; their webhook-ids."""
    actions = [action for e in events for action in channel.plan(e)]
    state = TrackerState("production", Phase.OPEN, fail_streak=3, incident=INCIDENT)
    store.commit_cycle(PendingCycle(down(T0), 60.0, state, INCIDENT, actions))
    return [str(action.payload["webhook_id"]) for action in actions]


# ---- planning ------------------------------------------------------------------------------


def test_each_event_is_one_post_whose_id_is_fixed_by_its_key() -> None:
    """Planning twice gives the same webhook-id; another event or channel another one."""
    channel = WebhookChannel(config("http://127.0.0.1:9/hooks"), status_url=None)
    first = [channel.plan(e)[0] for e in EVENTS]
    again = [channel.plan(e)[0] for e in EVENTS]
    assert [a.kind for a in first] == ["post"] * 3
    assert [a.payload["type"] for a in first] == [
        "incident.opened",
        "incident.reminder",
        "incident.resolved",
    ]
    ids = [a.payload["webhook_id"] for a in first]
    assert ids == [a.payload["webhook_id"] for a in again]
    assert len(set(ids)) == 3
    assert ids[0] == message_id("hooks", EVENTS[0].key) != message_id("other", EVENTS[0].key)
    assert all("." not in str(i) for i in ids)  # the spec: ids must not contain a dot


@pytest.mark.parametrize(
    ("changes", "planned"),
    [
        pytest.param({"events": ["opened"]}, [True, False, False], id="events-filter"),
        pytest.param({"targets": ["staging"]}, [False, False, False], id="other-target"),
        pytest.param({"events": None}, [True, True, True], id="default-events"),
    ],
)
def test_plan_follows_the_subscription(changes: dict[str, Any], planned: list[bool]) -> None:
    """Only the subscribed events of the subscribed targets become steps."""
    channel = WebhookChannel(config("http://127.0.0.1:9/hooks", **changes), status_url=None)
    assert [bool(channel.plan(e)) for e in EVENTS] == planned


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(KEY, id="no-prefix"),
        pytest.param("whsec_not*base64!", id="not-base64"),
        pytest.param("whsec_" + base64.b64encode(b"short").decode(), id="too-short"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_bad_secret_is_refused_without_quoting_it(secret: str | None) -> None:
    """The constructor names secret_env and its variable, never the value."""
    with pytest.raises(ValueError, match=r"channels\[hooks\]\.secret_env \(HOOK_SECRET\)") as exc:
        WebhookChannel(config("http://127.0.0.1:9/hooks", secret=secret), status_url=None)
    if secret is not None:
        assert secret not in str(exc.value)
        assert secret.removeprefix("whsec_") not in str(exc.value)


# ---- delivery through the outbox -------------------------------------------------------------


def test_every_event_is_handled_once_through_faults(
    receiver: WebhookReceiver, store: SqliteStore, channel_for: Callable[..., WebhookChannel]
) -> None:
    """Cuts, 5xx, 429 and a late answer: each event is acted on exactly once, every retry
    carries its event's webhook-id, each attempt is signed anew."""
    channel = channel_for(receiver)
    planned = commit(store, channel, *EVENTS)
    # per event, in order: opened, reminder, resolved ("ok": no fault, a plain 200)
    receiver.fail("cut", "500", "ok", "429", "delay", "ok", "503", "cut", "ok")
    clock = ManualClock(at(50))
    drain(OutboxWorker(store, channel, Metrics(), clock=clock), clock)
    receiver.settle()

    assert receiver.rejections == []
    assert list(receiver.handled) == planned  # each acted on once, in order
    assert receiver.ids(HANDLED) == planned
    assert set(receiver.ids()) == set(planned)  # no attempt with an id of its own
    for webhook_id in planned:
        tries = [a for a in receiver.attempts if a.webhook_id == webhook_id]
        assert len(tries) == 3
        assert [a.outcome for a in tries].count(DUPLICATE) == 1
        stamps = [int(str(a.timestamp)) for a in tries]
        assert stamps == sorted(set(stamps))  # a new timestamp at each attempt
        assert len({a.signature for a in tries}) == 3  # and so a new signature
    assert [d["type"] for d in receiver.handled.values()] == [
        "incident.opened",
        "incident.reminder",
        "incident.resolved",
    ]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param("500", "server_error", id="500"),
        pytest.param("503", "server_error", id="503"),
        pytest.param("429", "rate_limited", id="429"),
        pytest.param("delay", "timeout", id="answer-after-timeout"),
        pytest.param("cut", "network", id="act-then-cut"),
    ],
)
def test_a_failed_attempt_is_retried_with_the_same_id(
    receiver: WebhookReceiver,
    store: SqliteStore,
    channel_for: Callable[..., WebhookChannel],
    fault: str,
    reason: str,
) -> None:
    """Each transient fault keeps the step queued with its reason; the retry reuses the id."""
    channel = channel_for(receiver)
    [webhook_id] = commit(store, channel, EVENTS[0])
    receiver.fail(fault, delay_s=1.5)
    clock = ManualClock(at(3))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    assert worker.run_once() == 0
    assert worker.health.last_error_reason == reason
    assert not worker.health.stopped
    assert len(store.pending_actions()) == 1
    if fault == "429":  # Retry-After: 7 holds the whole channel until then
        clock.advance(6)
        assert worker.run_once() == 0
        assert len(receiver.ids()) == 1
    drain(worker, clock, rounds=30)
    receiver.settle()
    assert receiver.ids() == [webhook_id, webhook_id]
    assert receiver.ids(HANDLED) == [webhook_id]
    assert receiver.rejections == []


def test_the_document_follows_the_schema_with_the_issue_known_at_delivery(
    receiver: WebhookReceiver, store: SqliteStore, channel_for: Callable[..., WebhookChannel]
) -> None:
    """The body carries the incident, the failing checks, severity, the status page and
    the GitHub issue as known when sent (null before it exists)."""
    channel = channel_for(receiver)
    opened = event(EventKind.OPENED, severity="warning")
    commit(store, channel, opened, EVENTS[2])
    store.set_issue(INCIDENT.id, 7, "https://github.com/acme/web/issues/7")
    clock = ManualClock(at(50))
    drain(OutboxWorker(store, channel, Metrics(), clock=clock), clock)

    first, resolved = (d for d in receiver.handled.values())
    assert first["timestamp"] == "2026-11-01T12:02:00Z"
    data = first["data"]
    assert data["incident_id"] == INCIDENT.id
    assert (data["target"], data["severity"], data["outcome"]) == ("production", "warning", "down")
    assert data["started_at"] == "2026-11-01T12:00:00Z"
    assert (data["resolved_at"], data["duration_s"]) == (None, None)
    assert data["failing"] == [
        {"check": "health", "reason": "status", "status": 503, "detail": "down"}
    ]
    assert data["issue_url"] == "https://github.com/acme/web/issues/7"
    assert data["status_url"] == STATUS_URL
    assert "regions" not in data  # only when several regions probe
    assert resolved["data"]["resolved_at"] == "2026-11-01T12:44:00Z"
    assert resolved["data"]["duration_s"] == 44 * 60
    assert resolved["data"]["failing"] == []


def test_410_disables_the_channel_until_the_next_start(
    receiver: WebhookReceiver, store: SqliteStore, channel_for: Callable[..., WebhookChannel]
) -> None:
    """410 Gone: the worker sends nothing more, says why in the log and in health."""
    channel = channel_for(receiver)
    commit(store, channel, *EVENTS)
    receiver.fail("410")
    clock = ManualClock(at(50))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    with capture_logs() as logs:
        assert worker.run_once() == 0
    assert worker.health.disabled
    assert "410" in str(worker.health.problem)
    [line] = [entry for entry in logs if entry.get("sink") == "hooks"]
    assert line["event"] == "channel disabled until the next start: the endpoint asked us to stop"
    assert line["reason"] == "disabled"

    clock.advance(PERMANENT_RETRY_S * 10)
    assert worker.run_once() == 0
    assert len(receiver.attempts) == 1  # nothing was sent after the 410
    assert len(store.pending_actions()) == 3  # kept for the next start


def test_a_receiver_with_another_secret_refuses_the_signature(
    receiver: WebhookReceiver, built: list[WebhookChannel]
) -> None:
    """The receiver really verifies: a channel signing with another key gets 401, which
    stops the channel as a credentials problem."""
    other = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
    channel = WebhookChannel(config(receiver.url, secret=other), status_url=None)
    built.append(channel)
    with pytest.raises(ChannelError) as exc:
        channel.send_notice(Notice("Drill", "body", key="n-1"))
    assert (exc.value.reason, exc.value.auth, exc.value.permanent) == ("auth", True, True)
    assert receiver.rejections == ["signature: No matching signature found"]
    assert receiver.handled == {}


# ---- notices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "kind"),
    [
        pytest.param(True, "monitor.test", id="test"),
        pytest.param(False, "monitor.notice", id="notice"),
    ],
)
def test_send_notice(
    receiver: WebhookReceiver, channel_for: Callable[..., WebhookChannel], test: bool, kind: str
) -> None:
    """``notify`` sends monitor.notice; ``notify test`` sends monitor.test, marked as a test;
    the same notice sent twice carries the same id, so the receiver acts once."""
    channel = channel_for(receiver)
    notice = Notice("Deploy freeze", "No deploys until Monday.", key="notice-1", test=test)
    channel.send_notice(notice)
    channel.send_notice(notice)
    [document] = receiver.handled.values()
    assert receiver.ids(DUPLICATE) == receiver.ids(HANDLED)
    assert document["type"] == kind
    data = document["data"]
    assert data["test"] is test
    assert data["title"].startswith("[TEST] ") is test
    assert ("nobody needs to act" in data["body"]) is test
    assert "No deploys until Monday." in data["body"]


def test_a_refused_notice_raises(
    receiver: WebhookReceiver, channel_for: Callable[..., WebhookChannel]
) -> None:
    """A notice the receiver does not accept raises, transient for a 503."""
    receiver.fail("503")
    with pytest.raises(ChannelError) as exc:
        channel_for(receiver).send_notice(Notice("t", "b", key="n-2"))
    assert (exc.value.reason, exc.value.permanent) == ("server_error", False)


# ---- the secret ---------------------------------------------------------------------------------


def test_the_signing_secret_appears_in_no_log_error_or_payload(
    receiver: WebhookReceiver, store: SqliteStore, channel_for: Callable[..., WebhookChannel]
) -> None:
    """Neither the secret nor its base64 key leaks through logs, errors, stored steps or
    the requests themselves, whatever the faults."""
    channel = channel_for(receiver)
    commit(store, channel, *EVENTS)
    stored = json.dumps([a.payload for a in store.pending_actions()])
    receiver.fail("400", "500", "cut", "delay", "429", "ok", "410", delay_s=1.0)
    clock = ManualClock(at(50))
    worker = OutboxWorker(store, channel, Metrics(), clock=clock)
    errors: list[str] = []
    with capture_logs() as logs:
        for _ in range(8):
            worker.run_once()
            errors.append(str(worker.health.last_error))
            clock.advance(PERMANENT_RETRY_S)
        for fault in ("500", "400"):
            receiver.fail(fault)
            with pytest.raises(ChannelError) as exc:
                channel.send_notice(Notice("t", "b", key=f"n-{fault}"))
            errors.append(str(exc.value))
    receiver.settle()
    seen = [stored, repr(logs), *errors, *(json.dumps(d) for d in receiver.handled.values())]
    assert worker.health.disabled  # the run reached the 410
    assert any("400" in error for error in errors)
    for text in seen:
        assert SECRET not in text
        assert KEY not in text
        assert KEY.rstrip("=") not in text


def test_a_loaded_config_works_and_needs_no_lease() -> None:
    """The loader fills ``secret`` as a SecretStr; no step is leased (the id dedupes)."""
    loaded = config("http://127.0.0.1:9/hooks", secret=SecretStr(SECRET))
    channel = WebhookChannel(loaded, status_url=None)
    assert (channel.name, channel.kind) == ("hooks", "webhook")
    [step] = channel.plan(EVENTS[0])
    action = OutboxAction(1, "hooks", INCIDENT.id, "production", step.kind, step.payload, T0, 0, T0)
    assert channel.settle_s(action) == 0.0
