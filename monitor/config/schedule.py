"""``[[maintenance]]`` timing: a one-off start, or a cron expression in a time zone.

Weekday names (``sat,sun``) and ``daily`` with a time of day are written as the cron
expression they mean, so one iterator (croniter) serves every recurring window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_WEEKDAYS = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(,(mon|tue|wed|thu|fri|sat|sun))*$")


@dataclass(frozen=True, slots=True)
class Timing:
    """When a configured window starts: ``once``, or at every ``cron`` match."""

    once: datetime | None
    cron: str | None
    not_before: datetime | None  # a recurring window's first possible start (UTC)


def parse_timing(start: str | None, every: str | None, zone: ZoneInfo) -> Timing:
    """``start`` and ``every`` as a :class:`Timing`; ValueError names the key at fault."""
    every = (every or "").strip().lower()
    if not every:
        if start is None:
            raise ValueError("start: required for a one-off window (or give every)")
        return Timing(_moment(start, zone), None, None)
    if every == "daily" or _WEEKDAYS.fullmatch(every):
        hour, minute = _time_of_day(start)
        days = "*" if every == "daily" else every
        return Timing(None, f"{minute} {hour} * * {days}", None)
    # croniter (with dateutil, ~10 ms) only for a config that has a cron expression: every
    # command loads the config, and the gates never iterate a window
    from croniter import croniter

    if len(every.split()) != 5 or not croniter.is_valid(every):
        raise ValueError(
            f"every: {every!r} is neither weekday names (sat,sun), daily,"
            " nor a five-field cron expression"
        )
    return Timing(None, every, _moment(start, zone) if start else None)


def _moment(text: str, zone: ZoneInfo) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start: {text!r} is not a date and time (2026-12-05T02:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _time_of_day(text: str | None) -> tuple[int, int]:
    match = _TIME_OF_DAY.fullmatch((text or "").strip())
    if match is None:
        raise ValueError(f"start: expected a time of day (02:30) with every, got {text!r}")
    return int(match[1]), int(match[2])
