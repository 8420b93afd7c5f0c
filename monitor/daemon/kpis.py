"""The KPIs in the daemon: the leader syncs with GitHub every ``kpis.sync_interval``
and files the weekly report; every instance sets the KPI gauges from the store.

It runs in a worker thread of its own, apart from the figures' refresh: a slow
GitHub delays neither probes nor the other figures.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.figures.history import History
from monitor.figures.slo import Span
from monitor.incidents.channels.journal import JOURNAL
from monitor.kpis.maths import KEYS
from monitor.kpis.report import REPORT_LABEL, html_base, report_marker, weekly_report
from monitor.kpis.table import KpiTable, kpi_table
from monitor.kpis.weeks import closed_weeks, iso_week
from monitor.logs import detach_handlers, get_logger
from monitor.metrics import Metrics
from monitor.store.base import GITHUB_CHANNEL, NewAction, Store, StoreError

if TYPE_CHECKING:
    from monitor.kpis.sync import KpiSync

log = get_logger("monitor.kpis")
REPORT_TARGET = "kpi-report"  # the report's own outbox queue: it never waits on an incident
# after the monitor was down over weeks, it files those missed, up to this many
CATCH_UP_WEEKS = 4


class KpiWatch:
    """Syncs (the leader), reports (the leader) and exports the KPI table (everyone)."""

    def __init__(
        self,
        store: Store,
        history: History,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], datetime],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._wake = wake  # the outbox workers: a queued report goes out at once
        self._history = history
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._github = settings.kpis.enabled and settings.github.active
        self._made: KpiSync | None = None
        for key in KEYS:
            self._metrics.kpi_objective.labels(key).set(getattr(settings.kpis.objectives, key))

    def stop(self) -> None:
        """Shutting down: a sync still running sends no further request."""
        self._stopping.set()

    def tick(self, acting: bool) -> None:
        """One pass (in a worker thread); a pass still running makes this one a no-op.

        Each step fails alone: a sync that broke still leaves the gauges (and with them
        the data's age, which KpiDataStale reads) exported.
        """
        if not self._busy.acquire(blocking=False):
            return
        try:
            now = self._clock()
            steps: list[tuple[str, Callable[[datetime], object]]] = [("export", self.export)]
            if acting:  # GitHub and the report are the leader's
                steps.insert(0, ("sync", self._maybe_sync))
                if self._settings.kpis.report_every:
                    steps.append(("report", self._maybe_report))
            for name, step in steps:
                try:
                    step(now)
                except StoreError as exc:
                    self._metrics.store_errors.labels("kpis").inc()
                    log.error("could not refresh the KPIs", step=name, error=str(exc))
                except Exception as exc:  # a bug of ours must not stop the next pass
                    log.exception("KPI step failed", step=name, error=repr(exc))
        finally:
            self._busy.release()

    @property
    def _sync(self) -> KpiSync | None:
        """The GitHub reader with a token, else None; made in the first pass (in its
        thread, holding ``_busy``), so PyGithub loads after the first probes, not before."""
        if self._github and self._made is None:
            from monitor.kpis.sync import KpiSync

            detach_handlers("github")  # PyGithub's own stderr handler, as the channel does
            self._made = KpiSync(self._store, self._settings, self._clock, stopping=self._stopping)
        return self._made

    def _maybe_sync(self, now: datetime) -> None:
        sync = self._sync
        if sync is None or not sync.due(now):
            return
        state = sync.sync(now)
        self._metrics.kpi_requests.labels("not_modified").inc(state.not_modified)
        self._metrics.kpi_requests.labels("read").inc(state.requests - state.not_modified)
        if state.error:
            self._metrics.kpi_sync_errors.inc()

    def export(self, now: datetime) -> KpiTable:
        """Set the gauges from the table over ``kpis.window`` up to ``now``."""
        m = self._metrics
        table = kpi_table(
            self._history, self._settings, Span.ending(now, self._settings.kpis.window), now
        )
        for kpi in table.kpis:
            m.kpi_value.labels(kpi.key).set(math.nan if kpi.value is None else kpi.value)
            m.kpi_met.labels(kpi.key).set(math.nan if kpi.met is None else float(kpi.met))
        age = table.data_age_s
        if age is None:
            # tried and never read: infinitely old, so KpiDataStale fires (no data: NaN)
            tried = self._github and table.sync.attempted_at is not None
            age = math.inf if tried else math.nan
        m.kpi_data_age.set(age)
        return table

    def _maybe_report(self, now: datetime) -> None:
        """File each closed week's report once its data is in, exactly once.

        The latest closed week, and the weeks before it back to the last one filed (at
        most CATCH_UP_WEEKS), so a monitor down over a Monday still reports that week.
        """
        weeks = closed_weeks(now, CATCH_UP_WEEKS)
        filed = [i for i, w in enumerate(weeks) if self._filed(w)]
        for week in weeks[filed[-1] + 1 :] if filed else weeks[-1:]:
            if not self._data_covers(week):
                return  # later weeks wait too: reports go out in order
            self._report(week, now)

    def _filed(self, week: Span) -> bool:
        return self._store.meta(f"once:kpi-report:{iso_week(week.start)}") is not None

    def _data_covers(self, week: Span) -> bool:
        """GitHub was read in full after the week ended, runs back to the lookback too
        (so the week's re-runs are in)."""
        sync = self._sync
        if sync is None:
            return True
        state = sync.state()
        done, deep = state.succeeded_at, state.deep_scan_at
        return done is not None and done >= week.end and (deep is None or deep >= week.end)

    def _report(self, week: Span, now: datetime) -> None:
        name = iso_week(week.start)
        before = Span(week.start - timedelta(days=7), week.start)
        table = kpi_table(self._history, self._settings, week, now)
        previous = kpi_table(self._history, self._settings, before, now)
        github = self._settings.github
        title, body = weekly_report(
            table,
            previous,
            github.repository or "",
            html_base(github.api_url),
            self._issue_of,
        )
        channel = GITHUB_CHANNEL if github.active else JOURNAL
        action = NewAction(
            channel,
            f"kpi-report-{name}",
            REPORT_TARGET,
            "report",
            {
                "title": title,
                "body": body,
                "labels": [REPORT_LABEL],
                "week": name,
                "marker": report_marker(name),
            },
        )
        if self._store.enqueue_once(f"kpi-report:{name}", [action], now):
            log.info("KPI report queued", week=name, channel=channel)
            self._wake()

    def _issue_of(self, incident_id: str) -> str | None:
        row = self._store.incident(incident_id)
        return None if row is None else row.issue_url
