"""The PostgreSQL test helper itself: every test gets its own empty, working database, and
restarts and crashes keep the URL valid, as the store's fault tests rely on."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgserver import CONNECT_TIMEOUT_S, PostgresServer


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection, bounded: a dead server must fail fast, not hang."""
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_usable_database(postgres_url: str, run: int) -> None:
    # the same table name in both runs: a shared database would fail the second CREATE
    with connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO probe VALUES (%s, %s)", (run, f"run {run}"))
        assert conn.execute("SELECT id, note FROM probe").fetchall() == [(run, f"run {run}")]


def test_restart_keeps_data_and_url(postgres_server: PostgresServer, postgres_url: str) -> None:
    port = postgres_server.port
    with connect(postgres_url) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")

    postgres_server.restart()

    assert postgres_server.port == port
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before restart",)]


def test_kill_refuses_connections_until_start(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    postgres_server.kill()
    with pytest.raises(psycopg.OperationalError):
        connect(postgres_url).close()

    postgres_server.start()  # crash recovery, same port
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
