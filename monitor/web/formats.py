"""How figures read on the status page and the badges: durations, percentages, times.

Plain text only (no markup): the templates escape it. A module of its own
because the snapshot (its ``note``), the page and the badges all word figures
the same way, and the page imports the snapshot's types.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["duration", "milliseconds", "parse_time", "percent", "plural", "when"]


def parse_time(value: str) -> datetime:
    """A snapshot's RFC 3339 time (``…Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def duration(seconds: float) -> str:
    """``0.4 s``, ``45 s``, ``12 min``, ``2 h 5 min``, ``3 d 4 h`` (truncated, never rounded up)."""
    if 0 < seconds < 0.1:
        return "<0.1 s"  # a fresh monitor's error budget is tens of milliseconds: not "0 s"
    if 0 < seconds < 1:
        return f"{round(seconds, 1):g} s"  # sub-second cadences and budgets: not "0 s"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def when(moment: datetime | str, now: datetime, *, seconds: bool = False) -> str:
    """A UTC time, with the date when it is not today's."""
    moment = (parse_time(moment) if isinstance(moment, str) else moment).astimezone(UTC)
    clock = f"{moment:%H:%M:%S} UTC" if seconds else f"{moment:%H:%M} UTC"
    if moment.date() == now.date():
        return clock
    day = f"{moment.day} {moment:%b}"
    if moment.year != now.year:
        day += f" {moment.year}"
    return f"{day}, {clock}"


def percent(ratio: float | None) -> str:
    """A percentage that never rounds up to 100 (99.999 % shows as 99.99 %)."""
    if ratio is None:
        return "no data"
    if ratio >= 1:
        return "100%"
    if 0 < ratio < 0.0001:
        return "<0.01%"
    return f"{math.floor(ratio * 10_000) / 100:.2f}%"


def milliseconds(value: float) -> str:
    """A response time: ``40 ms`` below a second, ``1.2 s`` above."""
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def plural(count: int, word: str) -> str:
    """``1 probe``, ``2 probes``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
