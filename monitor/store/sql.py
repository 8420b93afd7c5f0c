"""The SQL both backends share: history, tracker state, incidents, regions and the outbox.

A probe cycle's results, the tracker's new state and the channel steps it
implies are written in one transaction, so a crash at any point leaves either
all of them or none (DESIGN invariant 2). The statements are written once, in
the subset SQLite and PostgreSQL both speak (``?`` placeholders, ``ON CONFLICT``
upserts, ``RETURNING``); a backend supplies the connection, the transaction and
the few statements that differ.

All times are stored as Unix seconds (floating point, UTC): the same arithmetic
(buckets, slots, ages) then runs in either database.

**Fencing.** With several instances only the leader decides. ``fence(epoch)``
makes every decision write (a cycle's decision, an outbox step's lease and
completion, rollups, retention) check, in its own transaction, that the
``leadership`` row still holds that epoch; a deposed leader's write raises
:class:`NotLeader` and changes nothing. Unfenced (``None``, the default) is for
the command-line tools and the single instance.
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from monitor.figures.maintenance import Window
from monitor.figures.slo import Deployment, Sample, Span, hold_us
from monitor.incidents.tracker import Incident, TrackerState
from monitor.probing.results import Outcome
from monitor.store.base import (
    GITHUB_CHANNEL,
    TRANSIENT,
    ChannelHandle,
    GithubRecord,
    IncidentRow,
    Leadership,
    NewAction,
    NotLeader,
    OutboxAction,
    PendingCycle,
    RegionView,
    ResultStats,
    Row,
)
from monitor.store.codec import (
    deployment_json,
    dt,
    opt_dt,
    result_from_json,
    result_to_json,
    state_from_json,
    state_to_json,
    ts,
)

# How long each sample held inside a span [start, end), per known outcome: from its time
# (or start) until the next sample, its hold limit, or end, whichever comes first, in whole
# microseconds from an origin (integers on both backends, so sums are exact). Samples from
# before ``first`` (another session's, or ended before start) are left out; the last
# sample's next one, if any, is at or past end. Nothing is sorted or buffered whatever the
# number of rows: the index on (target, time) gives the order on either backend; the next
# sample's time is MIN() over a one-row frame rather than LEAD(), whose whole partition
# SQLite buffers (2-3 MB of page cache for an hour of 10 ms samples, kept by the
# allocator); and the three sums are one row, not a GROUP BY, which SQLite would feed
# every row through its sorter for. Parameters: start, start, hold, end, hold, end, hold,
# end, origin, origin, the row keys, low, high (the index range), first.
_HOLDS = (
    "SELECT COALESCE(SUM(CASE WHEN outcome = 'up' THEN held_until - held_from END), 0) AS up,"
    " COALESCE(SUM(CASE WHEN outcome = 'degraded' THEN held_until - held_from END), 0)"
    " AS degraded,"
    " COALESCE(SUM(CASE WHEN outcome = 'down' THEN held_until - held_from END), 0) AS down"
    " FROM ("
    " SELECT outcome,"
    "  CASE WHEN at_us > ? THEN at_us ELSE ? END AS held_from,"
    "  CASE WHEN next_us IS NOT NULL AND next_us < at_us + ? AND next_us < ? THEN next_us"
    "   WHEN at_us + ? < ? THEN at_us + ? ELSE ? END AS held_until"
    " FROM ("
    "  SELECT outcome, CAST(ROUND(({column} - ?) * 1000000) AS BIGINT) AS at_us,"
    "   CAST(ROUND((MIN({column}) OVER (ORDER BY {column}"
    "    ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING) - ?) * 1000000) AS BIGINT)"
    "   AS next_us FROM {table} WHERE {where} AND {column} >= ? AND {column} < ?"
    " ) s WHERE at_us >= ?"
    ") h WHERE held_until > held_from"
)


_KNOWN = (Outcome.UP, Outcome.DEGRADED, Outcome.DOWN)  # what holds: _HOLDS's columns


def _offset_us(moment: datetime, origin: datetime) -> int:
    """Whole microseconds from ``origin`` to ``moment`` (both datetimes: exact)."""
    return (moment - origin) // timedelta(microseconds=1)


class Cursor(Protocol):
    """What both drivers' cursors offer."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Tx(Protocol):
    """One open transaction: statements with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...


class SqlStore(ABC):
    """Everything but the connection. Thread-safe through each backend's lock."""

    # how a backend reads its own clock, in Unix seconds: freshness is judged by the
    # database's clock, so skew between instances cannot make a stale vote count
    DB_NOW: str = ""
    # a row lock for the fencing check (PostgreSQL); SQLite's writers are serialised
    FOR_UPDATE: str = ""
    # the status page's charts downsampled in SQL, per check and slot: (check_name, slot,
    # slowest, started_at of the slowest, n, down, degraded); parameters start, slot
    # length, target, start, end
    LATENCY_SLOTS: str = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.epoch: int | None = None  # see the module docstring: None is unfenced
        self.upgraded_from = 0

    @abstractmethod
    def close(self) -> None:
        """Release the database."""

    @abstractmethod
    def _tx(self, *, pipelined: bool = False) -> AbstractContextManager[Tx]:
        """A write transaction (raises StoreError for database faults); ``pipelined``
        where a backend may send its statements without waiting for each answer."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows by column name (raises StoreError for database faults)."""

    @abstractmethod
    def _values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples, in the order of the select list: for the few queries that
        return hundreds of rows to be read once, where a mapping per row is wasted work."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self._query(sql, params)]

    # ---- leadership --------------------------------------------------------------------

    def fence(self, epoch: int | None) -> None:
        """Act under ``epoch`` from now on (0: a follower, whose decisions are refused)."""
        self.epoch = epoch

    def _check_fence(self, db: Tx) -> None:
        if self.epoch is None:
            return
        fence_sql = "SELECT epoch FROM leadership WHERE id = 1" + self.FOR_UPDATE  # noqa: S608
        row = db.execute(fence_sql).fetchone()
        current = 0 if row is None else int(row[0])
        # epoch 0 is a follower's: refused even before anyone has led (no row yet)
        if self.epoch == 0 or current != self.epoch:
            raise NotLeader(f"leadership epoch is {current}; this instance acts under {self.epoch}")

    def claim_leadership(self, region: str, instance: str, now: datetime) -> int:
        """Begin a new leadership epoch held by this instance; its number.

        The caller holds the leader lock; bumping the epoch fences off whatever a
        previous leader still has in flight.
        """
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO leadership (id, epoch, region, instance, since) VALUES (1, 1, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1,"
                " region = excluded.region, instance = excluded.instance, since = excluded.since"
                " RETURNING epoch",
                (region, instance, ts(now)),
            ).fetchone()
            return int(row[0])

    def leadership(self) -> Leadership | None:
        """The current leadership epoch and who holds it."""
        rows = self._query("SELECT epoch, region, instance, since FROM leadership WHERE id = 1")
        if not rows:
            return None
        row = rows[0]
        return Leadership(int(row["epoch"]), row["region"], row["instance"], dt(row["since"]))

    # ---- sessions -------------------------------------------------------------------

    def start_session(self, now: datetime, instance: str = "local") -> int:
        """Record that the monitor started; its id for heartbeats."""
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO sessions (started_at, last_seen_at, instance) VALUES (?, ?, ?)"
                " RETURNING id",
                (ts(now), ts(now), instance),
            ).fetchone()
            return int(row[0])

    def heartbeat(self, session_id: int, now: datetime) -> None:
        """The monitor is still running at ``now``."""
        with self._tx() as db:
            db.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", (ts(now), session_id))

    def stop_session(self, session_id: int, now: datetime) -> None:
        """The monitor stopped cleanly at ``now``."""
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET last_seen_at = ?, stopped_at = ? WHERE id = ?",
                (ts(now), ts(now), session_id),
            )

    def sessions(self, window: Span, now: datetime, live_grace_s: float = 180.0) -> list[Span]:
        """Spans the monitor was running that overlap ``window``.

        A session that never stopped ends at its last heartbeat, unless it is its
        instance's newest session and that heartbeat is within ``live_grace_s`` of
        ``now``: then it is running and its span reaches ``now``. (Spans of several
        instances overlap; the figures take their union.)
        """
        rows = self._query(
            "SELECT id, instance, started_at, last_seen_at, stopped_at FROM sessions"
            " WHERE started_at < ? AND (stopped_at IS NULL OR stopped_at >= ?)",
            (ts(window.end), ts(window.start)),
        )
        latest = {
            row["instance"]: row["id"]
            for row in self._query("SELECT instance, MAX(id) AS id FROM sessions GROUP BY instance")
        }
        spans = []
        for row in rows:
            end = row["stopped_at"]
            if end is None:
                # only an instance's newest session can still be running: an older one
                # without a stop was killed, and ends at its last heartbeat
                recent = ts(now) - row["last_seen_at"] <= live_grace_s
                live = row["id"] == latest.get(row["instance"]) and recent
                end = ts(now) if live else row["last_seen_at"]
            if end > row["started_at"]:
                spans.append(Span(dt(row["started_at"]), dt(end)))
        return spans

    # ---- one probe cycle ----------------------------------------------------------------

    def commit_cycle(self, cycle: PendingCycle) -> None:
        """Everything one target's probe implies, in one transaction.

        Always this instance's results and its region's view; with a decision (a
        tracker state: the leader, or the single instance), fenced, the decided
        sample, the state, the incident, a deployment and the channel steps.
        ``cycle.incident_deployment`` is the deployment a newly opened incident
        followed (what change failure rate blames).
        """
        self.commit_cycles((cycle,))

    def commit_cycles(self, cycles: Sequence[PendingCycle]) -> None:
        """Several cycles, in order, in one transaction: all of them or none.

        What each writes is :meth:`commit_cycle`'s. A commit is most of a cycle's
        database time (SQLite writes every page the transaction changed to its log;
        PostgreSQL waits a round trip), so the daemon commits together the cycles that
        complete together (``daemon.writer``).
        """
        with self._tx(pipelined=True) as db:
            for cycle in cycles:
                self._write_cycle(db, cycle)
            if any(cycle.state is not None for cycle in cycles):
                # last, so that PostgreSQL's pipeline sends the whole cycle in one round
                # trip: the check still precedes the commit, in the same transaction,
                # holding the leadership row until then, so no new epoch can begin in
                # between
                self._check_fence(db)

    def _write_cycle(self, db: Tx, cycle: PendingCycle) -> None:
        result, state, incident = cycle.result, cycle.state, cycle.incident
        now_ts = ts(result.at)
        self._insert_results(db, cycle)
        if cycle.view is not None:
            self._upsert_view(db, cycle.view)
        if state is None:
            return  # a follower's cycle decides nothing
        decided = cycle.decided or result
        db.execute(
            "INSERT INTO target_samples (target, at, outcome, hold_s) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (target, at) DO UPDATE SET outcome = excluded.outcome,"
            " hold_s = excluded.hold_s",
            (result.target, now_ts, decided.outcome.value, cycle.hold_s),
        )
        db.execute(
            "INSERT INTO tracker_state (target, state, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (target) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            (state.target, state_to_json(state), now_ts),
        )
        if incident is not None:
            self._upsert_incident(db, incident, now_ts)
        self._record_versions(db, cycle)
        if incident is not None and cycle.incident_deployment is not None:
            db.execute(
                "UPDATE incidents SET deployment = ? WHERE id = ?",
                (deployment_json(cycle.incident_deployment), incident.id),
            )
        self._enqueue(db, cycle.actions, now_ts)

    def _insert_results(self, db: Tx, cycle: PendingCycle) -> None:
        db.executemany(
            "INSERT INTO check_results (target, check_name, started_at, duration_s, outcome,"
            " reason, status, detail, region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    c.target,
                    c.check,
                    ts(c.started_at),
                    c.duration_s,
                    c.outcome.value,
                    c.reason.value,
                    c.status_code,
                    c.detail[:500],
                    cycle.region,
                )
                for c in cycle.result.checks
            ],
        )

    def _upsert_view(self, db: Tx, view: RegionView) -> None:
        # an older result (a backlog flushed late) never replaces a newer one
        db.execute(
            "INSERT INTO region_views (target, region, at, seen_at, outcome, since, streak,"  # noqa: S608
            f" hold_s, result) VALUES (?, ?, ?, {self.DB_NOW}, ?, ?, ?, ?, ?)"
            " ON CONFLICT (target, region) DO UPDATE SET at = excluded.at,"
            " seen_at = excluded.seen_at, outcome = excluded.outcome, since = excluded.since,"
            " streak = excluded.streak, hold_s = excluded.hold_s, result = excluded.result"
            " WHERE excluded.at >= region_views.at",
            (
                view.target,
                view.region,
                ts(view.at),
                view.outcome.value,
                ts(view.since),
                view.streak,
                view.hold_s,
                result_to_json(view.result),
            ),
        )

    def _record_versions(self, db: Tx, cycle: PendingCycle) -> None:
        for check in cycle.result.checks:
            if check.version is not None:
                db.execute(
                    "INSERT INTO versions (target, check_name, version, seen_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (target, check_name) DO UPDATE"
                    " SET version = excluded.version, seen_at = excluded.seen_at",
                    (check.target, check.check, check.version, ts(check.started_at)),
                )
        deployment = cycle.deployment
        if deployment is not None:
            db.execute(
                "INSERT INTO deployments (target, from_version, to_version, seen_at)"
                " VALUES (?, ?, ?, ?)",
                (
                    deployment.target,
                    deployment.from_version,
                    deployment.to_version,
                    ts(deployment.seen_at),
                ),
            )

    def region_views(self, target: str | None = None) -> list[RegionView]:
        """Each region's latest view (of one target, or all), with its age by the
        database's clock."""
        sql = (
            "SELECT target, region, at, outcome, since, streak, hold_s, result,"  # noqa: S608
            f" {self.DB_NOW} - seen_at AS age_s FROM region_views"
        )
        params: tuple[Any, ...] = ()
        if target is not None:
            sql += " WHERE target = ?"
            params = (target,)
        rows = self._query(sql + " ORDER BY target, region", params)
        return [
            RegionView(
                target=row["target"],
                region=row["region"],
                at=dt(row["at"]),
                outcome=Outcome(row["outcome"]),
                since=dt(row["since"]),
                streak=int(row["streak"]),
                hold_s=float(row["hold_s"]),
                result=result_from_json(row["result"]),
                age_s=max(0.0, float(row["age_s"])),
            )
            for row in rows
        ]

    def _upsert_incident(self, db: Tx, incident: Incident, now_ts: float) -> None:
        db.execute(
            "INSERT INTO incidents (id, target, started_at, resolved_at, probes_total,"
            " probes_failed, reopened, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET resolved_at = excluded.resolved_at,"
            " probes_total = excluded.probes_total, probes_failed = excluded.probes_failed,"
            " reopened = excluded.reopened, updated_at = excluded.updated_at,"
            # a reopen needs a person again: what people did to the last occurrence goes
            " acknowledged_at = CASE WHEN excluded.reopened > incidents.reopened THEN NULL"
            " ELSE incidents.acknowledged_at END,"
            " acknowledged_by = CASE WHEN excluded.reopened > incidents.reopened THEN NULL"
            " ELSE incidents.acknowledged_by END,"
            " closed_at = CASE WHEN excluded.reopened > incidents.reopened THEN NULL"
            " ELSE incidents.closed_at END,"
            " closed_by = CASE WHEN excluded.reopened > incidents.reopened THEN NULL"
            " ELSE incidents.closed_by END",
            (
                incident.id,
                incident.target,
                ts(incident.started_at),
                None if incident.resolved_at is None else ts(incident.resolved_at),
                incident.probes_total,
                incident.probes_failed,
                incident.reopened,
                now_ts,
            ),
        )

    def _enqueue(self, db: Tx, actions: Iterable[NewAction], now_ts: float) -> None:
        for action in actions:
            if action.supersede:
                # only the newest matters (a body edit): an older one not yet tried goes;
                # one being tried now (claimed: its lease moved next_attempt_at) stays, or
                # a late landing of it could overwrite the newer one
                db.execute(
                    "UPDATE outbox SET done_at = ?, last_error = 'superseded'"
                    " WHERE channel = ? AND incident_id = ? AND kind = ? AND done_at IS NULL"
                    " AND attempts = 0 AND next_attempt_at <= created_at",
                    (now_ts, action.channel, action.incident_id, action.kind),
                )
            db.execute(
                "INSERT INTO outbox (channel, incident_id, target, kind, payload, created_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    action.channel,
                    action.incident_id,
                    action.target,
                    action.kind,
                    json.dumps(action.payload),
                    now_ts,
                    now_ts,
                ),
            )

    def enqueue(self, actions: Sequence[NewAction], now: datetime) -> None:
        """Add actions outside a probe cycle (reconcile, ``verify --file-incident``)."""
        with self._tx() as db:
            self._enqueue(db, actions, ts(now))

    def load_states(self) -> dict[str, TrackerState]:
        """The tracker state of every target seen before."""
        return {
            row["target"]: state_from_json(row["state"])
            for row in self._query("SELECT target, state FROM tracker_state")
        }

    # ---- incidents ------------------------------------------------------------------------

    def _incident_from_row(self, row: Row) -> IncidentRow:
        return IncidentRow(
            id=row["id"],
            target=row["target"],
            started_at=dt(row["started_at"]),
            resolved_at=opt_dt(row["resolved_at"]),
            issue_number=row["issue_number"],
            issue_url=row["issue_url"],
            probes_total=row["probes_total"],
            probes_failed=row["probes_failed"],
            reopened=row["reopened"],
            deployment=json.loads(row["deployment"]) if row["deployment"] else None,
            acknowledged_at=opt_dt(row["acknowledged_at"]),
            acknowledged_by=row["acknowledged_by"],
            closed_at=opt_dt(row["closed_at"]),
            closed_by=row["closed_by"],
        )

    def incident(self, incident_id: str) -> IncidentRow | None:
        """One incident by id."""
        rows = self._query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return self._incident_from_row(rows[0]) if rows else None

    def incidents(
        self, target: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[IncidentRow]:
        """Incidents still open or resolved after ``since``, newest first."""
        sql = "SELECT * FROM incidents WHERE 1 = 1"
        params: list[Any] = []
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        if since is not None:
            sql += " AND (resolved_at IS NULL OR resolved_at >= ?)"
            params.append(ts(since))
        sql += " ORDER BY started_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._incident_from_row(row) for row in self._query(sql, params)]

    def set_issue(self, incident_id: str, number: int, url: str | None) -> None:
        """Remember the GitHub issue that tracks an incident (reconcile's adoption)."""
        with self._tx() as db:
            self._check_fence(db)
            self._record_handle(db, GITHUB_CHANNEL, incident_id, ChannelHandle(number, url))

    # ---- outbox ---------------------------------------------------------------------------

    def _action_from_row(self, row: Row) -> OutboxAction:
        return OutboxAction(
            id=row["id"],
            channel=row["channel"],
            incident_id=row["incident_id"],
            target=row["target"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            created_at=dt(row["created_at"]),
            attempts=row["attempts"],
            next_attempt_at=dt(row["next_attempt_at"]),
            last_error=row["last_error"],
            retry_class=row["retry_class"],
        )

    def due_actions(self, channel: str, now: datetime, limit: int = 20) -> list[OutboxAction]:
        """The oldest pending action of each of the channel's targets, if due.

        A target's actions run in the order they were decided: a new incident's
        ``open`` waits behind the previous incident's close, so a target never has
        two open issues at once. Channels never wait for each other.
        """
        rows = self._query(
            "SELECT o.* FROM outbox o JOIN ("
            "  SELECT target, MIN(id) AS first_id FROM outbox"
            "  WHERE channel = ? AND done_at IS NULL GROUP BY target"
            ") heads ON o.id = heads.first_id WHERE o.next_attempt_at <= ? ORDER BY o.id LIMIT ?",
            (channel, ts(now), limit),
        )
        return [self._action_from_row(row) for row in rows]

    def pending_actions(self, channel: str | None = None) -> list[OutboxAction]:
        """Every action not yet performed (of one channel, or all), oldest first."""
        if channel is None:
            rows = self._query("SELECT * FROM outbox WHERE done_at IS NULL ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM outbox WHERE done_at IS NULL AND channel = ? ORDER BY id", (channel,)
            )
        return [self._action_from_row(row) for row in rows]

    def next_due_at(self, channel: str) -> datetime | None:
        """When the channel's earliest runnable action becomes due."""
        # only the head of each target's queue can run: later actions wait behind it
        rows = self._query(
            "SELECT MIN(o.next_attempt_at) AS at FROM outbox o JOIN ("
            "  SELECT target, MIN(id) AS first_id FROM outbox"
            "  WHERE channel = ? AND done_at IS NULL GROUP BY target"
            ") heads ON o.id = heads.first_id",
            (channel,),
        )
        return opt_dt(rows[0]["at"]) if rows else None

    def handle(self, channel: str, incident_id: str) -> ChannelHandle | None:
        """What the channel recorded for the incident."""
        rows = self._query(
            "SELECT number, url, ref FROM channel_handles WHERE channel = ? AND incident_id = ?",
            (channel, incident_id),
        )
        if not rows:
            return None
        return ChannelHandle(rows[0]["number"], rows[0]["url"], rows[0]["ref"])

    def complete(
        self, action: OutboxAction, now: datetime, handle: ChannelHandle | None = None
    ) -> None:
        """Mark an action done and record the channel's handle, atomically.

        A handle with a number is an issue: it becomes the incident's issue too,
        which the status page and the reports link.
        """
        with self._tx() as db:
            self._check_fence(db)
            db.execute(
                "UPDATE outbox SET done_at = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE id = ?",
                (ts(now), action.id),
            )
            if handle is not None:
                self._record_handle(db, action.channel, action.incident_id, handle)

    def _record_handle(
        self,
        db: Tx,
        channel: str,
        incident_id: str,
        handle: ChannelHandle,
    ) -> None:
        db.execute(
            "INSERT INTO channel_handles (channel, incident_id, number, url, ref)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, incident_id) DO UPDATE"
            " SET number = excluded.number, url = excluded.url, ref = excluded.ref",
            (channel, incident_id, handle.number, handle.url, handle.ref),
        )
        if handle.number is not None:
            db.execute(
                "UPDATE incidents SET issue_number = ?, issue_url = ? WHERE id = ?",
                (handle.number, handle.url, incident_id),
            )

    def lease(self, action: OutboxAction, until: datetime) -> None:
        """Claim ``action``: no process may retry it before ``until`` (a create or comment
        sent by a process killed mid-request may still land on the service's side
        meanwhile). Fenced: a deposed leader cannot claim."""
        with self._tx() as db:
            self._check_fence(db)
            # always past created_at, even with no lease (settle 0) on a frozen test clock:
            # that is how a supersede tells a claimed step from one never tried
            db.execute(
                "UPDATE outbox SET next_attempt_at = CASE WHEN ? > created_at THEN ?"
                " ELSE created_at + 0.000001 END, retry_class = NULL WHERE id = ?",
                (ts(until), ts(until), action.id),
            )

    def retry_later(
        self,
        action: OutboxAction,
        error: str,
        next_attempt_at: datetime,
        retry_class: str = TRANSIENT,
    ) -> None:
        """Count a failed attempt and schedule the next one."""
        with self._tx() as db:
            self._check_fence(db)
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " retry_class = ? WHERE id = ?",
                (error[:500], ts(next_attempt_at), retry_class, action.id),
            )

    def release_backoff(self, channel: str, now: datetime) -> int:
        """Make the channel's transient backoffs due now (the service answered again)."""
        with self._tx() as db:
            self._check_fence(db)
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at = ?, retry_class = NULL"
                " WHERE channel = ? AND done_at IS NULL AND retry_class = ?"
                " AND next_attempt_at > ?",
                (ts(now), channel, TRANSIENT, ts(now)),
            )
            return max(0, cursor.rowcount)

    def pending_counts(self) -> dict[str, int]:
        """Pending steps per channel."""
        rows = self._query(
            "SELECT channel, COUNT(*) AS n FROM outbox WHERE done_at IS NULL GROUP BY channel"
        )
        return {row["channel"]: int(row["n"]) for row in rows}

    def open_handles(self, channel: str) -> list[tuple[str, ChannelHandle]]:
        """(incident id, handle) of the channel's incidents that are not resolved."""
        rows = self._query(
            "SELECT h.incident_id, h.number, h.url, h.ref FROM channel_handles h"
            " JOIN incidents i ON i.id = h.incident_id"
            " WHERE h.channel = ? AND i.resolved_at IS NULL ORDER BY h.incident_id",
            (channel,),
        )
        return [
            (row["incident_id"], ChannelHandle(row["number"], row["url"], row["ref"]))
            for row in rows
        ]

    # ---- people and maintenance ------------------------------------------------------------

    def record_acknowledged(self, incident_id: str, by: str | None, at: datetime) -> None:
        """A person acknowledged the incident (the first acknowledgement counts)."""
        with self._tx() as db:
            self._check_fence(db)
            db.execute(
                "UPDATE incidents SET acknowledged_at = ?, acknowledged_by = ?"
                " WHERE id = ? AND acknowledged_at IS NULL",
                (ts(at), by, incident_id),
            )

    def record_closed(self, incident_id: str, by: str | None, at: datetime) -> None:
        """A person closed the incident's issue while it was open."""
        with self._tx() as db:
            self._check_fence(db)
            db.execute(
                "UPDATE incidents SET closed_at = ?, closed_by = ? WHERE id = ?"
                " AND closed_at IS NULL",
                (ts(at), by, incident_id),
            )

    def add_maintenance(self, window: Window, now: datetime) -> int:
        """Store an ad-hoc window; return its id."""
        targets = None if window.targets is None else json.dumps(sorted(window.targets))
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO maintenance (targets, starts_at, ends_at, reason, source, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (targets, ts(window.start), ts(window.end), window.reason, window.source, ts(now)),
            ).fetchone()
        return int(row[0])

    def end_maintenance(self, target: str, now: datetime) -> int:
        """End every stored window ``target`` is in at ``now``; return how many."""
        ended = [
            w.id
            for w in self.maintenance_windows(now, now + timedelta(microseconds=1))
            if w.covers(target, now) and w.id is not None
        ]
        with self._tx() as db:
            for window_id in ended:
                db.execute("UPDATE maintenance SET ends_at = ? WHERE id = ?", (ts(now), window_id))
        return len(ended)

    def maintenance_windows(self, start: datetime, end: datetime) -> list[Window]:
        """Stored windows overlapping ``[start, end)``, by start."""
        rows = self._query(
            "SELECT * FROM maintenance WHERE ends_at > ? AND starts_at < ? ORDER BY starts_at, id",
            (ts(start), ts(end)),
        )
        return [
            Window(
                dt(row["starts_at"]),
                dt(row["ends_at"]),
                None if row["targets"] is None else frozenset(json.loads(row["targets"])),
                row["reason"],
                row["source"],
                int(row["id"]),
            )
            for row in rows
        ]

    def enqueue_once(self, key: str, actions: Sequence[NewAction], now: datetime) -> bool:
        """Enqueue ``actions`` unless ``key`` was enqueued before; True when it was not.

        The key lands in ``meta`` in the same transaction as the steps, so a crash
        leaves both or neither, and a second leader finds the key and adds nothing.
        """
        with self._tx() as db:
            self._check_fence(db)
            inserted = db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (f"once:{key}", str(ts(now))),
            ).rowcount
            if inserted != 1:
                return False
            self._enqueue(db, actions, ts(now))
        return True

    # ---- what the KPIs read from GitHub ---------------------------------------------------

    def put_github_records(self, records: Sequence[GithubRecord]) -> None:
        """Insert or replace records by (kind, key), in one transaction."""
        if not records:
            return
        with self._tx() as db:
            self._check_fence(db)
            db.executemany(
                "INSERT INTO github_records (kind, key, at, payload) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET at = excluded.at,"
                " payload = excluded.payload",
                [(r.kind, r.key, ts(r.at), json.dumps(r.payload)) for r in records],
            )

    def github_records(
        self, kind: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[GithubRecord]:
        """Records of one kind with ``since <= at < until``, oldest first."""
        rows = self._query(
            "SELECT kind, key, at, payload FROM github_records WHERE kind = ? AND at >= ?"
            " AND at < ? ORDER BY at, key",
            (
                kind,
                float("-inf") if since is None else ts(since),
                float("inf") if until is None else ts(until),
            ),
        )
        return [_github_record(row) for row in rows]

    def github_record(self, kind: str, key: str) -> GithubRecord | None:
        """One record by kind and key."""
        rows = self._query(
            "SELECT kind, key, at, payload FROM github_records WHERE kind = ? AND key = ?",
            (kind, key),
        )
        return _github_record(rows[0]) if rows else None

    def outbox_stats(self, now: datetime) -> tuple[int, float]:
        """(pending count, age in seconds of the oldest pending action)."""
        rows = self._query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE done_at IS NULL"
        )
        count = int(rows[0]["n"])
        oldest = rows[0]["oldest"]
        return count, 0.0 if oldest is None else max(0.0, ts(now) - oldest)

    # ---- history ---------------------------------------------------------------------------

    def samples(self, target: str, window: Span, max_hold_s: float) -> list[Sample]:
        """Target-level samples in the window, plus the ones that may hold into it."""
        rows = self._query(
            "SELECT at, outcome FROM target_samples WHERE target = ? AND at >= ? AND at < ?"
            " ORDER BY at",
            (target, ts(window.start) - max_hold_s, ts(window.end)),
        )
        return [Sample(dt(row["at"]), Outcome(row["outcome"])) for row in rows]

    def holds_us(
        self,
        target: str,
        span: Span,
        since: datetime,
        max_hold_s: float,
        check: str | None = None,
    ) -> dict[Outcome, int]:
        """Microseconds of ``span`` that the target's samples (or one check's results)
        taken at or after ``since`` held, per known outcome, summed in the database
        (see :data:`_HOLDS`)."""
        if check is None:
            where, keys = "target = ?", [target]
            return self._holds("target_samples", "at", where, keys, span, since, max_hold_s)
        where, keys = "target = ? AND check_name = ?", [target, check]
        return self._holds("check_results", "started_at", where, keys, span, since, max_hold_s)

    def sample_counts(self, target: str, span: Span) -> tuple[int, int, int]:
        """(samples, down, degraded) of the target's samples taken in ``span``."""
        row = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN outcome = 'down' THEN 1 ELSE 0 END), 0)"
            " AS down, COALESCE(SUM(CASE WHEN outcome = 'degraded' THEN 1 ELSE 0 END), 0)"
            " AS degraded FROM target_samples WHERE target = ? AND at >= ? AND at < ?",
            (target, ts(span.start), ts(span.end)),
        )[0]
        return int(row["n"]), int(row["down"]), int(row["degraded"])

    def result_stats(
        self, target: str, check: str, span: Span, bounds: Sequence[float]
    ) -> ResultStats:
        """Counts and latency of one check's results started in ``span``, with how many
        fell in each latency bucket (``bounds`` ascending: the first bound at or above)."""
        at_most = ", ".join(
            f"SUM(CASE WHEN duration_s <= ? THEN 1 ELSE 0 END) AS le{i}" for i in range(len(bounds))
        )
        row = self._query(
            "SELECT COUNT(*) AS n,"  # noqa: S608  # only placeholders are formatted in
            " SUM(CASE WHEN outcome = 'down' THEN 1 ELSE 0 END) AS down,"
            " SUM(CASE WHEN outcome = 'degraded' THEN 1 ELSE 0 END) AS degraded,"
            f" SUM(duration_s) AS total, MIN(duration_s) AS low, MAX(duration_s) AS high, {at_most}"
            " FROM check_results WHERE target = ? AND check_name = ?"
            " AND started_at >= ? AND started_at < ?",
            (*bounds, target, check, ts(span.start), ts(span.end)),
        )[0]
        cumulative = [int(row[f"le{i}"] or 0) for i in range(len(bounds))]
        return ResultStats(
            probes=int(row["n"]),
            failures=int(row["down"] or 0),
            degraded=int(row["degraded"] or 0),
            latency_sum=float(row["total"] or 0.0),
            latency_min=None if row["low"] is None else float(row["low"]),
            latency_max=None if row["high"] is None else float(row["high"]),
            histogram=tuple(b - a for a, b in zip([0, *cumulative], cumulative, strict=False)),
        )

    def _holds(
        self,
        table: str,
        column: str,
        where: str,
        keys: Sequence[Any],
        span: Span,
        since: datetime,
        max_hold_s: float,
    ) -> dict[Outcome, int]:
        if span.end <= span.start:
            return {}
        # offsets in whole microseconds from a whole second just before the span: exact
        # integers on both backends, and (at - origin) loses nothing of a stored float
        origin = dt(math.floor(ts(span.start)))
        start, end = _offset_us(span.start, origin), _offset_us(span.end, origin)
        hold = hold_us(max_hold_s)
        first = max(_offset_us(since, origin), start - hold)  # older samples end before start
        low = ts(origin) + first / 1e6 - 1e-3  # for the index; the offsets decide exactly
        params = (start, start, hold, end, hold, end, hold, end, ts(origin), ts(origin))
        rows = self._query(
            _HOLDS.format(column=column, table=table, where=where),
            (*params, *keys, low, ts(span.end), first),
        )
        (row,) = rows
        return {outcome: int(row[outcome.value]) for outcome in _KNOWN}

    def recent_check_results(self, target: str, since: datetime, limit: int) -> list[Row]:
        """The newest ``limit`` raw results since a time, oldest first (for issue timelines)."""
        rows = self._query(
            "SELECT target, check_name, started_at, duration_s, outcome, reason, status, detail,"
            " region FROM check_results WHERE target = ? AND started_at >= ?"
            " ORDER BY started_at DESC LIMIT ?",
            (target, ts(since), limit),
        )
        return [dict(row) for row in rows[::-1]]

    def deployments(self, target: str | None, since: datetime | None = None) -> list[Deployment]:
        """Version changes seen, oldest first."""
        sql = "SELECT target, from_version, to_version, seen_at FROM deployments WHERE seen_at >= ?"
        params: list[Any] = [ts(since) if since else 0.0]
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        rows = self._query(sql + " ORDER BY seen_at", params)
        return [
            Deployment(
                target=row["target"],
                from_version=row["from_version"],
                to_version=row["to_version"],
                seen_at=dt(row["seen_at"]),
            )
            for row in rows
        ]

    def last_versions(self, target: str) -> dict[str, str]:
        """The last version seen per check of a target."""
        rows = self._query("SELECT check_name, version FROM versions WHERE target = ?", (target,))
        return {row["check_name"]: row["version"] for row in rows}

    # ---- rollups and retention ---------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A value from the meta table."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def first_sample_at(self, target: str | None = None) -> datetime | None:
        """The oldest target sample still stored (of one target, or of any)."""
        if target is None:
            rows = self._query("SELECT MIN(at) AS at FROM target_samples")
        else:
            rows = self._query(
                "SELECT MIN(at) AS at FROM target_samples WHERE target = ?", (target,)
            )
        return opt_dt(rows[0]["at"]) if rows else None

    def check_names(self, target: str) -> list[str]:
        """Checks with stored results for a target."""
        rows = self._query(
            "SELECT DISTINCT check_name FROM check_results WHERE target = ?", (target,)
        )
        return [row["check_name"] for row in rows]

    def targets_with_samples(self) -> list[str]:
        """Targets with stored samples."""
        return [row["target"] for row in self._query("SELECT DISTINCT target FROM target_samples")]

    def check_samples(self, target: str, check: str, window: Span, max_hold_s: float) -> list[Row]:
        """Raw results of one check in a window (and the holds reaching into it)."""
        return self._rows(
            "SELECT started_at, duration_s, outcome FROM check_results"
            " WHERE target = ? AND check_name = ? AND started_at >= ? AND started_at < ?"
            " ORDER BY started_at",
            (target, check, ts(window.start) - max_hold_s, ts(window.end)),
        )

    def write_rollups(self, rows: Sequence[Row], watermark: datetime | None) -> None:
        """Upsert rollup rows and move the watermark, in one transaction."""
        columns = (
            "period", "target", "check_name", "bucket", "probes", "failures", "degraded",
            "up_s", "degraded_s", "down_s", "unknown_s", "maintenance_s", "latency_sum",
            "latency_min", "latency_max", "latency_hist",
        )  # fmt: skip
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[4:])
        sql = (
            f"INSERT INTO rollups ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
            f" ON CONFLICT (period, target, check_name, bucket) DO UPDATE SET {updates}"
        )
        with self._tx() as db:
            self._check_fence(db)
            db.executemany(sql, [tuple(row[c] for c in columns) for row in rows])
            if watermark is not None:
                self._set_meta(db, "rollup_watermark", str(ts(watermark)))

    def _set_meta(self, db: Tx, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def rollups(
        self, period: str, target: str, check: str, start: datetime, end: datetime
    ) -> list[Row]:
        """Rollup rows whose bucket starts in [start, end), oldest first."""
        return self._rows(
            "SELECT * FROM rollups WHERE period = ? AND target = ? AND check_name = ?"
            " AND bucket >= ? AND bucket < ? ORDER BY bucket",
            (period, target, check, ts(start), ts(end)),
        )

    def rollup_totals(
        self, period: str, target: str, check: str, start: datetime, end: datetime
    ) -> tuple[int, float, float, float, float, float]:
        """(rows, up_s, degraded_s, down_s, unknown_s, maintenance_s) summed over buckets
        in [start, end)."""
        row = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(up_s), 0) AS up,"
            " COALESCE(SUM(degraded_s), 0) AS degraded, COALESCE(SUM(down_s), 0) AS down,"
            " COALESCE(SUM(unknown_s), 0) AS unknown,"
            " COALESCE(SUM(maintenance_s), 0) AS maintenance FROM rollups"
            " WHERE period = ? AND target = ? AND check_name = ? AND bucket >= ? AND bucket < ?",
            (period, target, check, ts(start), ts(end)),
        )[0]
        return (
            int(row["n"]),
            float(row["up"]),
            float(row["degraded"]),
            float(row["down"]),
            float(row["unknown"]),
            float(row["maintenance"]),
        )

    def latency_slots(
        self, target: str, start: datetime, end: datetime, slot_s: float
    ) -> dict[str, list[tuple[float, float, int, int, int]]]:
        """Per check, per time slot: (time of the slowest probe, its duration, probes,
        down, degraded), oldest first. The status page's charts, downsampled in SQL."""
        rows = self._values(self.LATENCY_SLOTS, (ts(start), slot_s, target, ts(start), ts(end)))
        slots: dict[str, list[tuple[float, float, int, int, int]]] = {}
        for check, _, slowest, at, n, down, degraded in rows:
            slots.setdefault(check, []).append((at, slowest, n, down, degraded))
        return slots

    def median_duration(
        self, target: str, check: str, start: datetime, end: datetime, count: int
    ) -> float | None:
        """The median probe duration of one check over [start, end] with ``count`` probes."""
        if count <= 0:
            return None
        middle = self._query(
            "SELECT duration_s FROM check_results WHERE target = ? AND check_name = ?"
            " AND started_at >= ? AND started_at <= ? ORDER BY duration_s LIMIT ? OFFSET ?",
            (target, check, ts(start), ts(end), 2 - count % 2, (count - 1) // 2),
        )
        values = [float(row["duration_s"]) for row in middle]
        return sum(values) / len(values) if values else None

    def rollups_any(self, period: str, target: str, start: datetime, end: datetime) -> list[Row]:
        """Rollup rows of every check of a target in [start, end)."""
        return self._rows(
            "SELECT * FROM rollups WHERE period = ? AND target = ? AND bucket >= ? AND bucket < ?"
            " ORDER BY bucket",
            (period, target, ts(start), ts(end)),
        )

    def purge(self, raw_before: datetime, rollups_before: datetime) -> dict[str, int]:
        """Delete raw history, finished outbox rows and rollups past their retention."""
        raw = ts(raw_before)
        counts: dict[str, int] = {}
        with self._tx() as db:
            self._check_fence(db)
            counts["check_results"] = db.execute(
                "DELETE FROM check_results WHERE started_at < ?", (raw,)
            ).rowcount
            counts["target_samples"] = db.execute(
                "DELETE FROM target_samples WHERE at < ?", (raw,)
            ).rowcount
            counts["outbox"] = db.execute(
                "DELETE FROM outbox WHERE done_at IS NOT NULL AND done_at < ?", (raw,)
            ).rowcount
            old = ts(rollups_before)
            counts["rollups"] = db.execute("DELETE FROM rollups WHERE bucket < ?", (old,)).rowcount
            counts["sessions"] = db.execute(
                "DELETE FROM sessions WHERE COALESCE(stopped_at, last_seen_at) < ?", (old,)
            ).rowcount
            counts["deployments"] = db.execute(
                "DELETE FROM deployments WHERE seen_at < ?", (old,)
            ).rowcount
            counts["incidents"] = db.execute(
                "DELETE FROM incidents WHERE resolved_at IS NOT NULL AND resolved_at < ?", (old,)
            ).rowcount
            counts["github_records"] = db.execute(
                "DELETE FROM github_records WHERE at < ?", (old,)
            ).rowcount
        return counts


def _github_record(row: Row) -> GithubRecord:
    return GithubRecord(row["kind"], row["key"], dt(row["at"]), json.loads(row["payload"]))
