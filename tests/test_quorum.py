"""The quorum of regions: which fresh regions vote, how many votes a side needs, what the
tracker is fed, and the tracker driven by the quorum's verdicts end to end (no database).

The rules, from the issue: ``monitor.quorum`` is "majority" by default (strictly more
than half of the fresh regions must see a target failing before an incident opens, and
the same for closing) or an integer. A region is fresh while its latest result is
younger than twice its cadence plus the timeout; a stale region does not vote. Fewer
fresh regions than ``monitor.min_regions``: the state is unknown, neither up nor down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import CheckConfig, MonitorSection, Settings, TargetConfig
from monitor.daemon.recorder import CycleRecorder
from monitor.daemon.runtime import TargetRuntime
from monitor.incidents.quorum import (
    Quorum,
    RegionView,
    Verdict,
    VerdictKind,
    decide,
    needed_votes,
)
from monitor.incidents.tracker import Phase, Policy, TrackerState, Transition, TransitionKind, step
from monitor.probing.results import Outcome, Reason, TargetResult
from tests.builders import T0, check, down, result, up

TARGET = "production"
HOLD_S = 2 * 60.0 + 10.0  # two incident cadences and a timeout


def view(
    region: str,
    outcome: Outcome = Outcome.UP,
    *,
    age_s: float = 0.0,
    hold_s: float = HOLD_S,
    target: str = TARGET,
    when: datetime = T0,
    reason: Reason | None = None,
) -> RegionView:
    """``region``'s latest view of ``target``: one ``health`` check of ``outcome``."""
    if outcome is Outcome.DOWN:
        probe = result(outcome, when, target=target, reason=reason or Reason.STATUS, status=503)
    else:
        probe = result(outcome, when, target=target)
    return RegionView(
        target=target,
        region=region,
        at=when,
        outcome=outcome,
        since=when,
        streak=1,
        hold_s=hold_s,
        result=probe,
        age_s=age_s,
    )


def stale(region: str, outcome: Outcome = Outcome.UP) -> RegionView:
    """A view exactly as old as its hold: it no longer votes."""
    return view(region, outcome, age_s=HOLD_S)


def kinds(transitions: Iterable[Transition]) -> list[TransitionKind]:
    return [t.kind for t in transitions]


D, U = Outcome.DOWN, Outcome.UP


# ---- freshness ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_s", "fresh"),
    [(0.0, True), (HOLD_S - 0.001, True), (HOLD_S, False), (HOLD_S + 3600, False)],
    ids=["new", "just-younger", "exactly-the-hold", "long-gone"],
)
def test_a_view_is_fresh_while_younger_than_its_hold(age_s: float, fresh: bool) -> None:
    """Fresh means strictly younger than the hold."""
    assert view("ams", age_s=age_s).fresh is fresh


def _recorder(monitor: MonitorSection) -> CycleRecorder:
    settings = Settings(
        monitor=monitor,
        targets=[
            TargetConfig(name=TARGET, url="https://p.example", checks=[CheckConfig(name="h")])
        ],
    )
    unused = cast(Any, None)  # view_hold_s reads only the settings
    return CycleRecorder(
        settings, unused, unused, unused, unused, unused, (), unused, float, unused
    )


@pytest.mark.parametrize(
    ("cadence_s", "failing", "hold_s"),
    [
        (900.0, False, 2 * 900 + 10),  # steady
        (900.0, True, 2 * 900 + 10),  # a first failure: the slower cadence still applies
        (60.0, True, 2 * 60 + 10),  # in an incident: the fast cadence
        (60.0, False, 2 * 900 + 10),  # a recovery slows down: the next, slower cadence
    ],
    ids=["steady", "first-failure", "fast", "recovered"],
)
def test_view_hold_is_two_cadences_and_a_timeout(
    cadence_s: float, failing: bool, hold_s: float
) -> None:
    """A region's view stays fresh for twice its cadence plus the timeout (the slower of
    the current and the next cadence)."""
    recorder = _recorder(MonitorSection(interval=900, incident_interval=60, timeout=10))
    config = TargetConfig(name=TARGET, url="https://p.example", checks=[CheckConfig(name="h")])
    runtime = TargetRuntime(config, TrackerState(TARGET), cadence_s, 0.0)
    runtime.streak.observe(down(T0) if failing else up(T0))

    assert recorder.view_hold_s(runtime) == hold_s


