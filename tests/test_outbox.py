"""The outbox worker against a local GitHub double: one issue per incident, whatever fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import structlog
from github import Auth, Github

from monitor.config import GithubSection, MonitorSection
from monitor.daemon.health import assess
from monitor.incidents import text
from monitor.incidents.channels.base import ChannelError
from monitor.incidents.channels.github import GithubChannel, GithubIssues
from monitor.incidents.outbox import OutboxWorker, SinkHealth
from monitor.incidents.tracker import Incident, Phase, TrackerState, incident_id
from monitor.metrics import Metrics
from monitor.probing.results import TargetResult
from monitor.store.base import NewAction, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests import fakegithub as fg
from tests.builders import T0, ManualClock, down, up
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.outbox_kit import drain

LABELS = ["incident", "monitor"]
TARGET = "production"
ISSUES = r"/repos/acme/web/issues"
ONE_ISSUE = r"/repos/acme/web/issues/\d+"
COMMENTS = r"/repos/acme/web/issues/\d+/comments"
BAD_TOKEN = "ghp_revokedRevokedRevokedRevoked0123"


@pytest.fixture
def clock() -> ManualClock:
    """Frozen at T0 until a test moves it."""
    return ManualClock()


@pytest.fixture
def store(tmp_path: Any) -> Iterator[SqliteStore]:
    """A real SQLite file."""
    db = SqliteStore(tmp_path / "s.db")
    yield db
    db.close()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh registry per test."""
    return Metrics()


SinkFactory = Callable[..., GithubChannel]


@pytest.fixture
def make_sink(fake_github: FakeGitHub) -> Iterator[SinkFactory]:
    """GitHub channels on the fake, built like the real one but without PyGithub's throttling."""
    clients: list[Github] = []

    def build(
        token: str = DEFAULT_TOKEN,
        labels: Sequence[str] = LABELS,
        assignees: Sequence[str] = (),
    ) -> GithubChannel:
        settings = GithubSection(
            repository=DEFAULT_REPO,
            api_url=fake_github.url,
            token=token,
            labels=list(labels),
            assignees=list(assignees),
            timeout=1,
        )
        client = Github(
            auth=Auth.Token(token),
            base_url=fake_github.url,
            timeout=1,
            retry=None,
            user_agent="fly-monitor",
            lazy=True,
            per_page=100,
            seconds_between_requests=0,
            seconds_between_writes=0,
        )
        clients.append(client)
        return GithubChannel(settings, GithubIssues(settings, client=client))

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def worker(
    store: SqliteStore, make_sink: SinkFactory, metrics: Metrics, clock: ManualClock
) -> OutboxWorker:
    """The worker under test, on the fake GitHub and the frozen clock."""
    return OutboxWorker(store, make_sink(), metrics, clock=clock)


# ---- helpers ------------------------------------------------------------------------


def open_incident(
    store: SqliteStore,
    clock: ManualClock,
    target: str = TARGET,
    assignees: Sequence[str] = (),
) -> tuple[Incident, TargetResult]:
    """Commit a confirmed incident and its ``open`` action, as the daemon does."""
    result = down(clock(), target=target)
    incident = Incident(
        id=incident_id(target, clock()),
        target=target,
        started_at=clock(),
        probes_total=3,
        probes_failed=3,
        last_notice_at=clock(),
    )
    state = TrackerState(
        target, Phase.OPEN, fail_streak=3, streak_started_at=clock(), incident=incident
    )
    action = NewAction(
        "github",
        incident.id,
        target,
        "open",
        {
            "title": text.title(result),
            "body": text.body(incident, result, clock()),
            "labels": text.labels_for(target, LABELS),
            "assignees": list(assignees),
        },
    )
    store.commit_cycle(PendingCycle(result, 60.0, state, incident, [action]))
    return incident, result


def comment_action(incident: Incident, result: TargetResult, clock: ManualClock) -> NewAction:
    """A reminder comment, keyed and marked as the daemon renders it."""
    key = f"{incident.id}:reminder:{clock():%Y%m%dT%H%M%S}"
    body = text.reminder_comment(incident, result, clock(), key)
    return NewAction("github", incident.id, incident.target, "comment", {"body": body, "key": key})


def action(incident: Incident, kind: str, **payload: Any) -> NewAction:
    """Any other action of an incident."""
    return NewAction("github", incident.id, incident.target, kind, payload)


