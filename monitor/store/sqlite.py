"""SQLite: the embedded default. One file in WAL mode, one connection, one lock."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.store.base import Row, StoreError
from monitor.store.sql import SqlStore, Tx
from monitor.store.sqlite_schema import migrate


class SqliteStore(SqlStore):
    """The SQLite file. Thread-safe: one connection, one lock, short transactions."""

    DB_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    # SQLite returns the bare column started_at from the row that holds MAX()
    LATENCY_SLOTS = (
        "SELECT check_name, CAST((started_at - ?) / ? AS INTEGER) AS slot,"
        " MAX(duration_s) AS slowest, started_at, COUNT(*) AS n,"
        " SUM(outcome = 'down') AS down, SUM(outcome = 'degraded') AS degraded"
        " FROM check_results WHERE target = ? AND started_at >= ? AND started_at <= ?"
        " GROUP BY check_name, slot ORDER BY check_name, slot"
    )

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=1.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # 512 KiB of page cache: queries are short, and the machine has 256 MB
            self._db.execute("PRAGMA cache_size=-512")
            # writes run on the event loop: a lock held elsewhere may delay a cycle by
            # one second, then the write fails, is counted, and the cycle is retried
            self._db.execute("PRAGMA busy_timeout=1000")
            self.upgraded_from = self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open state database {path}: {exc}") from exc

    def _migrate(self) -> int:
        try:
            return migrate(self._db)
        except BaseException:
            self._db.close()  # a refused file must not stay open behind the error
            raise

    def close(self) -> None:
        """Checkpoint and close."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # closing matters more than the checkpoint
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    @contextmanager
    def _tx(self, *, pipelined: bool = False) -> Iterator[Tx]:
        # pipelined is moot here: the file is in-process, a statement costs no round trip
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db  # type: ignore[misc]  # sqlite3's cursor is a Cursor
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
                cursor.row_factory = sqlite3.Row
                return list(cursor.fetchall())
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc

    def _values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc

    def leader_lock(self) -> None:
        """One file, one process: the only instance always leads."""
        return None
