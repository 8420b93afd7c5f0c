"""The quorum of regions: what the target's state is when several regions probe it.

Pure, like the tracker. Every region publishes its latest view of each target;
the leader asks :func:`decide` what those views say, and feeds the tracker the
answer, so ``open_after`` and ``close_after`` count the quorum's verdicts, not
one region's probes:

- a region votes only while *fresh*: its latest result is younger (by the
  database's clock) than two of its cadences plus the timeout; a region that
  stopped reporting keeps no vote;
- fewer fresh regions than ``min_regions``: the state is *unknown* (nothing opens
  or closes, and uptime does not count the time); a region whose latest result is
  itself unknown (a check that could not tell) abstains like a stale one;
- ``needed`` is a strict majority of the fresh regions (``"majority"``) or a fixed
  count; the target is *down* when that many fresh regions see it down, *up*
  when that many see it good, and *split* otherwise (with an even number of
  fresh regions, half against half): a split changes nothing.

With one region, the only fresh view decides alone: a single instance behaves
exactly as it did before regions existed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from monitor.probing.results import Outcome, TargetResult

Quorum = Literal["majority"] | int


@dataclass(frozen=True, slots=True)
class RegionView:
    """One region's latest view of a target: its vote in the quorum."""

    target: str
    region: str
    at: datetime  # the probe, by that region's clock
    outcome: Outcome
    since: datetime  # first result of the region's current run of good or down results
    streak: int  # results in that run
    hold_s: float  # the view is fresh while younger than this (two cadences and a timeout)
    result: TargetResult  # the checks, for issue text and the status page
    age_s: float = 0.0  # by the database's clock when read

    @property
    def fresh(self) -> bool:
        """True while the region's view may vote: young enough, and not unknown (a
        check that cannot tell makes the region abstain, as if it had not reported)."""
        return self.age_s < self.hold_s and self.outcome.is_known

    @property
    def down(self) -> bool:
        """True when this region sees the target failing."""
        return self.outcome is Outcome.DOWN


class VerdictKind(enum.StrEnum):
    """What the fresh regions say together."""

    DOWN = "down"
    UP = "up"
    SPLIT = "split"  # neither side has the votes it needs
    UNKNOWN = "unknown"  # fewer fresh regions than min_regions


@dataclass(frozen=True, slots=True)
class Verdict:
    """The quorum's answer, with the votes behind it."""

    kind: VerdictKind
    views: tuple[RegionView, ...]  # every region's view, fresh or not, by region
    needed: int  # votes either side needs
    # what the tracker judges: DOWN and UP, and UNKNOWN when no region votes and this one's
    # own result is unknown (the tracker holds, or closes what recovered)
    result: TargetResult | None = None
    result_region: str | None = None  # the region whose probe that is

    @property
    def fresh(self) -> tuple[RegionView, ...]:
        """The regions that vote."""
        return tuple(v for v in self.views if v.fresh)

    @property
    def failing(self) -> tuple[RegionView, ...]:
        """Fresh regions that see the target down."""
        return tuple(v for v in self.fresh if v.down)

    @property
    def decisive(self) -> bool:
        """True when the tracker should take a step."""
        return self.result is not None


def needed_votes(quorum: Quorum, fresh: int) -> int:
    """Votes a side needs among ``fresh`` regions."""
    return fresh // 2 + 1 if quorum == "majority" else int(quorum)


def decide(
    views: Sequence[RegionView], own: RegionView, quorum: Quorum, min_regions: int
) -> Verdict:
    """What the regions' views (``own`` among them, newest) say about the target now.

    The result handed to the tracker is ``own``'s when it agrees with the verdict,
    else the agreeing region's first by name (stable, so the failure's signature
    does not flicker between regions); its time is ``own``'s probe, so the
    tracker sees one step per decision, in order.
    """
    merged = {v.region: v for v in views if v.target == own.target}
    merged[own.region] = own
    ordered = tuple(merged[name] for name in sorted(merged))
    fresh = [v for v in ordered if v.fresh]
    need = needed_votes(quorum, len(fresh))
    if len(fresh) < min_regions:
        if not fresh and not own.outcome.is_known and min_regions <= 1:
            # this region alone, and its result cannot tell: the tracker still sees it,
            # so a recovery of what failed can close, and the unknown time is recorded
            return Verdict(VerdictKind.UNKNOWN, ordered, need, own.result, own.region)
        return Verdict(VerdictKind.UNKNOWN, ordered, need)
    down = [v for v in fresh if v.down]
    good = [v for v in fresh if not v.down]
    if len(down) >= need:
        return Verdict(VerdictKind.DOWN, ordered, need, *_judged(down, own))
    if len(good) >= need:
        return Verdict(VerdictKind.UP, ordered, need, *_judged(good, own))
    return Verdict(VerdictKind.SPLIT, ordered, need)


def _judged(agreeing: Sequence[RegionView], own: RegionView) -> tuple[TargetResult, str]:
    if own in agreeing:
        return own.result, own.region
    return replace(agreeing[0].result, at=own.result.at), agreeing[0].region
