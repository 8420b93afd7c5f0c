"""``monitor check``: the pre-deploy gate. Probe once (or until healthy) and say so.

It uses the daemon's own probe path, so a gate and the daemon never disagree
about what "healthy" means.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from monitor.config import Settings, format_duration
from monitor.probing.prober import Prober
from monitor.probing.results import Outcome, TargetResult

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
    """True when no check is down. Degraded passes (it serves), and so does unknown: a
    check that cannot tell (a query with no samples) is no evidence against a deploy;
    ``on_empty = "down"`` makes it one."""
    return not any(r.down for r in results)


def verdict(results: Sequence[TargetResult]) -> str:
    """``PASS: ...`` or ``FAIL: ...`` naming what is down."""
    down = [r for r in results if r.down]
    if down:
        return "FAIL: " + "; ".join(
            f"{r.target} is down ({', '.join(f'{c.check}: {c.detail}' for c in r.failing)})"
            for r in down
        )
    notes = []
    degraded = [r.target for r in results if r.outcome is Outcome.DEGRADED]
    if degraded:
        notes.append(f"degraded: {', '.join(degraded)}")
    unknown = [f"{c.target}/{c.check}" for r in results for c in r.checks if not c.outcome.is_known]
    if unknown:
        notes.append(f"unknown: {', '.join(unknown)}")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return "PASS: no check is down" + suffix if unknown else "PASS: every check is up" + suffix


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
        if wait_s > 0 and not passed(results):
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
    return EXIT_OK if passed(results) else EXIT_FAILED
