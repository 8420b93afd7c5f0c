"""PostgreSQL: the shared state of several instances, selected by a ``postgresql://`` URL.

One connection for queries and transactions (behind a lock, as SQLite's), and
one more, dedicated, for the leader lock: a session-level advisory lock that
PostgreSQL releases the moment that session ends, which is what makes a
killed leader's successor able to take over at once.

A broken connection is replaced by a background thread, never on the caller's:
the daemon writes on its event loop, and an unreachable database must cost it
at most one time-out (``tcp_user_timeout`` bounds a request that gets no answer),
after which every call fails at once with :class:`StoreError` (the daemon keeps
the results in memory) until the thread has connected again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from monitor.store.base import Row, StoreError
from monitor.store.postgres_schema import migrate
from monitor.store.sql import Cursor, SqlStore, Tx

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000
RECONNECT_PAUSE_S = 1.0
LEADER_LOCK = 0x6D6F6E00  # "mon" + 0: the session advisory lock the leader holds
# the server notices a leader cut off from it within idle + interval * count seconds,
# and releases its lock: 5 + 2 * 3 = 11 s, longer than the leader's own step-down
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    # a request the network swallows fails after 5 s, not after TCP's 15 minutes
    "tcp_user_timeout": 5000,
}
SERVER_KEEPALIVE = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"
)


@lru_cache(maxsize=512)
def _paramstyle(sql: str) -> str:
    """The shared ``?`` placeholders in psycopg's style (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx:
    """A transaction's statements, with SQLite-style placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(_paramstyle(sql), params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_paramstyle(sql), params)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (transactions are explicit), with time-outs."""
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        **kwargs,
    )


class PostgresStore(SqlStore):
    """State in PostgreSQL, shared by every instance."""

    DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    FOR_UPDATE = " FOR UPDATE"
    # the slowest probe's start per group: PostgreSQL has no bare column beside MAX()
    LATENCY_SLOTS = (
        "SELECT check_name, slot, MAX(duration_s) AS slowest,"
        " (ARRAY_AGG(started_at ORDER BY duration_s DESC))[1] AS started_at,"
        " COUNT(*) AS n, COUNT(*) FILTER (WHERE outcome = 'down') AS down,"
        " COUNT(*) FILTER (WHERE outcome = 'degraded') AS degraded FROM ("
        "  SELECT check_name, duration_s, started_at, outcome,"
        "   FLOOR((started_at - ?) / ?)::bigint AS slot FROM check_results"
        "  WHERE target = ? AND started_at >= ? AND started_at <= ?"
        " ) s GROUP BY check_name, slot ORDER BY check_name, slot"
    )

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._reconnecting = threading.Lock()  # held by the one reconnect thread
        self._closed = False
        with self._lock:
            try:
                conn = self._conn = connect(self.url, **KEEPALIVE)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to the state database: {_describe(exc)}") from exc
            try:
                self.upgraded_from = migrate(conn)
            except psycopg.Error as exc:
                conn.close()
                raise StoreError(f"cannot prepare the state database: {_describe(exc)}") from exc
            except BaseException:
                conn.close()  # a refused database must not keep a session open
                raise

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection; else StoreError at once, while a thread reconnects."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self._closed:
            raise StoreError("the state database is closed")
        if self._reconnecting.acquire(blocking=False):
            threading.Thread(target=self._reconnect, name="postgres-reconnect", daemon=True).start()
        raise StoreError("the state database is unreachable; reconnecting")

    def _reconnect(self) -> None:
        """Connect again, pausing between attempts, until it works or the store closes."""
        try:
            while not self._closed:
                try:
                    conn = connect(self.url, **KEEPALIVE)
                except psycopg.Error:
                    time.sleep(RECONNECT_PAUSE_S)
                    continue
                with self._lock:
                    old, self._conn = self._conn, conn
                    if self._closed:
                        conn.close()
                if old is not None:
                    with suppress(psycopg.Error):
                        old.close()
                return
        finally:
            self._reconnecting.release()

    def close(self) -> None:
        """Close the connection (and stop reconnecting)."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()

    @contextmanager
    def _tx(self, *, pipelined: bool = False) -> Iterator[Tx]:
        """A transaction; ``pipelined``, its statements are sent without waiting for each
        answer, so a probe cycle costs a round trip or two to a database in another
        region, not one per statement. (A statement whose rows are read still waits;
        row counts are unknown until then, so only writes that read none pipeline.)"""
        with self._lock:
            conn = self._connection()
            try:
                if not pipelined:
                    with conn.transaction():
                        yield _PgTx(conn)
                    return
                # psycopg's transaction() waits for its BEGIN even in a pipeline: plain
                # BEGIN and COMMIT statements let the whole cycle travel in one trip
                try:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        yield _PgTx(conn)
                        conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except psycopg.Error as exc:
                raise StoreError(_describe(exc)) from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor(row_factory=dict_row) as cursor:
                    cursor.execute(_paramstyle(sql), params)
                    return list(cursor.fetchall())
            except psycopg.Error as exc:
                raise StoreError(_describe(exc)) from exc

    def _values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cursor:
                    cursor.execute(_paramstyle(sql), params)
                    return list(cursor.fetchall())
            except psycopg.Error as exc:
                raise StoreError(_describe(exc)) from exc

    def leader_lock(self) -> PostgresLeaderLock:
        """The advisory lock that makes one instance the leader."""
        return PostgresLeaderLock(self.url)


class PostgresLeaderLock:
    """A session advisory lock on a connection of its own.

    ``try_acquire`` takes it if free; ``alive`` proves the session (and so the
    lock) still exists. PostgreSQL drops the lock with the session: at once when
    the holder dies, within the keep-alive time when it is cut off.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this instance believes it holds the lock."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if no other session holds it."""
        with self._guard:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = connect(self._url, **KEEPALIVE)
                    self._conn.execute(SERVER_KEEPALIVE)
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)
                ).fetchone()
            except psycopg.Error:
                self._drop()
                return False
            self._held = bool(row and row[0])
            return self._held

    def alive(self) -> bool:
        """True if the lock's session still answers (and so still holds the lock)."""
        with self._guard:
            if not self._held or self._conn is None:
                return False
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                self._drop()
                return False
            return True

    def release(self) -> None:
        """Give the lock up: unlocked at once when the session still answers (a successor
        need not wait for the server to notice the closed connection), and the session
        closed, which releases it in any case."""
        with self._guard:
            if self._held and self._conn is not None and not self._conn.broken:
                with suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))
            self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End a failed pipelined transaction, if the connection still has one."""
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _describe(exc: psycopg.Error) -> str:
    """The error without the connection string (which may hold a password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
