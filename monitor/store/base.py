"""The store's contract: what the rest of the monitor needs from its database.

Two implementations stand behind it (SQLite, the embedded default, and
PostgreSQL past one machine); callers hold a :class:`Store` and never know
which. Every time is an aware UTC datetime here; each backend chooses its own
column types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from monitor.figures.maintenance import Window
from monitor.figures.slo import Deployment, IncidentRecord, Sample, Span
from monitor.incidents.quorum import RegionView as RegionView  # the backends' too
from monitor.incidents.tracker import Incident, TrackerState
from monitor.probing.results import Outcome, TargetResult

Row = Mapping[str, Any]  # a stored row by column name, whatever the backend
GITHUB_CHANNEL = "github"  # the channel whose handles are the incidents' issues
TRANSIENT = "transient"  # a retry a success from the service releases (5xx, network)
HELD = "held"  # a retry the service asked for (Retry-After), or a request still settling


class StoreError(Exception):
    """The state database failed (disk full, read-only, locked, corrupt, unreachable)."""


class NotLeader(StoreError):
    """A fenced write from an instance whose leadership epoch has passed: nothing written."""


@dataclass(frozen=True, slots=True)
class Leadership:
    """Who leads: the epoch (one per leadership, only ever growing) and its holder."""

    epoch: int
    region: str
    instance: str
    since: datetime


@dataclass(frozen=True, slots=True)
class ChannelHandle:
    """What a channel keeps per incident to act on it again later.

    An issue number and URL for GitHub (the incident's *issue*, which the status
    page and reports link); a service's own reference (a Slack ``ts``) in
    ``ref``; nothing at all for channels that need none (the journal).
    """

    number: int | None = None
    url: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxAction:
    """One step of delivering an incident event to a channel, to perform exactly once."""

    id: int
    channel: str  # the channel's name: its own queue, its own handles
    incident_id: str
    target: str
    kind: str  # the channel's own step kind (GitHub: open, comment, edit, close, reopen)
    payload: Mapping[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    retry_class: str | None = None  # TRANSIENT, HELD, or None (never failed, or leased)


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """An incident as stored, with its issue once it has one."""

    id: str
    target: str
    started_at: datetime
    resolved_at: datetime | None
    issue_number: int | None
    issue_url: str | None
    probes_total: int
    probes_failed: int
    reopened: int
    deployment: Mapping[str, Any] | None
    acknowledged_at: datetime | None = None  # a person took it (the issue's ack label)
    acknowledged_by: str | None = None
    closed_at: datetime | None = None  # a person closed its issue before it resolved
    closed_by: str | None = None

    @property
    def record(self) -> IncidentRecord:
        """The value the SLO maths takes."""
        version = (self.deployment or {}).get("to_version")
        return IncidentRecord(
            target=self.target,
            incident_id=self.id,
            started_at=self.started_at,
            resolved_at=self.resolved_at,
            deployment_version=version,
            acknowledged_at=self.acknowledged_at,
        )


@dataclass(frozen=True, slots=True)
class GithubRecord:
    """A document read from GitHub for the KPIs, by kind (a deployment, a workflow run, a
    status) and GitHub's own key; ``at`` orders it and says when retention drops it."""

    kind: str
    key: str
    at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NewAction:
    """An action to enqueue: for which channel and incident, what, with what payload."""

    channel: str
    incident_id: str
    target: str
    kind: str
    payload: Mapping[str, Any]
    # a newer action of the same kind replaces an older one not yet tried (a body edit:
    # only the newest body matters)
    supersede: bool = False


@dataclass(frozen=True, slots=True)
class PendingCycle:
    """One target's probe cycle as :meth:`Store.commit_cycle` takes it.

    The daemon keeps these in memory while the database refuses writes.
    """

    result: TargetResult  # this instance's probe
    hold_s: float  # how long the result vouches for the target
    # the decision, or None where this instance decides nothing (a follower)
    state: TrackerState | None
    incident: Incident | None
    actions: Sequence[NewAction]
    deployment: Deployment | None = None  # a version change seen in this cycle
    incident_deployment: Deployment | None = None  # what a newly opened incident followed
    region: str = "local"  # where the probe ran
    view: RegionView | None = None  # the region's view to publish, if newest
    decided: TargetResult | None = None  # what the tracker judged (the quorum's); default result

    def observation(self) -> PendingCycle:
        """This cycle without its decision: what a deposed leader may still write."""
        return PendingCycle(
            self.result, self.hold_s, None, None, (), region=self.region, view=self.view
        )

    def without_view(self) -> PendingCycle:
        """This cycle without its region view (a newer one of the same target waits)."""
        return replace(self, view=None)


@dataclass(frozen=True, slots=True)
class ResultStats:
    """One check's results in a span, counted by the database: a rollup row's raw figures."""

    probes: int
    failures: int  # results down
    degraded: int  # results degraded
    latency_sum: float  # seconds, 0.0 without results
    latency_min: float | None  # None without results
    latency_max: float | None
    histogram: tuple[int, ...]  # results per latency bucket (the first bound at or above)


