"""The human-readable ``monitor report``: one block per target, every figure explained."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.config import format_duration
from monitor.figures.target import TargetFigures
from monitor.store.base import IncidentRow


def percent(ratio: float | None, digits: int = 3) -> str:
    """A ratio as a percentage (``n/a`` for None)."""
    return "n/a" if ratio is None else f"{ratio * 100:.{digits}f} %"


def duration_text(seconds: float | None) -> str:
    """A duration as people read it (``n/a`` for None)."""
    if seconds is None:
        return "n/a"
    return "0s" if seconds < 0.5 else format_duration(seconds)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "no data"}[met]


def render_target(f: TargetFigures) -> str:
    """One target's block."""
    acct = f.account
    w = f.window
    lines = [
        f"{f.target}  (window {w.start:%Y-%m-%d %H:%M} -> {w.end:%Y-%m-%d %H:%M} UTC, {duration_text(w.seconds)})",
        f"  uptime          {percent(acct.uptime)}   up {duration_text(acct.up_s)}, degraded {duration_text(acct.degraded_s)},"
        f" down {duration_text(acct.down_s)}, unknown {duration_text(acct.unknown_s)}",
        f"  coverage        {percent(acct.coverage, 1)}   (time the monitor could vouch for)",
    ]
    if acct.maintenance_s > 0:
        lines.append(
            f"  maintenance     {duration_text(acct.maintenance_s)}   (left out of uptime, coverage"
            " and the error budget)"
        )
    if f.objective is not None and f.budget is not None:
        rates = ", ".join(
            f"{name} {'n/a' if rate is None else f'{rate:.2f}'}"
            for name, rate in f.burn_rates.items()
        )
        remaining = f.budget.remaining_ratio
        left = "n/a" if remaining != remaining else percent(remaining, 1)  # NaN guard
        lines += [
            f"  SLO             {percent(f.objective, 2)}: {_verdict(f.slo_met)};"
            f" error budget left {left} (allowed down {duration_text(f.budget.allowed_down_s)})",
            f"  burn rate       {rates}",
        ]
    m = f.mttr
    lines += [
        f"  incidents       {m.count} ({m.resolved} resolved), downtime {duration_text(m.downtime_s)}",
        f"  MTTR            mean {duration_text(m.mean_s)}, median {duration_text(m.median_s)}, longest {duration_text(m.longest_s)}"
        + (
            f"  (objective < {duration_text(f.mttr_objective_s)}: {_verdict(f.mttr_met)})"
            if f.mttr_objective_s is not None
            else ""
        ),
        f"  MTTA            mean {duration_text(f.mtta.mean_s)}, median {duration_text(f.mtta.median_s)}"
        f"  ({f.mtta.acknowledged} acknowledged; time to acknowledge)",
    ]
    d = f.deployments
    cfr = "n/a" if d.change_failure_ratio is None else percent(d.change_failure_ratio, 1)
    lines.append(
        f"  deployments     {d.deployments} ({d.per_week:.1f} per week); change failure rate {cfr}"
        f" ({d.failed} of {d.deployments})"
    )
    for incident in f.incidents[:10]:
        end = incident.resolved_at
        duration = duration_text((end - incident.started_at).total_seconds()) if end else "ongoing"
        issue = f" #{incident.issue_number}" if incident.issue_number else ""
        lines.append(
            f"    - {incident.started_at:%Y-%m-%d %H:%M:%S} UTC  {duration:>10}{issue}  {incident.id}"
            + _people(incident)
        )
    return "\n".join(lines)


def _by(login: str | None) -> str:
    return f" by @{login}" if login else ""


def _people(incident: IncidentRow) -> str:
    """What people did to an incident: who acknowledged it, who closed its issue early."""
    said = ""
    if incident.acknowledged_at is not None:
        wait = max(0.0, (incident.acknowledged_at - incident.started_at).total_seconds())
        said += f"  acknowledged{_by(incident.acknowledged_by)} after {duration_text(wait)}"
    if incident.closed_at is not None:
        closed = f"{incident.closed_at:%Y-%m-%d %H:%M} UTC"
        said += f"  issue closed{_by(incident.closed_by)} at {closed} (still failing)"
    return said


def render_report(figures: Sequence[TargetFigures]) -> str:
    """Every target's block, separated by blank lines."""
    return "\n\n".join(render_target(f) for f in figures) + "\n"
