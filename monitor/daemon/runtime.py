"""What the daemon keeps per target between probe cycles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from monitor.config import TargetConfig
from monitor.figures.maintenance import Window
from monitor.incidents.quorum import Quorum, RegionView, Verdict, VerdictKind, decide
from monitor.incidents.tracker import TrackerState
from monitor.probing.results import TargetResult
from monitor.web.source import LiveTarget


@dataclass
class RegionStreak:
    """This region's own run of good or down results of one target."""

    down: bool | None = None  # None before the first result
    since: datetime | None = None
    count: int = 0

    def observe(self, result: TargetResult) -> None:
        """Extend the run, or start a new one at this result; an unknown result
        neither extends nor breaks it."""
        if not result.outcome.is_known:
            return
        down = result.down
        if down == self.down:
            self.count += 1
        else:
            self.down, self.since, self.count = down, result.at, 1


@dataclass
class TargetRuntime:
    """One target's tracker state, last result and cadence (monotonic times)."""

    config: TargetConfig
    state: TrackerState
    cadence_s: float
    last_completed: float  # monotonic time of the last completed cycle (or of start-up)
    last_result: TargetResult | None = None
    outcome_since: datetime | None = None  # when the current outcome began
    streak: RegionStreak = field(default_factory=RegionStreak)  # this region's own run
    views: tuple[RegionView, ...] = ()  # every region's view, as last read
    views_read_at: float = 0.0  # monotonic time of that read
    verdict: Verdict | None = None  # the quorum's last answer (on the leader)
    maintenance: Window | None = None  # the window it was in at its last cycle

    def view(self, region: str, result: TargetResult, hold_s: float) -> RegionView:
        """This region's view after ``result`` (the streak already observed it)."""
        return RegionView(
            target=self.name,
            region=region,
            at=result.at,
            outcome=result.outcome,
            since=self.streak.since or result.at,
            streak=self.streak.count,
            hold_s=hold_s,
            result=result,
        )

    @property
    def any_region_failing(self) -> bool:
        """True when a fresh region (this one included) last saw the target down."""
        return bool(self.streak.down) or any(v.fresh and v.down for v in self.views)

    @property
    def name(self) -> str:
        """The target's name."""
        return self.config.name

    def live(self, region: str, quorum: Quorum, min_regions: int) -> LiveTarget:
        """The view the status page reads.

        With several regions, every instance shows the same thing: the decided
        tracker state, and the result of the first region (by name) that agrees with
        the quorum, whichever instance serves the page.
        """
        if not self.views or self.last_result is None:
            return LiveTarget(
                self.name, self.state, self.last_result, self.outcome_since, self.cadence_s,
                maintenance=self.maintenance,
            )  # fmt: skip
        own = next((v for v in self.views if v.region == region), None)
        if own is None:
            return LiveTarget(
                self.name, self.state, self.last_result, self.outcome_since, self.cadence_s,
                self.views, maintenance=self.maintenance,
            )  # fmt: skip
        verdict = decide(self.views, own, quorum, min_regions)
        agreeing = [v for v in verdict.fresh if v.down == (verdict.kind is VerdictKind.DOWN)]
        result = agreeing[0].result if agreeing and verdict.decisive else None
        since = min((v.since for v in agreeing), default=None)
        if verdict.kind is VerdictKind.UNKNOWN and verdict.result is not None:
            result, since = verdict.result, own.since  # this region's own unknown result
        return LiveTarget(
            self.name, self.state, result, since, self.cadence_s, verdict.views, verdict,
            self.maintenance,
        )  # fmt: skip
