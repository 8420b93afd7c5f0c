"""The KPI table's arithmetic: plain data in, figures out, no I/O.

Every function takes the records of the lookback and a window, and returns one
:class:`Kpi`: its value (None without data), its objective, whether it is met and
how many samples it stands on, with the details a reviewer needs to check it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.figures.slo import Deployment, IncidentRecord, Span, TimeAccount, mttr
from monitor.kpis.records import DeploymentChanges, GhDeployment, PerformanceScore, WorkflowRun

KEYS = (
    "deployment_frequency_per_week",
    "lead_time_median_s",
    "change_failure_rate",
    "mttr_s",
    "test_pass_rate",
    "security_scan_pass_rate",
    "performance_score",
    "staging_health",
)
"""The KPIs in the seed's order: the ``--json`` keys and the metrics' ``kpi`` label."""

# met at or above the objective; the others are met below it
AT_LEAST = frozenset(
    {
        "deployment_frequency_per_week",
        "test_pass_rate",
        "security_scan_pass_rate",
        "performance_score",
        "staging_health",
    }
)
# conclusions that are no verdict on the code: left out of a pass rate, and counted apart
EXCLUDED_CONCLUSIONS = ("cancelled", "skipped")
_WEEK_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Kpi:
    """One row of the table."""

    key: str
    value: float | None  # None when there is no data
    objective: float
    samples: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Whether the value meets its objective; None without a value."""
        if self.value is None:
            return None
        if self.key in AT_LEAST:
            return self.value >= self.objective
        return self.value < self.objective

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object: value, objective, met, samples, then the details."""
        return {
            "value": self.value,
            "objective": self.objective,
            "met": self.met,
            "samples": self.samples,
            **self.detail,
        }


_RUN_ID = re.compile(r"/actions/runs/(\d+)")


def run_id(url: str | None) -> int | None:
    """The workflow run a URL points into (a deployment status's log URL), if any."""
    match = _RUN_ID.search(url or "")
    return int(match[1]) if match else None


def _succeeded(deployments: Sequence[GhDeployment]) -> list[GhDeployment]:
    """Every successful deployment, by success time."""
    found = [d for d in deployments if d.succeeded and d.succeeded_at is not None]
    return sorted(found, key=lambda d: (d.succeeded_at, d.id))


def rollbacks_among(
    deployments: Sequence[GhDeployment], rollback_runs: Sequence[WorkflowRun]
) -> dict[int, GhDeployment]:
    """Deployments that put an older release back rather than ship a change, each with
    the deployment it undid: one made by a run of a rollback workflow, or a second
    deployment in one workflow run (``deploy-production.yml``'s automatic rollback)."""
    rollback_ids = {r.id for r in rollback_runs}
    seen_runs: set[int] = set()
    found: dict[int, GhDeployment] = {}
    previous: GhDeployment | None = None
    for d in _succeeded(deployments):
        run = run_id(d.url)
        if run is not None and (run in rollback_ids or run in seen_runs) and previous:
            found[d.id] = previous
            continue  # the one it undid stays "previous" for the next rollback too
        if run is not None:
            seen_runs.add(run)
        previous = d
    return found


def _successes(
    deployments: Sequence[GhDeployment], window: Span, rollbacks: Mapping[int, GhDeployment]
) -> list[GhDeployment]:
    """Successful deployments of a change whose success falls in the window."""
    return [
        d
        for d in _succeeded(deployments)
        if d.id not in rollbacks and d.succeeded_at is not None and window.contains(d.succeeded_at)
    ]


def _deployment_ref(d: GhDeployment) -> dict[str, Any]:
    return {
        "id": d.id,
        "sha": d.sha,
        "succeeded_at": d.succeeded_at.isoformat() if d.succeeded_at else None,
        "url": d.url,
    }


def deployment_frequency(
    deployments: Sequence[GhDeployment],
    observed: Sequence[Deployment],
    window: Span,
    objective: float,
    match_s: float,
    *,
    covered: Span | None,
    rollbacks: Mapping[int, GhDeployment] | None = None,
) -> Kpi:
    """Successful deployments of a change per week of the window that GitHub's data
    ``covered`` (None: not read yet, so no figure: none seen is not none made).

    Each is cross-checked against the version changes the monitor saw (within
    ``match_s`` after the success, or by sha), and the ones only one side knows are
    listed. Rollbacks put an old release back: they are no deployment of a change.
    """
    rollbacks = rollbacks or {}
    done = _successes(deployments, window, rollbacks)
    seen = [o for o in observed if window.contains(o.seen_at)]
    unmatched = list(seen)
    only_github = []
    for d in done:
        match = _observed_match(d, unmatched, match_s)
        if match is None:
            only_github.append(_deployment_ref(d))
        else:
            unmatched.remove(match)
    span = _overlap(window, covered)
    weeks = 0.0 if span is None else span.seconds / _WEEK_S
    return Kpi(
        "deployment_frequency_per_week",
        len(done) / weeks if weeks > 0 else None,
        objective,
        len(done),
        {
            "deployments": [_deployment_ref(d) for d in done],
            "rollbacks": sum(
                1
                for d in _succeeded(deployments)
                if d.id in rollbacks and d.succeeded_at and window.contains(d.succeeded_at)
            ),
            "covered": None
            if span is None
            else {"start": span.start.isoformat(), "end": span.end.isoformat()},
            "only_in_github": only_github,
            "only_observed": [
                {"seen_at": o.seen_at.isoformat(), "from": o.from_version, "to": o.to_version}
                for o in unmatched
            ],
        },
    )


def _overlap(window: Span, covered: Span | None) -> Span | None:
    if covered is None:
        return None
    start, end = max(window.start, covered.start), min(window.end, covered.end)
    return Span(start, end) if end > start else None


def _observed_match(
    deployment: GhDeployment, observed: Sequence[Deployment], match_s: float
) -> Deployment | None:
    """The version change that is this deployment: the same sha, else the first seen
    between its creation and ``match_s`` after its success."""
    sha = deployment.sha.lower()
    for o in observed:
        version = o.to_version.lower()
        if len(version) >= 7 and (sha.startswith(version) or version.startswith(sha)):
            return o
    assert deployment.succeeded_at is not None
    late = deployment.succeeded_at + timedelta(seconds=match_s)
    for o in observed:
        if deployment.created_at <= o.seen_at <= late:
            return o
    return None


def lead_time(
    changes: Mapping[int, DeploymentChanges],
    deployments: Sequence[GhDeployment],
    window: Span,
    objective: float,
    rollbacks: Mapping[int, GhDeployment] | None = None,
) -> Kpi:
    """Median (and 90th percentile) time from each commit a successful deployment in the
    window introduced to that deployment's success. A deployment with no earlier one
    (basis ``lookback``) counts its commits from the window's first on."""
    lead_s: list[float] = []
    bases: dict[str, int] = {}
    notes = []
    for d in _successes(deployments, window, rollbacks or {}):
        change = changes.get(d.id)
        if change is None:
            continue  # not measured yet: the next sync reads its commits
        bases[change.basis] = bases.get(change.basis, 0) + 1
        if change.note:
            notes.append({"deployment": d.id, "basis": change.basis, "note": change.note})
        assert d.succeeded_at is not None
        commits = change.commits
        if change.basis == "lookback":  # "since the first commit of the window"
            commits = tuple(c for c in commits if c.committed_at >= window.start)
        lead_s += [max(0.0, (d.succeeded_at - c.committed_at).total_seconds()) for c in commits]
    return Kpi(
        "lead_time_median_s",
        statistics.median(lead_s) if lead_s else None,
        objective,
        len(lead_s),
        {
            "p90_s": _p90(lead_s),
            "deployments_measured": sum(bases.values()),
            "basis": bases,
            "notes": notes,
        },
    )


def _p90(values: Sequence[float]) -> float | None:
    """The 90th percentile, interpolated between the closest ranks (NumPy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = 0.9 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def change_failure_rate(
    deployments: Sequence[GhDeployment],
    incidents: Sequence[IncidentRecord],
    rollback_runs: Sequence[WorkflowRun],
    window: Span,
    failure_window_s: float,
    objective: float,
) -> Kpi:
    """The share of successful deployments in the window followed, within the failure
    window, by an incident on the environment's target or by a rollback: a run of a
    rollback workflow (one that ran: not cancelled or skipped), or a rollback
    deployment in the deploy's own run.

    Each incident and each rollback run is blamed on the latest deployment of a change
    before it (of all, not only the window's), as ``deployment_before`` does for the
    monitor's own version changes; a rollback deployment blames the one it undid. A
    deployment blamed by both says ``incident``.
    """
    rollbacks = rollbacks_among(deployments, rollback_runs)
    changes = [d for d in _succeeded(deployments) if d.id not in rollbacks]
    limit = timedelta(seconds=failure_window_s)
    causes: dict[int, dict[str, Any]] = {}

    def blame(culprit: GhDeployment | None, cause: dict[str, Any]) -> None:
        if culprit is not None and (
            culprit.id not in causes or causes[culprit.id]["cause"] == "rollback"
        ):
            causes[culprit.id] = cause

    def latest_before(at: datetime) -> GhDeployment | None:
        found = None
        for d in changes:
            assert d.succeeded_at is not None
            if d.succeeded_at <= at <= d.succeeded_at + limit:
                found = d
        return found

    ran = [r for r in rollback_runs if r.conclusion not in EXCLUDED_CONCLUSIONS]
    for run in sorted(ran, key=lambda r: r.created_at):
        blame(
            latest_before(run.created_at),
            {"cause": "rollback", "run": run.url, "at": run.created_at.isoformat()},
        )
    for rollback_id, undone in rollbacks.items():
        rollback = next(d for d in deployments if d.id == rollback_id)
        assert rollback.succeeded_at is not None
        assert undone.succeeded_at is not None
        if rollback.succeeded_at - undone.succeeded_at <= limit:
            at = rollback.succeeded_at.isoformat()
            blame(undone, {"cause": "rollback", "run": rollback.url, "at": at})
    for incident in sorted(incidents, key=lambda i: i.started_at):
        blame(
            latest_before(incident.started_at),
            {
                "cause": "incident",
                "incident": incident.incident_id,
                "at": incident.started_at.isoformat(),
            },
        )
    done = _successes(deployments, window, rollbacks)
    failures = [{**_deployment_ref(d), **causes[d.id]} for d in done if d.id in causes]
    return Kpi(
        "change_failure_rate",
        len(failures) / len(done) if done else None,
        objective,
        len(done),
        {
            "failed": len(failures),
            "by_incident": sum(1 for f in failures if f["cause"] == "incident"),
            "by_rollback": sum(1 for f in failures if f["cause"] == "rollback"),
            "failures": failures,
        },
    )


def time_to_restore(
    incidents: Sequence[IncidentRecord], window: Span, now: datetime, objective: float
) -> Kpi:
    """Mean time to restore (and the median) of the incidents resolved in the window."""
    stats = mttr(incidents, window, now)
    resolved = [
        {
            "incident": i.incident_id,
            "started_at": i.started_at.isoformat(),
            "duration_s": (i.resolved_at - i.started_at).total_seconds(),
        }
        for i in sorted(incidents, key=lambda i: i.started_at)
        if i.resolved_at is not None and window.contains(i.resolved_at)
    ]
    return Kpi(
        "mttr_s",
        stats.mean_s,
        objective,
        stats.resolved,
        {
            "median_s": stats.median_s,
            "longest_s": stats.longest_s,
            "incidents": stats.count,
            "resolved": resolved,
        },
    )


def pass_rate(
    key: str, runs: Sequence[WorkflowRun], workflows: Sequence[str], window: Span, objective: float
) -> Kpi:
    """The share of completed runs of ``workflows`` created in the window that concluded
    ``success``, at each run's latest attempt; cancelled and skipped runs are left out
    and counted apart, as are runs still going."""
    mine = [r for r in runs if r.workflow in workflows and window.contains(r.created_at)]
    completed = [r for r in mine if r.status == "completed"]
    counted = [r for r in completed if r.conclusion not in EXCLUDED_CONCLUSIONS]
    passed = [r for r in counted if r.conclusion == "success"]
    return Kpi(
        key,
        len(passed) / len(counted) if counted else None,
        objective,
        len(counted),
        {
            "passed": len(passed),
            "failed": len(counted) - len(passed),
            "excluded": {
                c: sum(1 for r in completed if r.conclusion == c) for c in EXCLUDED_CONCLUSIONS
            },
            "not_completed": len(mine) - len(completed),
            "workflows": list(workflows),
            "failures": [
                {"run": r.id, "workflow": r.workflow, "conclusion": r.conclusion, "url": r.url}
                for r in counted
                if r.conclusion != "success"
            ],
        },
    )


def performance_score(
    deployments: Sequence[GhDeployment],
    scores: Mapping[str, PerformanceScore],
    window: Span,
    objective: float,
    rollbacks: Mapping[int, GhDeployment] | None = None,
) -> Kpi:
    """The mean Lighthouse performance score of the commits deployed in the window."""
    done = _successes(deployments, window, rollbacks or {})
    found = [(d, scores[d.sha]) for d in done if d.sha in scores]
    values = [s.score for _, s in found]
    return Kpi(
        "performance_score",
        statistics.fmean(values) if values else None,
        objective,
        len(values),
        {
            "min": min(values) if values else None,
            "scores": [
                {"deployment": d.id, "sha": d.sha, "score": s.score, "url": s.url} for d, s in found
            ],
        },
    )


def staging_health(account: TimeAccount | None, target: str | None, objective: float) -> Kpi:
    """The staging target's time-weighted uptime, with the coverage it stands on."""
    if account is None:
        return Kpi("staging_health", None, objective, 0, {"target": target})
    # time-weighted, not a count of probes: its samples are the hours of known time
    return Kpi(
        "staging_health",
        account.uptime,
        objective,
        int(account.known_s // 3600),
        {"target": target, "coverage": account.coverage, "known_s": account.known_s},
    )