def errors(metrics: Metrics, operation: str, reason: str) -> float:
    """``monitor_github_errors_total{operation, reason}``."""
    value = metrics.registry.get_sample_value(
        "monitor_github_errors_total", {"operation": operation, "reason": reason}
    )
    return value or 0.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Poll (wall clock) until the fake has caught up, e.g. with a delayed request."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def marked(server: FakeGitHub, number: int, key: str) -> list[dict[str, Any]]:
    """Comments on an issue carrying an action's marker."""
    return [
        c for c in server.comments(DEFAULT_REPO, number) if text.action_marker(key) in c["body"]
    ]


def marked_body(target: str, ident: str, note: str = "") -> str:
    """An issue body carrying our marker (as a previous run would have written it)."""
    return f"{text.marker(target, ident)}\n{note}"


# ---- opening ------------------------------------------------------------------------


def test_open_files_one_issue_with_labels_assignees_title_and_marker(
    fake_github: FakeGitHub,
    store: SqliteStore,
    make_sink: SinkFactory,
    metrics: Metrics,
    clock: ManualClock,
) -> None:
    """An ``open`` files exactly one issue, labelled, assigned, marked, and records its number."""
    fake_github.add_label(DEFAULT_REPO, "incident", "ffffff", "ours, already there")
    worker = OutboxWorker(store, make_sink(assignees=["oncall-alice"]), metrics, clock=clock)
    incident, result = open_incident(store, clock, assignees=["oncall-alice"])

    assert worker.run_once() == 1

    [issue] = fake_github.issues()
    assert issue["title"] == text.title(result) == "production is down: /health returned 503"
    assert [label["name"] for label in issue["labels"]] == [*LABELS, "target:production"]
    assert [user["login"] for user in issue["assignees"]] == ["oncall-alice"]
    assert issue["body"].startswith(
        f"<!-- monitor:incident target=production id={incident.id} -->\n"
    )
    labels = {label["name"]: label for label in fake_github.labels()}
    assert labels["incident"]["color"] == "ffffff"  # an existing label is left as it is
    for name, colour in (("monitor", "0e8a16"), ("target:production", "fbca04")):
        assert labels[name]["color"] == colour
        assert labels[name]["description"] == "Opened and closed by fly-monitor"
    row = store.incident(incident.id)
    assert row is not None
    assert (row.issue_number, row.issue_url) == (issue["number"], issue["html_url"])
    assert store.pending_actions() == []
    assert worker.health.last_success_at == clock()


