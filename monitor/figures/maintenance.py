"""Maintenance windows: when nobody is paged, and which time the SLO leaves out.

Two sources, one shape (:class:`Window`):

* ``[[maintenance]]`` in the configuration, once or recurring (a cron expression or
  weekday names, in a time zone: a window at 02:00 Paris time stays at 02:00 across
  daylight saving); expanded here for any span of time;
* ad-hoc windows from the deploy workflow (``monitor maintenance start``), stored
  by the daemon and read back as rows.

Pure: no I/O, no clock reads (``now`` and spans are arguments).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.config.schedule import Timing
from monitor.config.schema import MaintenanceConfig
from monitor.figures.slo import Span

CONFIG = "config"  # Window.source of a configured window


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window: ``[start, end)`` for some targets (None: all)."""

    start: datetime
    end: datetime
    targets: frozenset[str] | None
    reason: str
    source: str = CONFIG  # "config", or who opened it ("api")
    id: int | None = None  # a stored window's row

    def covers(self, target: str, at: datetime) -> bool:
        """True when ``target`` is in this window at ``at``."""
        return self.start <= at < self.end and self.applies_to(target)

    def applies_to(self, target: str) -> bool:
        """True when the window names ``target`` (or names none: all)."""
        return self.targets is None or target in self.targets


def windows_of(config: MaintenanceConfig, span: Span) -> list[Window]:
    """Every window of one ``[[maintenance]]`` entry that overlaps ``span``."""
    timing = config.timing
    length = timedelta(seconds=config.duration)
    targets = None if config.targets is None else frozenset(config.targets)
    if timing.once is not None:
        starts = [timing.once]
    else:
        starts = _cron_starts(timing, ZoneInfo(config.timezone), span, length)
    return [
        Window(start, start + length, targets, config.reason)
        for start in starts
        if start < span.end and start + length > span.start
    ]


def _cron_starts(timing: Timing, zone: ZoneInfo, span: Span, length: timedelta) -> list[datetime]:
    assert timing.cron is not None
    # croniter (with dateutil, ~1 MB resident) only for a config with a recurring window
    from croniter import croniter

    # a window that began up to `length` before the span still overlaps it
    begin = span.start - length
    if timing.not_before is not None:
        begin = max(begin, timing.not_before - timedelta(microseconds=1))
    it = croniter(timing.cron, begin.astimezone(zone))
    # A fixed hour ("30 2 * * *") means one window a day, as cron runs it once: on the
    # autumn change the repeated 02:30 is skipped. An hourly expression keeps both.
    fixed_hour = not any(c in timing.cron.split()[1] for c in "*/")
    starts: list[datetime] = []
    while True:
        local = it.get_next(datetime)
        start = local.astimezone(UTC)
        if start >= span.end:
            return starts
        if fixed_hour and start.astimezone(zone).fold == 1:
            continue  # the second occurrence of a wall-clock time
        starts.append(start)


def configured_windows(configs: Sequence[MaintenanceConfig], span: Span) -> list[Window]:
    """Every configured window overlapping ``span``, by start."""
    windows = [w for config in configs for w in windows_of(config, span)]
    return sorted(windows, key=lambda w: w.start)


def active(windows: Iterable[Window], target: str, at: datetime) -> Window | None:
    """The window ``target`` is in at ``at`` (the one ending last), or None."""
    covering = [w for w in windows if w.covers(target, at)]
    return max(covering, key=lambda w: w.end, default=None)


def spans_for(windows: Iterable[Window], target: str, span: Span) -> list[Span]:
    """The parts of ``span`` that ``target`` spent in maintenance, merged, in order."""
    parts = sorted(
        (max(w.start, span.start), min(w.end, span.end))
        for w in windows
        if w.applies_to(target) and w.start < span.end and w.end > span.start
    )
    merged: list[list[datetime]] = []
    for start, end in parts:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [Span(start, end) for start, end in merged]
