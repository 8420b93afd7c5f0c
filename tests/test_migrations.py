"""SQLite schema migrations: a file written by release 0.1.0 upgrades in place, losing nothing."""

from __future__ import annotations

import shutil
import sqlite3
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


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    """A fresh copy of the 0.1.0 state file."""
    path = tmp_path / "state.db"
    shutil.copy(V1_FILE, path)
    return path


def counts(path: Path) -> dict[str, int]:
    """Rows per table, read by a separate connection."""
    with sqlite3.connect(path) as db:
        tables = [
            "check_results",
            "target_samples",
            "incidents",
            "outbox",
            "rollups",
            "sessions",
            "tracker_state",
        ]
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def schema_version(path: Path) -> int:
    """The version recorded in the file."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def test_release_0_1_0_file_upgrades_in_place_and_loses_nothing(v1_copy: Path) -> None:
    """Every row survives, old outbox rows become GitHub's, and the known issue is its handle."""
    before = counts(v1_copy)
    assert schema_version(v1_copy) == 1
    store = SqliteStore(v1_copy)
    try:
        assert store.upgraded_from == 1
        assert counts(v1_copy) == before
        assert schema_version(v1_copy) == SCHEMA_VERSION
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


def test_a_failed_migration_leaves_the_file_as_it_was(v1_copy: Path) -> None:
    """A migration that fails half-way rolls back whole: still version 1, every row kept."""
    with sqlite3.connect(v1_copy) as db:
        # a table in the way makes version 2's CREATE TABLE fail after its ALTER TABLE
        db.execute("CREATE TABLE channel_handles (x INTEGER)")
    before = counts(v1_copy)
    with pytest.raises(StoreError):
        SqliteStore(v1_copy)
    assert schema_version(v1_copy) == 1
    assert counts(v1_copy) == before
    with sqlite3.connect(v1_copy) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(outbox)")]
    assert "channel" not in columns
