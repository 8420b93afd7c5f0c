"""The Alertmanager channel against the real binary: an open incident is a firing alert,
kept alive by refreshes, ended by the resolve, never fought when silenced, and delivered
while one member of an HA pair is up.

Alertmanager runs on 127.0.0.1 (:mod:`tests.amserver`); faults and the bearer token's
proxy stand in front of it. The outbox runs on a ManualClock set near the real time,
because Alertmanager judges ``endsAt`` by its own clock: two minutes back, so that a
recovery (in the test's past) is in Alertmanager's past too, and an ``endsAt`` four
minutes after the test's now is in its future.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.clock import utcnow
from monitor.config.schema import ChannelConfig
from monitor.incidents import text
from monitor.incidents.channels import http
from monitor.incidents.channels.alertmanager import (
    FIRE,
    RESOLVE,
    AlertmanagerChannel,
    member,
    none_accepted,
    rfc3339,
)
from monitor.incidents.channels.base import ChannelError, Notice, RefreshingChannel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import OutboxWorker, _Delivery
from monitor.incidents.tracker import Incident, Phase, TrackerState, incident_id
from monitor.metrics import Metrics
from monitor.probing.results import Reason
from monitor.store.base import ChannelHandle, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests import amserver
from tests.amserver import (
    AlertmanagerProxy,
    AlertmanagerServer,
    Fault,
    Notifications,
    wait_for,
)
from tests.builders import ManualClock, down, up
from tests.ports import free_port

# the real Alertmanager's fixtures (tests.amserver), under their own names
notifications = amserver.notifications
alertmanager = amserver.alertmanager
alertmanager_pair = amserver.alertmanager_pair

TARGET = "production"
STATUS_URL = "https://status.example/status"
ISSUE_URL = "https://github.com/acme/web/issues/42"
TOKEN = "am-proxy-token-Zq8Xw3Lp0Vb6"
RESEND_S = 60.0
ENDS_AHEAD = timedelta(seconds=4 * RESEND_S)
TIMEOUT_S = 0.5


@pytest.fixture
def clock() -> ManualClock:
    """Two minutes behind the real clock, to the second (Alertmanager keeps milliseconds)."""
    return ManualClock(utcnow().replace(microsecond=0) - timedelta(minutes=2))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real SQLite file."""
    db = SqliteStore(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def make_channel(clock: ManualClock) -> Iterator[Any]:
    """Alertmanager channels on the test's clock, closed at the end."""
    made: list[AlertmanagerChannel] = []

    def build(*urls: str, **config: Any) -> AlertmanagerChannel:
        settings = ChannelConfig(
            name="am",
            type="alertmanager",
            urls=list(urls),
            timeout=TIMEOUT_S,
            resend_interval=RESEND_S,
            **config,
        )
        channel = AlertmanagerChannel(settings, status_url=STATUS_URL, clock=clock)
        made.append(channel)
        return channel

    yield build
    for channel in made:
        channel.close()


@pytest.fixture
def proxy(alertmanager: AlertmanagerServer) -> Iterator[AlertmanagerProxy]:
    """A recording proxy in front of the Alertmanager, with faults on demand."""
    server = AlertmanagerProxy(alertmanager.url)
    yield server
    server.close()


# ---- helpers ------------------------------------------------------------------------


def worker_for(
    store: SqliteStore, channel: AlertmanagerChannel, clock: ManualClock
) -> OutboxWorker:
    """The outbox worker that performs the channel's steps."""
    return OutboxWorker(store, channel, Metrics(), clock=clock)


def event(kind: EventKind, incident: Incident, clock: ManualClock, **changes: Any) -> IncidentEvent:
    """An event decided now; the probe is down, or up for a resolve."""
    healthy = kind is EventKind.RESOLVED
    result = up(clock(), TARGET) if healthy else down(clock(), TARGET)
    key = f"{incident.id}:{kind}:{clock():%Y%m%dT%H%M%S}"
    base = IncidentEvent(kind, incident, result, clock(), key, status_url=STATUS_URL)
    return replace(base, **changes)


def decide(
    store: SqliteStore, channel: AlertmanagerChannel, decided: IncidentEvent
) -> IncidentEvent:
    """Commit the event's incident and its steps, as the daemon's cycle does."""
    incident = decided.incident
    phase = Phase.HEALTHY if incident.resolved_at else Phase.OPEN
    state = TrackerState(TARGET, phase, incident=incident)
    actions = channel.plan(decided)
    store.commit_cycle(PendingCycle(decided.result, 60.0, state, incident, actions))
    return decided


def open_incident(
    store: SqliteStore, channel: AlertmanagerChannel, clock: ManualClock
) -> IncidentEvent:
    """An incident whose first failed probe was three minutes ago, opened now."""
    started = clock() - timedelta(minutes=3)
    incident = Incident(
        id=incident_id(TARGET, started),
        target=TARGET,
        started_at=started,
        probes_total=4,
        probes_failed=4,
        last_notice_at=clock(),
    )
    return decide(store, channel, event(EventKind.OPENED, incident, clock))


def resolve(
    store: SqliteStore, channel: AlertmanagerChannel, clock: ManualClock, incident: Incident
) -> Incident:
    """The incident recovered ten seconds ago (its first good probe)."""
    resolved = replace(incident, resolved_at=clock() - timedelta(seconds=10))
    decide(store, channel, event(EventKind.RESOLVED, resolved, clock))
    return resolved


def ours(server: AlertmanagerServer, **kw: Any) -> list[dict[str, Any]]:
    """The incident alerts of the target on ``server``."""
    return server.alerts('alertname="MonitorIncident"', f'target="{TARGET}"', **kw)


def when(value: str) -> datetime:
    """An Alertmanager time as a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_until_done(worker: OutboxWorker, store: SqliteStore, clock: ManualClock) -> None:
    """Advance the clock to each retry and run the worker until the queue is empty."""
    for _ in range(10):
        pending = store.pending_actions("am")
        if not pending:
            return
        clock.now = max(clock.now, pending[0].next_attempt_at)
        worker.run_once()
    pytest.fail(f"still pending: {store.pending_actions('am')}")


def logged(logs: Sequence[Mapping[str, Any]]) -> str:
    """Every captured log event, flattened for a search."""
    return json.dumps(logs, default=str)


# ---- planning (no server) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "events", "targets", "steps"),
    [
        pytest.param(EventKind.OPENED, None, None, [FIRE], id="opened"),
        pytest.param(EventKind.REOPENED, None, None, [FIRE], id="reopened"),
        pytest.param(EventKind.UPDATED, None, None, [FIRE], id="updated"),
        pytest.param(EventKind.RESOLVED, None, None, [RESOLVE], id="resolved"),
        pytest.param(EventKind.REMINDER, None, None, [], id="reminder-not-subscribed"),
        pytest.param(EventKind.REMINDER, ["reminder"], None, [], id="reminder-changes-nothing"),
        pytest.param(EventKind.ACKNOWLEDGED, ["acknowledged"], None, [], id="ack-changes-nothing"),
        pytest.param(EventKind.OPENED, ["resolved"], None, [], id="event-not-subscribed"),
        pytest.param(EventKind.OPENED, None, ["staging"], [], id="target-not-subscribed"),
    ],
)
def test_plan_turns_subscribed_events_into_fire_and_resolve_steps(
    make_channel: Any,
    clock: ManualClock,
    kind: EventKind,
    events: list[str] | None,
    targets: list[str] | None,
    steps: list[str],
) -> None:
    """Opened, reopened and updated fire; resolved resolves; the rest is not Alertmanager's."""
    channel = make_channel(f"http://127.0.0.1:{free_port()}", events=events, targets=targets)
    started = clock() - timedelta(minutes=3)
    incident = Incident(incident_id(TARGET, started), TARGET, started)
    if kind is EventKind.RESOLVED:
        incident = replace(incident, resolved_at=clock())
    planned = channel.plan(event(kind, incident, clock))
    assert [step.kind for step in planned] == steps
    for step in planned:
        assert step.channel == "am"
        alert = step.payload["alert"]
        assert alert["labels"] == {
            "alertname": "MonitorIncident",
            "target": TARGET,
            "severity": "critical",
        }
        assert alert["startsAt"] == rfc3339(started)
        assert alert["annotations"]["incident"] == incident.id
        json.dumps(step.payload)  # stored as JSON


@pytest.mark.parametrize(
    ("errors", "reason", "permanent", "retry_after_s"),
    [
        pytest.param([400, 400], "rejected", True, None, id="400-from-all"),
        pytest.param([400, 503], "server_error", False, None, id="400-and-503"),
        pytest.param([401, 401], "auth", True, None, id="401-from-all"),
        pytest.param([429, 429], "rate_limited", False, 10.0, id="429-from-all"),
        pytest.param([429, "network"], "rate_limited", False, None, id="429-and-down"),
        pytest.param([410, 410], "disabled", True, None, id="410-from-all"),
    ],
)
def test_no_member_taking_the_alerts_is_permanent_only_when_each_refused_for_good(
    errors: list[int | str], reason: str, permanent: bool, retry_after_s: float | None
) -> None:
    """The members' errors combine: a hold only when all ask for one (the shortest)."""
    waits = iter([30.0, 10.0])
    refused = [
        ChannelError("network", "down")
        if error == "network"
        else http.refusal(
            f"Alertmanager m{index}",
            httpx.Response(
                int(error),
                text="no",
                headers={"Retry-After": f"{next(waits):.0f}"} if error == 429 else {},
            ),
        )
        for index, error in enumerate(errors)
    ]
    combined = none_accepted([r for r in refused if r is not None])
    assert (combined.reason, combined.permanent, combined.retry_after_s) == (
        reason,
        permanent,
        retry_after_s,
    )
    assert combined.disable is (errors == [410, 410])
    assert "Alertmanager m0" in str(combined)
    assert ("Alertmanager m1" in str(combined)) is (errors[1] != "network")


@pytest.mark.parametrize(
    ("url", "shown", "posted"),
    [
        pytest.param(
            "http://am.example:9093",
            "http://am.example:9093",
            "http://am.example:9093/api/v2/alerts",
            id="base",
        ),
        pytest.param(
            "https://user:pw@am.example/prefix/api/v2/alerts?token=x",
            "https://am.example/prefix",
            "https://user:pw@am.example/prefix/api/v2/alerts?token=x",
            id="credentials-and-prefix",
        ),
    ],
)
def test_members_are_named_without_credentials(
    make_channel: Any, url: str, shown: str, posted: str
) -> None:
    """Errors name a member by scheme, host, port and route prefix: never its credentials."""
    channel = make_channel(url)
    assert channel._urls == [posted]
    assert member(posted) == shown


def test_an_unreadable_handle_is_skipped_not_posted(make_channel: Any) -> None:
    """A handle that holds no alert is logged and left out (nothing to post: no request)."""
    channel = make_channel(f"http://127.0.0.1:{free_port()}")
    with capture_logs() as logs:
        channel.refresh(
            [("x", ChannelHandle(ref="not json")), ("y", ChannelHandle())],
            _Delivery(None, cast(Any, None)),  # never asked: nothing to refresh
        )
    assert [e["incident"] for e in logs] == ["x", "y"]


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        pytest.param("true", pytest.fail.Exception, id="ci-fails"),
        pytest.param("", pytest.skip.Exception, id="skips"),
    ],
)
def test_a_missing_binary_skips_except_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    """Like PostgreSQL and Prometheus: skipped on a laptop without it, a failure in CI."""
    monkeypatch.setattr(amserver, "alertmanager_binary", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="prometheus-alertmanager is not installed"):
        amserver.require_binary()


