"""The release pipeline's gates: ``monitor check`` (pre-deploy) and ``monitor verify`` (post-deploy).

Both use the daemon's own probe path and incident rule, so a gate and the
daemon never disagree about what "healthy" means.
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
from monitor.probing.results import Outcome, TargetResult

EXIT_OK = 0
EXIT_FAILED = 1


# ---- monitor check ---------------------------------------------------------------------------


def check_report(results: Sequence[TargetResult], attempts: int = 1) -> dict[str, Any]:
    """The JSON form of ``monitor check``."""
    return {
        "ok": all(r.ok for r in results),
        "attempts": attempts,
        "targets": [
            {
                "target": r.target,
                "outcome": r.outcome.value,
                "checked_at": r.at.isoformat(),
                "checks": [
                    {
                        "check": c.check,
                        "url": c.url,
                        "outcome": c.outcome.value,
                        "reason": c.reason.value,
                        "status": c.status_code,
                        "duration_ms": round(c.duration_s * 1000, 1),
                        "detail": c.detail,
                        "version": c.version,
                    }
                    for c in r.checks
                ],
            }
            for r in results
        ],
    }


def check_table(results: Sequence[TargetResult]) -> str:
    """The table a reviewer reads in a workflow log, ending with a one-line verdict."""
    rows = [("TARGET", "CHECK", "OUTCOME", "STATUS", "TIME", "DETAIL")]
    for r in results:
        for c in r.checks:
            rows.append(
                (
                    r.target,
                    c.check,
                    c.outcome.value.upper() if c.outcome is Outcome.DOWN else c.outcome.value,
                    str(c.status_code or "-"),
                    f"{c.duration_s * 1000:.0f} ms",
                    c.detail,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
        for row in rows
    ]
    return "\n".join([*lines, "", verdict(results)]) + "\n"


def verdict(results: Sequence[TargetResult]) -> str:
    """``PASS: ...`` or ``FAIL: ...`` naming what is down."""
    down = [r for r in results if not r.ok]
    if down:
        return "FAIL: " + "; ".join(
            f"{r.target} is down ({', '.join(f'{c.check}: {c.detail}' for c in r.failing)})"
            for r in down
        )
    degraded = [r.target for r in results if r.outcome is Outcome.DEGRADED]
    suffix = f" (degraded: {', '.join(degraded)})" if degraded else ""
    return "PASS: every check is up" + suffix


async def probe_until_healthy(
    settings: Settings,
    wait_s: float,
    retry_every_s: float,
    on_attempt: Callable[[int, list[TargetResult]], None],
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[int, list[TargetResult]]:
    """Probe every target; with ``wait_s`` > 0, retry until all are healthy or time is up."""
    deadline = monotonic() + wait_s
    attempt = 0
    async with Prober(settings.monitor) as prober:
        while True:
            attempt += 1
            results = await prober.probe_targets(settings.targets)
            on_attempt(attempt, results)
            if all(r.ok for r in results) or monotonic() + retry_every_s > deadline:
                return attempt, results
            await asyncio.sleep(retry_every_s)


def run_check(
    settings: Settings,
    *,
    as_json: bool,
    wait_s: float,
    retry_every_s: float,
    out: TextIO,
    progress: TextIO,
) -> int:
    """``monitor check``: 0 when every check is up or degraded, 1 when any is down."""

    def on_attempt(attempt: int, results: list[TargetResult]) -> None:
        if wait_s > 0 and not all(r.ok for r in results):
            progress.write(
                f"attempt {attempt}: {verdict(results)}; retrying in {format_duration(retry_every_s)}\n"
            )
            progress.flush()

    attempts, results = asyncio.run(
        probe_until_healthy(settings, wait_s, retry_every_s, on_attempt)
    )
    if as_json:
        json.dump(check_report(results, attempts), out, indent=2)
        out.write("\n")
    else:
        out.write(check_table(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


# ---- monitor verify ----------------------------------------------------------------------------


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
            "failed_probes": sum(1 for p in self.probes if not p.ok),
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
            f" ({len(record.probes)} probes, {sum(1 for p in record.probes if not p.ok)} failed)\n"
        )
    else:
        out.write(
            f"FAIL: {target.name} failed {record.open_after} probes in a row"
            f" (first failure {record.first_failure_at:%H:%M:%S} UTC): roll back\n"
        )
    return EXIT_OK if record.healthy else EXIT_FAILED


def file_incident_now(settings: Settings, state: TrackerState, result: TargetResult) -> None:
    """Open the incident issue through the same store and outbox the daemon uses."""
    from monitor.daemon.daemon import make_sink
    from monitor.incidents.outbox import OutboxWorker
    from monitor.incidents.text import body, labels_for, title
    from monitor.logs import get_logger
    from monitor.metrics import Metrics
    from monitor.store.base import NewAction
    from monitor.store.sqlite import Store

    assert state.incident is not None
    log = get_logger("monitor.verify")
    now = utcnow()
    store = Store(settings.monitor.state_path)
    try:
        incident = state.incident
        payload = {
            "title": title(result),
            "body": body(incident, result, now),
            "labels": labels_for(incident.target, settings.github.labels),
            "assignees": list(settings.github.assignees),
        }
        store.commit_cycle(
            result,
            2 * settings.monitor.incident_interval,
            state,
            incident,
            [NewAction(incident.id, incident.target, "open", payload)],
        )
        worker = OutboxWorker(store, make_sink(settings), Metrics())
        deadline = time.monotonic() + 60
        while store.pending_actions() and time.monotonic() < deadline:
            if not worker.run_once():
                time.sleep(1)
        filed = store.incident(incident.id)
        if filed is not None and filed.issue_url:
            log.warning("incident filed", issue=filed.issue_url, incident=incident.id)
        elif store.pending_actions():
            log.error(
                "incident not filed yet; it stays queued in the state file", incident=incident.id
            )
    finally:
        store.close()
