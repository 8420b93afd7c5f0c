"""Which maintenance windows are open: the configured ones and the API's, cached.

The recorder asks at every cycle, so the answer comes from memory: the configured
windows for the next day and the stored (ad-hoc) ones are read again at every
housekeeping pass and whenever the API changes them. An ad-hoc window opened on
another instance is therefore seen within one housekeeping interval.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from monitor.config import Settings
from monitor.figures.maintenance import CONFIG, Window, active, configured_windows
from monitor.figures.slo import Span
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import Store, StoreError

log = get_logger("monitor.daemon")
LOOKAHEAD = timedelta(days=1)  # configured windows expanded this far ahead at each reload
API = "api"  # Window.source of a window opened through POST /api/maintenance


class MaintenanceWatch:
    """The windows of the next day, in memory; :meth:`active` answers per target."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._windows: list[Window] = []
        self._until: datetime | None = None  # what is loaded holds up to here

    def reload(self, now: datetime) -> None:
        """Read the windows from ``now`` (a little before) to a day ahead."""
        span = Span(now - timedelta(seconds=1), now + LOOKAHEAD)
        windows = configured_windows(self._settings.maintenance, span)
        try:
            windows += self._store.maintenance_windows(span.start, span.end)
        except StoreError as exc:
            # the configured windows still hold; stored ones are kept from the last read
            log.error("could not read maintenance windows", error=str(exc))
            windows += [w for w in self._windows if w.source != CONFIG]
        self._windows = windows
        self._until = span.end

    def active(self, target: str, now: datetime) -> Window | None:
        """The window ``target`` is in at ``now``, if any (and the gauge says so)."""
        window = self.covering(target, now)
        self._metrics.maintenance.labels(target).set(0 if window is None else 1)
        return window

    def covering(self, target: str, at: datetime) -> Window | None:
        """The window ``target`` was or is in at ``at``."""
        if not self._holds(at):
            self.reload(at)
        return active(self._windows, target, at)

    def _holds(self, at: datetime) -> bool:
        """True when what is loaded covers ``at`` with an hour to spare."""
        if self._until is None:
            return False
        return self._until - LOOKAHEAD <= at < self._until - timedelta(hours=1)

    def upcoming(self, now: datetime) -> list[Window]:
        """Windows open at ``now`` or starting within the next day, by start."""
        self.reload(now)
        return sorted((w for w in self._windows if w.end > now), key=lambda w: w.start)

    def start(self, targets: list[str], duration_s: float, reason: str, now: datetime) -> Window:
        """Open an ad-hoc window now (the API's POST)."""
        window = Window(now, now + timedelta(seconds=duration_s), frozenset(targets), reason, API)
        stored = self._store.add_maintenance(window, now)
        self.reload(now)
        log.warning(
            "maintenance window opened",
            targets=targets,
            until=window.end.isoformat(),
            reason=reason,
            window=stored,
        )
        return replace(window, id=stored)

    def end(self, target: str, now: datetime) -> int:
        """End the ad-hoc windows ``target`` is in (the API's DELETE); how many."""
        ended = self._store.end_maintenance(target, now)
        self.reload(now)
        log.warning("maintenance window ended", target=target, windows=ended)
        return ended
