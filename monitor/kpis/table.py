"""The KPI table for a window, assembled from the store: what GitHub told the last
sync, and the monitor's own incidents, version changes and history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.config import Settings
from monitor.figures.history import History
from monitor.figures.slo import Span
from monitor.kpis import maths
from monitor.kpis.maths import Kpi
from monitor.kpis.records import (
    CHANGES,
    DEPLOYMENT,
    PENDING_GIVE_UP_S,
    PERFORMANCE,
    RUN,
    SYNC,
    DeploymentChanges,
    GhDeployment,
    PerformanceScore,
    SyncState,
    WorkflowRun,
)

# before the window: the deployments an incident or rollback early in it may blame, and
# the deployments created before it that succeeded in it
_BEFORE_S = PENDING_GIVE_UP_S


@dataclass(frozen=True, slots=True)
class KpiTable:
    """The eight KPIs over one window, and how fresh GitHub's part of them is."""

    window: Span
    generated_at: datetime
    kpis: tuple[Kpi, ...]
    github_configured: bool
    sync: SyncState

    def kpi(self, key: str) -> Kpi:
        """One row by its key."""
        return next(k for k in self.kpis if k.key == key)

    @property
    def missed(self) -> list[Kpi]:
        """KPIs with data that miss their objective."""
        return [k for k in self.kpis if k.met is False]

    @property
    def data_age_s(self) -> float | None:
        """Seconds since GitHub's data was last read in full; None before the first sync."""
        done = self.sync.succeeded_at
        return None if done is None else max(0.0, (self.generated_at - done).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        """The ``monitor kpis --json`` document."""
        sync = self.sync
        return {
            "generated_at": self.generated_at.isoformat(),
            "window": {
                "start": self.window.start.isoformat(),
                "end": self.window.end.isoformat(),
                "seconds": self.window.seconds,
            },
            "github": {
                "configured": self.github_configured,
                "covers_from": sync.covers_from.isoformat() if sync.covers_from else None,
                "synced_at": sync.succeeded_at.isoformat() if sync.succeeded_at else None,
                "data_age_s": self.data_age_s,
                "last_attempt_at": sync.attempted_at.isoformat() if sync.attempted_at else None,
                "error": sync.error,
                "skipped": sync.warning,
            },
            **{k.key: k.as_dict() for k in self.kpis},
        }


def kpi_table(history: History, settings: Settings, window: Span, now: datetime) -> KpiTable:
    """Every KPI over ``window`` as the store knows them at ``now``."""
    store, kpis = history.store, settings.kpis
    objectives = kpis.objectives
    names = [t.name for t in settings.targets]
    target, staging = kpis.environment_target(names), kpis.staging(names)
    failure_window_s = settings.monitor.failure_window
    early = window.start - timedelta(seconds=max(_BEFORE_S, failure_window_s))
    deployments = [
        d
        for d in map(GhDeployment.from_record, store.github_records(DEPLOYMENT, since=early))
        if d.environment == kpis.environment
    ]
    changes = {
        c.deployment_id: c
        for c in map(DeploymentChanges.from_record, store.github_records(CHANGES, since=early))
    }
    # runs up to a failure window past the end: a rollback of the window's last deployment
    late = window.end + timedelta(seconds=failure_window_s)
    runs = [WorkflowRun.from_record(r) for r in store.github_records(RUN, since=early, until=late)]
    lookback_start = window.start - timedelta(seconds=kpis.lookback)
    scores = {
        s.sha: s
        for s in map(
            PerformanceScore.from_record, store.github_records(PERFORMANCE, since=lookback_start)
        )
    }
    incidents = (
        [i.record for i in store.incidents(target, since=early) if i.started_at < window.end]
        if target
        else []
    )
    observed = store.deployments(target, since=window.start) if target else []
    rollback_runs = [r for r in runs if r.workflow in kpis.rollback_workflows]
    rollbacks = maths.rollbacks_among(deployments, rollback_runs)
    account = history.account(staging, window, now) if staging else None
    until = min(now, window.end) if now > window.start else now
    sync = SyncState.from_record(store.github_record(SYNC, "state"))
    rows: Sequence[Kpi] = (
        maths.deployment_frequency(
            deployments,
            observed,
            window,
            objectives.deployment_frequency_per_week,
            settings.monitor.interval + settings.monitor.timeout,
            covered=_covered(sync),
            rollbacks=rollbacks,
        ),
        maths.lead_time(changes, deployments, window, objectives.lead_time_median_s, rollbacks),
        maths.change_failure_rate(
            deployments,
            incidents,
            rollback_runs,
            window,
            failure_window_s,
            objectives.change_failure_rate,
        ),
        maths.time_to_restore(incidents, window, until, objectives.mttr_s),
        maths.pass_rate(
            "test_pass_rate", runs, kpis.test_workflows, window, objectives.test_pass_rate
        ),
        maths.pass_rate(
            "security_scan_pass_rate",
            runs,
            kpis.security_workflows,
            window,
            objectives.security_scan_pass_rate,
        ),
        maths.performance_score(
            deployments, scores, window, objectives.performance_score, rollbacks
        ),
        maths.staging_health(account, staging, objectives.staging_health),
    )
    return KpiTable(
        window,
        now,
        tuple(rows),
        kpis.enabled and settings.github.active,
        sync,
    )


def _covered(sync: SyncState) -> Span | None:
    """The stretch GitHub's data covers: from the first sync's lookback to the last sync."""
    if sync.succeeded_at is None or sync.covers_from is None:
        return None
    return Span(sync.covers_from, sync.succeeded_at)
