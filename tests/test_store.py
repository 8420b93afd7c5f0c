"""The SQLite store: atomic cycles, ordered outbox queues, sessions, and state kept on disk."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.figures.slo import Deployment, Span
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.probing.results import Outcome
from monitor.store.base import ChannelHandle, NewAction, PendingCycle, StoreError
from monitor.store.codec import state_from_json, state_to_json
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, at, check, down, up

INCIDENT = Incident(
    id="production-20261101T120000Z",
    target="production",
    started_at=T0,
    probes_total=4,
    probes_failed=3,
    signature=("health:status", "monitoring:timeout"),
    last_notice_at=at(3),
    reopened=1,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the database lives."""
    return tmp_path / "s.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    """A real SQLite file, closed afterwards."""
    db = SqliteStore(path)
    yield db
    db.close()


def _act(kind: str, incident: str = INCIDENT.id, **payload: object) -> NewAction:
    # a body edit supersedes an older one, as the GitHub channel plans it
    target = incident.rsplit("-", 1)[0]
    return NewAction("github", incident, target, kind, payload, supersede=kind == "edit")


# ---- tracker state ------------------------------------------------------------------------


STATES = [
    pytest.param(TrackerState("production"), id="fresh"),
    pytest.param(
        TrackerState("production", Phase.FAILING, fail_streak=2, streak_started_at=at(1)),
        id="failing",
    ),
    pytest.param(
        TrackerState(
            "production", Phase.OPEN, fail_streak=3, streak_started_at=T0, incident=INCIDENT
        ),
        id="open-incident",
    ),
    pytest.param(
        TrackerState(
            "production",
            Phase.RECOVERING,
            good_streak=1,
            streak_started_at=at(9),
            incident=INCIDENT,
        ),
        id="recovering",
    ),
    pytest.param(
        TrackerState(
            "production",
            Phase.HEALTHY,
            good_streak=2,
            streak_started_at=at(9),
            incident=replace(INCIDENT, resolved_at=at(9)),
        ),
        id="resolved-kept-for-reopen",
    ),
]


@pytest.mark.parametrize("state", STATES)
def test_tracker_state_json_round_trip(state: TrackerState) -> None:
    """Every field of the tracker state, the incident's included, survives JSON."""
    assert state_from_json(state_to_json(state)) == state


@pytest.mark.parametrize("state", STATES)
def test_tracker_state_json_is_the_stored_format(state: TrackerState) -> None:
    """The JSON is, byte for byte, what ``dataclasses.asdict`` gave before: rows written
    by an older instance and rows written now read the same."""
    as_before = json.dumps(
        dataclasses.asdict(state),
        default=lambda value: value.isoformat(),
    )
    assert state_to_json(state) == as_before


@pytest.mark.parametrize("state", STATES)
def test_tracker_state_round_trips_through_the_store(
    store: SqliteStore, state: TrackerState
) -> None:
    """What a cycle commits is what ``load_states`` gives back."""
    store.commit_cycle(PendingCycle(down(at(3)), 120.0, state, state.incident, []))

    assert store.load_states() == {"production": state}


# ---- one cycle, one transaction -----------------------------------------------------------


def _cycle_with_everything(store: SqliteStore) -> None:
    result = replace(
        down(at(3)), checks=(replace(check(Outcome.DOWN, when=at(3)), version="1.4.3"),)
    )
    deployment = Deployment("production", "1.4.2", "1.4.3", at(2))
    state = TrackerState("production", Phase.OPEN, fail_streak=3, incident=INCIDENT)
    store.commit_cycle(
        PendingCycle(result, 120.0, state, INCIDENT, [_act("open", title="t")], deployment)
    )


