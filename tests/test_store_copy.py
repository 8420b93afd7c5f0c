"""``monitor store copy``: a single instance's whole history moves into PostgreSQL (and back).

The source is the schema version 2 file of the previous release (fixtures/README.md),
copied to tmp_path first because opening it upgrades it in place. PostgreSQL is a
fresh database on the session's throwaway server (``postgres_url``; those tests skip
when PostgreSQL is not installed); the SQLite-only tests run everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.cli import main
from monitor.config import load_settings
from monitor.figures.history import History
from monitor.figures.maintenance import Window
from monitor.figures.slo import Deployment, Span
from monitor.incidents.tracker import TrackerState
from monitor.store import copy as store_copy
from monitor.store import postgres_schema, sqlite_schema
from monitor.store.base import ChannelHandle, NewAction, PendingCycle, StoreError
from monitor.store.copy import (
    BATCH_ROWS,
    SKIPPED,
    TABLES,
    CopyError,
    copy_store,
    masked_url,
    parse_store_url,
)
from monitor.store.postgres import PostgresStore
from monitor.store.sql import SqlStore, Tx
from monitor.store.sqlite import SqliteStore
from tests.builders import up
from tests.pgserver import HOST
from tests.ports import free_port

V2_FILE = Path(__file__).parent / "fixtures" / "state-v2.sqlite"
V2_INCIDENT = "production-20261201T121400Z"  # resolved, issue #12, its close still pending
V2_ISSUE_URL = "https://github.com/acme/web/issues/12"
V2_START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the fixture's first probe
SENTINEL = "s3cretpw"  # the URLs' password: the test server trusts 127.0.0.1, so any will do
KEYS = {t.name: t.key for t in TABLES} | {"leadership": ("id",)}


# ---- the two databases, read around the stores -------------------------------------------


def sqlite_url(path: Path) -> str:
    """``sqlite:///`` and the absolute path: four slashes in all."""
    return f"sqlite:///{path}"


def with_password(url: str) -> str:
    """The test database's URL with a password in it."""
    assert "postgres@" in url
    return url.replace("postgres@", f"postgres:{SENTINEL}@", 1)


