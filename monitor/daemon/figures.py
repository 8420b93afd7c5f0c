"""Refreshing the figures: rollups, retention and the SLO gauges, off the event loop."""

from __future__ import annotations

import math
from datetime import datetime

from monitor.config import Settings, TargetConfig
from monitor.figures.history import History
from monitor.figures.slo import WINDOWS, Span
from monitor.figures.target import target_figures
from monitor.logs import get_logger
from monitor.metrics import BURN_WINDOWS, UPTIME_WINDOWS, Metrics
from monitor.store.base import Store

PURGE_EVERY_S = 3600.0
log = get_logger("monitor.daemon")


def _nan(value: float | None) -> float:
    """Prometheus has no null: an undefined ratio is NaN."""
    return math.nan if value is None else value


class FigureRefresher:
    """Rolls up history, applies retention, and sets the uptime, SLO and MTTR gauges."""

    def __init__(self, store: Store, history: History, settings: Settings, metrics: Metrics):
        self._store = store
        self._history = history
        self._settings = settings
        self._metrics = metrics
        self._last_purge: datetime | None = None

    def refresh(self, now: datetime, *, maintain: bool = True) -> None:
        """One pass; raises :class:`~monitor.store.base.StoreError` when the store fails.

        ``maintain`` (the leader only) also rolls up and applies retention: one
        instance writes them, every instance reads them.
        """
        if maintain:
            self._maintain(now)
        for target in self._settings.targets:
            self._refresh_target(target, now)

    def _maintain(self, now: datetime) -> None:
        self._history.rollup(now, [t.name for t in self._settings.targets])
        if self._last_purge is None or (now - self._last_purge).total_seconds() >= PURGE_EVERY_S:
            removed = self._history.purge(now)
            self._last_purge = now
            if any(removed.values()):
                log.info("retention", removed=removed)

    def _refresh_target(self, target: TargetConfig, now: datetime) -> None:
        m, history, name = self._metrics, self._history, target.name
        for window in UPTIME_WINDOWS:
            acct = history.account(name, Span.ending(now, WINDOWS[window]), now)
            m.uptime.labels(name, window).set(_nan(acct.uptime))
            m.coverage.labels(name, window).set(_nan(acct.coverage))
        figures = target_figures(
            history, target, Span.ending(now, self._settings.monitor.slo_window), now
        )
        if figures.budget is not None:
            m.budget_remaining.labels(name).set(figures.budget.remaining_ratio)
        for window in BURN_WINDOWS:
            rate = figures.burn_rates.get(window)
            if target.slo is not None:
                m.burn_rate.labels(name, window).set(_nan(rate))
        for window in UPTIME_WINDOWS[1:]:
            span = Span.ending(now, WINDOWS[window])
            windowed = target_figures(history, target, span, now)
            m.mttr.labels(name, window).set(_nan(windowed.mttr.mean_s))
            m.change_failure.labels(name, window).set(
                _nan(windowed.deployments.change_failure_ratio)
            )
        m.deployments.labels(name).set(len(self._store.deployments(name)))
