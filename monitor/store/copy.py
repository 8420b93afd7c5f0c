"""Copy one store's whole history into another: ``monitor store copy``.

The documented use is a single instance moving from its SQLite file to
PostgreSQL, so that it can grow to several instances without losing its SLO
record; PostgreSQL to SQLite is a backup, and same-kind copies work too.

**URLs.** ``sqlite:///PATH``: everything after the third slash is the file's
path, so ``sqlite:///monitor.db`` is relative to the working directory and
``sqlite:////data/monitor.db`` (four slashes) is absolute, as SQLAlchemy reads
them. ``postgresql://`` and ``postgres://`` URLs go to libpq as they are.

**What happens.** Both sides are opened through their store classes, so both
are brought to the current schema first (an older SQLite file is upgraded in
place, as the daemon would on start-up); the two must then agree on the schema
version and on every table's columns. The destination must hold no history:
copying into one that does would merge two histories, so it is refused before
anything is written. Every table is then copied in batches of
:data:`BATCH_ROWS` inside one destination transaction (and one snapshot of the
source), ids kept, so a failure at any point leaves the destination as empty
as it was. On PostgreSQL each identity sequence is moved past the largest id
copied, so the next row written gets a fresh one.

URLs are shown with :func:`masked_url`: a password never reaches a message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from monitor.store.base import StoreError
from monitor.store.sql import SqlStore, Tx

BATCH_ROWS = 5_000
MASK = "***"
SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
USAGE = "expected sqlite:///PATH, postgresql://... or postgres://..."


class CopyError(Exception):
    """The copy was refused or found the two stores incompatible; nothing was copied."""


@dataclass(frozen=True, slots=True)
class Table:
    """A table to copy: its primary key (the batches' order) and what is left behind."""

    name: str
    key: tuple[str, ...]
    where: str = ""  # rows not copied, as a condition on the rows that are
    identity: bool = False  # an ``id`` column a sequence numbers on PostgreSQL


# Every table but ``leadership``, in an order that reads well (nothing references
# anything: the schema has no foreign keys).
TABLES: tuple[Table, ...] = (
    # the destination keeps its own schema_version (the store set it when it opened)
    Table("meta", ("key",), where="key <> 'schema_version'"),
    Table("sessions", ("id",), identity=True),
    Table("check_results", ("id",), identity=True),
    Table("target_samples", ("target", "at")),
    Table("tracker_state", ("target",)),
    Table("incidents", ("id",)),
    Table("channel_handles", ("channel", "incident_id")),
    Table("outbox", ("id",), identity=True),
    Table("versions", ("target", "check_name")),
    Table("deployments", ("id",), identity=True),
    # the windows opened from the API: the figures read them to leave their time out
    Table("maintenance", ("id",), identity=True),
    Table("rollups", ("period", "target", "check_name", "bucket")),
    # what the KPIs read from GitHub, with its ETags: a copy need not read it all again
    Table("github_records", ("kind", "key")),
    # each region's last view, as it was: the quorum judges a view's age by seen_at
    Table("region_views", ("target", "region")),
)
# the tables whose rows make a history; the refusal names them first
HISTORY = ("check_results", "target_samples", "incidents", "outbox")
# Not copied. The leadership row names the instance that led the old deployment and
# the epoch that fenced its writes; it is no part of the history. The new cluster's
# instances elect their own leader, whose claim writes the row afresh; a copied row
# would show a leader that no longer runs until then.
SKIPPED: dict[str, str] = {"leadership": "a new cluster elects its own leader"}

Progress = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed ``--from``/``--to``: which backend, where, and how to show it."""

    kind: Literal["sqlite", "postgres"]
    location: str  # the SQLite file's path, or the PostgreSQL URL as given
    shown: str  # the URL with any password masked: what messages show


def parse_store_url(text: str) -> StoreUrl:
    """``sqlite:///PATH`` or a PostgreSQL URL; :class:`CopyError` (never echoing the
    text, which may hold a password) for anything else."""
    if text.startswith("sqlite:"):
        path = text.removeprefix(SQLITE_PREFIX)
        if not text.startswith(SQLITE_PREFIX) or not path:
            raise CopyError(
                "a SQLite URL is sqlite:///PATH: three slashes then a relative path,"
                " four for an absolute one (sqlite:////data/monitor.db)"
            )
        return StoreUrl("sqlite", path, text)
    scheme, separator, _ = text.partition("://")
    if separator and scheme.lower() in POSTGRES_SCHEMES:
        return StoreUrl("postgres", text, masked_url(text))
    if separator and scheme.isascii() and scheme.replace("+", "").isalnum():
        raise CopyError(f"unsupported scheme {scheme!r}: {USAGE}")
    raise CopyError(f"not a store URL: {USAGE}")


def masked_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) masked."""
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        in_query = any(name == "password" for name, _ in pairs)
        if parts.password is None and not in_query:
            return url
        netloc, query = parts.netloc, parts.query
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
        if in_query:
            masked = [(name, MASK if name == "password" else value) for name, value in pairs]
            query = urlencode(masked, safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not even parseable: show the scheme alone
        return f"{url.partition(':')[0]}://{MASK}"


def url_secrets(url: str) -> list[str]:
    """The password a URL holds (as written and decoded), to register for redaction."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        values = [parts.password] + [v for n, v in parse_qsl(parts.query) if n == "password"]
    except ValueError:
        return found
    for value in values:
        if value:
            found += [value, unquote(value)]
    return found


def copy_store(
    source_url: str, dest_url: str, *, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every table of the store at ``source_url`` into the empty one at ``dest_url``.

    Returns the rows copied per table (in :data:`TABLES` order). ``progress(table,
    rows so far)`` is called after each batch (once with 0 for an empty table).
    Raises :class:`CopyError` when the copy is refused (bad URL, a missing source
    file, the same database twice, a destination that holds history, schemas that
    disagree) and :class:`~monitor.store.base.StoreError` when a database fails;
    either way the destination is left as it was.
    """
    source_at = parse_store_url(source_url)
    dest_at = parse_store_url(dest_url)
    if _same_database(source_at, dest_at):
        raise CopyError("the source and the destination are the same database")
    if source_at.kind == "sqlite" and not Path(source_at.location).is_file():
        # opening it would create an empty store and copy nothing: say so instead
        raise CopyError(f"the source {source_at.shown} does not exist: no file at that path")
    # the destination first: a refused copy leaves an older source file un-upgraded
    dest = _open(dest_at, "destination")
    try:
        held = _held(dest._query)
        if held:
            raise CopyError(_refusal(dest_at, held))
        source = _open(source_at, "source")
        try:
            return _copy(source, source_at, dest, dest_at, progress or _quiet)
        finally:
            source.close()
    finally:
        dest.close()


def _quiet(table: str, rows: int) -> None:
    return None


def _same_database(a: StoreUrl, b: StoreUrl) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "sqlite":
        return Path(a.location).resolve() == Path(b.location).resolve()
    return a.location == b.location


def _open(at: StoreUrl, role: str) -> SqlStore:
    """The store, migrated to the current schema; StoreError says which side failed."""
    try:
        if at.kind == "sqlite":
            from monitor.store.sqlite import SqliteStore

            return SqliteStore(at.location)
        from monitor.store.postgres import PostgresStore  # the driver loads only when asked

        return PostgresStore(at.location)
    except StoreError as exc:
        raise StoreError(f"the {role} {at.shown}: {exc}") from exc


def _copy(
    source: SqlStore, source_at: StoreUrl, dest: SqlStore, dest_at: StoreUrl, progress: Progress
) -> dict[str, int]:
    """Check that the two schemas agree, then copy every table in one transaction."""
    versions = (source.meta("schema_version"), dest.meta("schema_version"))
    if versions[0] != versions[1]:
        raise CopyError(
            f"the source is at schema version {versions[0]}, the destination at {versions[1]}:"
            " run the same monitor release on both"
        )
    columns = {t.name: _columns(source, source_at, dest, dest_at, t.name) for t in TABLES}
    copied: dict[str, int] = {}
    with dest._tx() as out:
        if dest_at.kind == "postgres":
            # no instance writes meanwhile, and a second copy waits, then finds rows
            names = ", ".join(t.name for t in TABLES)
            out.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
        # checked again inside the transaction: the check before it was advice
        held = _held(lambda sql: [{"n": out.execute(sql).fetchone()[0]}])
        if held:
            raise CopyError(_refusal(dest_at, held))
        with source._tx() as src:
            if source_at.kind == "postgres":
                # one snapshot for every table (the first statement of the transaction)
                src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for table in TABLES:
                copied[table.name] = _copy_table(table, columns[table.name], src, out, progress)
        if dest_at.kind == "postgres":
            for table in TABLES:
                if table.identity:
                    out.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"  # noqa: S608
                        f" COALESCE(MAX(id), 0) + 1, false) FROM {table.name}"
                    )
    return copied


