"""ISO weeks in UTC: what the weekly report is filed per, and when the runs are re-read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.figures.slo import Span


def iso_week(moment: datetime) -> str:
    """``2026-W49``: the ISO week ``moment`` (UTC) falls in."""
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def week_span(moment: datetime) -> Span:
    """The ISO week (Monday 00:00 UTC to the next) that ``moment`` falls in."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day - timedelta(days=day.weekday())
    return Span(start, start + timedelta(days=7))


def closed_weeks(now: datetime, count: int) -> list[Span]:
    """The ``count`` latest ISO weeks that have ended by ``now``, oldest first."""
    latest = week_span(now).start
    return [
        Span(latest - timedelta(days=7 * n), latest - timedelta(days=7 * (n - 1)))
        for n in range(count, 0, -1)
    ]