# ---- the verdict ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quorum", "fresh", "needed"),
    [
        ("majority", 1, 1),
        ("majority", 2, 2),
        ("majority", 3, 2),
        ("majority", 4, 3),
        ("majority", 5, 3),
        (1, 3, 1),
        (3, 3, 3),
        (2, 1, 2),
    ],
)
def test_needed_votes(quorum: Quorum, fresh: int, needed: int) -> None:
    """A strict majority of the fresh regions, or the configured count."""
    assert needed_votes(quorum, fresh) == needed


@dataclass(frozen=True)
class Case:
    """Others' stored views, the deciding region's own, and what they must say."""

    others: tuple[RegionView, ...]
    own: RegionView
    kind: VerdictKind
    needed: int
    quorum: Quorum = "majority"
    min_regions: int = 1
    failing: tuple[str, ...] = field(default=())


CASES = [
    pytest.param(Case((), view("ams", D), VerdictKind.DOWN, 1, failing=("ams",)), id="alone-down"),
    pytest.param(Case((), view("ams", U), VerdictKind.UP, 1), id="alone-up"),
    pytest.param(
        Case((view("ord"), view("sin")), view("ams", D), VerdictKind.UP, 2, failing=("ams",)),
        id="1-of-3-down-is-up",
    ),
    pytest.param(
        Case(
            (view("ord", D), view("sin")),
            view("ams", D),
            VerdictKind.DOWN,
            2,
            failing=("ams", "ord"),
        ),
        id="2-of-3-down",
    ),
    pytest.param(
        Case(
            (view("ord", D), view("sin", D)),
            view("ams", D),
            VerdictKind.DOWN,
            2,
            failing=("ams", "ord", "sin"),
        ),
        id="3-of-3-down",
    ),
    pytest.param(
        Case((view("ord"),), view("ams", D), VerdictKind.SPLIT, 2, failing=("ams",)),
        id="1-down-1-up-split",
    ),
    pytest.param(
        Case((view("ord", D),), view("ams", U), VerdictKind.SPLIT, 2, failing=("ord",)),
        id="1-up-1-down-split",
    ),
    pytest.param(
        Case(
            (view("ord", D), view("sin", D)),
            view("ams"),
            VerdictKind.SPLIT,
            3,
            failing=("ord", "sin"),
            quorum=3,
        ),
        id="int-3-2-of-3-down-split",
    ),
    pytest.param(
        Case(
            (view("ord"), view("sin")),
            view("ams", D),
            VerdictKind.DOWN,
            1,
            quorum=1,
            failing=("ams",),
        ),
        id="int-1-1-of-3-down",
    ),
    pytest.param(
        Case((view("ord"), view("sin")), view("ams"), VerdictKind.UP, 2, quorum=2),
        id="int-2-all-up",
    ),
    pytest.param(
        Case((view("ord"), stale("sin", D)), view("ams"), VerdictKind.UP, 2),
        id="stale-down-does-not-vote",
    ),
    pytest.param(
        Case((stale("ord"), stale("sin")), view("ams", D), VerdictKind.DOWN, 1, failing=("ams",)),
        id="1-fresh-down-2-stale-up",
    ),
    pytest.param(
        Case(
            (view("ord", D), stale("sin"), stale("syd")),
            view("ams"),
            VerdictKind.SPLIT,
            2,
            failing=("ord",),
        ),
        id="stale-regions-do-not-break-a-tie",
    ),
    pytest.param(
        Case(
            (stale("ord", D), stale("sin")),
            view("ams", D),
            VerdictKind.UNKNOWN,
            1,
            min_regions=2,
            failing=("ams",),
        ),
        id="min-regions-2-one-fresh",
    ),
    pytest.param(
        Case((), view("ams", D), VerdictKind.UNKNOWN, 1, min_regions=2, failing=("ams",)),
        id="min-regions-2-alone",
    ),
    pytest.param(
        Case(
            (view("ord", D),),
            view("ams", D),
            VerdictKind.DOWN,
            2,
            min_regions=2,
            failing=("ams", "ord"),
        ),
        id="min-regions-2-met",
    ),
    pytest.param(
        Case(
            (view("ord", Outcome.DEGRADED), view("sin", D)),
            view("ams", Outcome.DEGRADED),
            VerdictKind.UP,
            2,
            failing=("sin",),
        ),
        id="degraded-votes-up",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_decide(case: Case) -> None:
    """The verdict of each documented situation, with the votes behind it."""
    verdict = decide(case.others, case.own, case.quorum, case.min_regions)

    assert verdict.kind is case.kind
    assert verdict.needed == case.needed
    assert tuple(v.region for v in verdict.failing) == case.failing
    assert verdict.decisive is (case.kind in (VerdictKind.DOWN, VerdictKind.UP))
    assert (verdict.result is None) is not verdict.decisive


def test_views_come_back_by_region_stale_ones_included() -> None:
    """Every region's view is kept (for the event's table), ordered by name; only fresh
    ones vote."""
    verdict = decide([view("sin"), stale("ams", D)], view("ord", D), "majority", 1)

    assert [v.region for v in verdict.views] == ["ams", "ord", "sin"]
    assert [v.region for v in verdict.fresh] == ["ord", "sin"]
    assert verdict.kind is VerdictKind.SPLIT


def test_result_is_owns_when_own_agrees() -> None:
    """The region deciding feeds the tracker its own result when it is on the winning side."""
    own = view("sin", D, reason=Reason.TIMEOUT, when=T0 + timedelta(seconds=30))
    verdict = decide([view("ams", D), view("ord")], own, "majority", 1)

    assert verdict.kind is VerdictKind.DOWN
    assert verdict.result is own.result


def test_result_is_first_agreeing_region_by_name_at_owns_time() -> None:
    """Outvoted, the deciding region feeds the agreeing region first by name (a stable
    signature), dated by its own probe (one step per decision, in order); a stale region
    that agrees is not chosen."""
    own = view("sin", U, when=T0 + timedelta(seconds=30))
    aaa = view("aaa", D, reason=Reason.DNS, age_s=HOLD_S)  # stale
    ams = view("ams", D, reason=Reason.TIMEOUT)
    ord_ = view("ord", D, reason=Reason.STATUS)

    verdict = decide([ord_, aaa, ams], own, "majority", 1)

    assert verdict.kind is VerdictKind.DOWN
    assert verdict.result == replace(ams.result, at=own.at)
    assert verdict.result is not None
    assert [c.reason for c in verdict.result.checks] == [Reason.TIMEOUT]


def test_result_when_outvoted_towards_up() -> None:
    """The same rule closes: a down region outvoted by good ones feeds a good result."""
    own = view("sin", D, when=T0 + timedelta(seconds=30))
    verdict = decide([view("ord"), view("ams", Outcome.DEGRADED)], own, "majority", 1)

    assert verdict.kind is VerdictKind.UP
    assert verdict.result == replace(verdict.views[0].result, at=own.at)
    assert verdict.result is not None
    assert verdict.result.ok


def test_views_of_other_targets_are_ignored() -> None:
    """Another target's views neither vote nor show."""
    others = [view("ord", D, target="staging"), view("sin", D, target="staging"), view("ord")]

    verdict = decide(others, view("ams"), "majority", 1)

    assert verdict.kind is VerdictKind.UP
    assert [(v.target, v.region) for v in verdict.views] == [(TARGET, "ams"), (TARGET, "ord")]
    assert verdict.needed == 2


def test_own_replaces_the_stored_view_of_its_region() -> None:
    """The deciding region's new view stands in for its stored (older) one."""
    stored = view("ams", D, age_s=60.0)
    own = view("ams", U, when=T0 + timedelta(seconds=60))

    verdict = decide([stored, view("ord")], own, "majority", 1)

    assert verdict.kind is VerdictKind.UP
    assert [v.region for v in verdict.views] == ["ams", "ord"]
    assert verdict.views[0] is own
    assert verdict.failing == ()


# ---- properties -----------------------------------------------------------------------

_REGIONS = ["ams", "cdg", "fra", "iad", "lhr", "nrt", "ord", "sin", "syd"]
_property_settings = hypothesis.settings(max_examples=300, deadline=None)


@st.composite
def _views(draw: st.DrawFn) -> tuple[list[RegionView], RegionView]:
    names = draw(st.lists(st.sampled_from(_REGIONS), min_size=1, unique=True))
    views = [
        view(
            name,
            draw(st.sampled_from(list(Outcome))),
            age_s=draw(st.sampled_from([0.0, HOLD_S / 2, HOLD_S, 2 * HOLD_S])),
        )
        for name in names
    ]
    own = replace(views[0], age_s=0.0)
    return views[1:], own


@_property_settings
@given(drawn=_views())
def test_majority_never_allows_both_sides(drawn: tuple[list[RegionView], RegionView]) -> None:
    """With "majority", down and up never both have the votes; an odd number of fresh
    regions is never split; and the verdict follows the counts. A region whose result
    is unknown abstains."""
    others, own = drawn
    verdict = decide(others, own, "majority", 1)
    fresh = len(verdict.fresh)
    failing = len(verdict.failing)

    assert all(v.outcome is not Outcome.UNKNOWN for v in verdict.fresh)
    if own.outcome is not Outcome.UNKNOWN:
        assert fresh >= 1  # own is fresh
    if fresh == 0:
        assert verdict.kind is VerdictKind.UNKNOWN
        return
    assert verdict.needed == fresh // 2 + 1
    assert not (failing >= verdict.needed and fresh - failing >= verdict.needed)
    if fresh % 2 == 1:
        assert verdict.kind is not VerdictKind.SPLIT
    expected = (
        VerdictKind.DOWN
        if 2 * failing > fresh
        else VerdictKind.UP
        if 2 * (fresh - failing) > fresh
        else VerdictKind.SPLIT
    )
    assert verdict.kind is expected
    if verdict.result is not None:
        assert verdict.result.at == own.result.at
        assert verdict.result.ok is (verdict.kind is VerdictKind.UP)


@_property_settings
@given(outcomes=st.lists(st.sampled_from(list(Outcome)), max_size=40))
def test_a_lone_region_behaves_as_before(outcomes: list[Outcome]) -> None:
    """One region, default quorum: the tracker sees exactly the results it saw before
    regions existed, and decides exactly the same (an unknown result included)."""
    policy = Policy(open_after=3, close_after=2, reminder_interval_s=300)
    alone = through_quorum = TrackerState(TARGET)
    for index, outcome in enumerate(outcomes):
        when = T0 + timedelta(minutes=index)
        probe = down(when) if outcome is Outcome.DOWN else result(outcome, when)
        verdict = decide([], view("local", outcome, when=when), "majority", 1)
        assert verdict.result is not None
        if outcome is Outcome.UNKNOWN:  # no vote, but the tracker sees it (and holds)
            assert verdict.kind is VerdictKind.UNKNOWN
        alone, expected = step(alone, probe, when, policy)
        through_quorum, got = step(through_quorum, verdict.result, when, policy)
        assert got == expected
        assert through_quorum == alone


# ---- the tracker driven by the quorum -------------------------------------------------


@dataclass
class Fleet:
    """Regions probing one target; the leader decides on every one of its own probes.

    Each region keeps its own runtime (its streak makes its view); the leader reads the
    others' latest views aged by "the database's clock" (here: the fleet's time), adds its
    own and steps the tracker with the verdict's result, exactly as the recorder does.
    """

    regions: tuple[str, ...]
    leader: str
    policy: Policy = field(default_factory=lambda: Policy(open_after=3, close_after=2))
    quorum: Quorum = "majority"
    min_regions: int = 1
    cadence_s: float = 60.0
    timeout_s: float = 10.0
    now: datetime = T0
    state: TrackerState = field(default_factory=lambda: TrackerState(TARGET))
    published: dict[str, RegionView] = field(default_factory=dict)
    runtimes: dict[str, TargetRuntime] = field(default_factory=dict)
    log: list[tuple[int, VerdictKind, list[TransitionKind]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = TargetConfig(name=TARGET, url="https://p.example", checks=[CheckConfig(name="h")])
        for region in self.regions:
            self.runtimes[region] = TargetRuntime(config, self.state, self.cadence_s, 0.0)

    def offset(self, region: str) -> timedelta:
        """Regions probe a few seconds apart."""
        return timedelta(seconds=3 * self.regions.index(region))

    def decide(
        self, failing: Iterable[str], *, silent: Iterable[str] = ()
    ) -> tuple[Verdict, list[Transition]]:
        """One cadence later: every region but ``silent`` probes (``failing`` ones see the
        target down), then the leader decides."""
        failing, silent = set(failing), set(silent)
        assert self.leader not in silent
        self.now += timedelta(seconds=self.cadence_s)
        for region in self.regions:
            if region in silent:
                continue
            when = self.now - self.offset(region)
            probe = down(when, TARGET) if region in failing else up(when, TARGET)
            runtime = self.runtimes[region]
            runtime.streak.observe(probe)
            hold = 2 * self.cadence_s + self.timeout_s
            self.published[region] = runtime.view(region, probe, hold)
        others = [
            replace(v, age_s=(self.now - v.at).total_seconds())
            for region, v in self.published.items()
            if region != self.leader
        ]
        verdict = decide(others, self.published[self.leader], self.quorum, self.min_regions)
        transitions: list[Transition] = []
        if verdict.result is not None:
            self.state, transitions = step(self.state, verdict.result, self.now, self.policy)
        self.log.append((len(self.log) + 1, verdict.kind, kinds(transitions)))
        return verdict, transitions

    def run(self, times: int, failing: Iterable[str], **kw: Any) -> list[Transition]:
        """``times`` decisions alike; every transition they made."""
        failing = tuple(failing)
        return [t for _ in range(times) for t in self.decide(failing, **kw)[1]]


@pytest.mark.parametrize("leader", ["ams", "ord", "sin"])
def test_one_region_failing_alone_never_opens_two_do(leader: str) -> None:
    """ams fails alone for ten decisions: nothing. ord fails too: the incident opens at the
    third decision with 2 of 3 down. ams recovers: 2 of 3 good, resolved after
    close_after decisions. Whichever region leads, the outcome is the same."""
    fleet = Fleet(("ams", "ord", "sin"), leader)

    assert fleet.run(10, ["ams"]) == []
    assert fleet.state.phase is Phase.HEALTHY
    assert {kind for _, kind, _ in fleet.log} == {VerdictKind.UP}

    first, transitions = fleet.decide(["ams", "ord"])
    assert (first.kind, transitions, fleet.state.phase) == (VerdictKind.DOWN, [], Phase.FAILING)
    second, transitions = fleet.decide(["ams", "ord"])
    assert (second.kind, transitions, fleet.state.phase) == (VerdictKind.DOWN, [], Phase.FAILING)
    _, transitions = fleet.decide(["ams", "ord"])
    assert kinds(transitions) == [TransitionKind.OPENED]
    incident = transitions[0].incident
    assert incident is not None
    assert first.result is not None
    # the incident starts at the first decision the quorum called down, the leader's probe
    assert (
        incident.started_at
        == first.result.at
        == fleet.now - timedelta(minutes=2) - fleet.offset(leader)
    )
    assert incident.signature == ("health:status",)
    assert fleet.state.phase is Phase.OPEN

    recovered, transitions = fleet.decide(["ord"])
    assert (recovered.kind, transitions, fleet.state.phase) == (
        VerdictKind.UP,
        [],
        Phase.RECOVERING,
    )
    _, transitions = fleet.decide(["ord"])
    assert kinds(transitions) == [TransitionKind.RESOLVED]
    assert fleet.state.phase is Phase.HEALTHY
    assert [(n, ts) for n, _, ts in fleet.log if ts] == [
        (13, [TransitionKind.OPENED]),
        (15, [TransitionKind.RESOLVED]),
    ]


def test_a_split_neither_opens_nor_closes_nor_resets() -> None:
    """Two regions, one down and one up: the tracker takes no step, so a failing streak
    continues after the split and an open incident stays open through it."""
    fleet = Fleet(("ams", "ord"), "ams")

    assert fleet.run(2, ["ams", "ord"]) == []
    assert (fleet.state.phase, fleet.state.fail_streak) == (Phase.FAILING, 2)
    before = fleet.state
    assert fleet.run(5, ["ord"]) == []
    assert fleet.state == before  # a split changes nothing
    assert kinds(fleet.run(1, ["ams", "ord"])) == [TransitionKind.OPENED]

    opened = fleet.state
    assert fleet.run(10, ["ams"]) == []
    assert fleet.run(10, ["ord"]) == []
    assert fleet.state == opened
    assert {kind for _, kind, _ in fleet.log[-20:]} == {VerdictKind.SPLIT}

    assert fleet.run(1, []) == []
    assert kinds(fleet.run(1, [])) == [TransitionKind.RESOLVED]


def test_a_region_that_stops_reporting_loses_its_vote() -> None:
    """ord and sin see the target down, the leader ams sees it up: the quorum opens. sin
    falls silent: once its last view is stale, ams against ord is a split (nothing
    resolves), until ord recovers too."""
    fleet = Fleet(("ams", "ord", "sin"), "ams")
    assert kinds(fleet.run(3, ["ord", "sin"])) == [TransitionKind.OPENED]

    sin_last = fleet.published["sin"].at
    hold = timedelta(seconds=2 * fleet.cadence_s + fleet.timeout_s)
    while True:
        verdict, transitions = fleet.decide(["ord", "sin"], silent=["sin"])
        assert transitions == []
        if fleet.now - sin_last < hold:
            assert verdict.kind is VerdictKind.DOWN
            continue
        assert verdict.kind is VerdictKind.SPLIT
        assert [v.region for v in verdict.fresh] == ["ams", "ord"]
        break
    assert fleet.run(5, ["ord"], silent=["sin"]) == []
    assert fleet.state.phase is Phase.OPEN

    assert fleet.run(1, [], silent=["sin"]) == []
    assert kinds(fleet.run(1, [], silent=["sin"])) == [TransitionKind.RESOLVED]


def test_fewer_fresh_regions_than_min_regions_is_unknown() -> None:
    """min_regions = 2 and only the leader reports: the state is unknown, and however
    long it fails nothing opens; once a second region reports, the quorum decides."""
    fleet = Fleet(("ams", "ord"), "ams", min_regions=2)

    assert fleet.run(10, ["ams"], silent=["ord"]) == []
    assert {kind for _, kind, _ in fleet.log} == {VerdictKind.UNKNOWN}
    assert fleet.state == TrackerState(TARGET)

    assert kinds(fleet.run(3, ["ams", "ord"])) == [TransitionKind.OPENED]


def test_integer_quorum_of_one_opens_on_any_region() -> None:
    """quorum = 1: any single fresh region's failure counts (down is checked first)."""
    fleet = Fleet(("ams", "ord", "sin"), "ord", quorum=1)

    assert kinds(fleet.run(3, ["sin"])) == [TransitionKind.OPENED]
    assert fleet.state.phase is Phase.OPEN
    assert fleet.run(5, ["sin"]) == []  # still one region down: still down
    assert kinds(fleet.run(2, [])) == [TransitionKind.RESOLVED]


WORST_FIRST = [Outcome.DOWN, Outcome.UNKNOWN, Outcome.DEGRADED, Outcome.UP]


@given(
    st.lists(st.sampled_from(list(Outcome)), max_size=5),
    st.lists(st.sampled_from(list(Outcome)), max_size=5),
)
def test_a_target_outcome_is_its_worst_checks_and_follows_a_copy(
    first: list[Outcome], second: list[Outcome]
) -> None:
    """``TargetResult.outcome`` is worked out once, at construction: the worst of its
    checks (down, unknown, degraded, up; up without checks), recomputed in a copy with
    other checks (the quorum's ``replace``); a copy back to the first checks equals it."""

    def worst(outcomes: list[Outcome]) -> Outcome:
        return next((o for o in WORST_FIRST if o in outcomes), Outcome.UP)

    one = TargetResult(TARGET, T0, tuple(check(o, name=f"c{i}") for i, o in enumerate(first)))
    assert one.outcome is worst(first)
    other = replace(one, checks=tuple(check(o, name=f"c{i}") for i, o in enumerate(second)))
    assert other.outcome is worst(second)
    assert replace(other, checks=one.checks) == one