def _nothing_stored(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        for table in ("check_results", "target_samples", "tracker_state", "incidents", "outbox"):
            assert raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table  # noqa: S608 - names from a constant tuple
        assert raw.execute("SELECT COUNT(*) FROM deployments").fetchone() == (0,)
        assert raw.execute("SELECT COUNT(*) FROM versions").fetchone() == (0,)


def test_commit_cycle_is_all_or_nothing(store: SqliteStore, path: Path) -> None:
    """A failing last insert (the outbox) leaves no result, state, incident or action behind."""
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )

    with pytest.raises(StoreError, match="disk full"):
        _cycle_with_everything(store)

    _nothing_stored(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER refuse")
    _cycle_with_everything(store)  # the store is usable again: no transaction left open
    assert [a.kind for a in store.pending_actions()] == ["open"]
    assert store.incident(INCIDENT.id) is not None


def test_commit_cycle_on_a_closed_database_raises_store_error(store: SqliteStore) -> None:
    """A dead connection is a StoreError (the daemon keeps the cycle in memory), not a crash."""
    store.close()

    with pytest.raises(StoreError):
        _cycle_with_everything(store)


# ---- outbox queues ------------------------------------------------------------------------


def test_due_actions_are_the_heads_of_each_targets_queue(store: SqliteStore) -> None:
    """Per-target order: only the oldest pending action of each target is due."""
    other = "staging-20261101T120000Z"
    store.enqueue(
        [_act("open"), _act("comment", key="a"), _act("open", other), _act("close", other)], T0
    )

    first = store.due_actions("github", T0)
    assert [(a.incident_id, a.kind) for a in first] == [(INCIDENT.id, "open"), (other, "open")]

    store.complete(first[0], at(1), ChannelHandle(7, "https://github.example/7"))
    store.retry_later(first[1], "server_error: 502", at(10))

    assert [(a.incident_id, a.kind) for a in store.due_actions("github", at(1))] == [
        (INCIDENT.id, "comment")
    ]
    assert [(a.incident_id, a.kind) for a in store.due_actions("github", at(10))] == [
        (INCIDENT.id, "comment"),
        (other, "open"),
    ]
    [retried] = [a for a in store.pending_actions() if a.incident_id == other and a.kind == "open"]
    assert (retried.attempts, retried.last_error) == (1, "server_error: 502")


def test_a_new_incident_waits_for_the_previous_close(store: SqliteStore) -> None:
    """Two incidents of one target: the new open is not due before the old close is done."""
    later = "production-20261101T130000Z"
    store.enqueue([_act("close"), _act("open", later)], T0)

    [head] = store.due_actions("github", T0)
    assert (head.incident_id, head.kind) == (INCIDENT.id, "close")
    store.retry_later(head, "server_error: 502", at(10))
    assert store.due_actions("github", at(1)) == []
    assert store.next_due_at("github") == at(10)


def test_completing_an_open_records_the_issue(store: SqliteStore) -> None:
    """``complete`` of an open marks it done and stores the issue number in one go."""
    store.commit_cycle(
        PendingCycle(down(T0), 120.0, TrackerState("production"), INCIDENT, [_act("open")])
    )
    [opening] = store.due_actions("github", T0)

    store.complete(opening, at(1), ChannelHandle(42, "https://github.example/42"))

    row = store.incident(INCIDENT.id)
    assert row is not None
    assert (row.issue_number, row.issue_url) == (42, "https://github.example/42")
    assert store.pending_actions() == []


def test_newer_edit_supersedes_a_pending_one(store: SqliteStore) -> None:
    """Only the newest body matters: an older unattempted edit is dropped, order otherwise kept."""
    store.enqueue([_act("open"), _act("edit", body="v1"), _act("comment", key="c")], T0)
    store.enqueue([_act("edit", body="v2")], at(1))

    pending = store.pending_actions()

    assert [(a.kind, a.payload.get("body")) for a in pending] == [
        ("open", None),
        ("comment", None),
        ("edit", "v2"),
    ]


def test_edit_of_another_incident_is_not_superseded(store: SqliteStore) -> None:
    """Superseding is per incident."""
    other = "staging-20261101T120000Z"
    store.enqueue([_act("edit", body="mine"), _act("edit", other, body="theirs")], T0)

    assert [a.payload["body"] for a in store.pending_actions()] == ["mine", "theirs"]


# ---- sessions ----------------------------------------------------------------------------


def test_session_spans(store: SqliteStore) -> None:
    """Stopped sessions end at stopped_at, killed ones at their last heartbeat, the live one now."""
    long_ago = store.start_session(at(-300))
    store.stop_session(long_ago, at(-200))
    stopped = store.start_session(at(0))
    store.heartbeat(stopped, at(10))
    store.stop_session(stopped, at(20))
    killed = store.start_session(at(30))
    store.heartbeat(killed, at(40))
    current = store.start_session(at(50))
    store.heartbeat(current, at(59))

    spans = store.sessions(Span(at(-60), at(61)), now=at(60))

    assert sorted((s.start, s.end) for s in spans) == [
        (at(0), at(20)),
        (at(30), at(40)),
        (at(50), at(60)),
    ]


def test_killed_session_does_not_run_on_after_a_restart(store: SqliteStore) -> None:
    """Killed, restarted a minute later: the gap between the two is unknown, not monitored."""
    killed = store.start_session(at(0))
    store.heartbeat(killed, at(10))
    current = store.start_session(at(11))
    store.heartbeat(current, at(12))

    spans = store.sessions(Span(at(0), at(13)), now=at(12))

    assert sorted((s.start, s.end) for s in spans) == [(at(0), at(10)), (at(11), at(12))]


# ---- durability ----------------------------------------------------------------------------

_WRITE_EVERYTHING = """
import os, signal, sys
from tests.test_store import write_everything
from monitor.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
write_everything(store)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
store.close()
"""


def write_everything(store: SqliteStore) -> None:
    """Results, state, incident with issue, deployment, a queue mid-way, a live session."""
    _cycle_with_everything(store)
    store.enqueue([_act("comment", key="k", body="still down"), _act("edit", body="v1")], at(4))
    [opening] = store.due_actions("github", at(4))
    store.complete(opening, at(5), ChannelHandle(7, "https://github.example/7"))
    [comment] = store.due_actions("github", at(5))
    store.retry_later(comment, "network: reset", at(6))
    store.commit_cycle(PendingCycle(up(at(8)), 120.0, TrackerState("production"), None, []))
    session = store.start_session(at(0))
    store.heartbeat(session, at(8))


@pytest.mark.parametrize("ending", ["close", "kill"])
def test_everything_survives_a_restart(path: Path, ending: str) -> None:
    """Closed cleanly or killed (SIGKILL, WAL not checkpointed), a new SqliteStore sees every row."""
    completed = subprocess.run(
        [sys.executable, "-c", _WRITE_EVERYTHING, str(path), ending],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == (-9 if ending == "kill" else 0), completed.stderr

    store = SqliteStore(path)
    try:
        assert store.load_states() == {"production": TrackerState("production")}
        row = store.incident(INCIDENT.id)
        assert row is not None
        assert (row.issue_number, row.probes_failed, row.reopened) == (7, 3, 1)
        assert [(a.kind, a.attempts, a.last_error) for a in store.pending_actions()] == [
            ("comment", 1, "network: reset"),
            ("edit", 0, None),
        ]
        assert store.pending_actions()[0].next_attempt_at == at(6)
        assert len(store.recent_check_results("production", since=T0, limit=100)) == 2
        assert store.deployments("production") == [
            Deployment("production", "1.4.2", "1.4.3", at(2))
        ]
        assert store.last_versions("production") == {"health": "1.4.3"}
        assert store.sessions(Span(T0, at(60)), now=at(60)) == [Span(T0, at(8))]
    finally:
        store.close()
