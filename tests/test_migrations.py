"""SQLite schema migrations: files written by earlier releases upgrade in place, losing nothing.

Two fixtures stand for them (see fixtures/README.md): release 0.1.0's file (schema
version 1, one issue sink) and the last file of schema version 2 (channels, before
several instances).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import load_settings
from monitor.figures.history import History
from monitor.figures.slo import Span
from monitor.incidents.tracker import Phase
from monitor.store.base import ChannelHandle, StoreError
from monitor.store.sqlite import SqliteStore
from monitor.store.sqlite_schema import SCHEMA_VERSION

V1_FILE = Path(__file__).parent / "fixtures" / "state-v1.sqlite"
INCIDENT = "production-20261101T120400Z"  # the fixture's one incident (see fixtures/README.md)
V2_FILE = Path(__file__).parent / "fixtures" / "state-v2.sqlite"
V2_INCIDENT = "production-20261201T121400Z"  # resolved, issue #12, its close still pending
V2_ISSUE_URL = "https://github.com/acme/web/issues/12"


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    """A fresh copy of the 0.1.0 state file."""
    path = tmp_path / "state.db"
    shutil.copy(V1_FILE, path)
    return path


@pytest.fixture
def v2_copy(tmp_path: Path) -> Path:
    """A fresh copy of the schema version 2 state file."""
    path = tmp_path / "state.db"
    shutil.copy(V2_FILE, path)
    return path


def counts(path: Path, tables: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per table (every table in the file unless named), read by a separate connection."""
    with sqlite3.connect(path) as db:
        if tables is None:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def assert_upgraded_rows_are_local(path: Path) -> None:
    """Version 3 on rows written before it: the one instance there was is "local", and no
    region has voted and nobody has led yet."""
    with sqlite3.connect(path) as db:
        regions = db.execute("SELECT DISTINCT region FROM check_results").fetchall()
        instances = db.execute("SELECT DISTINCT instance FROM sessions").fetchall()
    assert regions == [("local",)]
    assert instances == [("local",)]
    assert counts(path, ["region_views", "leadership"]) == {"region_views": 0, "leadership": 0}


def schema_version(path: Path) -> int:
    """The version recorded in the file."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def test_release_0_1_0_file_upgrades_in_place_and_loses_nothing(v1_copy: Path) -> None:
    """Every row survives every migration up to the current version, old outbox rows become
    GitHub's, the known issue is its handle, and old results and sessions are "local"."""
    before = counts(v1_copy)
    assert schema_version(v1_copy) == 1
    store = SqliteStore(v1_copy)
    try:
        assert store.upgraded_from == 1
        assert counts(v1_copy, before) == before
        assert schema_version(v1_copy) == SCHEMA_VERSION
        assert counts(v1_copy, ["channel_handles"]) == {"channel_handles": 1}
        assert_upgraded_rows_are_local(v1_copy)
        pending = store.pending_actions()
        assert pending, "the fixture holds pending actions"
        assert {a.channel for a in pending} == {"github"}
        assert store.pending_actions("journal") == []
        # the head of production's queue is still the oldest pending step
        [head] = store.due_actions("github", datetime(2030, 1, 1, tzinfo=UTC))
        assert head.id == pending[0].id
        assert store.handle("github", INCIDENT) == ChannelHandle(
            7, "https://github.com/acme/web/issues/7"
        )
        row = store.incident(INCIDENT)
        assert row is not None
        assert row.issue_number == 7
        states = store.load_states()
        assert states["production"].phase is Phase.OPEN
        assert states["staging"].phase is Phase.HEALTHY
    finally:
        store.close()


def test_upgraded_history_still_adds_up(v1_copy: Path) -> None:
    """Rollups and raw samples of the old file give the same account after the upgrade."""
    settings = load_settings(
        None,
        monitor={"state_path": str(v1_copy), "interval": 60, "incident_interval": 60},
        github={"enabled": False},
    )
    store = SqliteStore(v1_copy)
    try:
        start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        window = Span(start, start + timedelta(hours=2))
        account = History(store, settings).account("staging", window, start + timedelta(hours=3))
        assert account.up_s == pytest.approx(72 * 60, abs=120)  # 72 healthy minutes, and holds
        assert account.down_s == 0
    finally:
        store.close()


