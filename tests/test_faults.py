"""Local faults: a full disk, a read-only or locked database. Probing goes on, nothing is lost."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import Settings, load_settings
from monitor.daemon.daemon import Daemon
from monitor.incidents.channels.journal import JournalChannel
from monitor.metrics import Metrics
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, ManualClock, down, stored_results, up


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One target, journal sink, open after 3, close after 2."""
    return load_settings(
        None,
        monitor={"state_path": str(tmp_path / "state.db"), "interval": 60, "incident_interval": 10},
        github={"enabled": False},
        targets=[
            {"name": "production", "url": "http://127.0.0.1:9", "checks": [{"name": "health"}]}
        ],
    )


@pytest.fixture
def daemon(settings: Settings) -> Iterator[Daemon]:
    """A daemon fed by hand through record(), with its real store."""
    clock = ManualClock()
    store = SqliteStore(settings.monitor.state_path)
    daemon = Daemon(
        settings, metrics=Metrics(), clock=clock, store=store, channels=[JournalChannel()]
    )
    yield daemon
    store.close()


def feed(daemon: Daemon, make: Callable[[datetime], object], minutes: range) -> None:
    """Record one result per minute, moving the daemon's clock along."""
    clock = daemon._clock
    assert isinstance(clock, ManualClock)
    for minute in minutes:
        clock.now = T0 + timedelta(minutes=minute)
        daemon.record(make(clock.now))  # type: ignore[arg-type]


def stored_actions(path: Path) -> list[str]:
    """Kinds of every outbox row, in order."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT kind FROM outbox ORDER BY id")]


def break_writes(daemon: Daemon, how: str) -> Callable[[], None]:
    """Make the daemon's database refuse writes; return the repair."""
    db = daemon.store._db
    if how == "disk-full":
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        # fill the last free pages so the next insert needs a new one
        return lambda: db.execute("PRAGMA max_page_count = 1073741823")
    if how == "read-only":
        db.execute("PRAGMA query_only = 1")
        return lambda: db.execute("PRAGMA query_only = 0")
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["disk-full", "read-only"])
def test_write_faults_keep_probing_and_lose_nothing(
    daemon: Daemon, settings: Settings, how: str
) -> None:
    """While writes fail the tracker, metrics and health go on; the backlog lands on recovery."""
    path = settings.monitor.state_path
    feed(daemon, up, range(0, 2))
    before = stored_results(path)
    repair = break_writes(daemon, how)
    feed(daemon, lambda at: down(at), range(2, 400))  # long enough to outgrow any free page

    healthy, detail = daemon.health()
    assert not healthy
    assert any("state database write failed" in p for p in detail["problems"])
    assert daemon.targets["production"].state.in_incident  # the incident opened regardless
    assert daemon.metrics.incident_open.labels("production")._value.get() == 1
    errors = daemon.metrics.store_errors.labels("commit_cycle")._value.get()
    assert errors > 0

    repair()
    feed(daemon, up, range(400, 402))
    assert daemon.store_problem is None
    assert stored_results(path) == before + 400
    # the journal's steps are one per incident event
    assert stored_actions(path)[0] == "opened"
    assert stored_actions(path)[-1] == "resolved"


def test_database_locked_by_another_process(
    daemon: Daemon, settings: Settings, tmp_path: Path
) -> None:
    """Another process holding an exclusive lock delays writes; they land once it lets go."""
    path = settings.monitor.state_path
    ready = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time, pathlib\n"
            f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(4)\n"
            "db.execute('COMMIT')\n",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        feed(daemon, lambda at: down(at), range(0, 2))
        assert daemon.store_problem is not None
        holder.wait(timeout=10)
        feed(daemon, lambda at: down(at), range(2, 3))
    finally:
        holder.kill()
        holder.wait()
    assert daemon.store_problem is None
    assert stored_results(path) == 3
    assert stored_actions(path) == ["opened"]


def test_restart_resumes_the_open_incident(settings: Settings) -> None:
    """A new daemon on the same file carries the open incident on: no second open."""
    path = settings.monitor.state_path
    first_store = SqliteStore(path)
    first = Daemon(
        settings,
        metrics=Metrics(),
        clock=ManualClock(),
        store=first_store,
        channels=[JournalChannel()],
    )
    feed(first, lambda at: down(at), range(0, 4))
    first_store.close()  # as after kill -9: nothing else is flushed

    second_store = SqliteStore(path)
    clock = ManualClock()
    second = Daemon(
        settings, metrics=Metrics(), clock=clock, store=second_store, channels=[JournalChannel()]
    )
    assert second.targets["production"].state.in_incident
    assert second.targets["production"].cadence_s == settings.monitor.incident_interval
    feed(second, lambda at: down(at), range(10, 12))
    feed(second, up, range(12, 14))
    second_store.close()
    assert stored_actions(path) == ["opened", "resolved"]
    with sqlite3.connect(path) as db:
        started, resolved = db.execute("SELECT started_at, resolved_at FROM incidents").fetchone()
    assert resolved - started == 12 * 60  # from the first failure before the restart