class LeaderLock(Protocol):
    """The lock whose holder leads (PostgreSQL's advisory lock on its own session)."""

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        ...

    def alive(self) -> bool:
        """True while the lock is provably still held."""
        ...

    def release(self) -> None:
        """Give the lock up."""
        ...


class Store(Protocol):
    """Everything the monitor keeps: history, tracker state, incidents, the outbox.

    Implementations are thread-safe (the outbox workers and the web read from
    threads) and raise :class:`StoreError` for every database fault.
    """

    upgraded_from: int  # the schema version found when opened (0: a new database)

    def close(self) -> None:
        """Flush and release the database."""
        ...

    # ---- leadership: who may decide (see ``store.sql``'s fencing)

    def fence(self, epoch: int | None) -> None:
        """Act under ``epoch`` (0: follower; None: unfenced, for tools and one instance)."""
        ...

    def claim_leadership(self, region: str, instance: str, now: datetime) -> int:
        """Begin a new leadership epoch held by the caller (who holds the leader lock)."""
        ...

    def leadership(self) -> Leadership | None:
        """The current epoch and its holder."""
        ...

    def leader_lock(self) -> LeaderLock | None:
        """The lock instances compete for; None where only one instance can run (SQLite)."""
        ...

    def region_views(self, target: str | None = None) -> list[RegionView]:
        """Each region's latest view, with its age by the database's clock."""
        ...

    # ---- monitor sessions: the monitor's own downtime counts as unknown

    def start_session(self, now: datetime, instance: str = "local") -> int:
        """Record that the monitor started; its id for heartbeats."""
        ...

    def heartbeat(self, session_id: int, now: datetime) -> None:
        """The monitor is still running at ``now``."""
        ...

    def stop_session(self, session_id: int, now: datetime) -> None:
        """The monitor stopped cleanly at ``now``."""
        ...

    def sessions(self, window: Span, now: datetime, live_grace_s: float = 180.0) -> list[Span]:
        """Spans the monitor was running that overlap ``window``."""
        ...

    # ---- one probe cycle, in one transaction

    def commit_cycle(self, cycle: PendingCycle) -> None:
        """Results, tracker state, incident, deployment and outbox actions, atomically."""
        ...

    def commit_cycles(self, cycles: Sequence[PendingCycle]) -> None:
        """Several cycles, in order, in one transaction: all of them or none."""
        ...

    def load_states(self) -> dict[str, TrackerState]:
        """The tracker state of every target seen before."""
        ...

    # ---- incidents

    def incident(self, incident_id: str) -> IncidentRow | None:
        """One incident by id."""
        ...

    def incidents(
        self, target: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[IncidentRow]:
        """Incidents still open or resolved after ``since``, newest first."""
        ...

    def set_issue(self, incident_id: str, number: int, url: str | None) -> None:
        """Remember the issue that tracks an incident."""
        ...

    # ---- the outbox: one queue per channel, ordered per target

    def enqueue(self, actions: Sequence[NewAction], now: datetime) -> None:
        """Add actions outside a probe cycle (reconcile, ``verify --file-incident``)."""
        ...

    def due_actions(self, channel: str, now: datetime, limit: int = 20) -> list[OutboxAction]:
        """The oldest pending action of each of the channel's targets, if due."""
        ...

    def pending_actions(self, channel: str | None = None) -> list[OutboxAction]:
        """Every action not yet performed (of one channel, or all), oldest first."""
        ...

    def next_due_at(self, channel: str) -> datetime | None:
        """When the channel's earliest runnable action becomes due."""
        ...

    def handle(self, channel: str, incident_id: str) -> ChannelHandle | None:
        """What the channel recorded for the incident."""
        ...

    def complete(
        self, action: OutboxAction, now: datetime, handle: ChannelHandle | None = None
    ) -> None:
        """Mark an action done and record the channel's handle, atomically."""
        ...

    def lease(self, action: OutboxAction, until: datetime) -> None:
        """No process may retry ``action`` before ``until``."""
        ...

    def retry_later(
        self,
        action: OutboxAction,
        error: str,
        next_attempt_at: datetime,
        retry_class: str = TRANSIENT,
    ) -> None:
        """Count a failed attempt and schedule the next one; ``retry_class`` says whether
        a success from the service may release it early (:data:`TRANSIENT`) or not."""
        ...

    def release_backoff(self, channel: str, now: datetime) -> int:
        """Make the channel's steps waiting out a transient backoff due now (the service
        answered again); return how many. Leases and holds are kept."""
        ...

    def outbox_stats(self, now: datetime) -> tuple[int, float]:
        """(pending count, age in seconds of the oldest pending action)."""
        ...

    def pending_counts(self) -> dict[str, int]:
        """Pending steps per channel."""
        ...

    def open_handles(self, channel: str) -> list[tuple[str, ChannelHandle]]:
        """(incident id, handle) of the channel's incidents that are not resolved."""
        ...

    def enqueue_once(self, key: str, actions: Sequence[NewAction], now: datetime) -> bool:
        """Enqueue unless ``key`` was enqueued before (a weekly report); True if enqueued."""
        ...

    # ---- what the KPIs read from GitHub

    def put_github_records(self, records: Sequence[GithubRecord]) -> None:
        """Insert or replace records by (kind, key)."""
        ...

    def github_records(
        self, kind: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[GithubRecord]:
        """Records of one kind with ``since <= at < until``, oldest first."""
        ...

    def github_record(self, kind: str, key: str) -> GithubRecord | None:
        """One record by kind and key."""
        ...

    # ---- people and maintenance

    def record_acknowledged(self, incident_id: str, by: str | None, at: datetime) -> None:
        """A person acknowledged the incident (its issue's ack label)."""
        ...

    def record_closed(self, incident_id: str, by: str | None, at: datetime) -> None:
        """A person closed the incident's issue while it was open."""
        ...

    def add_maintenance(self, window: Window, now: datetime) -> int:
        """Store an ad-hoc window; return its id."""
        ...

    def end_maintenance(self, target: str, now: datetime) -> int:
        """End every stored window ``target`` is in at ``now``; return how many."""
        ...

    def maintenance_windows(self, start: datetime, end: datetime) -> list[Window]:
        """Stored windows overlapping ``[start, end)``, by start."""
        ...

    # ---- history

    def samples(self, target: str, window: Span, max_hold_s: float) -> list[Sample]:
        """Target-level samples in the window, plus the ones that may hold into it."""
        ...

    def holds_us(
        self,
        target: str,
        span: Span,
        since: datetime,
        max_hold_s: float,
        check: str | None = None,
    ) -> dict[Outcome, int]:
        """Microseconds of ``span`` each known outcome held, from the target's samples (or
        ``check``'s results) taken at or after ``since``, summed by the database (no row
        leaves it).

        A sample holds from its time until the next sample's, for at most
        ``max_hold_s``, clipped to ``span``; the caller splits a window into the parts
        inside one session (``since``: the session's start) and outside maintenance
        (:func:`monitor.figures.slo.watched`), so the sums equal
        :func:`monitor.figures.slo.account` over the same samples to the microsecond.
        """
        ...

    def sample_counts(self, target: str, span: Span) -> tuple[int, int, int]:
        """(samples, down, degraded) of the target's samples taken in ``span``."""
        ...

    def result_stats(
        self, target: str, check: str, span: Span, bounds: Sequence[float]
    ) -> ResultStats:
        """Counts and latency of one check's results started in ``span``, and how many fell
        in each latency bucket (``bounds`` ascending: each result in the first at or above)."""
        ...

    def recent_check_results(self, target: str, since: datetime, limit: int) -> list[Row]:
        """The newest ``limit`` raw results since a time, oldest first."""
        ...

    def deployments(self, target: str | None, since: datetime | None = None) -> list[Deployment]:
        """Version changes seen, oldest first."""
        ...

    def last_versions(self, target: str) -> dict[str, str]:
        """The last version seen per check of a target."""
        ...

    def meta(self, key: str) -> str | None:
        """A value from the store's key-value table."""
        ...

    def first_sample_at(self, target: str | None = None) -> datetime | None:
        """The oldest target sample still stored (of one target, or of any)."""
        ...

    def check_names(self, target: str) -> list[str]:
        """Checks with stored results for a target."""
        ...

    def targets_with_samples(self) -> list[str]:
        """Targets with stored samples."""
        ...

    def check_samples(self, target: str, check: str, window: Span, max_hold_s: float) -> list[Row]:
        """Raw results of one check in a window (and the holds reaching into it)."""
        ...

    # ---- rollups and retention

    def write_rollups(self, rows: Sequence[Row], watermark: datetime | None) -> None:
        """Upsert rollup rows and move the watermark, in one transaction."""
        ...

    def rollups(
        self, period: str, target: str, check: str, start: datetime, end: datetime
    ) -> list[Row]:
        """Rollup rows whose bucket starts in [start, end), oldest first."""
        ...

    def rollups_any(self, period: str, target: str, start: datetime, end: datetime) -> list[Row]:
        """Rollup rows of every check of a target in [start, end)."""
        ...

    def rollup_totals(
        self, period: str, target: str, check: str, start: datetime, end: datetime
    ) -> tuple[int, float, float, float, float, float]:
        """(rows, up_s, degraded_s, down_s, unknown_s, maintenance_s) summed over buckets
        in [start, end)."""
        ...

    def latency_slots(
        self, target: str, start: datetime, end: datetime, slot_s: float
    ) -> dict[str, list[tuple[float, float, int, int, int]]]:
        """Per check, per slot: (time of the slowest probe, its duration, probes, down,
        degraded), oldest first."""
        ...

    def median_duration(
        self, target: str, check: str, start: datetime, end: datetime, count: int
    ) -> float | None:
        """The median probe duration of one check over [start, end] with ``count`` probes."""
        ...

    def purge(self, raw_before: datetime, rollups_before: datetime) -> dict[str, int]:
        """Delete what is past its retention; counts per table."""
        ...