def test_schema_2_file_upgrades_in_place_and_loses_nothing(v2_copy: Path) -> None:
    """Every table keeps its row count (channel handles too), old results and sessions
    become the "local" instance's, and the new region_views and leadership are empty."""
    before = counts(v2_copy)
    assert schema_version(v2_copy) == 2
    assert "region_views" not in before
    assert before["channel_handles"] == 1, "the fixture holds the incident's issue"
    assert all(before[t] for t in ["check_results", "target_samples", "outbox", "rollups"])
    store = SqliteStore(v2_copy)
    try:
        assert store.upgraded_from == 2
        assert counts(v2_copy, before) == before
        assert schema_version(v2_copy) == SCHEMA_VERSION
        assert_upgraded_rows_are_local(v2_copy)
    finally:
        store.close()


def test_upgraded_schema_2_store_keeps_working(v2_copy: Path) -> None:
    """After the upgrade the incident keeps its issue and handle, the pending step is still
    due, and leadership starts at epoch 1 and grows by one per claim."""
    store = SqliteStore(v2_copy)
    try:
        [incident] = store.incidents()
        assert incident.id == V2_INCIDENT
        assert incident.issue_number == 12
        assert incident.issue_url == V2_ISSUE_URL
        assert incident.resolved_at is not None
        assert store.handle("github", V2_INCIDENT) == ChannelHandle(12, V2_ISSUE_URL)
        [pending] = store.pending_actions()
        assert (pending.channel, pending.kind, pending.attempts) == ("github", "close", 12)
        assert store.due_actions("github", datetime(2030, 1, 1, tzinfo=UTC)) == [pending]
        assert store.load_states()["production"].phase is Phase.HEALTHY
        now = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
        assert store.leadership() is None
        assert store.claim_leadership("ams", "i-1", now) == 1
        assert store.claim_leadership("ams", "i-1", now) == 2
        leader = store.leadership()
        assert leader is not None
        assert (leader.epoch, leader.region, leader.instance) == (2, "ams", "i-1")
    finally:
        store.close()


def test_upgraded_schema_2_history_still_adds_up(v2_copy: Path) -> None:
    """The old file's rollups and raw samples give the same account after the upgrade:
    production's eight failed minutes, staging's three slow ones."""
    settings = load_settings(
        None,
        monitor={"state_path": str(v2_copy), "interval": 60, "incident_interval": 60},
        github={"enabled": False},
    )
    store = SqliteStore(v2_copy)
    try:
        start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        window = Span(start, start + timedelta(hours=2))
        history = History(store, settings)
        production = history.account("production", window, start + timedelta(hours=3))
        staging = history.account("staging", window, start + timedelta(hours=3))
        assert production.down_s == pytest.approx(8 * 60)
        assert staging.degraded_s == pytest.approx(3 * 60)
        assert staging.down_s == 0
    finally:
        store.close()


def test_a_new_file_starts_at_the_current_version(tmp_path: Path) -> None:
    """A new file runs every migration and says so; opening it again runs none."""
    path = tmp_path / "new.db"
    first = SqliteStore(path)
    assert first.upgraded_from == 0
    first.close()
    second = SqliteStore(path)
    assert second.upgraded_from == SCHEMA_VERSION
    second.close()
    assert schema_version(path) == SCHEMA_VERSION


def test_a_file_from_a_newer_monitor_is_refused(tmp_path: Path) -> None:
    """A schema newer than this code is an error naming both versions, not a guess."""
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=rf"schema version 99.*\({SCHEMA_VERSION}\)"):
        SqliteStore(path)


@pytest.mark.parametrize(
    ("fixture", "version", "in_the_way", "table", "column"),
    [
        # version 2's CREATE TABLE fails after its ALTER TABLE
        pytest.param(V1_FILE, 1, "channel_handles", "outbox", "channel", id="v1"),
        # version 3's CREATE TABLE fails after both its ALTER TABLEs
        pytest.param(V2_FILE, 2, "region_views", "check_results", "region", id="v2"),
    ],
)
def test_a_failed_migration_leaves_the_file_as_it_was(
    tmp_path: Path, fixture: Path, version: int, in_the_way: str, table: str, column: str
) -> None:
    """A migration that fails half-way rolls back whole: still the old version, every row
    kept, and the column its first statement added is gone again."""
    path = tmp_path / "state.db"
    shutil.copy(fixture, path)
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {in_the_way} (x INTEGER)")  # a table in the way
    before = counts(path)
    with pytest.raises(StoreError):
        SqliteStore(path)
    assert schema_version(path) == version
    assert counts(path) == before
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    assert column not in columns
