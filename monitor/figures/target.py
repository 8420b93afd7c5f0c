"""A target's figures over a window: what ``monitor report`` and the status API say.

Uptime and coverage from the history's time account (maintenance apart); error
budget and burn rates against the target's objective; incidents, MTTR and time to
acknowledge; deployments and the change failure rate. Computed from stored
timestamps, never from gauges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.config import TargetConfig
from monitor.figures.history import History
from monitor.figures.slo import (
    WINDOWS,
    AckStats,
    BudgetReport,
    DeploymentStats,
    MttrStats,
    Span,
    TimeAccount,
    burn_rate,
    deployment_stats,
    error_budget,
    mtta,
    mttr,
)
from monitor.store.base import IncidentRow


@dataclass(frozen=True, slots=True)
class TargetFigures:
    """Everything ``monitor report`` and the status API say about one target and window."""

    target: str
    window: Span
    account: TimeAccount
    objective: float | None
    budget: BudgetReport | None
    burn_rates: Mapping[str, float | None]
    mttr: MttrStats
    mttr_objective_s: float | None
    mtta: AckStats
    deployments: DeploymentStats
    incidents: Sequence[IncidentRow]

    @property
    def slo_met(self) -> bool | None:
        """Uptime at or above the objective; None without an objective or known time."""
        uptime = self.account.uptime
        if self.objective is None or uptime is None:
            return None
        return uptime >= self.objective

    @property
    def mttr_met(self) -> bool | None:
        """Mean time to recovery under its objective; None without one or without incidents."""
        if self.mttr_objective_s is None or self.mttr.mean_s is None:
            return None
        return self.mttr.mean_s < self.mttr_objective_s

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (infinities become null)."""
        acct = self.account
        return {
            "target": self.target,
            "window": {
                "start": self.window.start.isoformat(),
                "end": self.window.end.isoformat(),
                "seconds": self.window.seconds,
            },
            "uptime_ratio": _finite(acct.uptime),
            "coverage_ratio": _finite(acct.coverage),
            "time_s": {
                "up": acct.up_s,
                "degraded": acct.degraded_s,
                "down": acct.down_s,
                "unknown": acct.unknown_s,
                "maintenance": acct.maintenance_s,
            },
            "slo": {
                "objective_ratio": self.objective,
                "met": self.slo_met,
                "error_budget_remaining_ratio": _finite(self.budget.remaining_ratio)
                if self.budget
                else None,
                "allowed_down_s": self.budget.allowed_down_s if self.budget else None,
                "burn_rate": {k: _finite(v) for k, v in self.burn_rates.items()},
            },
            "incidents": {
                "count": self.mttr.count,
                "resolved": self.mttr.resolved,
                "downtime_s": self.mttr.downtime_s,
                "mttr_mean_s": self.mttr.mean_s,
                "mttr_median_s": self.mttr.median_s,
                "longest_s": self.mttr.longest_s,
                "mttr_objective_s": self.mttr_objective_s,
                "mttr_met": self.mttr_met,
                "acknowledged": self.mtta.acknowledged,
                "mtta_mean_s": self.mtta.mean_s,
                "mtta_median_s": self.mtta.median_s,
                "records": [_incident_dict(i) for i in self.incidents],
            },
            "deployments": {
                "count": self.deployments.deployments,
                "per_week": self.deployments.per_week,
                "failed": self.deployments.failed,
                "change_failure_ratio": self.deployments.change_failure_ratio,
            },
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _incident_dict(incident: IncidentRow) -> dict[str, Any]:
    return {
        "id": incident.id,
        "started_at": incident.started_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "duration_s": (incident.resolved_at - incident.started_at).total_seconds()
        if incident.resolved_at
        else None,
        "issue_number": incident.issue_number,
        "issue_url": incident.issue_url,
        "probes_total": incident.probes_total,
        "probes_failed": incident.probes_failed,
        "reopened": incident.reopened,
        "deployment": dict(incident.deployment) if incident.deployment else None,
        "acknowledged_at": _iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "closed_at": _iso(incident.closed_at),  # a person closed the issue while it failed
        "closed_by": incident.closed_by,
    }


def target_figures(
    history: History, target: TargetConfig, window: Span, now: datetime
) -> TargetFigures:
    """Compute a target's figures over a window from stored samples and incidents."""
    acct = history.account(target.name, window, now)
    end = min(window.end, now)
    burn = {}
    for name in ("1h", "6h"):
        recent = history.account(target.name, Span.ending(end, WINDOWS[name]), now)
        burn[name] = burn_rate(target.slo, recent) if target.slo is not None else None
    incidents = [
        i
        for i in history.store.incidents(target.name, since=window.start)
        if i.started_at < window.end
    ]
    records = [i.record for i in incidents]
    failure_window = history.settings.monitor.failure_window
    deployments = history.store.deployments(target.name, since=window.start)
    deployments = [d for d in deployments if d.seen_at < window.end]
    later = history.store.incidents(target.name, since=window.start)
    return TargetFigures(
        target=target.name,
        window=window,
        account=acct,
        objective=target.slo,
        budget=error_budget(target.slo, acct) if target.slo is not None else None,
        burn_rates=burn,
        mttr=mttr(records, window, min(now, window.end) if now > window.start else now),
        mttr_objective_s=target.mttr_objective,
        mtta=mtta(records, window),
        deployments=deployment_stats(
            deployments, [i.record for i in later], window, failure_window
        ),
        incidents=incidents,
    )