def dump(location: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every monitor table, by column name, in primary-key order; read on a
    connection of its own (a SQLite path or a PostgreSQL URL)."""
    tables = [*KEYS]
    found: dict[str, list[dict[str, Any]]] = {}
    if isinstance(location, Path):
        with contextlib.closing(sqlite3.connect(location)) as db:
            for table in tables:
                cursor = db.execute(f"SELECT * FROM {table}")  # noqa: S608
                names = [d[0] for d in cursor.description]
                found[table] = [dict(zip(names, row, strict=True)) for row in cursor]
    else:
        with psycopg.connect(location, autocommit=True) as pg:
            for table in tables:
                cursor = pg.execute(f"SELECT * FROM {table}")  # noqa: S608
                names = [d.name for d in cursor.description or []]
                found[table] = [dict(zip(names, row, strict=True)) for row in cursor]
    for table, rows in found.items():
        rows.sort(key=by_key(table))
    return found


def by_key(table: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's primary key, to sort by (both backends then list rows alike)."""
    return lambda row: tuple(row[k] for k in KEYS[table])


def history(dumped: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """What a copy carries over: every table but leadership, meta without schema_version."""
    kept = {table: rows for table, rows in dumped.items() if table not in SKIPPED}
    kept["meta"] = [row for row in kept["meta"] if row["key"] != "schema_version"]
    return kept


def counts(dumped: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Rows per table."""
    return {table: len(rows) for table, rows in dumped.items()}


def schema_version(path: Path) -> int:
    """The version recorded in a SQLite file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


@pytest.fixture
def v2_copy(tmp_path: Path) -> Path:
    """A fresh copy of the schema version 2 state file (opening it upgrades it)."""
    path = tmp_path / "monitor.db"
    shutil.copy(V2_FILE, path)
    return path


@pytest.fixture
def v2_in_postgres(v2_copy: Path, postgres_url: str) -> str:
    """The fixture's history, copied into the fresh PostgreSQL database; its URL."""
    copy_store(sqlite_url(v2_copy), postgres_url)
    return postgres_url


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``main`` points the root logger at capsys's stream: put the handlers back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# ---- URLs ---------------------------------------------------------------------------------


def test_sqlite_urls_take_everything_after_the_third_slash_as_the_path() -> None:
    """Three slashes then a relative path; four for an absolute one (SQLAlchemy's reading)."""
    assert parse_store_url("sqlite:///monitor.db").location == "monitor.db"
    assert parse_store_url("sqlite:///data/monitor.db").location == "data/monitor.db"
    assert parse_store_url("sqlite:////data/monitor.db").location == "/data/monitor.db"
    assert parse_store_url("sqlite:////data/monitor.db").kind == "sqlite"
    for wrong in ("sqlite://monitor.db", "sqlite:monitor.db", "sqlite:///"):
        with pytest.raises(CopyError, match=r"sqlite:///PATH"):
            parse_store_url(wrong)


def test_postgres_urls_pass_as_given_and_show_without_the_password() -> None:
    """Both schemes; the password is masked in what is shown, kept in what connects."""
    url = f"postgresql://monitor:{SENTINEL}@db.internal:5432/monitor?sslmode=require"
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.location) == ("postgres", url)
    assert parsed.shown == "postgresql://monitor:***@db.internal:5432/monitor?sslmode=require"
    assert parse_store_url("postgres://monitor@db/monitor").shown == "postgres://monitor@db/monitor"
    assert masked_url(f"postgresql://db/monitor?user=m&password={SENTINEL}") == (
        "postgresql://db/monitor?user=m&password=***"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{SENTINEL}@db/monitor",
        f"/data/monitor.db?{SENTINEL}",
        f"postgresql:u:{SENTINEL}@db",
    ],
)
def test_other_urls_are_refused_without_repeating_them(url: str) -> None:
    """An unknown scheme or a bare path: the message says what is expected, never the URL."""
    with pytest.raises(CopyError, match=r"expected sqlite:///PATH") as refused:
        parse_store_url(url)
    assert SENTINEL not in str(refused.value)


# ---- what is copied -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_table_of_the_schema_is_copied_or_skipped_on_purpose(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """A table added by a later migration must be added to the copy (or skipped, saying why)."""
    store: SqlStore
    if kind == "sqlite":
        store = SqliteStore(tmp_path / "new.db")
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"))
        sql = (
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
        )
    try:
        names = {row["name"] for row in store._query(sql)}
    finally:
        store.close()
    assert names == {t.name for t in TABLES} | set(SKIPPED)
    assert sqlite_schema.SCHEMA_VERSION == postgres_schema.SCHEMA_VERSION


def test_v2_file_into_postgres_keeps_every_row(v2_copy: Path, postgres_url: str) -> None:
    """Every row of every table arrives unchanged (ids, floats to the bit, JSON text), the
    file is upgraded in place first, and the destination keeps its own schema_version."""
    progress: list[tuple[str, int]] = []

    copied = copy_store(
        sqlite_url(v2_copy), postgres_url, progress=lambda t, n: progress.append((t, n))
    )

    assert schema_version(v2_copy) == sqlite_schema.SCHEMA_VERSION  # upgraded in place
    source = history(dump(v2_copy))
    dest = dump(postgres_url)
    assert history(dest) == source
    assert counts(source) == {
        "meta": 1,  # the rollup watermark
        "sessions": 2,
        "check_results": 142,
        "target_samples": 142,
        "tracker_state": 2,
        "incidents": 1,
        "channel_handles": 1,
        "outbox": 3,
        "versions": 2,
        "deployments": 1,
        "maintenance": 0,
        "rollups": 8,
        "github_records": 0,
        "region_views": 0,
    }
    assert copied == counts(source)
    assert list(copied) == [t.name for t in TABLES]
    assert progress == list(copied.items())  # one batch each: the fixture is small
    assert dest["meta"] == [
        {"key": "rollup_watermark", "value": "1796130000.0"},
        {"key": "schema_version", "value": str(postgres_schema.SCHEMA_VERSION)},
    ]
    assert dest["leadership"] == []


def test_the_copied_incident_its_issue_and_its_pending_close_read_the_same(
    v2_copy: Path, v2_in_postgres: str
) -> None:
    """Through the store API: the incident, its GitHub handle and the close still pending
    (12 attempts, still due) are what the file says, field for field."""
    source, dest = SqliteStore(v2_copy), PostgresStore(v2_in_postgres)
    try:
        for store in (source, dest):
            incident = store.incident(V2_INCIDENT)
            assert incident is not None
            assert (incident.issue_number, incident.issue_url) == (12, V2_ISSUE_URL)
            assert store.handle("github", V2_INCIDENT) == ChannelHandle(12, V2_ISSUE_URL)
            [pending] = store.pending_actions()
            assert (pending.kind, pending.attempts) == ("close", 12)
        assert dest.incident(V2_INCIDENT) == source.incident(V2_INCIDENT)
        assert dest.pending_actions() == source.pending_actions()
        late = datetime(2030, 1, 1, tzinfo=UTC)
        assert dest.due_actions("github", late) == source.due_actions("github", late)
        assert dest.load_states() == source.load_states()
        assert dest.deployments(None) == source.deployments(None)
        assert dest.leadership() is None
    finally:
        source.close()
        dest.close()


def test_the_figures_stay_identical(v2_copy: Path, v2_in_postgres: str) -> None:
    """The SLO record survives: each target's time account, over the fixture's two hours
    (rollups and raw samples) and over the whole day, is the same to the microsecond."""
    settings = load_settings(
        None,
        monitor={"state_path": str(v2_copy), "interval": 60, "incident_interval": 60},
        github={"enabled": False},
    )
    now = V2_START + timedelta(hours=3)
    windows = [
        Span(V2_START, V2_START + timedelta(hours=2)),
        Span(V2_START - timedelta(hours=12), now),
    ]
    source, dest = SqliteStore(v2_copy), PostgresStore(v2_in_postgres)
    try:
        for target in ("production", "staging"):
            for window in windows:
                mine = History(source, settings).account(target, window, now)
                theirs = History(dest, settings).account(target, window, now)
                assert theirs == mine, (target, window)
        production = History(dest, settings).account("production", windows[0], now)
        assert production.down_s == pytest.approx(8 * 60)  # the record is not empty
    finally:
        source.close()
        dest.close()


def test_version_5_rows_arrive_and_read_the_same(v2_copy: Path, postgres_url: str) -> None:
    """What version 5 added: a stored maintenance window, who acknowledged and who closed
    the incident, and a rollup's maintenance seconds are copied and read back alike; the
    window's id sequence moves past the copied one."""
    source = SqliteStore(v2_copy)  # upgraded to the current schema on opening
    later = V2_START + timedelta(hours=2)
    window = Window(later, later + timedelta(hours=1), frozenset({"production"}), "upgrade", "api")
    try:
        window_id = source.add_maintenance(window, later)
        source.record_acknowledged(V2_INCIDENT, "alice", V2_START + timedelta(minutes=16))
        source.record_closed(V2_INCIDENT, "bob", V2_START + timedelta(minutes=20))
        [row] = source.rollups("hour", "production", "*", V2_START, V2_START + timedelta(hours=1))
        source.write_rollups([{**row, "maintenance_s": 600.0}], None)
    finally:
        source.close()

    copied = copy_store(sqlite_url(v2_copy), postgres_url)

    assert copied["maintenance"] == 1
    assert history(dump(postgres_url)) == history(dump(v2_copy))
    dest = PostgresStore(postgres_url)
    try:
        assert dest.maintenance_windows(later, later + timedelta(minutes=1)) == [
            Window(window.start, window.end, window.targets, "upgrade", "api", window_id)
        ]
        incident = dest.incident(V2_INCIDENT)
        assert incident is not None
        assert (incident.acknowledged_by, incident.closed_by) == ("alice", "bob")
        assert incident.record.acknowledged_at == V2_START + timedelta(minutes=16)
        totals = dest.rollup_totals(
            "hour", "production", "*", V2_START, V2_START + timedelta(hours=1)
        )
        assert totals[-1] == 600.0
        assert dest.add_maintenance(window, later) == window_id + 1
    finally:
        dest.close()


def test_new_rows_after_the_copy_get_fresh_ids(v2_in_postgres: str) -> None:
    """Each identity sequence was moved past the copied ids: a new session, a probe cycle
    with a deployment, and an enqueued action all insert without a collision."""
    before = dump(v2_in_postgres)
    store = PostgresStore(v2_in_postgres)
    try:
        assert store.start_session(V2_START + timedelta(hours=2), "i-1") == 3
        deployment = Deployment("production", "2.3.1", "2.3.2", V2_START + timedelta(hours=2))
        store.commit_cycle(
            PendingCycle(
                up(V2_START + timedelta(hours=2)),
                120.0,
                TrackerState("production"),
                None,
                [],
                deployment=deployment,
            )
        )
        copied_ids = [a.id for a in store.pending_actions()]
        store.enqueue(
            [NewAction("journal", V2_INCIDENT, "production", "comment", {"body": "moved"})],
            V2_START + timedelta(hours=2),
        )
        ids = [a.id for a in store.pending_actions()]
    finally:
        store.close()
    assert copied_ids == [3]
    assert ids == [3, 4]
    after = dump(v2_in_postgres)
    new_results = [r["id"] for r in after["check_results"]][len(before["check_results"]) :]
    assert new_results == [max(r["id"] for r in before["check_results"]) + 1]
    assert [r["id"] for r in after["deployments"]] == [1, 2]


def test_a_second_copy_is_refused_and_changes_nothing(tmp_path: Path, v2_in_postgres: str) -> None:
    """Two histories are never merged: the second copy raises before writing anything,
    and even leaves its (older) source file as it was, un-upgraded."""
    before = dump(v2_in_postgres)
    another = tmp_path / "another.db"
    shutil.copy(V2_FILE, another)

    with pytest.raises(CopyError, match=r"already holds .*check_results: 142 rows") as refused:
        copy_store(sqlite_url(another), with_password(v2_in_postgres))

    assert "merge two histories" in str(refused.value)
    assert SENTINEL not in str(refused.value)
    assert dump(v2_in_postgres) == before
    assert schema_version(another) == 2


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_failure_midway_leaves_the_destination_empty(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    v2_copy: Path,
    kind: str,
) -> None:
    """A database error on the outbox, after seven tables went in, rolls the whole copy
    back: no table holds a copied row, and the same copy then succeeds."""
    dest: str | Path
    if kind == "sqlite":
        dest = tmp_path / "dest.db"
        dest_url = sqlite_url(dest)
    else:
        dest = dest_url = request.getfixturevalue("postgres_url")
    insert_batch = store_copy._insert_batch
    inserted: list[str] = []

    def failing(db: Tx, table: str, insert: str, rows: list[tuple[Any, ...]]) -> None:
        insert_batch(db, table, insert, rows)
        inserted.append(table)
        if table == "outbox":
            db.execute("SELECT * FROM no_such_table")  # a real error from the database

    monkeypatch.setattr(store_copy, "_insert_batch", failing)
    with pytest.raises(StoreError, match="no_such_table"):
        copy_store(sqlite_url(v2_copy), dest_url)

    assert inserted[-1] == "outbox"
    assert len(inserted) == 8
    assert history(dump(dest)) == {table: [] for table in history(dump(v2_copy))}
    monkeypatch.setattr(store_copy, "_insert_batch", insert_batch)
    assert copy_store(sqlite_url(v2_copy), dest_url)["check_results"] == 142


def test_postgres_back_to_sqlite_gives_the_same_rows(
    tmp_path: Path, v2_copy: Path, v2_in_postgres: str
) -> None:
    """The backup path: PostgreSQL into a new SQLite file holds what the original file held."""
    backup = tmp_path / "backup" / "monitor.db"

    copied = copy_store(v2_in_postgres, sqlite_url(backup))

    assert counts(history(dump(backup))) == counts(history(dump(v2_copy))) == copied
    assert history(dump(backup)) == history(dump(v2_copy))
    assert schema_version(backup) == sqlite_schema.SCHEMA_VERSION


def test_sqlite_to_sqlite_in_batches_leaves_leadership_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, v2_copy: Path
) -> None:
    """Batches walk each table's key (here 50 rows at a time: three batches of results),
    and the old instance's leadership row stays where it was."""
    monkeypatch.setattr(store_copy, "BATCH_ROWS", 50)
    source = SqliteStore(v2_copy)
    source.claim_leadership("local", "local", V2_START + timedelta(hours=2))
    source.close()
    dest = tmp_path / "dest.db"
    progress: list[tuple[str, int]] = []

    copy_store(sqlite_url(v2_copy), sqlite_url(dest), progress=lambda t, n: progress.append((t, n)))

    assert history(dump(dest)) == history(dump(v2_copy))
    assert [n for t, n in progress if t == "check_results"] == [50, 100, 142]
    assert len(dump(v2_copy)["leadership"]) == 1
    assert dump(dest)["leadership"] == []
    assert BATCH_ROWS == 5_000


