"""The PagerDuty channel against a local Events API v2: one alert per incident, whatever
fails, keyed by the incident id; refusals stop it, rate limits hold it, the routing key
never leaks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.config.schema import ChannelConfig
from monitor.incidents.channels.base import ChannelError, Notice
from monitor.incidents.channels.pagerduty import PagerDutyChannel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import PERMANENT_RETRY_S, OutboxWorker
from monitor.incidents.tracker import Incident, incident_id
from monitor.metrics import Metrics
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from monitor.store.sqlite import SqliteStore
from tests import receivers_pagerduty_slack as rx
from tests.builders import ManualClock, check, down, up
from tests.outbox_kit import channel_errors, commit_event, drain
from tests.receivers_pagerduty_slack import PD_ROUTING_KEY, FakePagerDuty

STATUS_URL = "https://status.example.com/status"
ISSUE_URL = "https://github.com/acme/web/issues/7"
TIMEOUT_S = 0.5  # the client's; a delayed request outlasts it


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    """The Events API on 127.0.0.1; the channel must never breach its contract."""
    with FakePagerDuty() as server:
        yield server
        assert server.violations == []


@pytest.fixture
def clock() -> ManualClock:
    """Frozen until a test moves it."""
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real SQLite file."""
    db = SqliteStore(tmp_path / "state.db")
    yield db
    db.close()


def config(server: FakePagerDuty, **changes: object) -> ChannelConfig:
    """A pagerduty channel on the local receiver."""
    fields: dict[str, object] = {
        "name": "pager",
        "type": "pagerduty",
        "url": server.endpoint,
        "secret_env": "PD_KEY",
        "secret": PD_ROUTING_KEY,
        "timeout": TIMEOUT_S,
        **changes,
    }
    return ChannelConfig.model_validate(fields)


ChannelFactory = Callable[..., PagerDutyChannel]


@pytest.fixture
def make_channel(pagerduty: FakePagerDuty) -> Iterator[ChannelFactory]:
    """Channels on the receiver (``config`` changes as keywords), closed afterwards."""
    built: list[PagerDutyChannel] = []

    def build(status_url: str | None = STATUS_URL, **changes: object) -> PagerDutyChannel:
        channel = PagerDutyChannel(config(pagerduty, **changes), status_url=status_url)
        built.append(channel)
        return channel

    yield build
    for channel in built:
        channel.close()


@pytest.fixture
def channel(make_channel: ChannelFactory) -> PagerDutyChannel:
    """The channel under test."""
    return make_channel()


@pytest.fixture
def worker(store: SqliteStore, channel: PagerDutyChannel, clock: ManualClock) -> OutboxWorker:
    """Its outbox worker on the frozen clock."""
    return OutboxWorker(store, channel, Metrics(), clock=clock)


# ---- events as the daemon decides them ------------------------------------------------------


def opened(
    clock: ManualClock, target: str = "production", severity: str = "error"
) -> IncidentEvent:
    """A confirmed failure of ``target`` now."""
    incident = Incident(
        id=incident_id(target, clock()),
        target=target,
        started_at=clock(),
        probes_total=3,
        probes_failed=3,
        last_notice_at=clock(),
    )
    return IncidentEvent(
        EventKind.OPENED,
        incident,
        down(clock(), target),
        clock(),
        key=f"{incident.id}:opened",
        status_url=STATUS_URL,
        severity=severity,
    )


def later(
    first: IncidentEvent, kind: EventKind, clock: ManualClock, **changes: object
) -> IncidentEvent:
    """Another event of the same incident, decided now."""
    incident = first.incident
    result = first.result
    if kind is EventKind.RESOLVED:
        incident = replace(incident, resolved_at=clock() - timedelta(seconds=30))
        result = up(clock(), first.target)
    event = replace(
        first,
        kind=kind,
        incident=incident,
        result=result,
        decided_at=clock(),
        key=f"{incident.id}:{kind}:{clock():%H%M%S}",
    )
    return replace(event, **changes)  # type: ignore[arg-type]


# ---- planning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        pytest.param(EventKind.OPENED, "trigger", id="opened"),
        pytest.param(EventKind.UPDATED, "trigger", id="updated"),
        pytest.param(EventKind.REOPENED, "trigger", id="reopened"),
        pytest.param(EventKind.ACKNOWLEDGED, "acknowledge", id="acknowledged"),
        pytest.param(EventKind.RESOLVED, "resolve", id="resolved"),
    ],
)
def test_each_event_plans_one_pagerduty_action_keyed_by_the_incident(
    channel: PagerDutyChannel, clock: ManualClock, kind: EventKind, action: str
) -> None:
    """The event's action, the incident id as dedup_key, and no routing key in the step."""
    first = opened(clock)
    event = first if kind is EventKind.OPENED else later(first, kind, clock)

    [step] = channel.plan(event)

    assert (step.channel, step.kind, step.incident_id) == ("pager", action, first.incident.id)
    assert step.payload["event_action"] == action
    assert step.payload["dedup_key"] == first.incident.id
    assert not step.supersede
    assert PD_ROUTING_KEY not in json.dumps(step.payload)
    assert ("payload" in step.payload) == (action != "acknowledge")


