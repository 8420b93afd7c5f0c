"""The daemon's own health: what ``/healthz`` answers and what the watchdog watches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from monitor import __version__
from monitor.config import MonitorSection
from monitor.daemon.runtime import TargetRuntime
from monitor.incidents.outbox import SinkHealth


def stale_targets(
    targets: Mapping[str, TargetRuntime], now_mono: float, monitor: MonitorSection
) -> dict[str, float]:
    """Targets with no completed cycle for ``stall_after`` cadences (seconds since)."""
    limit, grace = monitor.stall_after, monitor.timeout
    return {
        name: round(now_mono - rt.last_completed, 1)
        for name, rt in targets.items()
        if now_mono - rt.last_completed > limit * rt.cadence_s + grace
    }


def assess(
    *,
    targets: Mapping[str, TargetRuntime],
    now_mono: float,
    monitor: MonitorSection,
    scheduler_alive: bool,
    store_problem: str | None,
    sink_name: str,
    sink: SinkHealth,
    channels: Mapping[str, SinkHealth],
    outbox: tuple[int, float],
    started_at: datetime,
    cluster: Mapping[str, Any],
) -> tuple[bool, dict[str, Any]]:
    """(healthy, the JSON body of ``/healthz``): every reason to worry, by name."""
    stale = stale_targets(targets, now_mono, monitor)
    problems = []
    if not scheduler_alive:
        problems.append("scheduler is not running")
    if stale:
        problems.append("no completed probe cycle for: " + ", ".join(sorted(stale)))
    if store_problem:
        problems.append(store_problem)
    if sink.auth_problem:
        problems.append(f"GitHub refuses the token or repository: {sink.last_error}")
    for name, health in sorted(channels.items()):
        if health.problem:
            problems.append(f"channel {name}: {health.problem}")
    pending, oldest_s = outbox
    detail: dict[str, Any] = {
        "version": __version__,
        "started_at": started_at.isoformat(),
        **cluster,
        "problems": problems,
        "sink": {"name": sink_name, **sink.as_dict()},
        "channels": {name: health.as_dict() for name, health in sorted(channels.items())},
        "outbox": {"pending": pending, "oldest_age_s": round(oldest_s, 1)},
        "targets": {
            name: {
                "phase": rt.state.phase.value,
                "cadence_s": rt.cadence_s,
                "seconds_since_cycle": round(now_mono - rt.last_completed, 1),
            }
            for name, rt in targets.items()
        },
    }
    return not problems, detail
