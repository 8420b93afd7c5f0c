"""The store's contract, run against both backends: PostgreSQL keeps every guarantee SQLite does.

Each test takes the ``store`` fixture, parametrized ``sqlite`` (a file under tmp_path) and
``postgres`` (a fresh database on the session's throwaway server; skipped when PostgreSQL
is not installed). Assertions are exact values, so the two backends must agree to the
type and the microsecond, not merely both "work". A few tests at the end concern only
PostgreSQL (reconnects, passwords in messages).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.figures.slo import Deployment, Sample, Span
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.probing.results import Outcome, TargetResult
from monitor.store import postgres_schema, sqlite_schema
from monitor.store.base import (
    ChannelHandle,
    GithubRecord,
    IncidentRow,
    Leadership,
    NewAction,
    NotLeader,
    OutboxAction,
    PendingCycle,
    RegionView,
    StoreError,
)
from monitor.store.codec import ts
from monitor.store.postgres import PostgresStore
from monitor.store.sql import SqlStore
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, at, check, down, up
from tests.pgserver import HOST, PostgresServer
from tests.ports import free_port

INCIDENT = Incident(
    id="production-20261101T120000Z",
    target="production",
    started_at=T0,
    probes_total=4,
    probes_failed=3,
    signature=("health:status",),
    last_notice_at=at(3),
    reopened=1,
)
OTHER = "staging-20261101T120000Z"  # an incident of another target


# ---- the two backends ---------------------------------------------------------------------


@dataclass
class Database:
    """One backend's database: opens stores on it and runs raw SQL beside them."""

    kind: str  # "sqlite" or "postgres"
    location: str  # the SQLite file, or the PostgreSQL URL
    opened: list[SqlStore] = field(default_factory=list)

    def open(self) -> SqlStore:
        """Another store object on the same database (closed at teardown)."""
        store: SqlStore = (
            SqliteStore(self.location) if self.kind == "sqlite" else PostgresStore(self.location)
        )
        self.opened.append(store)
        return store

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement (``?`` placeholders) on a connection of its own, committed; its rows."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.location)) as conn, conn:
                return list(conn.execute(statement, params).fetchall())
        with psycopg.connect(self.location, autocommit=True) as pg:
            cursor = pg.execute(statement.replace("?", "%s"), params)
            return list(cursor.fetchall()) if cursor.description else []

    def connections_left(self) -> int:
        """Connections still open on the database, other than a probe's own (SQLite: the
        -wal and -shm files exist while any connection does, and go with the last one)."""
        if self.kind == "sqlite":
            return sum(Path(self.location + suffix).exists() for suffix in ("-wal", "-shm"))
        [(count,)] = self.sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(count)

    @property
    def schema_version(self) -> int:
        """What this monitor's schema for the backend is."""
        schema = sqlite_schema if self.kind == "sqlite" else postgres_schema
        return schema.SCHEMA_VERSION


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each backend; every store opened on it is closed afterwards."""
    if request.param == "sqlite":
        db = Database("sqlite", str(tmp_path / "s.db"))
    else:
        db = Database("postgres", request.getfixturevalue("postgres_url"))
    yield db
    for store in db.opened:
        store.close()


@pytest.fixture
def store(database: Database) -> SqlStore:
    """A store on the empty database (closed by ``database`` afterwards)."""
    return database.open()


# ---- builders ------------------------------------------------------------------------------


def _act(
    kind: str, incident: str = INCIDENT.id, channel: str = "github", **payload: object
) -> NewAction:
    """An action of an incident; edits supersede, as the GitHub channel plans them."""
    target = incident.rsplit("-", 1)[0]
    return NewAction(channel, incident, target, kind, payload, supersede=kind == "edit")


def _probe(
    when: datetime,
    duration_s: float,
    outcome: Outcome = Outcome.UP,
    name: str = "health",
    target: str = "production",
) -> TargetResult:
    """A target result of one check with a chosen duration."""
    result = check(outcome, target=target, name=name, when=when)
    return TargetResult(target, when, (replace(result, duration_s=duration_s),))


def _decide(
    result: TargetResult,
    incident: Incident | None = None,
    actions: Sequence[NewAction] = (),
    **kw: Any,
) -> PendingCycle:
    """A cycle with a decision (a tracker state), as the leader commits it."""
    state = TrackerState(result.target) if incident is None else _open(incident)
    return PendingCycle(result, 120.0, state, incident, list(actions), **kw)


def _open(incident: Incident) -> TrackerState:
    """The tracker state of a target with ``incident`` open."""
    return TrackerState(
        incident.target,
        Phase.OPEN,
        fail_streak=3,
        streak_started_at=incident.started_at,
        incident=incident,
    )


def _shape(actions: Sequence[OutboxAction]) -> list[tuple[str, str, str]]:
    """(channel, incident, kind) of each action, in order."""
    return [(a.channel, a.incident_id, a.kind) for a in actions]


def _rollup(period: str, check_name: str, bucket: datetime, **values: Any) -> dict[str, Any]:
    """A rollup row shaped as monitor.figures.history writes it."""
    row: dict[str, Any] = {
        "period": period,
        "target": "production",
        "check_name": check_name,
        "bucket": ts(bucket),
        "probes": 60,
        "failures": 2,
        "degraded": 1,
        "up_s": 3400.0,
        "degraded_s": 80.0,
        "down_s": 100.0,
        "unknown_s": 20.0,
        "maintenance_s": 0.0,
        "latency_sum": 3.5,
        "latency_min": 0.01,
        "latency_max": 0.25,
        "latency_hist": json.dumps([10, 40, 10, 0]),
    }
    row.update(values)
    return row


def _assert_nothing_of_the_cycle(store: SqlStore) -> None:
    """No trace at all of a refused cycle."""
    assert store.recent_check_results("production", since=T0, limit=100) == []
    assert store.samples("production", Span(T0, at(60)), 0.0) == []
    assert store.load_states() == {}
    assert store.incident(INCIDENT.id) is None
    assert store.incidents() == []
    assert store.pending_actions() == []
    assert store.last_versions("production") == {}
    assert store.deployments(None) == []


# ---- 1. one commit, everything visible -------------------------------------------------------


def test_commit_cycle_round_trip(store: SqlStore) -> None:
    """One commit_cycle makes its results, sample, state, incident (with the deployment it
    followed), versions, deployment and outbox actions of two channels visible, exactly."""
    health = replace(
        check(Outcome.DOWN, when=at(3), status=503, detail="expected 200, got 503"),
        version="1.4.3",
    )
    monitoring = replace(
        check(Outcome.UP, name="monitoring", when=at(3) + timedelta(seconds=1)), duration_s=0.25
    )
    result = TargetResult("production", at(3), (health, monitoring))
    deployment = Deployment("production", "1.4.2", "1.4.3", at(2))
    store.commit_cycle(
        PendingCycle(
            result,
            120.0,
            _open(INCIDENT),
            INCIDENT,
            [_act("open", title="t"), _act("post", channel="journal", line="down")],
            deployment=deployment,
            incident_deployment=deployment,
        )
    )
    staging_deployment = Deployment("staging", None, "2.0.0", at(1))
    staging = replace(
        up(at(1), target="staging"),
        checks=(replace(check(target="staging", when=at(1)), version="2.0.0"),),
    )
    store.commit_cycle(_decide(staging, deployment=staging_deployment))

    assert store.recent_check_results("production", since=T0, limit=10) == [
        {
            "target": "production",
            "check_name": "health",
            "started_at": ts(at(3)),
            "duration_s": 0.05,
            "outcome": "down",
            "reason": "status",
            "status": 503,
            "detail": "expected 200, got 503",
            "region": "local",
        },
        {
            "target": "production",
            "check_name": "monitoring",
            "started_at": ts(at(3)) + 1.0,
            "duration_s": 0.25,
            "outcome": "up",
            "reason": "ok",
            "status": 200,
            "detail": "up",
            "region": "local",
        },
    ]
    assert [r["check_name"] for r in store.recent_check_results("production", T0, 1)] == [
        "monitoring"
    ]  # the newest `limit`, oldest first
    assert store.samples("production", Span(T0, at(10)), 0.0) == [Sample(at(3), Outcome.DOWN)]
    assert store.first_sample_at() == at(1)
    assert store.first_sample_at("production") == at(3)
    assert sorted(store.targets_with_samples()) == ["production", "staging"]
    assert sorted(store.check_names("production")) == ["health", "monitoring"]
    assert store.load_states() == {
        "production": _open(INCIDENT),
        "staging": TrackerState("staging"),
    }
    assert store.incident(INCIDENT.id) == IncidentRow(
        id=INCIDENT.id,
        target="production",
        started_at=T0,
        resolved_at=None,
        issue_number=None,
        issue_url=None,
        probes_total=4,
        probes_failed=3,
        reopened=1,
        deployment={"from_version": "1.4.2", "to_version": "1.4.3", "seen_at": at(2).isoformat()},
    )
    assert store.incident("nope") is None
    assert store.last_versions("production") == {"health": "1.4.3"}
    assert store.last_versions("staging") == {"health": "2.0.0"}
    assert store.deployments("production") == [deployment]
    assert store.deployments(None) == [staging_deployment, deployment]  # oldest first
    assert store.deployments(None, since=at(2)) == [deployment]

    pending = store.pending_actions()
    github, journal = (
        OutboxAction(0, channel, INCIDENT.id, "production", kind, payload, at(3), 0, at(3), None)
        for channel, kind, payload in (
            ("github", "open", {"title": "t"}),
            ("journal", "post", {"line": "down"}),
        )
    )
    assert [replace(a, id=0) for a in pending] == [github, journal]
    assert pending[0].id < pending[1].id
    assert store.pending_actions("journal") == pending[1:]
    assert store.due_actions("github", at(3)) == pending[:1]
    assert store.due_actions("github", at(3) - timedelta(seconds=1)) == []  # not due before


def test_incidents_filters(store: SqlStore) -> None:
    """incidents(): newest first; by target; ``since`` keeps open ones and those resolved
    at or after it; ``limit`` caps."""
    old = replace(INCIDENT, resolved_at=at(10))
    new = replace(INCIDENT, id="production-20261101T122000Z", started_at=at(20), reopened=0)
    staging = Incident(OTHER, "staging", at(5))
    store.commit_cycle(_decide(down(at(10)), old))
    store.commit_cycle(_decide(down(at(20)), new))
    store.commit_cycle(_decide(down(at(5), target="staging"), staging))

    def ids(rows: Sequence[IncidentRow]) -> list[str]:
        return [row.id for row in rows]

    assert ids(store.incidents()) == [new.id, OTHER, old.id]
    assert ids(store.incidents(target="production")) == [new.id, old.id]
    assert ids(store.incidents(since=at(11))) == [new.id, OTHER]
    assert ids(store.incidents(since=at(10))) == [new.id, OTHER, old.id]  # resolved_at >= since
    assert ids(store.incidents(limit=1)) == [new.id]
    assert ids(store.incidents(target="production", since=at(11), limit=5)) == [new.id]
    [resolved] = [row for row in store.incidents() if row.id == old.id]
    assert (resolved.resolved_at, resolved.deployment) == (at(10), None)


# ---- 2. all or nothing ----------------------------------------------------------------------


def test_a_failing_cycle_leaves_nothing_behind(store: SqlStore) -> None:
    """An action whose payload json cannot encode fails the whole cycle: no result, sample,
    state, incident, version, deployment or action is kept, and the store stays usable."""
    result = replace(down(at(3)), checks=(replace(check(Outcome.DOWN, when=at(3)), version="2"),))
    broken = _decide(
        result,
        INCIDENT,
        [_act("open", title="t"), _act("comment", body={"x": object()})],
        deployment=Deployment("production", "1", "2", at(3)),
    )

    with pytest.raises(TypeError, match="not JSON serializable"):
        store.commit_cycle(broken)

    _assert_nothing_of_the_cycle(store)
    store.commit_cycle(
        replace(broken, actions=[_act("open", title="t")])
    )  # no transaction left open
    assert [a.kind for a in store.pending_actions()] == ["open"]
    assert store.load_states() == {"production": _open(INCIDENT)}


def test_cycles_committed_together_are_all_or_nothing(store: SqlStore) -> None:
    """commit_cycles writes several cycles in one transaction, in order: a failure in the
    last one leaves nothing of the earlier ones; once it is fixed, all of them land as
    one commit_cycle each would have written them."""
    staging = _decide(up(at(1), target="staging"))
    opened = _decide(down(at(2)), INCIDENT, [_act("open", title="t")])
    broken = replace(opened, actions=[_act("open", title="t"), _act("comment", body=object())])

    with pytest.raises(TypeError, match="not JSON serializable"):
        store.commit_cycles([staging, broken])

    _assert_nothing_of_the_cycle(store)
    assert store.recent_check_results("staging", since=T0, limit=10) == []
    store.commit_cycles([staging, opened, _decide(down(at(3)), INCIDENT)])
    assert [r["started_at"] for r in store.recent_check_results("production", T0, 10)] == [
        ts(at(2)),
        ts(at(3)),
    ]
    assert len(store.recent_check_results("staging", since=T0, limit=10)) == 1
    assert store.load_states() == {
        "staging": TrackerState("staging"),
        "production": _open(INCIDENT),
    }
    assert [a.kind for a in store.pending_actions()] == ["open"]


def test_cycles_committed_together_under_a_stale_fence(store: SqlStore) -> None:
    """One decision in a batch under a passed epoch refuses the whole batch, observations
    too; a batch of observations alone needs no epoch."""
    store.claim_leadership("ams", "i-1", T0)
    store.claim_leadership("ams", "i-1", at(1))
    store.fence(1)
    observed = _decide(up(at(1), target="staging")).observation()
    decided = _decide(down(at(2)), INCIDENT, [_act("open", title="t")])

    with pytest.raises(NotLeader, match="epoch is 2"):
        store.commit_cycles([observed, decided])

    assert store.recent_check_results("staging", since=T0, limit=10) == []
    _assert_nothing_of_the_cycle(store)
    store.commit_cycles([observed, decided.observation()])
    assert len(store.recent_check_results("staging", since=T0, limit=10)) == 1
    assert len(store.recent_check_results("production", since=T0, limit=10)) == 1
    assert store.load_states() == {}


# ---- 3. outbox queues -----------------------------------------------------------------------


def test_outbox_queue_semantics(store: SqlStore) -> None:
    """Heads of each target's queue per channel, channels independent; lease hides an action
    until its time; retry_later counts and keeps the error; complete records the handle (and
    the issue); next_due_at and outbox_stats follow."""
    assert store.outbox_stats(T0) == (0, 0.0)
    assert store.next_due_at("github") is None
    store.commit_cycle(_decide(down(T0), INCIDENT))
    store.commit_cycle(_decide(down(T0, target="staging"), Incident(OTHER, "staging", T0)))
    store.enqueue(
        [
            _act("open"),
            _act("comment", key="a"),
            _act("open", OTHER),
            _act("post", channel="journal", line="x"),
            _act("post", channel="journal", line="y"),
        ],
        T0,
    )

    heads = store.due_actions("github", T0)
    assert _shape(heads) == [("github", INCIDENT.id, "open"), ("github", OTHER, "open")]
    assert _shape(store.due_actions("journal", T0)) == [("journal", INCIDENT.id, "post")]
    assert store.due_actions("github", T0, limit=1) == heads[:1]
    assert store.next_due_at("github") == T0
    assert store.outbox_stats(at(10)) == (5, 600.0)
    opening, other_open = heads

    store.lease(opening, at(5))
    assert _shape(store.due_actions("github", at(1))) == [("github", OTHER, "open")]
    assert _shape(store.due_actions("journal", at(1))) == [("journal", INCIDENT.id, "post")]
    assert store.due_actions("github", at(5))[0].id == opening.id  # due again when the lease ends

    store.retry_later(other_open, "server_error: 502", at(10))
    store.retry_later(other_open, "x" * 600, at(10))
    assert store.next_due_at("github") == at(5)
    [retried] = [a for a in store.pending_actions("github") if a.id == other_open.id]
    assert (retried.attempts, retried.last_error, retried.next_attempt_at) == (2, "x" * 500, at(10))
    store.retry_later(other_open, "server_error: 502", at(10))
    [retried] = [a for a in store.pending_actions("github") if a.id == other_open.id]
    assert (retried.attempts, retried.last_error) == (3, "server_error: 502")
    assert store.due_actions("github", at(4)) == []  # one leased, one retrying

    issue = ChannelHandle(42, "https://github.example/42")
    store.complete(store.due_actions("github", at(5))[0], at(6), issue)
    assert store.handle("github", INCIDENT.id) == ChannelHandle(42, "https://github.example/42")
    row = store.incident(INCIDENT.id)
    assert row is not None
    assert (row.issue_number, row.issue_url) == (42, "https://github.example/42")
    assert _shape(store.due_actions("github", at(6))) == [("github", INCIDENT.id, "comment")]
    assert store.next_due_at("github") == T0  # the comment, due since T0 behind the open

    [post, _] = store.pending_actions("journal")
    store.complete(post, at(7), ChannelHandle(ref="ts-1"))
    assert store.handle("journal", INCIDENT.id) == ChannelHandle(None, None, "ts-1")
    assert store.handle("journal", OTHER) is None
    row = store.incident(INCIDENT.id)
    assert row is not None
    assert row.issue_number == 42  # a handle without a number is no issue
    assert [a.payload["line"] for a in store.due_actions("journal", at(7))] == ["y"]

    store.set_issue(OTHER, 43, None)
    assert store.handle("github", OTHER) == ChannelHandle(43, None, None)
    staging = store.incident(OTHER)
    assert staging is not None
    assert (staging.issue_number, staging.issue_url) == (43, None)
    assert store.outbox_stats(at(10)) == (3, 600.0)


def test_a_newer_edit_supersedes_only_an_untried_one(store: SqlStore) -> None:
    """An edit replaces an older edit of the same incident and channel not yet tried; a tried
    one, or one of another incident, stays; the queue order is otherwise kept."""
    store.enqueue([_act("open"), _act("edit", body="v1"), _act("comment", key="c")], T0)
    store.enqueue([_act("edit", OTHER, body="theirs")], T0)
    store.enqueue([_act("edit", body="v2")], at(1))

    assert [(a.incident_id, a.kind, a.payload.get("body")) for a in store.pending_actions()] == [
        (INCIDENT.id, "open", None),
        (INCIDENT.id, "comment", None),
        (OTHER, "edit", "theirs"),
        (INCIDENT.id, "edit", "v2"),
    ]
    [v2] = [a for a in store.pending_actions() if a.payload.get("body") == "v2"]
    store.retry_later(v2, "timeout", at(2))  # tried: no longer superseded
    store.enqueue([_act("edit", body="v3")], at(3))
    assert [a.payload["body"] for a in store.pending_actions() if a.kind == "edit"] == [
        "theirs",
        "v2",
        "v3",
    ]


def test_an_edit_being_sent_is_not_superseded(store: SqlStore) -> None:
    """A claimed edit (sent now, its answer not yet in: no lease, the clock not moved) is
    kept when a newer one is planned, so a late landing of it cannot overwrite the newer."""
    store.enqueue([_act("edit", body="v1")], T0)
    [v1] = store.pending_actions()
    store.lease(v1, T0)  # claimed with no lease time, at the very instant it was queued
    store.enqueue([_act("edit", body="v2")], T0)
    assert [a.payload["body"] for a in store.pending_actions()] == ["v1", "v2"]


# ---- 4. sessions ----------------------------------------------------------------------------


def test_sessions_of_two_instances(store: SqlStore) -> None:
    """A killed older session ends at its last heartbeat, a stopped one at its stop; each
    instance's newest session with a recent heartbeat runs until now, both at once."""
    stopped = store.start_session(at(-30), instance="b")
    store.stop_session(stopped, at(-20))
    killed = store.start_session(at(0), instance="a")
    store.heartbeat(killed, at(10))
    b_live = store.start_session(at(5), instance="b")
    store.heartbeat(b_live, at(58))
    a_live = store.start_session(at(11), instance="a")
    store.heartbeat(a_live, at(59))
    assert len({stopped, killed, b_live, a_live}) == 4

    spans = store.sessions(Span(at(-60), at(61)), now=at(60))
    assert sorted((s.start, s.end) for s in spans) == [
        (at(-30), at(-20)),
        (at(0), at(10)),
        (at(5), at(60)),
        (at(11), at(60)),
    ]
    # outside the window: the stopped one goes
    spans = store.sessions(Span(at(-10), at(61)), now=at(60))
    assert sorted((s.start, s.end) for s in spans) == [
        (at(0), at(10)),
        (at(5), at(60)),
        (at(11), at(60)),
    ]
    # heartbeats older than the grace: the newest sessions end at them too
    spans = store.sessions(Span(at(-10), at(80)), now=at(70), live_grace_s=180.0)
    assert sorted((s.start, s.end) for s in spans) == [
        (at(0), at(10)),
        (at(5), at(58)),
        (at(11), at(59)),
    ]