def test_trigger_says_what_fails_with_details_severity_and_links(
    channel: PagerDutyChannel, clock: ManualClock
) -> None:
    """Summary within 1024 characters, the target's severity, the failing checks in
    custom_details, the status page linked."""
    event = opened(clock, severity="warning")
    noisy = CheckResult(
        target="production",
        check="api",
        url="https://api.production.example/v1/ping",
        started_at=clock(),
        duration_s=0.1,
        outcome=Outcome.DOWN,
        reason=Reason.CONDITION,
        detail="x" * 5000,
        status_code=200,
    )
    event = replace(
        event, result=TargetResult("production", clock(), (check(Outcome.DOWN, status=503), noisy))
    )

    [step] = channel.plan(event)

    payload = step.payload["payload"]
    assert (
        payload["summary"] == "production is down: /health returned 503, /v1/ping reports unhealthy"
    )
    assert payload["severity"] == "warning"
    assert payload["source"] == "production.example"
    assert payload["component"] == "production"
    details = payload["custom_details"]
    assert details["incident_id"] == event.incident.id
    assert details["started_at"] == event.incident.started_at.isoformat()
    assert [(f["check"], f["reason"], f["status"]) for f in details["failing"]] == [
        ("health", "status", 503),
        ("api", "condition", 200),
    ]
    assert len(details["failing"][1]["detail"]) <= 300
    assert step.payload["links"] == [{"href": STATUS_URL, "text": "Status page"}]


def test_summary_is_cut_to_pagerduty_limit(channel: PagerDutyChannel, clock: ManualClock) -> None:
    """Hundreds of failing checks still make a summary PagerDuty accepts."""
    event = opened(clock)
    checks = tuple(
        check(Outcome.DOWN, name=f"check-{'n' * 40}-{i}", status=500) for i in range(200)
    )
    event = replace(event, result=TargetResult("production", clock(), checks))

    [step] = channel.plan(event)

    assert len(step.payload["payload"]["summary"]) <= 1024


def test_resolve_carries_the_measured_duration(
    channel: PagerDutyChannel, clock: ManualClock
) -> None:
    """The resolve's custom_details say how long it was down."""
    first = opened(clock)
    clock.advance(330)

    [step] = channel.plan(later(first, EventKind.RESOLVED, clock))

    details = step.payload["payload"]["custom_details"]
    assert details["duration_s"] == 300.0
    assert details["duration"] == "5m"
    assert step.payload["payload"]["summary"] == "production recovered after 5m"


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        pytest.param({"targets": ["staging"]}, EventKind.OPENED, id="other-target"),
        pytest.param({}, EventKind.REMINDER, id="reminder-not-by-default"),
        pytest.param({"events": ["resolved"]}, EventKind.OPENED, id="not-subscribed"),
    ],
)
def test_events_the_channel_does_not_want_plan_nothing(
    make_channel: ChannelFactory, clock: ManualClock, changes: dict[str, object], kind: EventKind
) -> None:
    """Targets and events outside the channel's configuration make no step."""
    channel = make_channel(**changes)
    first = opened(clock)
    event = first if kind is EventKind.OPENED else later(first, kind, clock)

    assert channel.plan(event) == []


# ---- delivery through the outbox --------------------------------------------------------------


def test_incident_is_one_alert_triggered_acknowledged_resolved(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Opened, acknowledged, resolved: one alert through its three states, linking the
    incident's issue once it has one."""
    first = opened(clock)
    commit_event(store, channel, first)
    store.set_issue(first.incident.id, 7, ISSUE_URL)
    drain(worker, clock)
    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.ACKNOWLEDGED, clock, actor="alice"))
    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.RESOLVED, clock))
    drain(worker, clock)

    key = first.incident.id
    assert pagerduty.actions(key) == ["trigger", "acknowledge", "resolve"]
    assert pagerduty.histories(key) == [["triggered", "acknowledged", "resolved"]]
    trigger = pagerduty.events[0]
    assert trigger["routing_key"] == PD_ROUTING_KEY
    assert trigger["links"] == [
        {"href": ISSUE_URL, "text": "GitHub issue #7"},
        {"href": STATUS_URL, "text": "Status page"},
    ]
    assert store.handle("pager", key) is None  # the dedup_key is the incident id: no handle