def _columns(
    source: SqlStore, source_at: StoreUrl, dest: SqlStore, dest_at: StoreUrl, table: str
) -> list[str]:
    """The table's columns, in the destination's order; CopyError if the sides differ."""
    found = _column_names(dest, dest_at, table)
    theirs = _column_names(source, source_at, table)
    if sorted(found) != sorted(theirs):
        raise CopyError(
            f"table {table} has columns {', '.join(theirs)} in the source but"
            f" {', '.join(found)} in the destination"
        )
    return found


def _column_names(store: SqlStore, at: StoreUrl, table: str) -> list[str]:
    if at.kind == "sqlite":
        rows = store._query("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
    else:
        rows = store._query(
            "SELECT column_name AS name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
    return [str(row["name"]) for row in rows]


def _held(query: Callable[[str], Sequence[Any]]) -> dict[str, int]:
    """Rows the destination holds per copied table (meta's own schema_version aside)."""
    held: dict[str, int] = {}
    for table in TABLES:
        rows = query(f"SELECT COUNT(*) AS n FROM {table.name}{_where(table)}")  # noqa: S608
        count = int(rows[0]["n"])
        if count:
            held[table.name] = count
    return held


def _refusal(dest_at: StoreUrl, held: dict[str, int]) -> str:
    # any row refuses (even a session would merge two records of uptime), but the
    # message names the history first
    named = {name: n for name, n in held.items() if name in HISTORY} or held
    listed = ", ".join(f"{name}: {_rows(n)}" for name, n in named.items())
    return (
        f"the destination {dest_at.shown} already holds {listed}; copying would merge two"
        " histories, so nothing was copied (copy into a new, empty database)"
    )


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def _where(table: Table, *conditions: str) -> str:
    clauses = [c for c in (table.where, *conditions) if c]
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def _copy_table(table: Table, columns: list[str], src: Tx, out: Tx, progress: Progress) -> int:
    """Copy one table in key order, a batch at a time; the number of rows copied."""
    listed = ", ".join(columns)
    order = ", ".join(table.key)
    key_at = [columns.index(k) for k in table.key]
    after = f"({order}) > ({', '.join('?' * len(table.key))})"
    insert = f"INSERT INTO {table.name} ({listed}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    copied = 0
    last: tuple[Any, ...] | None = None
    while True:
        condition = "" if last is None else after
        batch = src.execute(
            f"SELECT {listed} FROM {table.name}{_where(table, condition)}"  # noqa: S608
            f" ORDER BY {order} LIMIT ?",
            (*(last or ()), BATCH_ROWS),
        ).fetchall()
        if batch:
            _insert_batch(out, table.name, insert, [tuple(row) for row in batch])
            copied += len(batch)
            last = tuple(batch[-1][i] for i in key_at)
        if copied == 0 or batch:
            progress(table.name, copied)
        if len(batch) < BATCH_ROWS:
            break
    # the batches walk the primary key: a row it cannot order (a NULL in a SQLite key)
    # would be left behind, so the count must match the source's, or nothing is copied
    expected = src.execute(f"SELECT COUNT(*) FROM {table.name}{_where(table)}").fetchone()  # noqa: S608
    if int(expected[0]) != copied:
        raise CopyError(
            f"copied {copied:,} of the {int(expected[0]):,} rows of {table.name}"
            " (a row without a primary key?); nothing was copied"
        )
    return copied


def _insert_batch(db: Tx, table: str, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """One batch into the destination (``table`` names it for tests that fail one)."""
    db.executemany(insert, rows)
