"""Small builders of result values for tests, and a count of the results stored: names
over noise."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A clock the test moves by hand: time-dependent logic without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward (or back, with a negative number)."""
        self.now += timedelta(seconds=seconds)


def at(minutes: float) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


_DEFAULT_REASON = {
    Outcome.UP: Reason.OK,
    Outcome.DEGRADED: Reason.SLOW,
    Outcome.DOWN: Reason.STATUS,
}


def check(
    outcome: Outcome = Outcome.UP,
    reason: Reason | None = None,
    *,
    target: str = "production",
    name: str = "health",
    when: datetime = T0,
    status: int | None = 200,
    detail: str = "",
) -> CheckResult:
    """One check result with sensible defaults."""
    if reason is None:
        reason = {
            Outcome.UP: Reason.OK,
            Outcome.DEGRADED: Reason.SLOW,
            Outcome.UNKNOWN: Reason.EMPTY,
            Outcome.DOWN: Reason.STATUS,
        }[outcome]
    return CheckResult(
        target=target,
        check=name,
        url=f"https://{target}.example/{name}",
        started_at=when,
        duration_s=0.05,
        outcome=outcome,
        reason=reason,
        detail=detail or f"{outcome}",
        status_code=status,
    )


def result(
    outcome: Outcome, when: datetime, *, target: str = "production", **kw: object
) -> TargetResult:
    """A target result with one ``health`` check of the given outcome."""
    return TargetResult(
        target=target, at=when, checks=(check(outcome, target=target, when=when, **kw),)
    )  # type: ignore[arg-type]


def up(when: datetime, target: str = "production") -> TargetResult:
    """A healthy target result."""
    return result(Outcome.UP, when, target=target)


def down(
    when: datetime, target: str = "production", reason: Reason = Reason.STATUS
) -> TargetResult:
    """A failing target result."""
    return result(Outcome.DOWN, when, target=target, reason=reason, status=503)


def stored_results(path: Path) -> int:
    """Rows in check_results of the SQLite file at ``path``, read by another connection."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM check_results").fetchone()[0])