def test_reopen_triggers_a_new_alert_under_the_same_key(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """A flap after the resolve pages again (PagerDuty opens a new alert for the key)."""
    first = opened(clock)
    commit_event(store, channel, first)
    clock.advance(120)
    commit_event(store, channel, later(first, EventKind.RESOLVED, clock))
    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.REOPENED, clock))
    drain(worker, clock)

    assert pagerduty.histories(first.incident.id) == [["triggered", "resolved"], ["triggered"]]


FAULTS = [
    pytest.param(rx.status(503), "server_error", id="503"),
    pytest.param(rx.status(500, {"status": "error"}), "server_error", id="500"),
    pytest.param(rx.too_many_requests(30), "rate_limited", id="429-retry-after"),
    pytest.param(rx.delay(TIMEOUT_S * 2), "timeout", id="delay-past-timeout"),
    pytest.param(rx.cut_after_act(), "network", id="act-then-cut"),
]


@pytest.mark.parametrize("faulty", ["trigger", "resolve"])
@pytest.mark.parametrize(("fault", "reason"), FAULTS)
def test_faults_end_in_one_alert_triggered_then_resolved(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
    faulty: str,
    fault: rx.Fault,
    reason: str,
) -> None:
    """Whatever fails (and whether or not PagerDuty acted), each incident is one alert,
    triggered then resolved; repeats only ever carry the same key."""
    first = opened(clock)
    commit_event(store, channel, first)
    clock.advance(120)
    commit_event(store, channel, later(first, EventKind.RESOLVED, clock))
    pagerduty.inject(fault, route=faulty)

    for _ in range(3):
        worker.run_once()  # the fault: counted, retried later
        if channel_errors(worker, reason):
            break
    assert channel_errors(worker, reason) == 1
    pagerduty.settled()  # a delayed request lands now, after the client gave up
    drain(worker, clock)

    key = first.incident.id
    assert pagerduty.histories(key) == [["triggered", "resolved"]]
    assert {e["dedup_key"] for e in pagerduty.events} == {key}
    assert store.pending_actions() == []
    assert pagerduty.pending_faults == 0


