"""``monitor check``: the pre-deploy gate. Probe once (or until healthy) and say so.

It uses the daemon's own probe path, so a gate and the daemon never disagree
about what "healthy" means. With ``--no-open-incident`` it also fails while an
incident is open for a target (see :mod:`monitor.release.incidents`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from monitor.config import Settings, format_duration
from monitor.probing.prober import Prober
from monitor.probing.results import Outcome, TargetResult
from monitor.release.incidents import LookupFailed, OpenIncident

EXIT_OK = 0
EXIT_FAILED = 1


def check_report(results: Sequence[TargetResult], attempts: int = 1) -> dict[str, Any]:
    """The JSON form of ``monitor check``."""
    return {
        "ok": passed(results),
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


def passed(results: Sequence[TargetResult]) -> bool:
    """True when every check is up or degraded (slow still serves). A check that cannot
    tell (Prometheus unreachable, a query with no sample) fails the gate: an approval
    nobody could check is not an approval."""
    return all(r.ok for r in results)


def verdict(results: Sequence[TargetResult]) -> str:
    """``PASS: ...`` or ``FAIL: ...`` naming what is down, or what cannot tell."""
    down = [r for r in results if r.down]
    if down:
        return "FAIL: " + "; ".join(
            f"{r.target} is down ({', '.join(f'{c.check}: {c.detail}' for c in r.failing)})"
            for r in down
        )
    unknown = [c for r in results for c in r.checks if not c.outcome.is_known]
    if unknown:
        return "FAIL: cannot tell: " + "; ".join(
            f"{c.target}/{c.check}: {c.detail}" for c in unknown
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
            if passed(results) or monotonic() + retry_every_s > deadline:
                return attempt, results
            await asyncio.sleep(retry_every_s)


@dataclass(frozen=True, slots=True)
class IncidentGate:
    """What ``--no-open-incident`` found: the open incidents, or why it could not tell."""

    source: str  # "monitor" or "github"
    open: tuple[OpenIncident, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        """True when the source answered and no incident is open."""
        return self.error is None and not self.open

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "ok": self.passed,
            "error": self.error,
            "open_incidents": [i.as_dict() for i in self.open],
        }

    def lines(self) -> list[str]:
        """What a reviewer reads under the table, ending with the incident verdict."""
        if self.error is not None:
            return [f"FAIL: cannot tell whether an incident is open: {self.error}"]
        if not self.open:
            return [f"PASS: no incident is open (asked {self.source})"]
        lines = [
            f"OPEN INCIDENT  {i.target}  {i.title}"
            + (f"  since {i.since}" if i.since else "")
            + f"  {i.url or '(no issue link)'}"
            for i in self.open
        ]
        targets = sorted({i.target for i in self.open})
        return [*lines, f"FAIL: an incident is open for {', '.join(targets)}"]


def gate_incidents(source: str, lookup: Callable[[], list[OpenIncident]]) -> IncidentGate:
    """Run ``lookup``; its failure is the gate's failure, never a pass."""
    try:
        return IncidentGate(source, tuple(lookup()))
    except LookupFailed as exc:
        return IncidentGate(source, error=str(exc))


def run_check(
    settings: Settings,
    *,
    as_json: bool,
    wait_s: float,
    retry_every_s: float,
    out: TextIO,
    progress: TextIO,
    incidents: Callable[[], IncidentGate] | None = None,
) -> int:
    """``monitor check``: 0 when every check is up or degraded, 1 when any is down (or,
    with ``incidents``, when an incident is open or nobody can say)."""

    def on_attempt(attempt: int, results: list[TargetResult]) -> None:
        if wait_s > 0 and not passed(results):
            progress.write(
                f"attempt {attempt}: {verdict(results)}; retrying in {format_duration(retry_every_s)}\n"
            )
            progress.flush()

    attempts, results = asyncio.run(
        probe_until_healthy(settings, wait_s, retry_every_s, on_attempt)
    )
    gate = incidents() if incidents is not None else None
    if as_json:
        report = check_report(results, attempts)
        if gate is not None:
            report["ok"] = report["ok"] and gate.passed
            report["incidents"] = gate.as_dict()
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(check_table(results))
        if gate is not None:
            out.write("\n".join(gate.lines()) + "\n")
    healthy = passed(results) and (gate is None or gate.passed)
    return EXIT_OK if healthy else EXIT_FAILED