def test_a_missing_source_file_is_refused_not_created(tmp_path: Path) -> None:
    """A wrong path would otherwise open as an empty store and copy nothing, silently."""
    missing = tmp_path / "nowhere" / "monitor.db"
    with pytest.raises(CopyError, match="does not exist"):
        copy_store(sqlite_url(missing), sqlite_url(tmp_path / "dest.db"))
    assert not missing.parent.exists()
    assert not (tmp_path / "dest.db").exists()


def test_the_same_database_twice_is_refused(monkeypatch: pytest.MonkeyPatch, v2_copy: Path) -> None:
    """Relative or absolute, one file is one database."""
    monkeypatch.chdir(v2_copy.parent)
    with pytest.raises(CopyError, match="same database"):
        copy_store("sqlite:///monitor.db", sqlite_url(v2_copy))
    assert schema_version(v2_copy) == 2


# ---- the command line ---------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_cli_copies_and_prints_each_table_without_the_password(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    v2_copy: Path,
    postgres_url: str,
) -> None:
    """Exit 0, one line per table with its count, a summary naming both sides with the
    password masked; no config file needed (a relative sqlite:/// path, from its folder)."""
    monkeypatch.chdir(v2_copy.parent)
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    url = with_password(postgres_url)

    code = main(["store", "copy", "--from", "sqlite:///monitor.db", "--to", url])

    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:14] == [
        "meta: 1 row",
        "sessions: 2 rows",
        "check_results: 142 rows",
        "target_samples: 142 rows",
        "tracker_state: 2 rows",
        "incidents: 1 row",
        "channel_handles: 1 row",
        "outbox: 3 rows",
        "versions: 2 rows",
        "deployments: 1 row",
        "maintenance: 0 rows",
        "rollups: 8 rows",
        "github_records: 0 rows",
        "region_views: 0 rows",
    ]
    [summary] = lines[14:]
    masked = postgres_url.replace("postgres@", "postgres:***@", 1)
    assert summary.startswith(f"copied 305 rows in 14 tables from sqlite:///monitor.db to {masked}")
    assert "leadership not copied" in summary
    assert SENTINEL not in out + err
    assert err == ""