def test_the_channel_refreshes_every_resend_interval(make_channel: Any) -> None:
    """The worker sees a refreshing channel whose interval is ``resend_interval``."""
    channel = make_channel(f"http://127.0.0.1:{free_port()}")
    assert isinstance(channel, RefreshingChannel)
    assert channel.refresh_interval_s == RESEND_S


# ---- an incident's life ---------------------------------------------------------------


def test_an_incident_fires_refreshes_updates_resolves_and_reopens_as_one_alert(
    alertmanager: AlertmanagerServer,
    notifications: Notifications,
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """open -> refresh -> update -> resolve -> reopen: one alert, active until resolved."""
    channel = make_channel(alertmanager.url)
    worker = worker_for(store, channel, clock)
    opened = open_incident(store, channel, clock)
    incident = opened.incident
    assert worker.run_once() == 1

    [alert] = ours(alertmanager)
    assert alert["labels"] == {
        "alertname": "MonitorIncident",
        "target": TARGET,
        "severity": "critical",
    }
    assert alert["annotations"] == {
        "summary": text.title(opened.result),
        "description": alert["annotations"]["description"],
        "incident": incident.id,
        "status_url": STATUS_URL,
    }
    assert "/health returned 503" in alert["annotations"]["description"]
    assert "4 of 4 probes failed" in alert["annotations"]["description"]
    assert alert["generatorURL"] == STATUS_URL
    assert when(alert["startsAt"]) == incident.started_at  # the first failed probe
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD
    assert alert["status"]["state"] == "active"
    fingerprint = alert["fingerprint"]
    handle = store.handle("am", incident.id)
    assert handle is not None
    assert handle.ref is not None
    assert json.loads(handle.ref)["labels"] == alert["labels"]
    wait_for(
        lambda: bool(notifications.of("MonitorIncident", "firing")), what="firing notification"
    )

    # not yet due: nothing is sent again
    clock.advance(RESEND_S / 2)
    worker.run_once()
    [alert] = ours(alertmanager)
    assert when(alert["endsAt"]) == clock() - timedelta(seconds=RESEND_S / 2) + ENDS_AHEAD

    # the GitHub issue was filed meanwhile (another worker): the refresh links it
    store.set_issue(incident.id, 42, ISSUE_URL)
    clock.advance(RESEND_S / 2 + 1)
    worker.run_once()  # the refresh
    [alert] = ours(alertmanager)
    assert alert["fingerprint"] == fingerprint
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["issue_url"] == ISSUE_URL
    assert alert["generatorURL"] == ISSUE_URL

    # the update keeps the link
    changed = down(clock(), TARGET, reason=Reason.TIMEOUT)
    decide(
        store,
        channel,
        event(EventKind.UPDATED, incident, clock, result=changed, detail="health: timed out"),
    )
    assert worker.run_once() == 1
    [alert] = ours(alertmanager)
    assert alert["fingerprint"] == fingerprint  # the same alert, new words
    assert alert["annotations"]["summary"] == text.title(changed)
    assert "timed out" in alert["annotations"]["description"]
    assert alert["annotations"]["issue_url"] == ISSUE_URL
    assert alert["generatorURL"] == ISSUE_URL

    clock.advance(RESEND_S + 1)
    worker.run_once()  # the refresh repeats the new words
    [alert] = ours(alertmanager)
    assert alert["annotations"]["summary"] == text.title(changed)
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD

    resolved = resolve(store, channel, clock, incident)
    assert worker.run_once() == 1
    assert ours(alertmanager) == []
    wait_for(
        lambda: bool(notifications.of("MonitorIncident", "resolved")), what="resolved notification"
    )
    [notified] = notifications.of("MonitorIncident", "resolved")
    assert resolved.resolved_at is not None
    assert when(notified["endsAt"]) == resolved.resolved_at  # the first good probe
    assert when(notified["startsAt"]) == incident.started_at
    assert notified["annotations"]["summary"] == f"{TARGET} recovered"

    clock.advance(RESEND_S + 1)
    worker.run_once()  # a resolved incident is not refreshed back to life
    assert ours(alertmanager) == []

    reopened = replace(resolved, resolved_at=None, reopened=1)
    decide(store, channel, event(EventKind.REOPENED, reopened, clock))
    assert worker.run_once() == 1
    [alert] = ours(alertmanager)
    assert alert["status"]["state"] == "active"
    assert when(alert["startsAt"]) == incident.started_at
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD


def test_a_resolve_ends_the_alert_that_fired_even_if_the_severity_changed(
    alertmanager: AlertmanagerServer, make_channel: Any, store: SqliteStore, clock: ManualClock
) -> None:
    """An incident keeps the label set it first fired with: a severity changed in the
    configuration meanwhile does not leave the first alert firing."""
    channel = make_channel(alertmanager.url)
    worker = worker_for(store, channel, clock)
    opened = open_incident(store, channel, clock)
    worker.run_once()
    resolved = replace(opened.incident, resolved_at=clock() - timedelta(seconds=10))
    decide(store, channel, event(EventKind.RESOLVED, resolved, clock, severity="warning"))
    assert worker.run_once() == 1
    assert alertmanager.alerts('alertname="MonitorIncident"') == []


def test_a_silence_suppresses_the_alert_and_the_channel_leaves_it_alone(
    alertmanager: AlertmanagerServer,
    proxy: AlertmanagerProxy,
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """A person's silence keeps the alert suppressed through refreshes and updates; the
    channel only ever posts alerts, so the silence stays as the person left it."""
    channel = make_channel(proxy.url)
    worker = worker_for(store, channel, clock)
    opened = open_incident(store, channel, clock)
    worker.run_once()
    silence_id = alertmanager.create_silence({"target": TARGET})

    def suppressed() -> bool:
        alerts = ours(alertmanager)
        return bool(alerts) and alerts[0]["status"]["silencedBy"] == [silence_id]

    wait_for(suppressed, what="the alert silenced")
    for _ in range(2):
        clock.advance(RESEND_S + 1)
        worker.run_once()  # a refresh
    decide(store, channel, event(EventKind.UPDATED, opened.incident, clock, detail="changed"))
    assert worker.run_once() == 1

    [alert] = ours(alertmanager)
    assert alert["status"]["state"] == "suppressed"
    assert alert["status"]["silencedBy"] == [silence_id]
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD  # refreshed all the same
    assert alertmanager.silence(silence_id)["status"]["state"] == "active"
    assert {(seen.method, seen.path) for seen in proxy.requests()} == {("POST", "/api/v2/alerts")}


# ---- HA pair ------------------------------------------------------------------------------


def test_both_members_of_an_ha_pair_get_the_alert(
    alertmanager_pair: list[AlertmanagerServer],
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """Alerts are not gossiped: each member is sent the alert and its refreshes."""
    channel = make_channel(*(server.url for server in alertmanager_pair))
    worker = worker_for(store, channel, clock)
    open_incident(store, channel, clock)
    assert worker.run_once() == 1
    clock.advance(RESEND_S + 1)
    worker.run_once()
    for server in alertmanager_pair:
        [alert] = ours(server)
        assert when(alert["endsAt"]) == clock() + ENDS_AHEAD


def test_one_member_down_the_step_succeeds_and_the_refresh_catches_it_up(
    alertmanager_pair: list[AlertmanagerServer],
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """With one member down the step is done, the failure logged by member; once the
    member is back, the next refresh gives it the alert."""
    first, second = alertmanager_pair
    channel = make_channel(first.url, second.url)
    worker = worker_for(store, channel, clock)
    first.kill()
    open_incident(store, channel, clock)
    with capture_logs() as logs:
        assert worker.run_once() == 1
    assert store.pending_actions("am") == []
    assert len(ours(second)) == 1
    [warning] = [e for e in logs if e["event"] == "alertmanager member did not take the alerts"]
    assert first.url in warning["error"]
    assert warning["reason"] == "network"

    first.start()
    clock.advance(RESEND_S + 1)
    worker.run_once()
    [alert] = ours(first)
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD


def test_both_members_down_the_step_waits_and_lands_once_they_are_back(
    alertmanager_pair: list[AlertmanagerServer],
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """No member took it: a transient failure, retried; it lands on both when they return."""
    channel = make_channel(*(server.url for server in alertmanager_pair))
    worker = worker_for(store, channel, clock)
    for server in alertmanager_pair:
        server.kill()
    open_incident(store, channel, clock)
    assert worker.run_once() == 0
    [pending] = store.pending_actions("am")
    assert pending.last_error is not None
    assert pending.last_error.startswith("network")
    assert worker.health.stopped is None  # transient: the queue goes on

    for server in alertmanager_pair:
        server.start()
    run_until_done(worker, store, clock)
    for server in alertmanager_pair:
        assert len(ours(server)) == 1


def test_a_refresh_no_member_takes_is_tried_again_before_the_interval(
    alertmanager: AlertmanagerServer, make_channel: Any, store: SqliteStore, clock: ManualClock
) -> None:
    """The alert must not lapse at the other end: a failed refresh comes back sooner."""
    channel = make_channel(alertmanager.url)
    worker = worker_for(store, channel, clock)
    open_incident(store, channel, clock)
    worker.run_once()
    alertmanager.kill()
    clock.advance(RESEND_S + 1)
    with capture_logs() as logs:
        worker.run_once()
    assert any(e["event"] == "refresh failed; will retry" for e in logs)
    assert worker.health.last_error_reason == "network"

    alertmanager.start()  # its alerts are gone with the process: the refresh brings it back
    clock.advance(20)  # past the retry, well before the next interval
    worker.run_once()
    [alert] = ours(alertmanager)
    assert when(alert["endsAt"]) == clock() + ENDS_AHEAD


# ---- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason", "hold_s", "landed"),
    [
        pytest.param(Fault(status=503), "server_error", 0, 1, id="503"),
        pytest.param(Fault(status=429, retry_after="30"), "rate_limited", 30, 1, id="429"),
        pytest.param(Fault(delay_s=2 * TIMEOUT_S), "timeout", 0, 2, id="slower-than-timeout"),
        pytest.param(Fault(cut_after_forwarding=True), "network", 0, 2, id="acted-then-cut"),
    ],
)
def test_a_fault_is_retried_to_exactly_one_alert(
    alertmanager: AlertmanagerServer,
    proxy: AlertmanagerProxy,
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
    fault: Fault,
    reason: str,
    hold_s: float,
    landed: int,
) -> None:
    """Each fault fails the step transiently (honouring Retry-After); the retry lands, and
    a first attempt that reached Alertmanager anyway leaves one alert, not two."""
    channel = make_channel(proxy.url)
    worker = worker_for(store, channel, clock)
    proxy.inject(fault)
    open_incident(store, channel, clock)
    assert worker.run_once() == 0
    [pending] = store.pending_actions("am")
    assert pending.last_error is not None
    assert pending.last_error.startswith(reason)
    assert pending.next_attempt_at >= clock() + timedelta(seconds=hold_s)
    assert worker.health.stopped is None

    run_until_done(worker, store, clock)
    # the first attempt too, when it reached Alertmanager (late, or unanswered)
    wait_for(lambda: proxy.forwarded == landed, what=f"{landed} posts reached Alertmanager")
    [alert] = ours(alertmanager)
    assert alert["status"]["state"] == "active"


def test_a_refusal_by_every_member_stops_the_channel_and_one_by_some_does_not(
    alertmanager: AlertmanagerServer,
    make_channel: Any,
    store: SqliteStore,
    clock: ManualClock,
) -> None:
    """400 from all: permanent, the queue stops. 400 from one and 503 from the other: no
    member refused for good, so the step is retried."""
    proxies = [AlertmanagerProxy(alertmanager.url) for _ in range(2)]
    try:
        channel = make_channel(*(p.url for p in proxies))
        worker = worker_for(store, channel, clock)
        proxies[0].inject(Fault(status=400, body="bad alert"))
        proxies[1].inject(Fault(status=503))
        open_incident(store, channel, clock)
        assert worker.run_once() == 0
        assert worker.health.stopped is None

        for p in proxies:
            p.inject(Fault(status=400, body="bad alert"))
        retry_head(worker, store, clock)
        assert worker.health.stopped is not None
        assert "400 from Alertmanager" in worker.health.stopped
        assert worker.health.last_error_reason == "rejected"
        assert ours(alertmanager) == []
    finally:
        for p in proxies:
            p.close()


def retry_head(worker: OutboxWorker, store: SqliteStore, clock: ManualClock) -> None:
    """Run the head step's retry, once."""
    [pending] = store.pending_actions("am")
    clock.now = max(clock.now, pending.next_attempt_at)
    worker.run_once()


def test_alertmanager_s_own_400_is_a_permanent_refusal(
    alertmanager: AlertmanagerServer, make_channel: Any, store: SqliteStore, clock: ManualClock
) -> None:
    """A resolve that ends before it starts is refused by Alertmanager itself (400, with its
    reason in the error): permanent, not retried every two minutes forever."""
    channel = make_channel(alertmanager.url)
    worker = worker_for(store, channel, clock)
    opened = open_incident(store, channel, clock)
    worker.run_once()
    backwards = replace(opened.incident, resolved_at=opened.incident.started_at - timedelta(1))
    decide(store, channel, event(EventKind.RESOLVED, backwards, clock))
    assert worker.run_once() == 0
    assert worker.health.stopped is not None
    assert "start time must be before end time" in worker.health.stopped


# ---- the bearer token -------------------------------------------------------------------------


def test_the_bearer_token_passes_the_proxy_and_is_never_shown(
    alertmanager: AlertmanagerServer, make_channel: Any, store: SqliteStore, clock: ManualClock
) -> None:
    """Behind an authenticating proxy the token opens the door, travels only in the
    Authorization header, and is absent from payloads, handles and logs."""
    guarded = AlertmanagerProxy(alertmanager.url, token=TOKEN)
    try:
        channel = make_channel(guarded.url, secret=TOKEN)
        worker = worker_for(store, channel, clock)
        with capture_logs() as logs:
            opened = open_incident(store, channel, clock)
            worker.run_once()
            clock.advance(RESEND_S + 1)
            worker.run_once()
        assert len(ours(alertmanager)) == 1
        assert all(seen.authorized for seen in guarded.requests())
        assert len(guarded.requests()) == 2
        assert all(TOKEN.encode() not in seen.body for seen in guarded.requests())
        handle = store.handle("am", opened.incident.id)
        assert handle is not None
        assert TOKEN not in str(handle)
        assert TOKEN not in logged(logs)
    finally:
        guarded.close()


def test_a_wrong_token_is_an_auth_problem_that_never_shows_the_token(
    alertmanager: AlertmanagerServer, make_channel: Any, store: SqliteStore, clock: ManualClock
) -> None:
    """The proxy's 401 quotes our headers back: the error, the health report and the log
    name the refusal, never the token."""
    wrong = "am-wrong-token-Hh7Yy2Rr9Tt4"
    guarded = AlertmanagerProxy(alertmanager.url, token=TOKEN)
    try:
        channel = make_channel(guarded.url, secret=wrong)
        worker = worker_for(store, channel, clock)
        with capture_logs() as logs:
            open_incident(store, channel, clock)
            assert worker.run_once() == 0
            with pytest.raises(ChannelError) as refused:
                channel.send_notice(Notice("deploy", "rolling out", key="n-1"))
        assert worker.health.auth_problem
        assert worker.health.stopped is not None
        assert "401" in worker.health.stopped
        [pending] = store.pending_actions("am")
        assert refused.value.auth
        for shown in (str(refused.value), worker.health.stopped, pending.last_error, logged(logs)):
            assert shown is not None
            assert wrong not in shown
        assert ours(alertmanager) == []
    finally:
        guarded.close()


# ---- notices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "alertname", "summary"),
    [
        pytest.param(False, "MonitorNotice", "Deploying 1.4.3", id="notice"),
        pytest.param(True, "MonitorTest", "[TEST] Deploying 1.4.3", id="test"),
    ],
)
def test_a_notice_is_an_alert_that_ends_by_itself(
    alertmanager: AlertmanagerServer,
    notifications: Notifications,
    make_channel: Any,
    clock: ManualClock,
    test: bool,
    alertname: str,
    summary: str,
) -> None:
    """``monitor notify`` posts an alert of its own kind, ending in five minutes, that
    Alertmanager routes like any other; a test says nobody needs to act."""
    channel = make_channel(alertmanager.url)
    channel.send_notice(
        Notice("Deploying 1.4.3", "web rolls out", key="n-7", test=test, severity="warning")
    )
    [alert] = alertmanager.alerts(f'alertname="{alertname}"')
    assert alert["labels"] == {"alertname": alertname, "severity": "warning", "notice": "n-7"}
    assert alert["annotations"]["summary"] == summary
    assert alert["annotations"]["description"].startswith("web rolls out")
    assert ("nobody needs to act" in alert["annotations"]["description"]) is test
    assert when(alert["endsAt"]) == clock() + timedelta(minutes=5)
    wait_for(lambda: bool(notifications.of(alertname, "firing")), what="the notice notified")


def test_a_notice_no_member_takes_raises(make_channel: Any) -> None:
    """With nobody listening the notice raises a transient ChannelError naming each member."""
    ports = [free_port(), free_port()]
    channel = make_channel(*(f"http://127.0.0.1:{port}" for port in ports))
    with pytest.raises(ChannelError) as refused:
        channel.send_notice(Notice("t", "b", key="n-8"))
    assert not refused.value.permanent
    assert refused.value.reason == "network"
    for port in ports:
        assert f"127.0.0.1:{port}" in str(refused.value)
