"""People in the loop: a person closes or acknowledges an incident's issue while the
target still fails; the monitor stops reminding, still posts the resolution, and never
fights the person (no reopen, no second issue for the same outage).

The real daemon is fed results by hand on a hand-moved clock, with its real SQLite store
and its outbox workers run one pass at a time against the fake GitHub.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.config import GithubSection, load_settings
from monitor.daemon.daemon import Daemon
from monitor.incidents.channels.github import WATCH_INTERVAL_S, GithubChannel, GithubIssues
from monitor.incidents.channels.journal import JournalChannel
from monitor.incidents.outbox import OutboxWorker
from monitor.incidents.tracker import Incident, Transition, TransitionKind
from monitor.metrics import Metrics
from monitor.store.base import IncidentRow
from monitor.store.sqlite import SqliteStore
from tests.builders import ManualClock, at, down, up
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

TARGET = "production"
PERSON = "alice"
REMINDER_MIN = 10  # [monitor] reminder_interval in these tests
ACK_LABEL = "acknowledged"


@dataclass(frozen=True)
class Row:
    """One outbox row, done or not."""

    channel: str
    kind: str
    payload: dict[str, Any]


@dataclass
class World:
    """The daemon, its store and the fake GitHub on one hand-moved clock."""

    daemon: Daemon
    github: FakeGitHub
    clock: ManualClock
    store: SqliteStore
    state_path: Path

    @property
    def worker(self) -> OutboxWorker:
        """The GitHub channel's outbox worker."""
        worker = self.daemon.dispatch.workers[0]
        assert worker.channel.name == "github"
        return worker

    def feed(self, script: str, start_min: float) -> list[Transition]:
        """F = down, U = up, one probe a minute from ``start_min``; the transitions."""
        transitions = []
        for index, letter in enumerate(script):
            self.clock.now = at(start_min + index)
            result = down(self.clock.now) if letter == "F" else up(self.clock.now)
            transitions += self.daemon.record(result)
        return transitions

    def deliver(self) -> None:
        """Every channel's worker, until nothing more is done."""
        for worker in self.daemon.dispatch.workers:
            while worker.run_once():
                pass

    def watch_at(self, minute: float) -> None:
        """Move to ``minute`` (past the GitHub worker's next look) and run it once."""
        self.clock.now = at(minute)
        self.worker.run_once()

    def open_and_file(self) -> Incident:
        """Three failures (minutes 0-2) open an incident; its issue (#1) is filed at once."""
        [opened] = self.feed("FFF", start_min=0)
        assert opened.kind is TransitionKind.OPENED
        self.deliver()
        assert [i["number"] for i in self.github.issues()] == [1]
        assert opened.incident is not None
        return opened.incident

    def incident_row(self, incident_id: str) -> IncidentRow:
        """The store's row of the incident."""
        row = self.store.incident(incident_id)
        assert row is not None
        return row

    def tracked(self) -> Incident:
        """The incident the tracker holds for the target."""
        incident = self.daemon.targets[TARGET].state.incident
        assert incident is not None
        return incident

    def outbox(self, channel: str | None = None) -> list[Row]:
        """Every outbox row so far, done or pending, oldest first."""
        with sqlite3.connect(self.state_path) as db:
            rows = db.execute("SELECT channel, kind, payload FROM outbox ORDER BY id").fetchall()
        return [Row(c, k, json.loads(p)) for c, k, p in rows if channel is None or c == channel]

    def reminders(self) -> list[Row]:
        """Reminder steps planned for any channel."""
        return [
            r for r in self.outbox() if r.kind == "reminder" or r.payload.get("event") == "reminder"
        ]

    def issue(self, number: int) -> dict[str, Any]:
        """Issue ``number`` as GitHub renders it."""
        [found] = [i for i in self.github.issues() if i["number"] == number]
        return found

    def comments(self, number: int) -> list[str]:
        """The bodies of an issue's comments, oldest first."""
        return [c["body"] for c in self.github.comments(DEFAULT_REPO, number)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A daemon with the GitHub channel (on the fake) and the journal, one target."""
    clock = ManualClock()
    settings = load_settings(
        None,
        monitor={
            "state_path": str(tmp_path / "state.db"),
            "reopen_window": "30m",
            "reminder_interval": f"{REMINDER_MIN}m",
        },
        github={"enabled": False},
        targets=[{"name": TARGET, "url": "http://127.0.0.1:9", "checks": [{"name": "health"}]}],
    )
    with FakeGitHub(clock=clock) as github:
        section = GithubSection(
            repository=DEFAULT_REPO,
            api_url=github.url,
            token=DEFAULT_TOKEN,
            labels=["incident", "monitor"],
            timeout=1,
        )
        assert section.ack_label == ACK_LABEL  # the default
        client = github.client(timeout_s=1, per_page=100, lazy=True)
        store = SqliteStore(settings.monitor.state_path)
        channel = GithubChannel(section, GithubIssues(section, client=client))
        daemon = Daemon(
            settings,
            metrics=Metrics(),
            clock=clock,
            store=store,
            channels=[channel, JournalChannel()],
        )
        yield World(daemon, github, clock, store, settings.monitor.state_path)
        store.close()
        client.close()
        assert github.errors == []


def label_as_person(world: World, number: int, label: str) -> None:
    """A person adds ``label`` to the issue in the web UI (a PATCH of its labels)."""
    person = world.github.client(timeout_s=1)
    issue = person.get_repo(DEFAULT_REPO).get_issue(number)
    issue.edit(labels=[*(lab.name for lab in issue.labels), label])


def minutes(moment: datetime) -> float:
    """``moment`` as minutes after T0."""
    return (moment - at(0)).total_seconds() / 60


WATCH_MIN = WATCH_INTERVAL_S / 60


def test_a_person_closing_the_issue_stops_reminders_and_still_gets_the_resolution(
    world: World,
) -> None:
    """Closed by a person while failing: recorded with who and when, no reminder, the
    resolution still posted (to the closed issue, not reopened); a later outage past
    reopen_window is a new incident with a new issue."""
    incident = world.open_and_file()

    world.clock.now = at(2.5)
    closed = world.github.close_as(DEFAULT_REPO, 1, PERSON)
    assert closed["closed_by"]["login"] == PERSON
    world.watch_at(2 + WATCH_MIN + 0.5)  # the first look was at minute 2, with the open

    row = world.incident_row(incident.id)
    assert (row.closed_by, row.closed_at) == (PERSON, at(2.5))
    assert row.resolved_at is None

    world.feed("F" * 27, start_min=4)  # to minute 30: reminders were due at 12 and 22
    world.deliver()
    assert world.tracked().closed_at == at(2.5)
    assert world.tracked().taken
    assert world.reminders() == []
    assert world.comments(1) == []
    [noted] = [r for r in world.outbox("journal") if r.kind == "acknowledged"]
    assert "closed" in noted.payload["text"]
    assert PERSON in noted.payload["text"]

    [resolved] = world.feed("UU", start_min=31)
    assert resolved.kind is TransitionKind.RESOLVED
    world.deliver()
    [resolution] = world.comments(1)
    assert "**Resolved.**" in resolution
    assert "(1860 s)" in resolution  # minute 0 to minute 31
    issue = world.issue(1)
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    assert issue["closed_by"]["login"] == PERSON
    assert [r.kind for r in world.outbox("github")] == ["open", "comment", "close"]

    [opened] = world.feed("FFF", start_min=70)  # 39 minutes after the recovery
    assert opened.kind is TransitionKind.OPENED
    assert opened.incident is not None
    assert opened.incident.id != incident.id
    world.deliver()
    assert [(i["number"], i["state"]) for i in world.github.issues()] == [
        (1, "closed"),
        (2, "open"),
    ]
    second = world.incident_row(opened.incident.id)
    assert (second.issue_number, second.closed_at, second.closed_by) == (2, None, None)


def test_an_acknowledged_label_stops_reminders_and_tells_the_other_channels(
    world: World,
) -> None:
    """The ack label on the issue: acknowledged_at recorded, reminders stop, the journal
    is told once, the issue stays open until the resolve closes it."""
    incident = world.open_and_file()

    world.clock.now = at(2.5)
    label_as_person(world, 1, ACK_LABEL)
    world.watch_at(2 + WATCH_MIN + 0.5)

    row = world.incident_row(incident.id)
    assert row.acknowledged_at == at(2.5)
    assert row.closed_at is None

    world.feed("F" * 27, start_min=4)
    world.deliver()
    assert world.tracked().acknowledged_at == at(2.5)
    assert world.reminders() == []
    assert world.comments(1) == []
    assert world.issue(1)["state"] == "open"
    acknowledged = [r for r in world.outbox() if r.kind == "acknowledged"]
    assert [r.channel for r in acknowledged] == ["journal"]  # GitHub's came from the issue
    assert "Acknowledged" in acknowledged[0].payload["text"]
    assert minutes(world.clock.now) == 30

    world.feed("UU", start_min=31)
    world.deliver()
    [resolution] = world.comments(1)
    assert "(1860 s)" in resolution
    assert world.issue(1)["state"] == "closed"


def test_a_queued_reminder_is_skipped_once_the_person_has_the_issue(world: World) -> None:
    """A reminder planned before the person closed the issue is not posted: the worker
    looks at the issue before sending it, whatever the watch has not seen yet."""
    incident = world.open_and_file()
    world.feed("F" * 9, start_min=3)  # to minute 11
    world.watch_at(11.5)  # a look now: the next one is not due before 12.5
    [reminder] = world.feed("F", start_min=12)
    assert reminder.kind is TransitionKind.REMINDER
    assert [r.channel for r in world.reminders()] == ["github", "journal"]

    world.github.close_as(DEFAULT_REPO, 1, PERSON)
    world.clock.now = at(12.2)
    while world.worker.run_once():  # the comment, then the body's edit
        pass

    assert world.comments(1) == []
    assert world.store.pending_actions("github") == []  # done, not left to retry
    assert world.incident_row(incident.id).closed_at is None  # the delivery saw it, not the watch


def test_a_reopened_incident_needs_a_person_again(world: World) -> None:
    """After a person closed the issue and the incident resolved, a reopen (the issue is
    reopened too) is reminded of again: the old close no longer holds."""
    incident = world.open_and_file()
    world.clock.now = at(2.5)
    world.github.close_as(DEFAULT_REPO, 1, PERSON)
    world.watch_at(2 + WATCH_MIN + 0.5)
    world.feed("F", start_min=4)
    assert world.tracked().taken

    world.feed("UU", start_min=5)  # resolved at minute 6
    world.deliver()
    [reopened] = world.feed("FFF", start_min=7)
    assert reopened.kind is TransitionKind.REOPENED
    assert reopened.incident is not None
    assert reopened.incident.id == incident.id
    assert not reopened.incident.taken
    world.deliver()
    assert world.issue(1)["state"] == "open"

    world.feed("F" * 12, start_min=10)  # a reminder is due at 19
    assert not world.tracked().taken
    assert len(world.reminders()) >= 1