@pytest.mark.usefixtures("restore_logging")
def test_cli_refusal_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], v2_copy: Path, v2_in_postgres: str
) -> None:
    """A destination with history: exit 1, one line on stderr, nothing on stdout."""
    code = main(
        ["store", "copy", "--from", sqlite_url(v2_copy), "--to", with_password(v2_in_postgres)]
    )

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("monitor: store copy: the destination postgresql://postgres:***@")
    assert err.count("\n") == 1
    assert SENTINEL not in err


@pytest.mark.usefixtures("restore_logging")
def test_cli_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], v2_copy: Path
) -> None:
    """A StoreError (nobody listens) is exit 1 with a line naming the side, masked."""
    url = f"postgresql://monitor:{SENTINEL}@{HOST}:{free_port()}/monitor"
    code = main(["store", "copy", "--from", sqlite_url(v2_copy), "--to", url])

    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("monitor: store copy: the destination postgresql://monitor:***@")
    assert "cannot connect" in err
    assert err.count("\n") == 1
    assert SENTINEL not in out + err
    assert schema_version(v2_copy) == 2  # the source was not even opened


@pytest.mark.parametrize(
    ("flag", "argv"),
    [
        ("--to", ["--from", "sqlite:///monitor.db", "--to", f"mysql://root:{SENTINEL}@db/m"]),
        ("--from", ["--from", f"/data/{SENTINEL}.db", "--to", "postgresql://db/m"]),
        ("--to", ["--from", "sqlite:///monitor.db"]),
    ],
)
@pytest.mark.usefixtures("restore_logging")
def test_cli_usage_errors_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, argv: list[str]
) -> None:
    """A bad scheme or a missing flag is argparse's usage error: exit 2, the flag named,
    the URL (and its password) not repeated."""
    with pytest.raises(SystemExit) as exited:
        main(["store", "copy", *argv])

    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert flag in err
    assert SENTINEL not in out + err


def test_any_row_in_the_destination_refuses_the_copy(tmp_path: Path, v2_copy: Path) -> None:
    """Even a session alone (a daemon that started, then stopped before its first probe)
    is another record of uptime: refused, named, and left as it was."""
    dest = tmp_path / "dest.db"
    store = SqliteStore(dest)
    store.start_session(V2_START, "i-1")
    store.close()
    before = dump(dest)

    with pytest.raises(CopyError, match=r"already holds sessions: 1 row;"):
        copy_store(sqlite_url(v2_copy), sqlite_url(dest))

    assert dump(dest) == before
