"""History: hourly and daily rollups, retention, and the time account of any window.

Raw probe results live for ``raw_retention`` (7 days); before they go, each
complete hour is rolled up per target (check ``*``) and per check: probe and
failure counts, time up/degraded/down/unknown/maintenance, latency sum/min/max
and a latency histogram. Days are sums of their hours. A window's time account
uses the hourly rollups for whole hours that are rolled up and the raw samples
for the rest; both come from :func:`monitor.figures.slo.account`, which is additive
across adjacent spans, so the two agree to the microsecond.

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
from monitor.figures.slo import Sample, Span, TimeAccount, account
from monitor.metrics import PROBE_BUCKETS_S
from monitor.probing.results import Outcome
from monitor.store.base import Row, Store
from monitor.store.codec import dt, ts

HOUR_S = 3600
DAY_S = 86400
TARGET_LEVEL = "*"  # the check name of a target's own rollup rows
ROLLUP_HOURS_PER_PASS = 24 * 8  # bounded work per housekeeping pass
LATENCY_BOUNDS_S = (*PROBE_BUCKETS_S, math.inf)


def floor_to(moment: datetime, seconds: int) -> datetime:
    """The start of the hour/day (UTC) that contains ``moment``."""
    return dt(math.floor(ts(moment) / seconds) * seconds)


def ceil_to(moment: datetime, seconds: int) -> datetime:
    """The first hour/day boundary at or after ``moment``."""
    return dt(math.ceil(ts(moment) / seconds) * seconds)


def _histogram(durations: Sequence[float]) -> list[int]:
    counts = [0] * len(LATENCY_BOUNDS_S)
    for duration in durations:
        for index, bound in enumerate(LATENCY_BOUNDS_S):
            if duration <= bound:
                counts[index] += 1
                break
    return counts


class History:
    """Rollups, retention and windowed accounts over one store."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._read_ahead: tuple[Span, list[Window]] | None = None  # see :meth:`read_ahead`

    def read_ahead(self, span: Span) -> History:
        """This history, with the maintenance windows overlapping ``span`` read once.

        A burst of accounts inside ``span`` (the status snapshot asks for about fifteen
        per target) then filters that list instead of querying the store each time;
        an account reaching outside ``span`` still reads the store.
        """
        ahead = History(self.store, self.settings)
        ahead._read_ahead = (span, self.maintenance_windows(span))
        return ahead

    @property
    def max_hold_s(self) -> float:
        """How long a result vouches for its target: two healthy cadences plus a timeout."""
        monitor = self.settings.monitor
        return 2 * monitor.interval + monitor.timeout

    def watermark(self) -> datetime | None:
        """The end of the rolled-up past."""
        value = self.store.meta("rollup_watermark")
        return None if value is None else dt(float(value))

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
        total = self._rolled_account(target, whole_start, whole_end)
        if window.start < whole_start:
            total = total + self._raw_account(target, Span(window.start, whole_start), now)
        if whole_end < window.end:
            total = total + self._raw_account(target, Span(whole_end, window.end), now)
        return total

    def _raw_account(self, target: str, window: Span, now: datetime) -> TimeAccount:
        if window.end <= window.start:
            return TimeAccount.zero()
        samples = self.store.samples(target, window, self.max_hold_s)
        sessions = self.store.sessions(window, now, live_grace_s=self._live_grace_s)
        planned = spans_for(self.maintenance_windows(window), target, window)
        return account(samples, window, self.max_hold_s, sessions, maintenance=planned)

    @property
    def _live_grace_s(self) -> float:
        return 3 * self.settings.monitor.metrics_refresh

    def _rolled_account(self, target: str, start: datetime, end: datetime) -> TimeAccount:
        rows, up, degraded, down, unknown, maintenance = self.store.rollup_totals(
            "hour", target, TARGET_LEVEL, start, end
        )
        missing = (end - start).total_seconds() - rows * HOUR_S  # hours with no row: unwatched
        return TimeAccount(up, degraded, down, unknown + max(0.0, missing), maintenance)

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
        target_samples = self.store.samples(target, span, self.max_hold_s)
        rows = []
        check_rows = []
        for check in self.store.check_names(target):
            raw = self.store.check_samples(target, check, span, self.max_hold_s)
            samples = [Sample(dt(r["started_at"]), Outcome(r["outcome"])) for r in raw]
            inside = [r for r in raw if span.start <= dt(r["started_at"]) < span.end]
            acct = account(samples, span, self.max_hold_s, sessions, maintenance=planned)
            check_rows.append(self._row("hour", target, check, span.start, acct, inside))
        target_inside = [s for s in target_samples if span.contains(s.at)]
        acct = account(target_samples, span, self.max_hold_s, sessions, maintenance=planned)
        rows.append(
            self._row(
                "hour",
                target,
                TARGET_LEVEL,
                span.start,
                acct,
                [],
                probes=len(target_inside),
                failures=sum(1 for s in target_inside if s.outcome is Outcome.DOWN),
                degraded=sum(1 for s in target_inside if s.outcome is Outcome.DEGRADED),
            )
        )
        return rows + check_rows

    @staticmethod
    def _row(
        period: str,
        target: str,
        check: str,
        bucket: datetime,
        acct: TimeAccount,
        raw: Sequence[Row],
        *,
        probes: int | None = None,
        failures: int | None = None,
        degraded: int | None = None,
    ) -> dict[str, Any]:
        durations = [float(r["duration_s"]) for r in raw]
        return {
            "period": period,
            "target": target,
            "check_name": check,
            "bucket": ts(bucket),
            "probes": len(raw) if probes is None else probes,
            "failures": sum(1 for r in raw if r["outcome"] == "down")
            if failures is None
            else failures,
            "degraded": sum(1 for r in raw if r["outcome"] == "degraded")
            if degraded is None
            else degraded,
            "up_s": acct.up_s,
            "degraded_s": acct.degraded_s,
            "down_s": acct.down_s,
            "unknown_s": acct.unknown_s,
            "maintenance_s": acct.maintenance_s,
            "latency_sum": sum(durations),
            "latency_min": min(durations, default=None),
            "latency_max": max(durations, default=None),
            "latency_hist": json.dumps(_histogram(durations)),
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
