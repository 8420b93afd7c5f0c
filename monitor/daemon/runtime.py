"""What the daemon keeps per target between probe cycles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.config import TargetConfig
from monitor.incidents.tracker import TrackerState
from monitor.probing.results import TargetResult
from monitor.web.source import LiveTarget


@dataclass
class TargetRuntime:
    """One target's tracker state, last result and cadence (monotonic times)."""

    config: TargetConfig
    state: TrackerState
    cadence_s: float
    last_completed: float  # monotonic time of the last completed cycle (or of start-up)
    last_result: TargetResult | None = None
    outcome_since: datetime | None = None  # when the current outcome began

    @property
    def name(self) -> str:
        """The target's name."""
        return self.config.name

    def live(self) -> LiveTarget:
        """The view the status page reads."""
        return LiveTarget(
            self.name, self.state, self.last_result, self.outcome_since, self.cadence_s
        )
