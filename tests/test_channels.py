"""The channel seam: events planned into each channel's own steps, queues that never wait
for each other, and a handle per channel and incident."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.config import GithubSection
from monitor.daemon.dispatch import Dispatch
from monitor.incidents import text
from monitor.incidents.channels.github import GithubChannel, GithubIssues
from monitor.incidents.channels.journal import JournalChannel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import OutboxWorker
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.metrics import Metrics
from monitor.store.base import ChannelHandle, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests import fakegithub as fg
from tests.builders import T0, ManualClock, at, down
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

INCIDENT = Incident(
    id="production-20261101T120000Z",
    target="production",
    started_at=T0,
    probes_total=3,
    probes_failed=3,
    last_notice_at=T0,
)
GITHUB = GithubSection(repository="acme/web", token="ghp_" + "x" * 36, labels=["incident"])


def event(kind: EventKind, **changes: object) -> IncidentEvent:
    """An event of the standard incident, decided two minutes in."""
    incident = INCIDENT
    if kind is EventKind.RESOLVED:
        incident = replace(INCIDENT, resolved_at=at(5))
    base = IncidentEvent(kind, incident, down(at(2)), at(2), key=f"{incident.id}:{kind}:k")
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "steps"),
    [
        pytest.param(EventKind.OPENED, ["open"], id="opened"),
        pytest.param(EventKind.UPDATED, ["comment", "edit"], id="updated"),
        pytest.param(EventKind.REMINDER, ["comment", "edit"], id="reminder"),
        pytest.param(EventKind.RESOLVED, ["comment", "close"], id="resolved"),
        pytest.param(EventKind.REOPENED, ["reopen", "comment", "edit"], id="reopened"),
    ],
)
def test_github_plans_each_event_as_issue_steps(kind: EventKind, steps: list[str]) -> None:
    """Each event becomes the issue steps it always did; only body edits supersede."""
    planned = GithubChannel(GITHUB).plan(event(kind))
    assert [a.kind for a in planned] == steps
    assert {a.channel for a in planned} == {"github"}
    assert all(a.supersede == (a.kind == "edit") for a in planned)
    for action in planned:
        if action.kind == "comment":
            # the key a retry looks for before posting again
            assert text.action_marker(event(kind).key) in str(action.payload["body"])


def test_github_open_carries_title_body_labels_and_marker() -> None:
    """The open step holds the rendered issue: title, body with marker, labels."""
    [opening] = GithubChannel(GITHUB).plan(event(EventKind.OPENED))
    payload = opening.payload
    assert payload["title"] == text.title(down(at(2)))
    assert text.parse_marker(str(payload["body"])) == ("production", INCIDENT.id)
    assert payload["labels"] == ["incident", "target:production"]


@pytest.mark.parametrize(
    ("kind", "headline"),
    [
        pytest.param(EventKind.OPENED, "journal: incident opened", id="opened"),
        pytest.param(EventKind.UPDATED, "journal: incident update", id="updated"),
        pytest.param(EventKind.REMINDER, "journal: incident update", id="reminder"),
        pytest.param(EventKind.RESOLVED, "journal: incident closed", id="resolved"),
        pytest.param(EventKind.REOPENED, "journal: incident reopened", id="reopened"),
    ],
)
def test_journal_logs_one_line_per_event(tmp_path: Path, kind: EventKind, headline: str) -> None:
    """The journal plans one step per event and logs it with the incident, keeping no handle."""
    store = SqliteStore(tmp_path / "s.db")
    journal = JournalChannel()
    try:
        [step] = journal.plan(event(kind))
        store.enqueue([step], T0)
        worker = OutboxWorker(store, journal, Metrics(), clock=ManualClock())
        with capture_logs() as logs:
            assert worker.run_once() == 1
        [line] = [entry for entry in logs if entry["event"] == headline]
        assert line["incident"] == INCIDENT.id
        assert line["text"]
        assert store.handle("journal", INCIDENT.id) is None
    finally:
        store.close()


@pytest.fixture
def github_channel(fake_github: FakeGitHub) -> GithubChannel:
    """A GitHub channel on the fake, without PyGithub's pauses."""
    settings = GithubSection(
        repository=DEFAULT_REPO,
        api_url=fake_github.url,
        token=DEFAULT_TOKEN,
        labels=["incident", "monitor"],
        timeout=1,
    )
    client = fake_github.client(timeout_s=1, per_page=100)
    return GithubChannel(settings, GithubIssues(settings, client=client))


def test_a_failing_channel_never_delays_another(
    tmp_path: Path, fake_github: FakeGitHub, github_channel: GithubChannel
) -> None:
    """GitHub answering 502 leaves its step queued; the journal's step is done meanwhile."""
    fake_github.inject("POST", r"/repos/acme/web/issues$", fg.status(502), count=None)
    store = SqliteStore(tmp_path / "s.db")
    clock = ManualClock()
    try:
        dispatch = Dispatch(store, [github_channel, JournalChannel()], Metrics(), clock)
        opened = event(EventKind.OPENED)
        actions = [a for channel in dispatch.channels for a in channel.plan(opened)]
        state = TrackerState("production", Phase.OPEN, fail_streak=3, incident=INCIDENT)
        store.commit_cycle(PendingCycle(down(T0), 60.0, state, INCIDENT, actions))
        github_worker, journal_worker = dispatch.workers
        assert github_worker.run_once() == 0
        assert journal_worker.run_once() == 1
        [waiting] = store.pending_actions()
        assert (waiting.channel, waiting.kind, waiting.attempts) == ("github", "open", 1)
        assert store.pending_actions("journal") == []
    finally:
        store.close()


def test_each_channel_keeps_its_own_handle(
    tmp_path: Path, fake_github: FakeGitHub, github_channel: GithubChannel
) -> None:
    """The issue GitHub filed is the GitHub channel's handle and the incident's issue."""
    store = SqliteStore(tmp_path / "s.db")
    try:
        worker = OutboxWorker(store, github_channel, Metrics(), clock=ManualClock())
        actions = list(github_channel.plan(event(EventKind.OPENED)))
        state = TrackerState("production", Phase.OPEN, fail_streak=3, incident=INCIDENT)
        store.commit_cycle(PendingCycle(down(T0), 60.0, state, INCIDENT, actions))
        assert worker.run_once() == 1
        [issue] = fake_github.issues()
        handle = store.handle("github", INCIDENT.id)
        assert handle == ChannelHandle(issue["number"], issue["html_url"])
        row = store.incident(INCIDENT.id)
        assert row is not None
        assert row.issue_number == issue["number"]
        assert store.handle("journal", INCIDENT.id) is None
    finally:
        store.close()
