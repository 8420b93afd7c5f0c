"""``monitor verify``: the post-deploy verification, whose failure triggers a rollback.

It probes with the daemon's probe path and applies the daemon's own incident
rule (``open_after`` failures in a row), so it trips exactly when the daemon
would open an incident.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from monitor.clock import utcnow
from monitor.config import Settings, TargetConfig, format_duration
from monitor.incidents.tracker import Policy, TrackerState, TransitionKind, step
from monitor.probing.prober import Prober
from monitor.probing.results import TargetResult
from monitor.release.check import EXIT_FAILED, EXIT_OK, check_report


@dataclass
class Verification:
    """The running record of a post-deploy verification."""

    target: str
    duration_s: float
    interval_s: float
    open_after: int
    probes: list[TargetResult] = field(default_factory=list)
    tripped_at: datetime | None = None
    first_failure_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        """True when the failure rule never tripped."""
        return self.tripped_at is None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "target": self.target,
            "healthy": self.healthy,
            "duration_s": self.duration_s,
            "interval_s": self.interval_s,
            "open_after": self.open_after,
            "probes": len(self.probes),
            "failed_probes": sum(1 for p in self.probes if p.down),
            # a probe that could not tell (Prometheus away) is neither failed nor good
            "unknown_probes": sum(1 for p in self.probes if not p.outcome.is_known),
            "first_failure_at": self.first_failure_at.isoformat()
            if self.first_failure_at
            else None,
            "tripped_at": self.tripped_at.isoformat() if self.tripped_at else None,
            "results": check_report(self.probes[-1:])["targets"] if self.probes else [],
        }


def probe_line(index: int, result: TargetResult, elapsed_s: float) -> str:
    """One line per probe, for the workflow log."""
    checks = ", ".join(
        f"{c.check} {c.outcome.value} {c.status_code or '-'} {c.duration_s * 1000:.0f}ms"
        for c in result.checks
    )
    return f"[{format_duration(max(elapsed_s, 0.001))} #{index}] {result.target}: {result.outcome.value.upper()} ({checks})"


async def verify(
    settings: Settings,
    target: TargetConfig,
    duration_s: float,
    interval_s: float,
    on_probe: Callable[[int, TargetResult, float], None],
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[Verification, TrackerState]:
    """Probe for ``duration_s``; stop early when ``open_after`` failures in a row trip the rule."""
    policy = Policy(
        open_after=settings.monitor.open_after, close_after=settings.monitor.close_after
    )
    record = Verification(target.name, duration_s, interval_s, policy.open_after)
    state = TrackerState(target=target.name)
    start = monotonic()
    async with Prober(settings.monitor) as prober:
        index = 0
        while True:
            index += 1
            result = await prober.probe_target(target)
            record.probes.append(result)
            state, transitions = step(state, result, utcnow(), policy)
            on_probe(index, result, monotonic() - start)
            if any(t.kind is TransitionKind.OPENED for t in transitions):
                record.tripped_at = result.at
                record.first_failure_at = state.incident.started_at if state.incident else result.at
                return record, state
            next_at = start + index * interval_s
            if next_at > start + duration_s:
                return record, state
            await asyncio.sleep(max(0.0, next_at - monotonic()))


def run_verify(
    settings: Settings,
    target: TargetConfig,
    *,
    duration_s: float,
    interval_s: float,
    file_incident: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    """``monitor verify``: 0 if the target stayed healthy, 1 if the failure rule tripped."""

    def on_probe(index: int, result: TargetResult, elapsed_s: float) -> None:
        if not as_json:
            out.write(probe_line(index, result, elapsed_s) + "\n")
            out.flush()

    record, state = asyncio.run(verify(settings, target, duration_s, interval_s, on_probe))
    if not record.healthy and file_incident and state.incident is not None:
        file_incident_now(settings, state, record.probes[-1])
    if as_json:
        json.dump(record.as_dict(), out, indent=2)
        out.write("\n")
    elif record.healthy:
        out.write(
            f"PASS: {target.name} stayed healthy for {format_duration(duration_s)}"
            f" ({_counts(record.probes)})\n"
        )
    else:
        out.write(
            f"FAIL: {target.name} failed {record.open_after} probes in a row"
            f" (first failure {record.first_failure_at:%H:%M:%S} UTC): roll back\n"
        )
    return EXIT_OK if record.healthy else EXIT_FAILED


def _counts(probes: Sequence[TargetResult]) -> str:
    failed = sum(1 for p in probes if p.down)
    unknown = sum(1 for p in probes if not p.outcome.is_known)
    text = f"{len(probes)} probes, {failed} failed"
    return text + (f", {unknown} could not tell" if unknown else "")


def file_incident_now(settings: Settings, state: TrackerState, result: TargetResult) -> None:
    """Open the incident through the same store, channels and outbox the daemon uses."""
    from monitor.incidents.channels.factory import configured_channels
    from monitor.incidents.events import EventKind, IncidentEvent
    from monitor.incidents.outbox import OutboxWorker
    from monitor.logs import get_logger
    from monitor.metrics import Metrics
    from monitor.store.base import PendingCycle
    from monitor.store.factory import open_store

    assert state.incident is not None
    log = get_logger("monitor.verify")
    now = utcnow()
    incident = state.incident
    event = IncidentEvent(
        EventKind.OPENED, incident, result, now, key=f"{incident.id}:verify:{now:%Y%m%dT%H%M%S}"
    )
    channels = configured_channels(settings)
    store = open_store(settings)
    try:
        actions = [action for channel in channels for action in channel.plan(event)]
        store.commit_cycle(
            PendingCycle(result, 2 * settings.monitor.incident_interval, state, incident, actions)
        )
        workers = [OutboxWorker(store, channel, Metrics()) for channel in channels]

        def pending() -> bool:
            # only what these channels can deliver: steps for others wait for the daemon
            return any(store.pending_actions(channel.name) for channel in channels)

        deadline = time.monotonic() + 60
        while pending() and time.monotonic() < deadline:
            if not sum(worker.run_once() for worker in workers):
                time.sleep(1)
        filed = store.incident(incident.id)
        if filed is not None and filed.issue_url:
            log.warning("incident filed", issue=filed.issue_url, incident=incident.id)
        elif pending():
            log.error(
                "incident not filed yet; it stays queued in the state file", incident=incident.id
            )
    finally:
        store.close()
