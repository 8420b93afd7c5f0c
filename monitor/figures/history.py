"""History: hourly and daily rollups, retention, and the time account of any window.

Raw probe results live for ``raw_retention`` (7 days); before they go, each
complete hour is rolled up per target (check ``*``) and per check: probe and
failure counts, time up/degraded/down/unknown/maintenance, latency sum/min/max
and a latency histogram. Days are sums of their hours. A window's time account
uses the hourly rollups for whole hours that are rolled up and the raw samples
for the rest; both follow :func:`monitor.figures.slo.account`, which is additive
across adjacent spans, so the two agree to the microsecond. The raw parts (of an
account, and of the hour being rolled up) are summed by the database with
``account``'s rules (:meth:`History._held`): no stored row becomes a Python object.

Maintenance is the configured ``[[maintenance]]`` windows plus the ones stored from
the API, each for the targets it names. An hour keeps the maintenance it had when it
was rolled up: a window added to the configuration later does not rewrite the past.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor.config import Settings
from monitor.figures.maintenance import Window, configured_windows, spans_for
from monitor.figures.slo import Span, TimeAccount, held_account, watched
from monitor.metrics import PROBE_BUCKETS_S
from monitor.probing.results import Outcome
from monitor.store.base import ResultStats, Store
from monitor.store.codec import dt, ts

HOUR_S = 3600
DAY_S = 86400
TARGET_LEVEL = "*"  # the check name of a target's own rollup rows
ROLLUP_HOURS_PER_PASS = 24 * 8  # bounded work per housekeeping pass
ROLLED_SUMS_KEPT = 4096  # sums of rolled-up hours kept at most (History._rolled_account)
LATENCY_BOUNDS_S = (*PROBE_BUCKETS_S, math.inf)
_NO_HISTOGRAM = (0,) * len(LATENCY_BOUNDS_S)  # a target-level row has no latency


def floor_to(moment: datetime, seconds: int) -> datetime:
    """The start of the hour/day (UTC) that contains ``moment``."""
    return dt(math.floor(ts(moment) / seconds) * seconds)


def ceil_to(moment: datetime, seconds: int) -> datetime:
    """The first hour/day boundary at or after ``moment``."""
    return dt(math.ceil(ts(moment) / seconds) * seconds)


class History:
    """Rollups, retention and windowed accounts over one store."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._read_ahead: tuple[Span, list[Window]] | None = None  # see :meth:`read_ahead`
        self._watermark_ahead: tuple[datetime | None] | None = None  # read once, ahead
        self._raw_ahead: dict[tuple[str, Span, datetime], TimeAccount] | None = None
        self._first_ahead: dict[str, datetime | None] | None = None  # first sample, by target
        self._sessions_ahead: dict[tuple[Span, datetime], list[Span]] | None = None  # by window
        # sums of rolled-up hours by target and hours (:meth:`_rolled_account`), shared
        # with the read-ahead copies and across threads (a dict's get and set are atomic)
        self._rolled: dict[tuple[str, datetime, datetime], TimeAccount] = {}

    def read_ahead(self, span: Span) -> History:
        """This history, for a burst of accounts inside ``span`` (the status snapshot asks
        for about fifteen per target): the maintenance windows overlapping ``span`` and
        the rollup watermark are read once, so are the monitor's sessions of each window
        (every target has the same) and each target's first sample, and an account of raw
        samples asked for twice (the hours after the watermark, which every window ending
        now shares) is summed once. An account reaching outside ``span`` still reads the
        maintenance windows from the store.
        """
        ahead = History(self.store, self.settings)
        ahead._read_ahead = (span, self.maintenance_windows(span))
        ahead._watermark_ahead = (self.watermark(),)
        ahead._raw_ahead = {}
        ahead._first_ahead = {}
        ahead._sessions_ahead = {}
        ahead._rolled = self._rolled
        return ahead

    @property
    def max_hold_s(self) -> float:
        """How long a result vouches for its target: two healthy cadences plus a timeout."""
        monitor = self.settings.monitor
        return 2 * monitor.interval + monitor.timeout

    def watermark(self) -> datetime | None:
        """The end of the rolled-up past."""
        if self._watermark_ahead is not None:
            return self._watermark_ahead[0]
        value = self.store.meta("rollup_watermark")
        return None if value is None else dt(float(value))

    def first_sample_at(self, target: str) -> datetime | None:
        """The target's oldest stored sample (read once per target when read ahead)."""
        if self._first_ahead is None:
            return self.store.first_sample_at(target)
        if target not in self._first_ahead:
            self._first_ahead[target] = self.store.first_sample_at(target)
        return self._first_ahead[target]

    # ---- windowed accounts -------------------------------------------------------------

    def maintenance_windows(self, span: Span) -> list[Window]:
        """Every maintenance window overlapping ``span``, configured or stored, by start."""
        if self._read_ahead is not None:
            ahead, windows = self._read_ahead
            if ahead.start <= span.start and span.end <= ahead.end:
                return [w for w in windows if w.start < span.end and w.end > span.start]
        configured = configured_windows(self.settings.maintenance, span)
        stored = self.store.maintenance_windows(span.start, span.end)
        return sorted([*configured, *stored], key=lambda w: w.start)

    def account(self, target: str, window: Span, now: datetime) -> TimeAccount:
        """Up/degraded/down/unknown/maintenance time of a target over any window."""
        whole_start = ceil_to(window.start, HOUR_S)
        whole_end = floor_to(window.end, HOUR_S)
        watermark = self.watermark()
        if watermark is not None:
            whole_end = min(whole_end, watermark)
        if watermark is None or whole_end <= whole_start:
            return self._raw_account(target, window, now)
        total = self._rolled_account(target, whole_start, whole_end, now)
        if window.start < whole_start:
            total = total + self._raw_account(target, Span(window.start, whole_start), now)
        if whole_end < window.end:
            total = total + self._raw_account(target, Span(whole_end, window.end), now)
        return total

    def _raw_account(self, target: str, window: Span, now: datetime) -> TimeAccount:
        if window.end <= window.start:
            return TimeAccount.zero()
        key = (target, window, now)
        if self._raw_ahead is not None and key in self._raw_ahead:
            return self._raw_ahead[key]
        planned = spans_for(self.maintenance_windows(window), target, window)
        first = self.first_sample_at(target) if self._first_ahead is not None else window.start
        if first is None or first >= window.end:
            # no sample before the window's end, so none holds in it (the start of a long
            # window, from before the oldest raw sample kept): nothing to ask the store
            acct = held_account(window, {}, planned)
        else:
            acct = self._held(target, None, window, self._sessions(window, now), planned)
        if self._raw_ahead is not None:
            self._raw_ahead[key] = acct
        return acct

    def _held(
        self,
        target: str,
        check: str | None,
        window: Span,
        sessions: Sequence[Span],
        planned: Sequence[Span],
    ) -> TimeAccount:
        """The account of raw samples (or one check's results), summed by the database.

        Each part of the window inside a session and outside maintenance is one query
        that returns at most three sums, however many samples it covers: equal to
        :func:`account` over the samples to the microsecond, without a Python object
        per stored row. (At a fast cadence an hour holds tens of thousands of rows;
        building them every housekeeping pass left CPython's small-object arenas, which
        are returned only when empty, a little larger after each pass.)
        """
        held: dict[Outcome, int] = {}
        for since, part in watched(window, sessions, planned):
            found = self.store.holds_us(target, part, since, self.max_hold_s, check)
            for outcome, held_us in found.items():
                held[outcome] = held.get(outcome, 0) + held_us
        return held_account(window, held, planned)

    @property
    def _live_grace_s(self) -> float:
        return 3 * self.settings.monitor.metrics_refresh

    def _sessions(self, window: Span, now: datetime) -> list[Span]:
        if self._sessions_ahead is None:
            return self.store.sessions(window, now, live_grace_s=self._live_grace_s)
        key = (window, now)
        if key not in self._sessions_ahead:
            sessions = self.store.sessions(window, now, live_grace_s=self._live_grace_s)
            self._sessions_ahead[key] = sessions
        return self._sessions_ahead[key]

    def _rolled_account(
        self, target: str, start: datetime, end: datetime, now: datetime
    ) -> TimeAccount:
        """The sum of the rolled-up hours in ``[start, end)``, all before the watermark.

        Kept once read: an hour before the watermark was written by the pass that moved
        the watermark past it and is never written again, so the same hours always sum
        the same. Not kept where retention may yet delete some of them.
        """
        key = (target, start, end)
        kept = self._rolled.get(key)
        if kept is not None:
            return kept
        rows, up, degraded, down, unknown, maintenance = self.store.rollup_totals(
            "hour", target, TARGET_LEVEL, start, end
        )
        missing = (end - start).total_seconds() - rows * HOUR_S  # hours with no row: unwatched
        acct = TimeAccount(up, degraded, down, unknown + max(0.0, missing), maintenance)
        purged_before = now - timedelta(seconds=self.settings.monitor.rollup_retention)
        if start > purged_before + timedelta(days=1):  # a day's margin for clock skew
            if len(self._rolled) >= ROLLED_SUMS_KEPT:
                self._rolled.clear()  # windows slide by the hour: old keys are never asked again
            self._rolled[key] = acct
        return acct

    # ---- rollups ------------------------------------------------------------------------

    def rollup(self, now: datetime, targets: Sequence[str] | None = None) -> int:
        """Roll up complete hours (and days) since the watermark; return hours done."""
        start = self.watermark()
        if start is None:
            first = self.store.first_sample_at()
            if first is None:
                return 0
            start = floor_to(first, HOUR_S)
        end = min(floor_to(now, HOUR_S), start + timedelta(hours=ROLLUP_HOURS_PER_PASS))
        if end <= start:
            return 0  # the current hour is not complete yet
        names = list(targets or self.store.targets_with_samples())
        windows = self.maintenance_windows(Span(start, end))  # read once per pass
        hours = 0
        rows: list[dict[str, Any]] = []
        hour = start
        while hour < end:
            span = Span(hour, hour + timedelta(hours=1))
            for target in names:
                rows += self._hour_rows(target, span, now, spans_for(windows, target, span))
            hours += 1
            hour = span.end
        if hours:
            rows += self._day_rows(names, start, end, rows)
            self.store.write_rollups(rows, end)
        return hours

    def _hour_rows(
        self, target: str, span: Span, now: datetime, planned: Sequence[Span]
    ) -> list[dict[str, Any]]:
        sessions = self.store.sessions(span, now, live_grace_s=self._live_grace_s)
        probes, failures, degraded = self.store.sample_counts(target, span)
        no_latency = ResultStats(probes, failures, degraded, 0.0, None, None, _NO_HISTOGRAM)
        acct = self._held(target, None, span, sessions, planned)
        rows = [self._row("hour", target, TARGET_LEVEL, span.start, acct, no_latency)]
        for check in self.store.check_names(target):
            acct = self._held(target, check, span, sessions, planned)
            stats = self.store.result_stats(target, check, span, LATENCY_BOUNDS_S)
            rows.append(self._row("hour", target, check, span.start, acct, stats))
        return rows

    @staticmethod
    def _row(
        period: str,
        target: str,
        check: str,
        bucket: datetime,
        acct: TimeAccount,
        stats: ResultStats,
    ) -> dict[str, Any]:
        return {
            "period": period,
            "target": target,
            "check_name": check,
            "bucket": ts(bucket),
            "probes": stats.probes,
            "failures": stats.failures,
            "degraded": stats.degraded,
            "up_s": acct.up_s,
            "degraded_s": acct.degraded_s,
            "down_s": acct.down_s,
            "unknown_s": acct.unknown_s,
            "maintenance_s": acct.maintenance_s,
            "latency_sum": stats.latency_sum,
            "latency_min": stats.latency_min,
            "latency_max": stats.latency_max,
            "latency_hist": json.dumps(list(stats.histogram)),
        }

    def _day_rows(
        self,
        targets: Sequence[str],
        start: datetime,
        end: datetime,
        fresh: Sequence[Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Daily rows for each day touched by [start, end), summed from hourly rows."""
        rows = []
        day = floor_to(start, DAY_S)
        while day < end:
            next_day = day + timedelta(days=1)
            for target in targets:
                stored = [dict(r) for r in self.store.rollups_any("hour", target, day, next_day)]
                by_key = {(r["check_name"], r["bucket"]): r for r in stored}
                for row in fresh:
                    if row["target"] == target and ts(day) <= row["bucket"] < ts(next_day):
                        by_key[(row["check_name"], row["bucket"])] = dict(row)
                for check in sorted({check for check, _ in by_key}):
                    hours = [r for (c, _), r in by_key.items() if c == check]
                    rows.append(_sum_rows("day", target, check, day, hours))
            day = next_day
        return rows

    # ---- retention ------------------------------------------------------------------------

    def purge(self, now: datetime) -> dict[str, int]:
        """Drop raw history past retention, but never what is not rolled up yet."""
        monitor = self.settings.monitor
        raw_before = now - timedelta(seconds=monitor.raw_retention)
        watermark = self.watermark()
        if watermark is None:
            raw_before = dt(0)  # nothing rolled up yet: every raw row is still needed
        else:
            # keep the samples whose holds reach into the next hour to be rolled up
            raw_before = min(raw_before, watermark - timedelta(seconds=self.max_hold_s))
        return self.store.purge(raw_before, now - timedelta(seconds=monitor.rollup_retention))


def _sum_rows(
    period: str, target: str, check: str, bucket: datetime, rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    hist = [0] * len(LATENCY_BOUNDS_S)
    for row in rows:
        for index, count in enumerate(json.loads(row["latency_hist"])):
            hist[index] += count
    mins = [r["latency_min"] for r in rows if r["latency_min"] is not None]
    maxs = [r["latency_max"] for r in rows if r["latency_max"] is not None]
    known = sum(HOUR_S for _ in rows)
    return {
        "period": period,
        "target": target,
        "check_name": check,
        "bucket": ts(bucket),
        "probes": sum(int(r["probes"]) for r in rows),
        "failures": sum(int(r["failures"]) for r in rows),
        "degraded": sum(int(r["degraded"]) for r in rows),
        "up_s": sum(float(r["up_s"]) for r in rows),
        "degraded_s": sum(float(r["degraded_s"]) for r in rows),
        "down_s": sum(float(r["down_s"]) for r in rows),
        # hours of the day without a row are unknown too
        "unknown_s": sum(float(r["unknown_s"]) for r in rows) + max(0, DAY_S - known),
        "maintenance_s": sum(float(r["maintenance_s"]) for r in rows),
        "latency_sum": sum(float(r["latency_sum"]) for r in rows),
        "latency_min": min(mins) if mins else None,
        "latency_max": max(maxs) if maxs else None,
        "latency_hist": json.dumps(hist),
    }