# ---- 5. rollups -----------------------------------------------------------------------------


def test_rollups_write_read_and_upsert(store: SqlStore) -> None:
    """Rows read back as written (types included), [start, end) by bucket; totals sum as
    floats (0.0 on an empty range), maintenance among them; the watermark moves; the same
    key twice upserts."""
    hour0 = _rollup("hour", "*", T0, up_s=3100.0, maintenance_s=300.0)
    hour1 = _rollup("hour", "*", T0 + timedelta(hours=1), up_s=3600.0, down_s=0.0, unknown_s=0.0)
    check_hour = _rollup("hour", "health", T0, latency_min=None, latency_max=None, probes=0)
    day = _rollup("day", "*", T0 - timedelta(hours=12), up_s=80000.0, unknown_s=6400.0)
    store.write_rollups([hour0, hour1, check_hour, day], T0 + timedelta(hours=2))

    end = T0 + timedelta(hours=2)
    assert store.rollups("hour", "production", "*", T0, end) == [hour0, hour1]
    assert store.rollups("hour", "production", "*", T0, T0 + timedelta(hours=1)) == [hour0]
    assert store.rollups("hour", "production", "health", T0, end) == [check_hour]
    assert store.rollups("day", "production", "*", T0 - timedelta(days=1), end) == [day]
    assert store.rollups("hour", "staging", "*", T0, end) == []
    both = store.rollups_any("hour", "production", T0, end)
    assert sorted(both, key=lambda r: (r["bucket"], r["check_name"])) == [hour0, check_hour, hour1]
    assert [r["bucket"] for r in both] == sorted(r["bucket"] for r in both)

    totals = store.rollup_totals("hour", "production", "*", T0, end)
    assert totals == (2, 6700.0, 160.0, 100.0, 20.0, 300.0)
    assert [type(v) for v in totals] == [int, float, float, float, float, float]
    empty = store.rollup_totals("hour", "production", "*", end, end + timedelta(hours=5))
    assert empty == (0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert [type(v) for v in empty] == [int, float, float, float, float, float]
    assert store.meta("rollup_watermark") == str(ts(end))
    assert store.meta("no such key") is None

    changed = {**hour0, "up_s": 3000.0, "unknown_s": 420.0, "probes": 61}
    store.write_rollups([changed], None)  # no watermark: it stays
    assert store.rollups("hour", "production", "*", T0, end) == [changed, hour1]
    assert store.rollup_totals("hour", "production", "*", T0, end) == (
        2,
        6600.0,
        160.0,
        100.0,
        420.0,
        300.0,
    )
    assert store.meta("rollup_watermark") == str(ts(end))
    store.write_rollups([], end + timedelta(hours=1))
    assert store.meta("rollup_watermark") == str(ts(end + timedelta(hours=1)))


# ---- 6. latency slots and medians -----------------------------------------------------------

# (seconds after T0, duration, outcome) of the ``health`` probes: three 60 s slots
HEALTH_PROBES = [
    (0, 0.10, Outcome.UP),
    (20, 0.30, Outcome.DOWN),
    (40, 0.20, Outcome.DEGRADED),
    (60, 0.05, Outcome.UP),
    (75, 0.50, Outcome.UP),
    (90, 0.40, Outcome.DOWN),
    (105, 0.15, Outcome.DEGRADED),
    (120, 0.60, Outcome.DOWN),
    (150, 0.25, Outcome.UP),
    (179, 0.35, Outcome.DEGRADED),
]


def _write_latency_data(store: SqlStore) -> None:
    def second(s: float) -> datetime:
        return T0 + timedelta(seconds=s)

    for offset, duration, outcome in HEALTH_PROBES:
        store.commit_cycle(
            PendingCycle(_probe(second(offset), duration, outcome), 120.0, None, None, ())
        )
    store.commit_cycle(
        PendingCycle(_probe(second(30), 0.7, name="monitoring"), 120.0, None, None, ())
    )
    # outside the range, or another target: never counted
    store.commit_cycle(PendingCycle(_probe(second(-10), 9.0), 120.0, None, None, ()))
    store.commit_cycle(PendingCycle(_probe(second(181), 9.0), 120.0, None, None, ()))
    store.commit_cycle(
        PendingCycle(_probe(second(50), 9.0, target="staging"), 120.0, None, None, ())
    )


def test_latency_slots(store: SqlStore) -> None:
    """Per check and slot: when the slowest probe started, its duration, probes, down and
    degraded counts; the same tuples from both backends."""
    _write_latency_data(store)
    end = T0 + timedelta(seconds=180)

    assert store.latency_slots("production", T0, end, 60.0) == {
        "health": [
            (ts(T0) + 20, 0.30, 3, 1, 1),
            (ts(T0) + 75, 0.50, 4, 1, 1),
            (ts(T0) + 120, 0.60, 3, 1, 1),
        ],
        "monitoring": [(ts(T0) + 30, 0.7, 1, 0, 0)],
    }
    assert store.latency_slots("production", T0, end, 90.0)["health"] == [
        (ts(T0) + 75, 0.50, 5, 1, 1),
        (ts(T0) + 120, 0.60, 5, 2, 2),
    ]
    assert store.latency_slots("nobody", T0, end, 60.0) == {}


def test_median_duration(store: SqlStore) -> None:
    """The median of the durations in [start, end] (the mean of the middle two for an even
    count), None without probes."""
    _write_latency_data(store)
    end = T0 + timedelta(seconds=180)

    assert store.median_duration("production", "health", T0, end, 10) == (0.25 + 0.30) / 2
    assert store.median_duration("production", "health", T0, end, 9) == 0.25
    assert store.median_duration("production", "monitoring", T0, end, 1) == 0.7
    assert store.median_duration("production", "health", T0, end, 0) is None
    assert store.median_duration("production", "health", at(10), at(20), 3) is None


# ---- 7. retention ---------------------------------------------------------------------------


def test_purge_deletes_past_retention_and_counts(store: SqlStore) -> None:
    """purge() removes raw results and samples, finished outbox rows, rollups, sessions,
    deployments and resolved incidents older than their cut-offs, and counts per table;
    what is pending, open or newer stays."""
    gone = Incident("production-20261101T100000Z", "production", at(-120), resolved_at=at(-90))
    still_open = Incident("production-20261101T101000Z", "production", at(-110))
    recent = Incident("production-20261101T113000Z", "production", at(-30), resolved_at=at(-10))
    store.commit_cycle(
        _decide(
            down(at(-100)),
            gone,
            [_act("open", gone.id), _act("open", still_open.id)],
            deployment=Deployment("production", "1", "2", at(-100)),
        )
    )
    store.commit_cycle(_decide(down(at(-60)), still_open))
    store.commit_cycle(
        _decide(
            up(at(0)),
            recent,
            [_act("open", recent.id)],
            deployment=Deployment("production", "2", "3", at(0)),
        )
    )
    done_old, pending_old, done_new = store.pending_actions()
    store.complete(done_old, at(-95))
    store.complete(done_new, at(-1))
    old_session = store.start_session(at(-200))
    store.stop_session(old_session, at(-150))
    live = store.start_session(at(-100))
    store.heartbeat(live, at(-40))
    store.write_rollups([_rollup("hour", "*", at(-120)), _rollup("hour", "*", at(-30))], None)
    store.put_github_records(
        [GithubRecord("run", "1", at(-60), {"n": 1}), GithubRecord("run", "2", at(-40), {})]
    )

    counts = store.purge(raw_before=at(-80), rollups_before=at(-50))

    assert counts == {
        "check_results": 1,
        "target_samples": 1,
        "outbox": 1,
        "rollups": 1,
        "sessions": 1,
        "deployments": 1,
        "incidents": 1,
        "github_records": 1,
    }
    assert [r.key for r in store.github_records("run")] == ["2"]
    assert [r["started_at"] for r in store.recent_check_results("production", at(-200), 10)] == [
        ts(at(-60)),
        ts(at(0)),
    ]
    assert [s.at for s in store.samples("production", Span(at(-200), at(1)), 0.0)] == [
        at(-60),
        at(0),
    ]
    assert [a.id for a in store.pending_actions()] == [pending_old.id]
    assert [r["bucket"] for r in store.rollups_any("hour", "production", at(-200), at(1))] == [
        ts(at(-30))
    ]
    assert store.sessions(Span(at(-300), at(1)), now=at(0), live_grace_s=0.0) == [
        Span(at(-100), at(-40))
    ]
    assert [d.seen_at for d in store.deployments(None)] == [at(0)]
    assert sorted(i.id for i in store.incidents()) == sorted([still_open.id, recent.id])
    assert store.purge(raw_before=at(-80), rollups_before=at(-50)) == dict.fromkeys(counts, 0)


def test_github_records_upsert_by_kind_and_key_and_read_by_time(store: SqlStore) -> None:
    """A re-read replaces its record (a re-run keeps its id); reads are ordered by time
    and bounded [since, until); kinds do not mix."""
    store.put_github_records(
        [
            GithubRecord("run", "7", at(10), {"attempt": 1, "conclusion": "failure"}),
            GithubRecord("run", "8", at(5), {"attempt": 1}),
            GithubRecord("deployment", "7", at(1), {"sha": "abc"}),
        ]
    )
    store.put_github_records(
        [GithubRecord("run", "7", at(10), {"attempt": 2, "conclusion": "success"})]
    )
    runs = store.github_records("run")
    assert [(r.key, r.at, dict(r.payload)) for r in runs] == [
        ("8", at(5), {"attempt": 1}),
        ("7", at(10), {"attempt": 2, "conclusion": "success"}),
    ]
    assert [r.key for r in store.github_records("run", since=at(6))] == ["7"]
    assert [r.key for r in store.github_records("run", until=at(10))] == ["8"]
    assert store.github_record("deployment", "7") == GithubRecord(
        "deployment", "7", at(1), {"sha": "abc"}
    )
    assert store.github_record("deployment", "8") is None


def test_enqueue_once_enqueues_a_key_only_once(store: SqlStore) -> None:
    """The weekly report: a second enqueue under the same key adds nothing, even from
    another store on the same database; the steps queue like any other."""
    report = NewAction("github", "kpi-report-2026-W48", "kpi-report", "report", {"week": "W48"})
    assert store.enqueue_once("kpi-report:2026-W48", [report], T0) is True
    assert store.enqueue_once("kpi-report:2026-W48", [report], at(1)) is False
    assert [(a.kind, a.target) for a in store.pending_actions("github")] == [
        ("report", "kpi-report")
    ]
    assert store.meta("once:kpi-report:2026-W48") is not None


def test_a_deposed_leader_enqueues_no_report(store: SqlStore) -> None:
    """enqueue_once is fenced like every decision: a stale epoch writes nothing."""
    epoch = store.claim_leadership("ams", "i-1", T0)
    store.claim_leadership("ord", "i-2", T0)
    store.fence(epoch)
    report = NewAction("github", "kpi-report-2026-W48", "kpi-report", "report", {})
    with pytest.raises(NotLeader):
        store.enqueue_once("kpi-report:2026-W48", [report], T0)
    store.fence(None)
    assert store.pending_actions() == []
    assert store.meta("once:kpi-report:2026-W48") is None


# ---- 8. leadership and fencing --------------------------------------------------------------


def test_claim_leadership_counts_epochs(store: SqlStore) -> None:
    """Epochs start at 1 and grow by one per claim; leadership() names the latest holder."""
    assert store.leadership() is None
    assert store.claim_leadership("ams", "i-1", T0) == 1
    assert store.leadership() == Leadership(1, "ams", "i-1", T0)
    assert store.claim_leadership("ams", "i-1", at(1)) == 2
    assert store.leadership() == Leadership(2, "ams", "i-1", at(1))


def test_a_stale_fence_refuses_every_decision(store: SqlStore) -> None:
    """Under a passed epoch, a decided cycle, complete, lease, retry_later, set_issue,
    write_rollups and purge raise NotLeader (a StoreError) and change nothing; the cycle's
    observation still commits; fence(None) and the current epoch write freely."""
    assert issubclass(NotLeader, StoreError)
    old = Incident("old", "production", at(-100), resolved_at=at(-90))
    store.commit_cycle(_decide(down(at(-100)), old))
    store.enqueue([_act("open")], T0)
    [action] = store.pending_actions()
    store.claim_leadership("ams", "i-1", T0)
    assert store.claim_leadership("ams", "i-1", at(1)) == 2

    store.fence(1)
    cycle = _decide(down(at(3)), INCIDENT, [_act("comment", key="k")])
    with pytest.raises(NotLeader, match="epoch is 2"):
        store.commit_cycle(cycle)
    assert store.recent_check_results("production", since=T0, limit=10) == []
    assert store.incident(INCIDENT.id) is None
    assert store.load_states() == {"production": _open(old)}
    assert store.pending_actions() == [action]

    store.commit_cycle(cycle.observation())  # results (and a view) are no decision
    assert len(store.recent_check_results("production", since=T0, limit=10)) == 1
    assert store.samples("production", Span(T0, at(10)), 0.0) == []

    refused = [
        lambda: store.complete(action, at(4), ChannelHandle(7, "u")),
        lambda: store.lease(action, at(9)),
        lambda: store.retry_later(action, "boom", at(9)),
        lambda: store.set_issue("old", 8, "u"),
        lambda: store.write_rollups([_rollup("hour", "*", T0)], at(60)),
        lambda: store.purge(at(60), at(60)),
    ]
    for write in refused:
        with pytest.raises(NotLeader):
            write()
    assert store.pending_actions() == [action]
    assert store.handle("github", INCIDENT.id) is None
    assert store.handle("github", "old") is None
    assert store.rollups_any("hour", "production", T0, at(120)) == []
    assert store.meta("rollup_watermark") is None
    assert store.incident("old") is not None
    assert len(store.recent_check_results("production", since=at(-200), limit=10)) == 2

    store.fence(2)
    store.commit_cycle(cycle)
    store.lease(action, at(5))
    store.fence(None)
    store.retry_later(action, "boom", at(6))
    store.complete(action, at(7), ChannelHandle(7, "u"))
    store.set_issue("old", 8, "u")
    store.write_rollups([_rollup("hour", "*", T0)], at(60))
    assert store.purge(at(-80), at(-80))["incidents"] == 1  # "old", resolved at -90
    assert store.load_states() == {"production": _open(INCIDENT)}
    assert store.incident(INCIDENT.id) is not None
    assert store.handle("github", INCIDENT.id) == ChannelHandle(7, "u")
    assert [a.kind for a in store.pending_actions()] == ["comment"]
    assert store.meta("rollup_watermark") == str(ts(at(60)))


def test_another_store_claiming_fences_off_the_first(database: Database, store: SqlStore) -> None:
    """A second store object on the same database that claims leadership deposes the first:
    its next decision raises NotLeader, while the new leader writes."""
    epoch = store.claim_leadership("ams", "i-1", T0)
    store.fence(epoch)
    store.commit_cycle(_decide(down(at(1)), INCIDENT, [_act("open")]))
    [opening] = store.pending_actions()

    successor = database.open()
    new_epoch = successor.claim_leadership("ord", "i-2", at(2))
    assert new_epoch == epoch + 1
    successor.fence(new_epoch)
    assert store.leadership() == Leadership(new_epoch, "ord", "i-2", at(2))

    with pytest.raises(NotLeader):
        store.complete(opening, at(3), ChannelHandle(7, "u"))
    with pytest.raises(NotLeader):
        store.commit_cycle(_decide(down(at(3)), INCIDENT))
    successor.complete(opening, at(3), ChannelHandle(7, "u"))
    successor.commit_cycle(_decide(up(at(4))))
    assert store.pending_actions() == []
    assert store.load_states() == {"production": TrackerState("production")}
    assert [r["started_at"] for r in store.recent_check_results("production", T0, 10)] == [
        ts(at(1)),
        ts(at(4)),
    ]


def test_a_follower_decides_nothing_before_anyone_leads(store: SqlStore) -> None:
    """fence(0) refuses decisions even before any leadership epoch was claimed."""
    store.fence(0)
    with pytest.raises(NotLeader):
        store.commit_cycle(_decide(down(at(3)), INCIDENT, [_act("open")]))
    assert store.incident(INCIDENT.id) is None


# ---- 9. region views ------------------------------------------------------------------------


def _view(region: str, when: datetime, outcome: Outcome, hold_s: float = 3600.0) -> RegionView:
    result = _probe(when, 0.05, outcome)
    return RegionView("production", region, when, outcome, at(1), 3, hold_s, result)


def test_region_views(database: Database, store: SqlStore) -> None:
    """A region's view is stored with its results (which name the region), aged by the
    database's clock; an older view never replaces a newer; regions come back ordered."""
    ord_view = _view("ord", at(3), Outcome.DOWN)
    store.commit_cycle(
        PendingCycle(ord_view.result, 120.0, None, None, (), region="ord", view=ord_view)
    )
    [stored] = store.region_views("production")
    assert 0.0 <= stored.age_s < 5.0
    assert stored.fresh
    assert stored == replace(ord_view, age_s=stored.age_s)

    older = _view("ord", at(2), Outcome.UP)
    store.commit_cycle(PendingCycle(older.result, 120.0, None, None, (), region="ord", view=older))
    assert [(v.at, v.outcome) for v in store.region_views("production")] == [(at(3), Outcome.DOWN)]
    newer = _view("ord", at(4), Outcome.UP, hold_s=0.0)
    store.commit_cycle(PendingCycle(newer.result, 120.0, None, None, (), region="ord", view=newer))
    [latest] = store.region_views("production")
    assert (latest.at, latest.outcome, latest.fresh) == (at(4), Outcome.UP, False)

    ams = _view("ams", at(4), Outcome.UP)
    store.commit_cycle(PendingCycle(ams.result, 120.0, None, None, (), region="ams", view=ams))
    store.commit_cycle(_decide(up(at(5))))  # a cycle without a region: "local"
    assert [v.region for v in store.region_views("production")] == ["ams", "ord"]
    assert [v.region for v in store.region_views()] == ["ams", "ord"]
    assert store.region_views("staging") == []

    regions = database.sql(
        "SELECT region, started_at FROM check_results ORDER BY started_at, region"
    )
    assert regions == [
        ("ord", ts(at(2))),
        ("ord", ts(at(3))),
        ("ams", ts(at(4))),
        ("ord", ts(at(4))),
        ("local", ts(at(5))),
    ]


# ---- 10. schema versions --------------------------------------------------------------------


def test_schema_version_on_open(database: Database, store: SqlStore) -> None:
    """A new database reports upgraded_from 0; opening it again reports this monitor's
    schema version (nothing left to migrate)."""
    assert store.upgraded_from == 0
    assert database.open().upgraded_from == database.schema_version
    assert database.sql("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(database.schema_version),)
    ]


def _refuse_newer_schema(database: Database, store: SqlStore) -> pytest.ExceptionInfo[StoreError]:
    """Mark the database as a newer monitor's and try to open it."""
    store.close()
    database.sql(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'",
        (str(database.schema_version + 1),),
    )
    with pytest.raises(StoreError) as refused:
        database.open()
    return refused


def test_a_newer_schema_is_refused(database: Database, store: SqlStore) -> None:
    """A database from a newer monitor raises StoreError naming both versions."""
    refused = _refuse_newer_schema(database, store)
    message = str(refused.value)
    assert f"schema version {database.schema_version + 1}" in message
    assert f"({database.schema_version})" in message


def test_a_refused_open_leaves_no_connection_behind(database: Database, store: SqlStore) -> None:
    """A store that refuses to open closes what it opened."""
    _refuse_newer_schema(database, store)
    assert database.connections_left() == 0


# ---- 11. PostgreSQL only --------------------------------------------------------------------


def test_postgres_reconnects_after_a_restart(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """After the server restarts, the same store fails for a call or a short while, then
    works again on a new connection, with everything committed before still there."""
    store = PostgresStore(postgres_url)
    try:
        store.commit_cycle(_decide(down(at(1)), INCIDENT, [_act("open")]))
        postgres_server.restart()

        failures = 0
        deadline = time.monotonic() + 10.0
        while True:
            try:
                states = store.load_states()
                break
            except StoreError:
                failures += 1
                assert time.monotonic() < deadline, "the store did not reconnect within 10 s"
                time.sleep(0.05)
        assert failures >= 1  # the broken connection showed as a StoreError, not a crash
        assert states == {"production": _open(INCIDENT)}
        assert store.incident(INCIDENT.id) is not None
        assert _shape(store.pending_actions()) == [("github", INCIDENT.id, "open")]
        store.commit_cycle(_decide(up(at(2))))  # and it writes
        assert len(store.recent_check_results("production", T0, 10)) == 2
    finally:
        store.close()


def test_postgres_errors_never_show_the_password() -> None:
    """A StoreError about an unreachable database does not repeat the URL's password."""
    url = f"postgresql://postgres:s3cretpw@{HOST}:{free_port()}/x"

    with pytest.raises(StoreError) as failed:
        PostgresStore(url)

    assert "s3cretpw" not in str(failed.value)
    assert "cannot connect" in str(failed.value)


def test_postgres_rides_out_a_server_down_for_a_while(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Server killed: every call raises StoreError (none naming the URL's password) until it
    is back, then the same store works again without being reopened."""
    secret_url = postgres_url.replace("postgres@", "postgres:s3cretpw@", 1)  # trust auth ignores it
    store = PostgresStore(secret_url)
    try:
        store.commit_cycle(_decide(down(at(1))))
        postgres_server.kill()
        messages = []
        for _ in range(3):
            with pytest.raises(StoreError) as down_now:
                store.load_states()
            messages.append(str(down_now.value))
        with pytest.raises(StoreError) as write_down:
            store.commit_cycle(_decide(down(at(2))))
        messages.append(str(write_down.value))
        assert all("s3cretpw" not in message for message in messages), messages
        postgres_server.start()

        deadline = time.monotonic() + 10.0
        while True:
            try:
                store.commit_cycle(_decide(down(at(3))))
                break
            except StoreError as exc:
                messages.append(str(exc))
                assert time.monotonic() < deadline, "the store did not reconnect within 10 s"
                time.sleep(0.05)
        assert all("s3cretpw" not in message for message in messages), messages
        assert store.load_states() == {"production": TrackerState("production")}
        assert ts(at(3)) in [
            row["started_at"] for row in store.recent_check_results("production", T0, 10)
        ]
    finally:
        store.close()


def test_freshness_is_judged_by_the_database_clock_not_the_regions(store: SqlStore) -> None:
    """A region whose clock runs 30 s ahead (or behind) is neither fresher nor staler for
    it: a view's age counts from when the database stored it."""
    now = datetime.now(UTC)
    for region, skew_s in (("ams", 30.0), ("sin", -30.0)):
        when = now + timedelta(seconds=skew_s)
        view = replace(_view(region, when, Outcome.DOWN, hold_s=0.5), since=when)
        store.commit_cycle(
            PendingCycle(view.result, 120.0, None, None, (), region=region, view=view)
        )
    assert [(v.region, v.fresh) for v in store.region_views("production")] == [
        ("ams", True),
        ("sin", True),
    ]
    time.sleep(0.6)
    assert [(v.region, v.fresh) for v in store.region_views("production")] == [
        ("ams", False),
        ("sin", False),
    ]


def test_a_statement_the_database_refuses_mid_cycle_leaves_nothing(
    database: Database, store: SqlStore
) -> None:
    """A failure the database reports only when the cycle reaches it (PostgreSQL sends a
    cycle as one pipeline and learns of errors at its end) rolls the whole cycle back,
    and the store works on afterwards."""
    store.commit_cycle(_decide(down(at(1))))
    database.sql("DROP TABLE deployments")
    deployment = Deployment("production", "1.0", "1.1", at(2))
    with pytest.raises(StoreError):
        store.commit_cycle(_decide(down(at(2)), deployment=deployment))
    assert [r["started_at"] for r in store.recent_check_results("production", T0, 10)] == [
        ts(at(1))
    ]
    store.commit_cycle(_decide(down(at(3))))
    assert len(store.recent_check_results("production", T0, 10)) == 2