def test_issue_filed_by_verify_is_adopted_not_duplicated(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """An open marked issue for an incident we never recorded (verify --file-incident) is adopted."""
    filed = fake_github.add_issue(
        title="production is down: /health returned 503",
        body=text.marker(TARGET, "production-20261101T115500Z") + "\nfiled by monitor verify",
        labels=[*LABELS, "target:production"],
    )
    incident, _ = open_incident(store, clock)

    assert worker.run_once() == 1

    assert len(fake_github.issues()) == 1
    row = store.incident(incident.id)
    assert row is not None
    assert row.issue_number == filed["number"]


def test_issue_of_a_known_earlier_incident_is_not_adopted(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """An open issue of an incident we know (its close still queued) is not taken for a new one."""
    earlier, _ = open_incident(store, clock)
    assert worker.run_once() == 1
    clock.advance(3600)
    later, _ = open_incident(store, clock)

    assert worker.run_once() == 1

    assert len(fake_github.issues()) == 2
    first, second = store.incident(earlier.id), store.incident(later.id)
    assert first is not None
    assert second is not None
    assert first.issue_number != second.issue_number


def test_unassignable_assignee_still_files_the_issue(
    fake_github: FakeGitHub,
    store: SqliteStore,
    make_sink: SinkFactory,
    metrics: Metrics,
    clock: ManualClock,
) -> None:
    """A 422 for the assignees (someone left the org) files the issue without them, once."""
    fake_github.inject("POST", ISSUES, fg.status(422, {"message": "Validation Failed"}))
    worker = OutboxWorker(store, make_sink(assignees=["former-employee"]), metrics, clock=clock)
    open_incident(store, clock, assignees=["former-employee"])

    assert worker.run_once() == 1

    [issue] = fake_github.issues()
    assert issue["assignees"] == []
    assert store.pending_actions() == []


def test_deleted_issue_does_not_block_the_target(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """A close for an issue someone deleted is dropped, and the target's next open proceeds."""
    incident, _ = open_incident(store, clock)
    drain(worker, clock)
    store.enqueue([action(incident, "close")], clock())
    fake_github.inject("PATCH", ONE_ISSUE, fg.status(404, {"message": "Not Found"}))
    clock.advance(7200)
    open_incident(store, clock)

    drain(worker, clock)

    assert store.pending_actions() == []
    assert len(fake_github.issues()) == 2


def test_lifecycle_open_remind_resolve_close_reopen(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """open -> reminder + edit -> resolve comment + edit + close -> reopen: always the same issue."""
    incident, result = open_incident(store, clock)
    drain(worker, clock)
    [issue] = fake_github.issues()
    number = issue["number"]

    clock.advance(3600)
    reminder = comment_action(incident, result, clock)
    edited = text.body(incident, result, clock())
    store.enqueue([reminder, action(incident, "edit", body=edited)], clock())
    drain(worker, clock)
    [comment] = fake_github.comments(DEFAULT_REPO, number)
    assert "**Still open** after 1h" in comment["body"]
    assert fake_github.issues()[0]["body"] == edited

    clock.advance(600)
    resolved = replace(incident, resolved_at=T0 + timedelta(minutes=62, seconds=5))
    key = f"{incident.id}:resolved:{clock():%Y%m%dT%H%M%S}"
    healthy = TrackerState(TARGET, Phase.HEALTHY, good_streak=2, incident=resolved)
    store.commit_cycle(
        PendingCycle(
            up(clock()),
            60.0,
            healthy,
            resolved,
            [
                action(incident, "comment", body=text.resolved_comment(resolved, key), key=key),
                action(incident, "edit", body=text.body(resolved, up(clock()), clock())),
                action(incident, "close"),
            ],
        )
    )
    drain(worker, clock)
    [closed] = fake_github.issues()
    assert (closed["number"], closed["state"], closed["state_reason"]) == (
        number,
        "closed",
        "completed",
    )
    assert (
        "was down for **1h2m5s** (3725 s)" in fake_github.comments(DEFAULT_REPO, number)[-1]["body"]
    )
    assert "RESOLVED" in closed["body"]

    clock.advance(300)
    reopened = replace(resolved, resolved_at=None, reopened=1)
    key = f"{incident.id}:reopened:{clock():%Y%m%dT%H%M%S}"
    again = down(clock())
    store.enqueue(
        [
            action(incident, "reopen"),
            action(incident, "comment", body=text.reopened_comment(reopened, again, key), key=key),
            action(incident, "edit", body=text.body(reopened, again, clock())),
        ],
        clock(),
    )
    drain(worker, clock)
    [issue] = fake_github.issues()
    assert (issue["number"], issue["state"], issue["state_reason"]) == (number, "open", "reopened")
    assert "**Failing again**" in fake_github.comments(DEFAULT_REPO, number)[-1]["body"]
    assert len(fake_github.comments(DEFAULT_REPO, number)) == 3
    row = store.incident(incident.id)
    assert row is not None
    assert row.issue_number == number


# ---- faults -------------------------------------------------------------------------

FAULTS = [
    pytest.param(fg.status(500), "server_error", 0, id="500"),
    pytest.param(fg.status(502, commit=True), "server_error", 0, id="502-after-commit"),
    pytest.param(fg.cut_after_commit(), "network", 0, id="cut-after-commit"),
    pytest.param(fg.cut_before_commit(), "network", 0, id="cut-before-commit"),
    pytest.param(fg.secondary_rate_limit(120), "rate_limited", 120, id="secondary-rate-limit"),
    pytest.param(fg.too_many_requests(90), "rate_limited", 90, id="429"),
    pytest.param(fg.primary_rate_limit(300), "rate_limited", 295, id="primary-rate-limit"),
    pytest.param(fg.delay(1.5), "timeout", 0, id="timeout"),
    pytest.param(fg.malformed_json(), "malformed", 0, id="malformed-json"),
    pytest.param(fg.redirect("/repositories/1001/issues", 307), "redirect", 0, id="307"),
]


def _setup_open(
    server: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> tuple[Incident, Callable[[], None]]:
    incident, _ = open_incident(store, clock)

    def check() -> None:
        [issue] = server.issues()
        row = store.incident(incident.id)
        assert row is not None
        assert row.issue_number == issue["number"]

    return incident, check


def _setup_close(
    server: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> tuple[Incident, Callable[[], None]]:
    incident, _ = open_incident(store, clock)
    drain(worker, clock)
    store.enqueue([action(incident, "close")], clock())

    def check() -> None:
        [issue] = server.issues()
        assert (issue["state"], issue["state_reason"]) == ("closed", "completed")

    return incident, check


def _setup_comment(
    server: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> tuple[Incident, Callable[[], None]]:
    incident, result = open_incident(store, clock)
    drain(worker, clock)
    comment = comment_action(incident, result, clock)
    store.enqueue([comment], clock())

    def check() -> None:
        [issue] = server.issues()
        assert len(server.comments(DEFAULT_REPO, issue["number"])) == 1
        assert len(marked(server, issue["number"], comment.payload["key"])) == 1

    return incident, check


OPERATIONS = {
    "open": ("POST", ISSUES, _setup_open),
    "close": ("PATCH", ONE_ISSUE, _setup_close),
    "comment": ("POST", COMMENTS, _setup_comment),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize(("fault", "reason", "wait_s"), FAULTS)
def test_fault_is_retried_to_exactly_one_effect(
    fake_github: FakeGitHub,
    store: SqliteStore,
    worker: OutboxWorker,
    metrics: Metrics,
    clock: ManualClock,
    operation: str,
    fault: fg.Fault,
    reason: str,
    wait_s: float,
) -> None:
    """A fault on open/close/comment: counted, backed off (Retry-After kept), then done once."""
    method, path, setup = OPERATIONS[operation]
    _, check = setup(fake_github, store, worker, clock)
    writes_before = fake_github.request_count(method)
    fake_github.inject(method, path, fault)

    assert worker.run_once() == 0

    [failed] = store.pending_actions()
    assert failed.kind == operation
    assert failed.attempts == 1
    assert (failed.last_error or "").startswith(f"{reason}:")
    assert failed.next_attempt_at >= clock() + timedelta(seconds=wait_s)
    assert errors(metrics, operation, reason) == 1
    assert worker.health.last_error_reason == reason
    assert not worker.health.auth_problem
    if fault.kind is fg.FaultKind.DELAY:  # the slow request is still running at the fake
        wait_for(lambda: fake_github.request_count(method) > writes_before)
        wait_for(lambda: all(r.status != 0 for r in fake_github.requests))
        if operation != "close":  # a create waits until GitHub has surely finished the first
            assert failed.next_attempt_at >= clock() + timedelta(seconds=15)

    drain(worker, clock)

    check()
    assert store.pending_actions() == []
    assert fake_github.pending_faults == 0


def test_comment_posted_before_a_crash_is_not_posted_again(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """Killed between GitHub's reply and ``complete`` (attempts still 0): no second comment."""
    incident, result = open_incident(store, clock)
    drain(worker, clock)
    comment = comment_action(incident, result, clock)
    store.enqueue([comment], clock())
    [issue] = fake_github.issues()
    fake_github.add_comment(DEFAULT_REPO, issue["number"], comment.payload["body"])

    assert worker.run_once() == 1

    assert len(fake_github.comments(DEFAULT_REPO, issue["number"])) == 1
    assert store.pending_actions() == []


def test_bad_token_keeps_the_action_and_flags_auth(
    fake_github: FakeGitHub,
    store: SqliteStore,
    make_sink: SinkFactory,
    metrics: Metrics,
    clock: ManualClock,
) -> None:
    """401: nothing dropped, auth_problem raised, counted; a good token then files once."""
    bad = OutboxWorker(store, make_sink(token=BAD_TOKEN), metrics, clock=clock)
    open_incident(store, clock)

    assert bad.run_once() == 0
    clock.advance(3600)
    assert bad.run_once() == 0

    [queued] = store.pending_actions()
    assert (queued.kind, queued.attempts) == ("open", 2)
    assert bad.health.auth_problem
    assert "401" in (bad.health.last_error or "")
    assert errors(metrics, "open", "auth") == 2
    assert fake_github.issues() == []

    good = OutboxWorker(store, make_sink(), metrics, clock=clock)
    drain(good, clock)

    assert len(fake_github.issues()) == 1
    assert store.pending_actions() == []
    assert not good.health.auth_problem
    assert set(fake_github.tokens_seen) == {BAD_TOKEN, DEFAULT_TOKEN}


def test_actions_of_one_incident_wait_for_its_open(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """A comment behind a failing open waits; another incident's actions go ahead."""
    first, first_result = open_incident(store, clock, target="production")
    second, second_result = open_incident(store, clock, target="staging")
    first_comment = comment_action(first, first_result, clock)
    second_comment = comment_action(second, second_result, clock)
    store.enqueue([first_comment, second_comment], clock())
    fake_github.inject("POST", ISSUES, fg.status(500))  # the first create only

    worker.run_once()  # production's open fails; staging's open succeeds

    [staging_issue] = fake_github.issues()
    assert "staging is down" in staging_issue["title"]
    pending = store.pending_actions()
    assert [(a.target, a.kind, a.attempts) for a in pending] == [
        ("production", "open", 1),
        ("production", "comment", 0),  # never tried before its open
        ("staging", "comment", 0),
    ]
    # GitHub answered staging: production's transient backoff is released at once
    assert pending[0].next_attempt_at <= clock()
    assert fake_github.request_count("POST", "/repos/acme/web/issues/") == 0  # no comment yet

    drain(worker, clock)

    production_issue = next(i for i in fake_github.issues() if "production" in i["title"])
    assert len(marked(fake_github, production_issue["number"], first_comment.payload["key"])) == 1
    assert len(fake_github.issues()) == 2


def test_rate_limit_pauses_every_incident_until_retry_after(
    fake_github: FakeGitHub,
    store: SqliteStore,
    worker: OutboxWorker,
    metrics: Metrics,
    clock: ManualClock,
) -> None:
    """Rate limits are per token: after a 403 + Retry-After no action is tried until it passes."""
    open_incident(store, clock, target="production")
    open_incident(store, clock, target="staging")
    fake_github.inject("POST", ISSUES, fg.secondary_rate_limit(120))

    assert worker.run_once() == 0
    requests_after_limit = len(fake_github.requests)
    clock.advance(60)
    assert worker.run_once() == 0

    assert len(fake_github.requests) == requests_after_limit  # not one request while held
    assert [a.attempts for a in store.pending_actions()] == [1, 0]
    clock.advance(61)
    assert worker.run_once() == 2
    assert len(fake_github.issues()) == 2
    assert errors(metrics, "open", "rate_limited") == 1


def test_idle_worker_sleeps_until_the_head_of_a_queue_is_due(
    store: SqliteStore, worker: OutboxWorker, fake_github: FakeGitHub, clock: ManualClock
) -> None:
    """Actions queued behind a backing-off open do not make the loop spin at its 50 ms floor."""
    incident, result = open_incident(store, clock)
    store.enqueue([comment_action(incident, result, clock)], clock())
    fake_github.inject("POST", ISSUES, fg.status(503))

    worker.run_once()

    [head, _] = store.pending_actions()
    wanted = (head.next_attempt_at - clock()).total_seconds()
    assert worker._sleep_s() == pytest.approx(min(30.0, wanted))
    assert worker._sleep_s() > 1.0


# ---- reconcile ---------------------------------------------------------------------


def _state(incident: Incident | None, phase: Phase) -> TrackerState:
    return TrackerState(TARGET, phase, incident=incident)


def _seed_issue(server: FakeGitHub, ident: str, note: str = "") -> int:
    issue = server.add_issue(
        title=f"{TARGET} is down",
        body=marked_body(TARGET, ident, note),
        labels=[*LABELS, f"target:{TARGET}"],
    )
    return int(issue["number"])


def _commit(
    store: SqliteStore, clock: ManualClock, incident: Incident, state: TrackerState
) -> None:
    result = up(clock()) if incident.resolved_at else down(clock())
    store.commit_cycle(PendingCycle(result, 60.0, state, incident, []))


def _incident(resolved_after_s: float | None = None) -> Incident:
    resolved = None if resolved_after_s is None else T0 + timedelta(seconds=resolved_after_s)
    return Incident(incident_id(TARGET, T0), TARGET, T0, resolved_at=resolved)


def test_reconcile_adopts_an_issue_the_store_lost(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """An open marked issue for an incident without issue number is adopted, left open."""
    incident = _incident()
    _commit(store, clock, incident, _state(incident, Phase.OPEN))
    number = _seed_issue(fake_github, incident.id)

    assert worker.reconcile({TARGET: _state(incident, Phase.OPEN)})

    row = store.incident(incident.id)
    assert row is not None
    assert row.issue_number == number
    assert store.pending_actions() == []
    assert fake_github.issues()[0]["state"] == "open"


def test_reconcile_closes_the_issue_of_a_resolved_incident(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """An incident resolved in the store but open on GitHub is closed with its true duration."""
    incident = _incident(resolved_after_s=754)
    healthy = _state(incident, Phase.HEALTHY)
    _commit(store, clock, incident, healthy)
    number = _seed_issue(fake_github, incident.id)
    store.set_issue(incident.id, number, None)

    assert worker.reconcile({TARGET: healthy})
    drain(worker, clock)

    [issue] = fake_github.issues()
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    [comment] = fake_github.comments(DEFAULT_REPO, number)
    assert "was down for **12m34s** (754 s)" in comment["body"]


def test_reconcile_closes_a_duplicate_issue(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """A second open issue for an incident that has one recorded is closed as a duplicate."""
    incident = _incident()
    state = _state(incident, Phase.OPEN)
    _commit(store, clock, incident, state)
    first = _seed_issue(fake_github, incident.id)
    second = _seed_issue(fake_github, incident.id)
    store.set_issue(incident.id, first, None)
    store.enqueue([action(incident, "edit", body=marked_body(TARGET, incident.id))], clock())

    assert worker.reconcile({TARGET: state})
    drain(worker, clock)

    states = {i["number"]: i["state"] for i in fake_github.issues()}
    assert states == {first: "open", second: "closed"}
    [comment] = fake_github.comments(DEFAULT_REPO, second)
    assert f"Duplicate of #{first}" in comment["body"]


def test_reconcile_closes_an_issue_of_an_unknown_incident_on_a_healthy_target(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """A marked issue for an incident the store never heard of is closed when the target is up."""
    number = _seed_issue(fake_github, "production-20260101T000000Z")

    assert worker.reconcile({TARGET: TrackerState(TARGET)})
    drain(worker, clock)

    assert fake_github.issues()[0]["state"] == "closed"
    [comment] = fake_github.comments(DEFAULT_REPO, number)
    assert "production is healthy" in comment["body"]


def test_reconcile_leaves_the_current_incident_open(
    fake_github: FakeGitHub, store: SqliteStore, worker: OutboxWorker, clock: ManualClock
) -> None:
    """The issue of the incident that is open right now is left alone."""
    incident = _incident()
    state = _state(incident, Phase.OPEN)
    _commit(store, clock, incident, state)
    number = _seed_issue(fake_github, incident.id)
    store.set_issue(incident.id, number, None)
    requests_before = len(fake_github.requests)

    assert worker.reconcile({TARGET: state})

    assert store.pending_actions() == []
    assert fake_github.issues()[0]["state"] == "open"
    assert len(fake_github.requests) == requests_before + 1  # the listing, nothing else


# ---- secrets ------------------------------------------------------------------------


def test_token_only_ever_travels_in_the_authorization_header(
    fake_github: FakeGitHub,
    store: SqliteStore,
    make_sink: SinkFactory,
    metrics: Metrics,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through failures and successes, the token is in no request part, log line, metric or row."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        bad = OutboxWorker(store, make_sink(token=BAD_TOKEN), metrics, clock=clock)
        incident, result = open_incident(store, clock)
        bad.run_once()
        worker = OutboxWorker(store, make_sink(), metrics, clock=clock)
        for fault in (fg.cut_after_commit(), fg.malformed_json(), fg.status(502, commit=True)):
            fake_github.inject("*", r"/repos/.*", fault)
            worker.run_once()
            clock.advance(3600)
        store.enqueue([comment_action(incident, result, clock), action(incident, "close")], clock())
        drain(worker, clock)
        worker.reconcile({TARGET: TrackerState(TARGET)})

    assert fake_github.issues()[0]["state"] == "closed"
    assert fake_github.tokens_seen  # it was used...
    for token in (DEFAULT_TOKEN, BAD_TOKEN):  # ...and shown nowhere else
        assert fake_github.leaks(token) == []
        assert token not in repr(events)
        assert token not in caplog.text
        assert token not in metrics.exposition()[0].decode()
        assert token not in repr(bad.health.as_dict()) + repr(worker.health.as_dict())
    assert any(e["event"] == "outbox action failed; will retry" for e in events)


@pytest.mark.parametrize("outage_s", [300, 7200], ids=["5-minutes", "2-hours"])
@pytest.mark.parametrize("count", [1, 6], ids=["one-target", "six-targets"])
def test_every_queue_completes_within_a_minute_of_recovery(
    fake_github: FakeGitHub,
    store: SqliteStore,
    worker: OutboxWorker,
    clock: ManualClock,
    outage_s: int,
    count: int,
) -> None:
    """Trouble belongs to the service: after an outage of any length, every target's
    pending steps complete within 60 s of GitHub answering again (a canary step goes
    early every CANARY_S, and its success releases every transient backoff). GitHub
    heals just after a failed attempt, when the backoff ahead is longest."""
    targets = [f"app-{n}" for n in range(count)]
    for target in targets:
        open_incident(store, clock, target=target)
    fake_github.inject("*", r"/repos/.*", fg.status(502), count=None)
    end_of_outage = clock() + timedelta(seconds=outage_s)
    while clock() < end_of_outage or not _just_failed(store, clock):
        worker.run_once()
        _jump_to_next_attempt(worker, clock)
    assert len(store.pending_actions()) == len(targets)  # nothing lost, nothing done
    assert max(a.attempts for a in store.pending_actions()) > 3
    with fake_github._lock:  # GitHub answers again
        fake_github._injections.clear()
    healed_at = clock()

    while store.pending_actions() and clock() - healed_at <= timedelta(seconds=60):
        worker.run_once()
        clock.advance(1)

    assert store.pending_actions() == [], f"still pending {clock() - healed_at} after recovery"
    assert len(fake_github.issues()) == len(targets)  # one issue each


def _just_failed(store: SqliteStore, clock: ManualClock) -> bool:
    """A step failed just now and backs off for over 90 s (GitHub heals at the worst time)."""
    return any(a.next_attempt_at - clock() > timedelta(seconds=90) for a in store.pending_actions())


def _jump_to_next_attempt(worker: OutboxWorker, clock: ManualClock) -> None:
    """Move the clock to the worker's next wake-up (its own sleep), at least a second."""
    clock.advance(max(1.0, worker._sleep_s()))


class _Refusing:
    """A channel whose service refuses every step with ``error`` (a stand-in service:
    the real receivers pin each service's own refusals in tests/test_channel_*.py)."""

    name = "pager"
    kind = "pagerduty"

    def __init__(self, error: Any) -> None:
        self.error = error
        self.sent = 0

    def plan(self, event: Any) -> list[NewAction]:
        return []

    def settle_s(self, action: Any) -> float:
        return 0.0

    def deliver(self, action: Any, delivery: Any) -> None:
        self.sent += 1
        raise self.error


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        pytest.param(
            ChannelError("rejected", "400 from PagerDuty: invalid routing key", permanent=True),
            "channel pager: stopped by a permanent refusal: 400 from PagerDuty",
            id="permanent",
        ),
        pytest.param(
            ChannelError("disabled", "410 Gone from webhook pager", disable=True),
            "channel pager: disabled until the next start: 410 Gone",
            id="disabled",
        ),
    ],
)
def test_a_refused_channel_stops_its_queue_and_healthz_says_so(
    store: SqliteStore, metrics: Metrics, clock: ManualClock, error: Any, problem: str
) -> None:
    """A permanent refusal stops the channel's queue (nothing sent meanwhile, nothing
    dropped), turns /healthz unhealthy naming it, and sets monitor_channel_stopped."""
    channel = _Refusing(error)
    worker = OutboxWorker(store, channel, metrics, clock=clock)
    store.enqueue(
        [NewAction("pager", f"app-{n}-x", f"app-{n}", "trigger", {}) for n in range(3)], clock()
    )
    worker.run_once()
    clock.advance(300)
    worker.run_once()

    assert channel.sent == 1  # the first refusal stopped the queue: no other target tried
    assert len(store.pending_actions("pager")) == 3
    assert metrics.registry.get_sample_value("monitor_channel_stopped", {"channel": "pager"}) == 1
    counted = {"channel": "pager", "reason": error.reason}
    assert metrics.registry.get_sample_value("monitor_channel_errors_total", counted) == 1
    healthy, detail = assess(
        targets={},
        now_mono=0.0,
        monitor=MonitorSection(),
        scheduler_alive=True,
        store_problem=None,
        sink_name="github",
        sink=SinkHealth(),
        channels={"pager": worker.health},
        outbox=(3, 0.0),
        started_at=clock(),
        cluster={},
    )
    assert not healthy
    assert [p for p in detail["problems"] if p.startswith(problem)]
    assert detail["channels"]["pager"]["stopped"]
