"""SLO maths on hand-made timelines: every figure checked by hand, plus properties."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.figures.slo import (
    WINDOWS,
    AckStats,
    Deployment,
    IncidentRecord,
    Sample,
    Span,
    TimeAccount,
    account,
    burn_rate,
    deployment_before,
    deployment_stats,
    error_budget,
    mtta,
    mttr,
    parse_window,
)
from monitor.probing.results import Outcome

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HOUR = 60  # minutes
DAY = 24 * HOUR
_OUTCOMES = {"up": Outcome.UP, "degraded": Outcome.DEGRADED, "down": Outcome.DOWN}


def at(minutes: float) -> datetime:
    """The instant ``minutes`` after T0 (negative: before it)."""
    return T0 + timedelta(minutes=minutes)


def span(start_min: float, end_min: float) -> Span:
    """The span between two minute offsets from T0."""
    return Span(at(start_min), at(end_min))


def samples(transcript: str) -> list[Sample]:
    """Samples from a transcript such as ``"0 up, 15 degraded, 30 down"`` (minutes from T0)."""
    result = []
    for item in transcript.split(","):
        if item.strip():
            minute, outcome = item.split()
            result.append(Sample(at(float(minute)), _OUTCOMES[outcome]))
    return result


def minutes(acct: TimeAccount) -> tuple[float, float, float, float]:
    """An account as (up, degraded, down, unknown) minutes."""
    return (acct.up_s / 60, acct.degraded_s / 60, acct.down_s / 60, acct.unknown_s / 60)


# --- account -------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountCase:
    transcript: str
    expected: tuple[float, float, float, float]  # up, degraded, down, unknown in minutes
    sessions: tuple[tuple[float, float], ...] | None = None
    window: tuple[float, float] = (0, 60)
    max_hold_min: float = 30  # 2x the 15-minute cadence


ACCOUNT_CASES = {
    "all-up": AccountCase("0 up, 15 up, 30 up, 45 up", (60, 0, 0, 0)),
    "sample-before-window-holds-into-it": AccountCase("-10 up, 15 up, 30 up, 45 up", (60, 0, 0, 0)),
    "sample-too-old-to-reach-window": AccountCase("-40 up, 15 up, 30 up, 45 up", (45, 0, 0, 15)),
    "time-before-first-sample-unknown": AccountCase("10 up, 25 up, 40 up, 55 up", (50, 0, 0, 10)),
    "monitor-gap-exceeds-hold": AccountCase("0 up, 15 up, 55 up", (50, 0, 0, 10)),
    "last-sample-holds-only-max-hold": AccountCase("0 up, 15 down", (15, 0, 30, 15)),
    "degraded-reported-apart": AccountCase("0 up, 15 degraded, 30 degraded, 45 up", (30, 30, 0, 0)),
    "down-streak-at-incident-cadence": AccountCase(
        "0 up, 15 down, 16 down, 17 down, 18 up, 45 up", (57, 0, 3, 0)
    ),
    "unsorted-with-duplicate-later-wins": AccountCase(
        "30 down, 45 up, 0 up, 15 up, 30 up", (60, 0, 0, 0)
    ),
    "sample-after-window-cuts-hold": AccountCase(
        "0 up, 15 up, 30 up, 45 up, 50 down, 70 up", (50, 0, 10, 0)
    ),
    "no-samples-all-unknown": AccountCase("", (0, 0, 0, 60)),
    "unlimited-hold": AccountCase("0 up, 5 down", (5, 0, 55, 0), max_hold_min=math.inf),
    "zero-hold-knows-nothing": AccountCase("0 up, 15 up", (0, 0, 0, 60), max_hold_min=0),
    "sessions-cut-holds": AccountCase(
        "0 up, 15 up, 30 up, 45 up", (35, 0, 0, 25), sessions=((0, 20), (40, 60))
    ),
    "hold-does-not-cross-restart": AccountCase(
        "0 up, 15 up, 30 up, 45 up", (50, 0, 0, 10), sessions=((0, 20), (25, 60))
    ),
    "touching-sessions-merge": AccountCase(
        "0 up, 20 up", (50, 0, 0, 10), sessions=((0, 30), (30, 60))
    ),
    "overlapping-sessions-merge": AccountCase(
        "0 up, 20 up", (50, 0, 0, 10), sessions=((0, 40), (10, 60))
    ),
    "session-before-window-vouches-for-carry-in": AccountCase(
        "-10 up, 15 up", (45, 0, 0, 15), sessions=((-60, 60),)
    ),
    "no-session-no-known-time": AccountCase("0 up, 15 up, 30 up, 45 up", (0, 0, 0, 60), ()),
    "empty-window": AccountCase("0 up", (0, 0, 0, 0), window=(10, 10)),
}


@pytest.mark.parametrize("case", ACCOUNT_CASES.values(), ids=ACCOUNT_CASES.keys())
def test_account(case: AccountCase) -> None:
    """A hand-made timeline splits into exactly the hand-counted up/degraded/down/unknown."""
    sessions = None if case.sessions is None else [span(a, b) for a, b in case.sessions]
    acct = account(
        samples(case.transcript), span(*case.window), case.max_hold_min * 60, sessions=sessions
    )
    assert minutes(acct) == case.expected


def minutes_with_maintenance(acct: TimeAccount) -> tuple[float, ...]:
    """An account as (up, degraded, down, unknown, maintenance) minutes."""
    return (*minutes(acct), acct.maintenance_s / 60)


@dataclass(frozen=True)
class MaintenanceCase:
    transcript: str
    windows: tuple[tuple[float, float], ...]  # maintenance spans, minutes from T0
    expected: tuple[float, float, float, float, float]  # up, degraded, down, unknown, maint.
    sessions: tuple[tuple[float, float], ...] | None = None


MAINTENANCE_CASES = {
    "no-window-no-maintenance": MaintenanceCase("0 up, 30 up", (), (60, 0, 0, 0, 0)),
    "wins-over-up": MaintenanceCase("0 up, 15 up, 30 up, 45 up", ((15, 30),), (45, 0, 0, 0, 15)),
    "wins-over-down": MaintenanceCase(
        "0 up, 15 down, 20 down, 25 up, 45 up", ((15, 25),), (50, 0, 0, 0, 10)
    ),
    "wins-over-degraded": MaintenanceCase(
        "0 up, 15 degraded, 30 degraded, 45 up", ((20, 40),), (30, 10, 0, 0, 20)
    ),
    "wins-over-unknown": MaintenanceCase("", ((0, 20),), (0, 0, 0, 40, 20)),
    "wins-over-monitor-downtime": MaintenanceCase(
        "0 up, 15 up, 30 up, 45 up", ((10, 50),), (20, 0, 0, 0, 40), sessions=((0, 20), (40, 60))
    ),
    "overlapping-windows-count-once": MaintenanceCase(
        "0 up, 30 up", ((10, 30), (20, 40)), (30, 0, 0, 0, 30)
    ),
    "touching-windows-merge": MaintenanceCase(
        "0 up, 30 up", ((10, 20), (20, 30)), (40, 0, 0, 0, 20)
    ),
    "clipped-to-the-window": MaintenanceCase(
        "0 up, 30 up", ((-30, 10), (50, 90)), (40, 0, 0, 0, 20)
    ),
    "whole-window": MaintenanceCase("0 down, 30 down", ((-5, 65),), (0, 0, 0, 0, 60)),
    "empty-window-span-ignored": MaintenanceCase("0 up, 30 up", ((20, 20),), (60, 0, 0, 0, 0)),
}


@pytest.mark.parametrize("case", MAINTENANCE_CASES.values(), ids=MAINTENANCE_CASES.keys())
def test_account_with_maintenance(case: MaintenanceCase) -> None:
    """Time inside a window is maintenance whatever the samples (or their absence) say."""
    sessions = None if case.sessions is None else [span(a, b) for a, b in case.sessions]
    acct = account(
        samples(case.transcript),
        span(0, 60),
        30 * 60,
        sessions,
        maintenance=[span(a, b) for a, b in case.windows],
    )
    assert minutes_with_maintenance(acct) == case.expected
    assert acct.total_s == 3600


@pytest.mark.parametrize(
    ("acct", "uptime", "coverage"),
    [
        (TimeAccount(3000, 600, 0, 0), 1.0, 1.0),
        (TimeAccount(2700, 0, 900, 0), 0.75, 1.0),
        (TimeAccount(1200, 0, 600, 1800), 2 / 3, 0.5),
        (TimeAccount(0, 0, 0, 3600), None, 0.0),
        (TimeAccount.zero(), None, None),
        (TimeAccount(1800, 0, 0, 0, 1800), 1.0, 1.0),
        (TimeAccount(900, 0, 900, 900, 900), 0.5, 2 / 3),
        (TimeAccount(0, 0, 0, 1800, 1800), None, 0.0),
        (TimeAccount(0, 0, 0, 0, 3600), None, None),
    ],
    ids=[
        "degraded-counts-as-up",
        "quarter-down",
        "unknown-left-out",
        "all-unknown",
        "empty",
        "maintenance-out-of-both-shares",
        "maintenance-beside-unknown",
        "maintenance-and-unknown-only",
        "all-maintenance-no-coverage-to-speak-of",
    ],
)
def test_uptime_and_coverage(
    acct: TimeAccount, uptime: float | None, coverage: float | None
) -> None:
    """Uptime is (up + degraded) / known, coverage known / (window - maintenance); None
    without a base."""
    assert acct.uptime == pytest.approx(uptime)
    assert acct.coverage == pytest.approx(coverage)


def test_accounts_add_up() -> None:
    """Adding accounts adds each part, so rollups of targets or windows are sums."""
    total = TimeAccount(1, 2, 3, 4, 5) + TimeAccount(10, 20, 30, 40, 50) + TimeAccount.zero()
    assert total == TimeAccount(11, 22, 33, 44, 55)
    assert total.known_s == 66
    assert total.accountable_s == 110
    assert total.total_s == 165
    assert TimeAccount(1, 2, 3, 4) == TimeAccount(1, 2, 3, 4, 0.0)  # no windows: as before


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2024, 3, 1), datetime(2024, 3, 2, tzinfo=UTC)),
        (T0, T0 - timedelta(seconds=1)),
    ],
    ids=["naive", "ends-before-start"],
)
def test_span_rejects_nonsense(start: datetime, end: datetime) -> None:
    """A span needs aware datetimes and must not end before it starts."""
    with pytest.raises(ValueError, match="Span"):
        Span(start, end)


def test_account_rejects_negative_hold() -> None:
    """A negative hold is a configuration fault, not an empty account."""
    with pytest.raises(ValueError, match="max_hold_s"):
        account([], span(0, 60), -1)


# --- error budget and burn rate --------------------------------------------------------

MONTH_S = WINDOWS["30d"]


@pytest.mark.parametrize(
    ("objective", "acct", "allowed_s", "remaining", "burn"),
    [
        (0.995, TimeAccount(MONTH_S - 12_960, 0, 12_960, 0), 12_960, 0.0, 1.0),
        (0.995, TimeAccount(MONTH_S - 6_480, 0, 6_480, 0), 12_960, 0.5, 0.5),
        (0.995, TimeAccount(MONTH_S - 25_920, 0, 25_920, 0), 12_960, -1.0, 2.0),
        (0.995, TimeAccount(MONTH_S, 0, 0, 0), 12_960, 1.0, 0.0),
        (0.995, TimeAccount(MONTH_S / 2 - 6_480, 0, 6_480, MONTH_S / 2), 6_480, 0.0, 1.0),
        (0.995, TimeAccount(MONTH_S - 62_960, 50_000, 12_960, 0), 12_960, 0.0, 1.0),
        (0.999, TimeAccount(3_600 - 51.84, 0, 51.84, 0), 3.6, -13.4, 14.4),
        (1.0, TimeAccount(MONTH_S, 0, 0, 0), 0, 1.0, 0.0),
        (1.0, TimeAccount(MONTH_S - 1, 0, 1, 0), 0, -math.inf, math.inf),
        (0.995, TimeAccount(0, 0, 0, MONTH_S), 0, 1.0, None),
        (0.995, TimeAccount(MONTH_S / 2 - 6_480, 0, 6_480, 0, MONTH_S / 2), 6_480, 0.0, 1.0),
        (0.995, TimeAccount(0, 0, 0, 0, MONTH_S), 0, 1.0, None),
    ],
    ids=[
        "30d-99.5-3h36m-down-exactly-spent",
        "half-spent",
        "overspent-twice",
        "untouched",
        "unknown-time-shrinks-budget",
        "degraded-spends-nothing",
        "1h-fast-burn-14.4",
        "objective-1-clean",
        "objective-1-any-down",
        "nothing-known",
        "maintenance-shrinks-budget-like-unknown",
        "all-maintenance-nothing-known",
    ],
)
def test_error_budget_and_burn_rate(
    objective: float,
    acct: TimeAccount,
    allowed_s: float,
    remaining: float,
    burn: float | None,
) -> None:
    """Budget and burn rate match the figures worked out by hand."""
    report = error_budget(objective, acct)
    assert report.objective == objective
    assert report.window_s == acct.total_s
    assert report.down_s == acct.down_s
    assert report.allowed_down_s == pytest.approx(allowed_s)
    assert report.remaining_ratio == pytest.approx(remaining)
    assert burn_rate(objective, acct) == pytest.approx(burn)


def test_exactly_spent_budget_is_exactly_zero() -> None:
    """99.5 % over 30 days with 3h36m down leaves 0.0, not float noise on either side."""
    acct = TimeAccount(MONTH_S - 12_960, 0, 12_960, 0)
    assert error_budget(0.995, acct).remaining_ratio == 0.0
    assert burn_rate(0.995, acct) == 1.0


def test_budget_from_a_month_of_samples() -> None:
    """Samples every 6 min for 30 days with a 3h36m outage spend a 99.5 % budget exactly."""
    outage = range(10 * DAY, 10 * DAY + 216, 6)
    timeline = [
        Sample(at(m), Outcome.DOWN if m in outage else Outcome.UP) for m in range(0, 30 * DAY, 6)
    ]
    acct = account(timeline, span(0, 30 * DAY), max_hold_s=12 * 60)
    assert acct == TimeAccount(MONTH_S - 12_960, 0, 12_960, 0)
    assert error_budget(0.995, acct).remaining_ratio == 0.0


def test_an_outage_inside_a_window_spends_no_budget() -> None:
    """The month above, with its 3h36m outage inside a maintenance window: nothing is down,
    the window is maintenance, and the budget is untouched (and a little smaller)."""
    outage = range(10 * DAY, 10 * DAY + 216, 6)
    timeline = [
        Sample(at(m), Outcome.DOWN if m in outage else Outcome.UP) for m in range(0, 30 * DAY, 6)
    ]
    window = [span(10 * DAY - 30, 10 * DAY + 246)]  # the outage and half an hour either side
    acct = account(timeline, span(0, 30 * DAY), max_hold_s=12 * 60, maintenance=window)
    assert acct == TimeAccount(MONTH_S - 16_560, 0, 0, 0, 16_560)
    report = error_budget(0.995, acct)
    assert report.remaining_ratio == 1.0
    assert report.window_s == MONTH_S
    assert report.allowed_down_s == pytest.approx(0.005 * (MONTH_S - 16_560))
    assert burn_rate(0.995, acct) == 0.0


@pytest.mark.parametrize("objective", [99.5, -0.1, math.nan, math.inf], ids=str)
def test_objective_must_be_a_ratio(objective: float) -> None:
    """An objective outside [0, 1] (a percentage, say) is rejected, not silently used."""
    with pytest.raises(ValueError, match="objective"):
        error_budget(objective, TimeAccount(1, 0, 0, 0))
    with pytest.raises(ValueError, match="objective"):
        burn_rate(objective, TimeAccount(1, 0, 0, 0))


# --- MTTR ------------------------------------------------------------------------------


def incident(
    start_min: float, end_min: float | None, ident: str = "i1", ack_min: float | None = None
) -> IncidentRecord:
    """An incident of target ``web`` between two minute offsets from T0 (None: open),
    acknowledged at ``ack_min`` if given."""
    return IncidentRecord(
        target="web",
        incident_id=ident,
        started_at=at(start_min),
        resolved_at=None if end_min is None else at(end_min),
        acknowledged_at=None if ack_min is None else at(ack_min),
    )


@dataclass(frozen=True)
class MttrCase:
    incidents: list[IncidentRecord]
    count: int
    resolved: int
    mean_min: float | None
    median_min: float | None
    longest_min: float | None
    downtime_min: float
    now_min: float = DAY + 2 * HOUR  # after the window [0, DAY)


MTTR_CASES = {
    "resolved-inside": MttrCase([incident(600, 620)], 1, 1, 20, 20, 20, 20),
    "straddles-start-full-duration-clipped-downtime": MttrCase(
        [incident(-30, 15)], 1, 1, 45, 45, 45, 15
    ),
    "straddles-end-not-resolved-here": MttrCase(
        [incident(DAY - 10, DAY + 20)], 1, 0, None, None, None, 10
    ),
    "straddles-both-ends": MttrCase([incident(-60, DAY + 60)], 1, 0, None, None, None, DAY),
    "resolved-exactly-at-window-end-belongs-to-next": MttrCase(
        [incident(DAY - 10, DAY)], 1, 0, None, None, None, 10
    ),
    "resolved-exactly-at-window-start-belongs-here": MttrCase(
        [incident(-10, 0)], 1, 1, 10, 10, 10, 0
    ),
    "before-the-window": MttrCase([incident(-60, -30)], 0, 0, None, None, None, 0),
    "after-the-window": MttrCase([incident(DAY + 10, DAY + 20)], 0, 0, None, None, None, 0),
    "open-runs-to-now": MttrCase(
        [incident(20 * HOUR, None)], 1, 0, None, None, None, 60, now_min=21 * HOUR
    ),
    "open-clipped-at-window-end": MttrCase([incident(23 * HOUR, None)], 1, 0, None, None, None, 60),
    "reopened-keeps-original-start": MttrCase([incident(600, 640)], 1, 1, 40, 40, 40, 40),
    "reopen-rewritten-record-last-wins": MttrCase(
        [incident(600, 610), incident(600, 640)], 1, 1, 40, 40, 40, 40
    ),
    "mean-median-longest": MttrCase(
        [incident(60, 70, "a"), incident(120, 140, "b"), incident(300, 360, "c")],
        3,
        3,
        30,
        20,
        60,
        90,
    ),
}


@pytest.mark.parametrize("case", MTTR_CASES.values(), ids=MTTR_CASES.keys())
def test_mttr(case: MttrCase) -> None:
    """MTTR counts incidents resolved in the window by their full duration; downtime is clipped."""
    stats = mttr(case.incidents, span(0, DAY), now=at(case.now_min))

    def secs(value: float | None) -> float | None:
        return None if value is None else value * 60

    assert (stats.count, stats.resolved) == (case.count, case.resolved)
    assert stats.mean_s == pytest.approx(secs(case.mean_min))
    assert stats.median_s == pytest.approx(secs(case.median_min))
    assert stats.longest_s == pytest.approx(secs(case.longest_min))
    assert stats.downtime_s == pytest.approx(case.downtime_min * 60)


MTTA_CASES = {
    "acknowledged-inside": ([incident(600, 640, ack_min=605)], 1, 5, 5),
    "never-acknowledged": ([incident(600, 640)], 0, None, None),
    "open-incident-counts": ([incident(600, None, ack_min=612)], 1, 12, 12),
    "acknowledged-before-the-window": ([incident(-30, 20, ack_min=-10)], 0, None, None),
    "acknowledged-at-window-end-belongs-to-next": (
        [incident(DAY - 10, None, ack_min=DAY)],
        0,
        None,
        None,
    ),
    "acknowledged-at-window-start-belongs-here": ([incident(-10, 20, ack_min=0)], 1, 10, 10),
    "mean-and-median": (
        [
            incident(60, 90, "a", ack_min=61),
            incident(120, 150, "b", ack_min=122),
            incident(300, 360, "c", ack_min=309),
        ],
        3,
        4,
        2,
    ),
    "rewritten-record-last-wins": (
        [incident(600, None, ack_min=630), incident(600, 640, ack_min=603)],
        1,
        3,
        3,
    ),
    "skewed-clock-before-start-counts-zero": ([incident(600, 640, ack_min=599.5)], 1, 0, 0),
}


@pytest.mark.parametrize(
    ("incidents", "acknowledged", "mean_min", "median_min"),
    MTTA_CASES.values(),
    ids=MTTA_CASES.keys(),
)
def test_mtta(
    incidents: list[IncidentRecord],
    acknowledged: int,
    mean_min: float | None,
    median_min: float | None,
) -> None:
    """Time to acknowledge: first failure to acknowledgement, over incidents acknowledged
    in the window (as MTTR counts resolutions), mean and median."""
    stats = mtta(incidents, span(0, DAY))
    assert stats == AckStats(
        acknowledged,
        None if mean_min is None else pytest.approx(mean_min * 60),
        None if median_min is None else pytest.approx(median_min * 60),
    )


def test_acknowledgement_time_must_be_aware() -> None:
    """A naive acknowledgement time is refused, like every other time of a record."""
    with pytest.raises(ValueError, match="acknowledged_at"):
        IncidentRecord("web", "i1", T0, None, acknowledged_at=datetime(2024, 3, 1))


def test_incident_cannot_resolve_before_it_starts() -> None:
    """A record resolved before it started is bad data and is named as such."""
    with pytest.raises(ValueError, match="resolved"):
        incident(60, 30)


# --- deployments -----------------------------------------------------------------------


def deploy(minute: float, to: str = "1.4.3", target: str = "web") -> Deployment:
    """A deployment of ``to`` on ``target`` first seen ``minute`` after T0."""
    return Deployment(target=target, from_version="1.4.2", to_version=to, seen_at=at(minute))


@pytest.mark.parametrize(
    ("deployments", "incidents", "failed"),
    [
        ([deploy(60)], [incident(66, 80)], 1),
        ([deploy(60)], [incident(120, 130)], 1),
        ([deploy(60)], [incident(150, 160)], 0),
        ([deploy(60)], [incident(50, 55)], 0),
        ([deploy(60, target="api")], [incident(66, 80)], 0),
        ([deploy(60, "1.4.3"), deploy(90, "1.4.4")], [incident(100, 110)], 1),
        ([deploy(60), deploy(60)], [incident(66, 80)], 1),
        ([deploy(DAY - 5)], [incident(DAY + 10, None)], 1),
        ([deploy(60)], [incident(66, 80, "a"), incident(70, 90, "b")], 1),
    ],
    ids=[
        "incident-6min-after",
        "incident-at-failure-window-edge",
        "incident-after-failure-window",
        "incident-before-deploy",
        "other-target",
        "only-latest-of-two-blamed",
        "duplicate-record-counts-once",
        "incident-after-window-end-still-blames",
        "two-incidents-one-failure",
    ],
)
def test_change_failure(
    deployments: list[Deployment], incidents: list[IncidentRecord], failed: int
) -> None:
    """A deployment failed when an incident of its target starts within the failure window."""
    stats = deployment_stats(deployments, incidents, span(0, DAY), failure_window_s=3600)
    deployed = len(set(deployments))
    assert (stats.deployments, stats.failed) == (deployed, failed)
    assert stats.change_failure_ratio == pytest.approx(failed / deployed)


@pytest.mark.parametrize(
    ("window_key", "deployed_at_min", "deployments", "per_week"),
    [
        ("7d", [m * 12 * HOUR for m in range(14)], 14, 14.0),
        ("30d", [DAY, 10 * DAY, 20 * DAY], 3, 0.7),
        ("30d", [-DAY, 31 * DAY], 0, 0.0),
    ],
    ids=["twice-a-day-for-a-week", "three-in-a-month", "outside-window-not-counted"],
)
def test_deployment_frequency(
    window_key: str, deployed_at_min: list[float], deployments: int, per_week: float
) -> None:
    """Deployments in the window are counted and scaled to a week."""
    window = Span(T0, T0 + timedelta(seconds=WINDOWS[window_key]))
    stats = deployment_stats([deploy(m) for m in deployed_at_min], [], window)
    assert stats.deployments == deployments
    assert stats.per_week == pytest.approx(per_week)
    assert stats.failed == 0
    assert stats.change_failure_ratio == (None if deployments == 0 else 0.0)


def test_deployment_stats_on_empty_window() -> None:
    """A zero-length window has no deployments and a frequency of 0, not a division error."""
    stats = deployment_stats([deploy(0)], [], span(0, 0))
    assert (stats.deployments, stats.per_week, stats.change_failure_ratio) == (0, 0.0, None)


@pytest.mark.parametrize(
    ("deployments", "failure_at_min", "target", "expected"),
    [
        ([deploy(60)], 66, None, 0),
        ([deploy(60)], 60, None, 0),
        ([deploy(60)], 120, None, 0),
        ([deploy(60)], 121, None, None),
        ([deploy(60)], 59, None, None),
        ([deploy(30, "1.4.3"), deploy(60, "1.4.4")], 66, None, 1),
        ([deploy(60, "1.4.4"), deploy(30, "1.4.3")], 66, None, 0),
        ([deploy(30, target="web"), deploy(60, target="api")], 66, "web", 0),
        ([], 66, None, None),
    ],
    ids=[
        "six-minutes-before",
        "same-instant",
        "at-window-edge",
        "too-old",
        "after-the-failure",
        "latest-wins",
        "latest-wins-unsorted",
        "target-filter",
        "none-at-all",
    ],
)
def test_deployment_before(
    deployments: list[Deployment], failure_at_min: float, target: str | None, expected: int | None
) -> None:
    """The blamed deployment is the latest seen at or within the window before the failure."""
    found = deployment_before(at(failure_at_min), deployments, 3600, target=target)
    assert found == (None if expected is None else deployments[expected])


# --- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2_592_000), ("6h", 21_600), ("15m", 900), ("45s", 45), (" 24H ", 86_400)],
    ids=["days", "hours", "minutes", "seconds", "blanks-and-case"],
)
def test_parse_window(text: str, seconds: float) -> None:
    """Windows are a whole number and one unit letter."""
    assert parse_window(text) == seconds


def test_named_windows_parse_to_themselves() -> None:
    """Every standard window name parses to its own length."""
    assert {name: parse_window(name) for name in WINDOWS} == WINDOWS
    assert list(WINDOWS) == ["1h", "6h", "24h", "7d", "30d", "90d"]


@pytest.mark.parametrize(
    "text",
    ["", "30", "d", "1.5h", "-1h", "0h", "30 days", "1w", "1h30m"],
    ids=["empty", "no-unit", "no-number", "fraction", "negative", "zero", "word", "weeks", "mixed"],
)
def test_parse_window_rejects(text: str) -> None:
    """Anything but a positive whole number and s/m/h/d is refused, naming the input."""
    with pytest.raises(ValueError, match="invalid window"):
        parse_window(text)


# --- properties ------------------------------------------------------------------------

_offsets = st.builds(
    lambda s, us: timedelta(seconds=s, microseconds=us),
    st.integers(-7_200, 7_200),
    st.sampled_from([0, 1, 500_000, 999_999]),
)
_samples = st.lists(
    st.builds(lambda d, o: Sample(T0 + d, o), _offsets, st.sampled_from(list(Outcome))),
    max_size=30,
)
_holds = st.one_of(st.floats(0, 10_000), st.just(math.inf))
_spans = st.builds(lambda a, b: Span(T0 + min(a, b), T0 + max(a, b)), _offsets, _offsets)
_sessions = st.one_of(st.none(), st.lists(_spans, max_size=5))
_windows = st.lists(_spans, max_size=4)


def _parts(acct: TimeAccount) -> tuple[float, float, float, float, float]:
    return (acct.up_s, acct.degraded_s, acct.down_s, acct.unknown_s, acct.maintenance_s)


def _us_of(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@given(_samples, _spans, _holds, _sessions, _windows, st.floats(0, 1))
def test_account_is_a_partition_and_rolls_up(
    timeline: list[Sample],
    window: Span,
    max_hold_s: float,
    sessions: list[Span] | None,
    windows: list[Span],
    cut: float,
) -> None:
    """Parts are >= 0, sum to the window to the microsecond (maintenance included), and two
    adjacent windows add up to the whole exactly."""
    whole = account(timeline, window, max_hold_s, sessions, maintenance=windows)
    assert all(part >= 0 for part in _parts(whole))
    assert sum(round(part * 1_000_000) for part in _parts(whole)) == _us_of(
        window.end - window.start
    )

    middle = window.start + (window.end - window.start) * cut
    first = account(timeline, Span(window.start, middle), max_hold_s, sessions, maintenance=windows)
    second = account(timeline, Span(middle, window.end), max_hold_s, sessions, maintenance=windows)
    for rolled, raw in zip(_parts(first + second), _parts(whole), strict=True):
        assert round(rolled * 1_000_000) == round(raw * 1_000_000)


def _outside(window: Span, windows: list[Span]) -> tuple[list[Span], float]:
    """The pieces of ``window`` outside every maintenance span, and the seconds inside one."""
    pieces, inside_s, cursor = [], 0.0, window.start
    for w in sorted(windows, key=lambda w: w.start):
        start, end = max(w.start, cursor), min(w.end, window.end)
        if end <= start:
            continue
        pieces.append(Span(cursor, start))
        inside_s += (end - start).total_seconds()
        cursor = end
    pieces.append(Span(cursor, max(cursor, window.end)))
    return pieces, inside_s


@given(_samples, _spans, _holds, _sessions, _windows)
def test_maintenance_takes_its_spans_and_leaves_the_rest_as_it_was(
    timeline: list[Sample],
    window: Span,
    max_hold_s: float,
    sessions: list[Span] | None,
    windows: list[Span],
) -> None:
    """Maintenance is exactly the windows' time in the span; the up, degraded and down time
    left are what the pieces between the windows hold without any window."""
    planned = account(timeline, window, max_hold_s, sessions, maintenance=windows)
    pieces, inside_s = _outside(window, windows)
    assert math.isclose(planned.maintenance_s, inside_s, abs_tol=1e-6)
    between = sum(
        (account(timeline, piece, max_hold_s, sessions) for piece in pieces), TimeAccount.zero()
    )
    for part in ("up_s", "degraded_s", "down_s", "unknown_s"):
        assert math.isclose(getattr(planned, part), getattr(between, part), abs_tol=1e-6), part


@given(_samples, _spans, _holds, st.data())
def test_account_ignores_order_of_distinct_samples(
    timeline: list[Sample], window: Span, max_hold_s: float, data: st.DataObject
) -> None:
    """Samples at distinct instants give the same account in any order."""
    distinct = list({s.at: s for s in timeline}.values())
    shuffled = data.draw(st.permutations(distinct))
    assert account(shuffled, window, max_hold_s) == account(distinct, window, max_hold_s)


@given(_samples, _spans, _holds, st.lists(_spans, max_size=5))
def test_sessions_only_take_known_time_away(
    timeline: list[Sample], window: Span, max_hold_s: float, sessions: list[Span]
) -> None:
    """Sessions never add known time, and one session covering everything changes nothing."""
    free = account(timeline, window, max_hold_s)
    cut = account(timeline, window, max_hold_s, sessions)
    assert cut.known_s <= free.known_s + 1e-6
    everything = Span(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert account(timeline, window, max_hold_s, [everything]) == free