def test_rate_limit_holds_every_target_until_retry_after(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """After a 429 with Retry-After nothing is sent, for any target, until it passes."""
    commit_event(store, channel, opened(clock, "production"))
    commit_event(store, channel, opened(clock, "staging"))
    pagerduty.inject(rx.too_many_requests(120))

    assert worker.run_once() == 0
    sent = len(pagerduty.requests)
    clock.advance(100)
    assert worker.run_once() == 0

    assert len(pagerduty.requests) == sent == 1
    clock.advance(21)
    assert worker.run_once() == 2
    assert len(pagerduty.alerts) == 2


def test_rate_limit_without_retry_after_holds_a_minute(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """PagerDuty's 429 often says nothing: the channel waits 60 s."""
    commit_event(store, channel, opened(clock))
    pagerduty.inject(rx.too_many_requests(None))

    worker.run_once()

    [held] = store.pending_actions()
    assert held.next_attempt_at >= clock() + timedelta(seconds=60)
    clock.advance(59)
    assert worker.run_once() == 0
    assert len(pagerduty.requests) == 1


def test_invalid_event_stops_the_channel_until_accepted(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """A 400 is permanent: the channel stops (health says why), later steps wait unsent,
    and the head is tried again only after the permanent-refusal interval."""
    first = opened(clock, "production")
    commit_event(store, channel, first)
    commit_event(store, channel, opened(clock, "staging"))
    pagerduty.inject(
        rx.status(400, {"status": "invalid event", "message": "Event object is invalid"})
    )

    assert worker.run_once() == 0

    assert worker.health.stopped is not None
    assert "400" in worker.health.stopped
    assert len(pagerduty.requests) == 1
    clock.advance(120)
    commit_event(store, channel, later(first, EventKind.RESOLVED, clock))
    assert worker.run_once() == 0
    assert len(pagerduty.requests) == 1  # neither staging's trigger nor the resolve
    assert [a.attempts for a in store.pending_actions()] == [1, 0, 0]

    clock.advance(PERMANENT_RETRY_S)
    drain(worker, clock)

    assert worker.health.stopped is None
    assert pagerduty.histories(first.incident.id) == [["triggered", "resolved"]]


def test_unknown_routing_key_is_refused_and_stops_the_channel(
    pagerduty: FakePagerDuty, make_channel: ChannelFactory, store: SqliteStore, clock: ManualClock
) -> None:
    """A key PagerDuty does not know: 400, the channel stops, nothing is dropped."""
    wrong = make_channel(secret="Z" * 32)
    worker = OutboxWorker(store, wrong, Metrics(), clock=clock)
    commit_event(store, wrong, opened(clock))

    worker.run_once()

    assert worker.health.stopped is not None
    assert len(store.pending_actions()) == 1
    assert pagerduty.events == []


def test_routing_key_never_appears_in_steps_logs_or_errors(
    pagerduty: FakePagerDuty,
    store: SqliteStore,
    channel: PagerDutyChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Even a reply that echoes the key (whole, or where the quoted excerpt would cut it)
    leaves it out of /healthz, the log, the stored error and the exception."""
    whole = {"status": "invalid event", "errors": [f"routing_key {PD_ROUTING_KEY} is disabled"]}
    straddling = ("x" * 185 + PD_ROUTING_KEY).encode()  # the excerpt ends mid-key
    commit_event(store, channel, opened(clock))
    pagerduty.inject(rx.status(400, whole))
    pagerduty.inject(rx.status(503, straddling))

    with capture_logs() as logs:
        worker.run_once()
        with pytest.raises(ChannelError) as raised:
            channel.send_notice(Notice("deploy", "starting", key="notice-1"))

    [step] = store.pending_actions()
    texts = [
        str(raised.value),
        worker.health.last_error or "",
        worker.health.stopped or "",
        repr(logs),
        step.last_error or "",
        json.dumps(dict(step.payload)),
    ]
    assert "[REDACTED]" in str(raised.value)
    for text in texts:
        assert PD_ROUTING_KEY[:12] not in text


# ---- one-off notices --------------------------------------------------------------------------


def test_notice_is_an_info_trigger_keyed_by_the_notice(
    pagerduty: FakePagerDuty, channel: PagerDutyChannel
) -> None:
    """``monitor notify``: one info trigger that stays open for a person to resolve."""
    channel.send_notice(Notice("Deploy at noon", "expect a blip", key="notice-42"))

    [event] = pagerduty.events
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "notice-42"
    assert event["payload"]["severity"] == "info"
    assert event["payload"]["summary"] == "Deploy at noon"
    assert pagerduty.histories("notice-42") == [["triggered"]]


def test_test_notice_is_marked_and_resolved_right_after(
    pagerduty: FakePagerDuty, channel: PagerDutyChannel
) -> None:
    """``monitor notify test``: a [TEST] trigger that does not stay open."""
    channel.send_notice(Notice("Channel check", "hello", key="test-1", test=True))

    trigger, resolve = pagerduty.events
    assert trigger["payload"]["summary"].startswith("[TEST] Channel check")
    assert "nobody needs to act" in trigger["payload"]["summary"]
    assert resolve == {
        "event_action": "resolve",
        "dedup_key": "test-1",
        "routing_key": PD_ROUTING_KEY,
    }
    assert pagerduty.histories("test-1") == [["triggered", "resolved"]]


def test_notice_not_accepted_raises(pagerduty: FakePagerDuty, channel: PagerDutyChannel) -> None:
    """A notice PagerDuty did not take is an error for the command to report."""
    pagerduty.inject(rx.too_many_requests(5))

    with pytest.raises(ChannelError) as raised:
        channel.send_notice(Notice("t", "b", key="k"))

    assert raised.value.reason == "rate_limited"
    assert raised.value.retry_after_s == 5


def test_channel_refuses_to_start_without_a_routing_key(pagerduty: FakePagerDuty) -> None:
    """No key, no channel: the error names the variable, never a value."""
    with pytest.raises(ValueError, match="PD_KEY"):
        PagerDutyChannel(config(pagerduty, secret=None), status_url=None)


# ---- the receiver itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"event_action": "trigger", "dedup_key": "k"}, id="trigger-without-payload"),
        pytest.param({"event_action": "page", "dedup_key": "k"}, id="unknown-action"),
        pytest.param({"event_action": "resolve"}, id="resolve-without-key"),
        pytest.param({"event_action": "resolve", "dedup_key": "k" * 256}, id="key-too-long"),
        pytest.param(
            {
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "fatal"},
            },
            id="severity-outside-enum",
        ),
        pytest.param(
            {
                "event_action": "trigger",
                "payload": {"summary": "s" * 1025, "source": "h", "severity": "info"},
            },
            id="summary-too-long",
        ),
        pytest.param(
            {"event_action": "resolve", "dedup_key": "k", "links": [{"text": "no href"}]},
            id="link-without-href",
        ),
        pytest.param(
            {"event_action": "resolve", "dedup_key": "k", "images": [{"src": "http://x/i.png"}]},
            id="image-not-https",
        ),
    ],
)
def test_receiver_refuses_what_pagerduty_refuses(
    pagerduty: FakePagerDuty, event: dict[str, object]
) -> None:
    """The receiver answers 400 to events outside the published contract (so the other
    tests would notice the channel sending one)."""
    response = httpx.post(
        pagerduty.endpoint, json={"routing_key": PD_ROUTING_KEY, **event}, timeout=5
    )

    assert response.status_code == 400
    assert pagerduty.violations
    pagerduty.violations.clear()
