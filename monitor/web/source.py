"""What the web side reads: the daemon's live view of each target, and the store.

The web never imports the daemon; the daemon satisfies :class:`StatusSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from monitor.config import Settings
from monitor.figures.history import History
from monitor.figures.maintenance import Window
from monitor.incidents.quorum import RegionView, Verdict
from monitor.incidents.tracker import TrackerState
from monitor.probing.results import Outcome, TargetResult
from monitor.store.base import Store


@dataclass(frozen=True, slots=True)
class LiveTarget:
    """What the daemon knows about a target right now (for the status page and API)."""

    name: str
    state: TrackerState  # tracker phase and the open (or last) incident
    last_result: TargetResult | None  # None until the first probe completes
    outcome_since: datetime | None  # when the current outcome (up/degraded/down) began
    cadence_s: float  # the interval it is probed at now
    # each region's latest view, when several regions probe (empty for a lone instance)
    regions: tuple[RegionView, ...] = ()
    quorum: Verdict | None = None  # what the regions say together (several regions only)
    maintenance: Window | None = None  # the maintenance window it is in now, if any

    @property
    def outcome(self) -> Outcome | None:
        """The last outcome, None before the first probe."""
        return None if self.last_result is None else self.last_result.outcome


class StatusSource(Protocol):
    """What the status page reads: the daemon, or a test double.

    The page computes its figures from the store itself rather than reading
    the daemon's gauges (refreshed every ``metrics_refresh``), so that what it
    shows is never older than the snapshot cache's lifetime.
    """

    settings: Settings
    store: Store
    history: History

    def live_targets(self) -> Mapping[str, LiveTarget]:
        """Tracker state and last result per target, read on the event loop."""
        ...

    def now(self) -> datetime:
        """The daemon's clock."""
        ...
