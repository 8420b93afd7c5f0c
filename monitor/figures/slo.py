"""SLO figures from stored timestamps: uptime, coverage, error budget, MTTR, MTTA, DORA.

Pure maths: no I/O and no clock reads; ``now`` is always an argument. Every
figure is computed from timestamps, and time the monitor cannot vouch for
(no recent sample, or the monitor itself not running) is *unknown*, never up.
Time inside a maintenance window is *maintenance*, whatever the probes said:
like unknown time it is left out of uptime, the error budget and the burn
rate, and it is not owed coverage either (see :attr:`TimeAccount.coverage`).

Durations are accumulated in whole microseconds (what :class:`datetime`
resolves), so the parts of an account sum exactly to the window and accounts of
adjacent windows add up to the account of the whole; the conversion to float
seconds happens once, at the end.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Final

from monitor.probing.results import Outcome

__all__ = [
    "WINDOWS",
    "AckStats",
    "BudgetReport",
    "Deployment",
    "DeploymentStats",
    "IncidentRecord",
    "MttrStats",
    "Sample",
    "Span",
    "TimeAccount",
    "account",
    "burn_rate",
    "deployment_before",
    "deployment_stats",
    "error_budget",
    "held_account",
    "hold_us",
    "mtta",
    "mttr",
    "parse_window",
    "watched",
]

_US_PER_S: Final = 1_000_000
_WEEK_S: Final = 604_800.0

WINDOWS: Final[dict[str, float]] = {
    "1h": 3_600.0,
    "6h": 21_600.0,
    "24h": 86_400.0,
    "7d": 604_800.0,
    "30d": 2_592_000.0,
    "90d": 7_776_000.0,
}
"""The standard reporting windows, in seconds (the burn-rate and SLO windows)."""

_UNIT_S: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_WINDOW_RE: Final = re.compile(r"(\d+)([smhd])")


def parse_window(text: str) -> float:
    """Parse a window such as ``"30d"``, ``"6h"``, ``"15m"`` or ``"45s"`` into seconds.

    A positive whole number followed by one unit letter; surrounding blanks and
    upper case are tolerated. Anything else raises :class:`ValueError`.
    """
    match = _WINDOW_RE.fullmatch(text.strip().lower())
    if match is None or int(match[1]) == 0:
        raise ValueError(
            f"invalid window {text!r}: expected a positive whole number followed by "
            "s, m, h or d, e.g. '30d', '6h', '15m' or '45s'"
        )
    return float(int(match[1]) * _UNIT_S[match[2]])


def _us(delta: timedelta) -> int:
    """A timedelta as whole microseconds, exactly."""
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware (UTC) datetime, got naive {value!r}")


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open stretch of time ``[start, end)`` between two aware datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware("Span.start", self.start)
        _require_aware("Span.end", self.end)
        if self.end < self.start:
            raise ValueError(f"Span ends before it starts: {self.start} .. {self.end}")

    @classmethod
    def ending(cls, end: datetime, seconds: float) -> Span:
        """The span of ``seconds`` that ends at ``end`` (e.g. the last 30 days up to now)."""
        return cls(end - timedelta(seconds=seconds), end)

    @property
    def seconds(self) -> float:
        """Length of the span in seconds."""
        return (self.end - self.start).total_seconds()

    def contains(self, at: datetime) -> bool:
        """True when ``start <= at < end``."""
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class Sample:
    """One target-level probe result: the target's outcome as seen at ``at``."""

    at: datetime
    outcome: Outcome

    def __post_init__(self) -> None:
        _require_aware("Sample.at", self.at)


@dataclass(frozen=True, slots=True)
class TimeAccount:
    """Where the seconds of a window went; the five parts sum to the window length."""

    up_s: float
    degraded_s: float
    down_s: float
    unknown_s: float
    maintenance_s: float = 0.0  # inside a maintenance window, whatever the probes said

    @classmethod
    def zero(cls) -> TimeAccount:
        """The empty account, the start value for summing rollups."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def known_s(self) -> float:
        """Seconds for which a sample vouches, outside maintenance: up + degraded + down."""
        return self.up_s + self.degraded_s + self.down_s

    @property
    def accountable_s(self) -> float:
        """The seconds the monitor owes an answer for: the window less maintenance."""
        return self.known_s + self.unknown_s

    @property
    def total_s(self) -> float:
        """All seconds of the account, unknown and maintenance included."""
        return self.accountable_s + self.maintenance_s

    @property
    def uptime(self) -> float | None:
        """Share of known time that was serving (degraded counts as up); None if none known."""
        known = self.known_s
        if known == 0:
            return None
        return (self.up_s + self.degraded_s) / known

    @property
    def coverage(self) -> float | None:
        """Share of the accountable time that is known; None when there is none.

        Maintenance is out of the denominator as well as the numerator: a window
        spent half in maintenance and otherwise watched throughout is fully covered,
        as an SRE reads it (known / (window - maintenance)). A window entirely in
        maintenance, like an empty one, has no coverage to speak of.
        """
        accountable = self.accountable_s
        if accountable == 0:
            return None
        return self.known_s / accountable

    def __add__(self, other: object) -> TimeAccount:
        """Combine two accounts (adjacent windows, or several targets): parts add up."""
        if not isinstance(other, TimeAccount):
            return NotImplemented
        return TimeAccount(
            up_s=self.up_s + other.up_s,
            degraded_s=self.degraded_s + other.degraded_s,
            down_s=self.down_s + other.down_s,
            unknown_s=self.unknown_s + other.unknown_s,
            maintenance_s=self.maintenance_s + other.maintenance_s,
        )


def _merged(spans: Sequence[Span], origin: datetime) -> tuple[list[int], list[int]]:
    """Spans as sorted, disjoint ``[start, end)`` microsecond offsets from ``origin``.

    Overlapping and touching spans are merged: a hold runs on across a boundary
    where one session ends exactly as the next begins.
    """
    starts: list[int] = []
    ends: list[int] = []
    for span in sorted(spans, key=lambda s: s.start):
        start, end = _us(span.start - origin), _us(span.end - origin)
        if end <= start:
            continue
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


class _Covered:
    """How much of ``[0, x)`` some sorted, disjoint ``[start, end)`` offsets cover."""

    def __init__(self, bounds: tuple[list[int], list[int]]) -> None:
        self._starts, self._ends = bounds
        self._before = [0]  # what the intervals before each one cover
        for start, end in zip(self._starts, self._ends, strict=True):
            self._before.append(self._before[-1] + end - start)

    def upto(self, offset: int) -> int:
        """Microseconds covered before ``offset``."""
        slot = bisect.bisect_right(self._starts, offset) - 1
        if slot < 0:
            return 0
        return self._before[slot] + min(offset, self._ends[slot]) - self._starts[slot]

    def between(self, start: int, end: int) -> int:
        """Microseconds covered in ``[start, end)``."""
        return self.upto(end) - self.upto(start)


def _holds(
    timeline: Sequence[tuple[int, Outcome]],
    window_us: int,
    hold_us: int | None,
    bounds: tuple[list[int], list[int]] | None,
) -> Iterator[tuple[Outcome, int, int]]:
    """Each sample's hold as ``(outcome, start, end)`` offsets, clipped to the window."""
    for index, (at, outcome) in enumerate(timeline):
        end = timeline[index + 1][0] if index + 1 < len(timeline) else window_us
        if hold_us is not None:
            end = min(end, at + hold_us)
        if bounds is not None:
            session_starts, session_ends = bounds
            slot = bisect.bisect_right(session_starts, at) - 1
            if slot < 0 or at >= session_ends[slot]:
                continue  # taken while the monitor was not (known to be) running
            end = min(end, session_ends[slot])
        start, end = max(at, 0), min(end, window_us)
        if end > start:
            yield outcome, start, end


def account(
    samples: Sequence[Sample],
    window: Span,
    max_hold_s: float,
    sessions: Sequence[Span] | None = None,
    *,
    maintenance: Sequence[Span] = (),
) -> TimeAccount:
    """Split ``window`` into up, degraded, down, unknown and maintenance time.

    A sample's outcome holds from its ``at`` until the next sample's ``at``, but
    for at most ``max_hold_s`` (``math.inf`` for no limit); time no sample holds
    is unknown, so is the time before the first sample. Samples before the window
    count: the last one holds into it. Samples may be unsorted; of several with
    the same ``at`` the later in the sequence wins.

    With ``sessions`` (the spans the monitor itself was running), time outside
    every session is unknown, and a sample's hold ends with the session it was
    taken in: a result from before a restart does not vouch for the time after
    it, and a sample taken outside every session vouches for nothing.

    Time inside any of the ``maintenance`` spans (they may overlap) is
    maintenance, whatever the samples say and whether the monitor ran or not:
    a window is planned, so it wins over up, degraded, down and unknown alike.
    """
    if math.isnan(max_hold_s) or max_hold_s < 0:
        raise ValueError(f"max_hold_s must be >= 0, got {max_hold_s}")
    origin = window.start
    window_us = _us(window.end - origin)
    hold_us = None if math.isinf(max_hold_s) else _us(timedelta(seconds=max_hold_s))

    latest: dict[datetime, Outcome] = {}
    for sample in samples:
        latest[sample.at] = sample.outcome  # a later duplicate overwrites an earlier one
    timeline = sorted((_us(at - origin), outcome) for at, outcome in latest.items())
    bounds = None if sessions is None else _merged(sessions, origin)
    planned = _Covered(_merged(maintenance, origin))

    parts = dict.fromkeys(Outcome, 0)
    for outcome, start, end in _holds(timeline, window_us, hold_us, bounds):
        if outcome.is_known:  # an unknown sample only ends the hold before it
            parts[outcome] += end - start - planned.between(start, end)

    known_us = sum(parts.values())
    maintenance_us = planned.between(0, window_us)
    return TimeAccount(
        up_s=parts[Outcome.UP] / _US_PER_S,
        degraded_s=parts[Outcome.DEGRADED] / _US_PER_S,
        down_s=parts[Outcome.DOWN] / _US_PER_S,
        unknown_s=(window_us - known_us - maintenance_us) / _US_PER_S,
        maintenance_s=maintenance_us / _US_PER_S,
    )


def hold_us(max_hold_s: float) -> int:
    """The longest hold of a sample in whole microseconds, as :func:`account` counts it."""
    if math.isnan(max_hold_s) or max_hold_s < 0 or math.isinf(max_hold_s):
        raise ValueError(f"max_hold_s must be finite and >= 0, got {max_hold_s}")
    return _us(timedelta(seconds=max_hold_s))


def watched(
    window: Span, sessions: Sequence[Span], maintenance: Sequence[Span] = ()
) -> list[tuple[datetime, Span]]:
    """The parts of ``window`` inside a session and outside maintenance, in order, each
    with the start of the (merged) session it lies in.

    These are the only parts where a sample can hold (:func:`account`): a sample
    vouches for nothing outside its session, and maintenance wins over any sample.
    So summing each part's holds (samples taken at or after the part's session
    start, clipped to the part) gives the known time of :func:`account` exactly,
    which is how :meth:`monitor.figures.history.History.account` has the database
    do the sums instead of building a :class:`Sample` per stored row.
    """
    origin = window.start
    window_us = _us(window.end - origin)
    planned_starts, planned_ends = _merged(maintenance, origin)
    parts: list[tuple[int, int, int]] = []  # (session start, part start, part end)
    for session_start, session_end in zip(*_merged(sessions, origin), strict=True):
        cursor, end = max(session_start, 0), min(session_end, window_us)
        for planned_start, planned_end in zip(planned_starts, planned_ends, strict=True):
            if cursor >= end:
                break
            if planned_end <= cursor or planned_start >= end:
                continue
            if planned_start > cursor:
                parts.append((session_start, cursor, planned_start))
            cursor = max(cursor, planned_end)
        if cursor < end:
            parts.append((session_start, cursor, end))

    def at(offset: int) -> datetime:
        return origin + timedelta(microseconds=offset)

    return [(at(since), Span(at(start), at(end))) for since, start, end in parts]


def held_account(
    window: Span, held_us: Mapping[Outcome, int], maintenance: Sequence[Span] = ()
) -> TimeAccount:
    """The account of ``window`` from the microseconds each known outcome held in it
    (outside maintenance, as :func:`watched` splits it); the rest is maintenance or unknown.

    Equal to :func:`account` over the same samples, sessions and maintenance, to the
    microsecond.
    """
    window_us = _us(window.end - window.start)
    maintenance_us = _Covered(_merged(maintenance, window.start)).between(0, window_us)
    parts = {outcome: held_us.get(outcome, 0) for outcome in Outcome if outcome.is_known}
    return TimeAccount(
        up_s=parts[Outcome.UP] / _US_PER_S,
        degraded_s=parts[Outcome.DEGRADED] / _US_PER_S,
        down_s=parts[Outcome.DOWN] / _US_PER_S,
        unknown_s=(window_us - sum(parts.values()) - maintenance_us) / _US_PER_S,
        maintenance_s=maintenance_us / _US_PER_S,
    )


def _objective(objective: float) -> Fraction:
    """The objective as the exact decimal it was written as (0.995, not its binary neighbour).

    So that "3h36m down in 30 days at 99.5 %" is a budget spent exactly, not
    overspent by float noise.
    """
    if not (math.isfinite(objective) and 0 <= objective <= 1):
        raise ValueError(f"objective must be a ratio in [0, 1] such as 0.995, got {objective}")
    return Fraction(repr(objective))


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """How much of the error budget an account spent.

    ``remaining_ratio`` is ``1 - down_s / allowed_down_s``: 1 untouched, 0 spent
    exactly, negative overspent. With no budget at all (objective 1, or no known
    time) it is 1.0 when nothing was down and ``-inf`` otherwise.
    """

    objective: float  # e.g. 0.995
    window_s: float  # the whole window, unknown and maintenance time included
    allowed_down_s: float  # (1 - objective) * known time
    down_s: float
    remaining_ratio: float


def _remaining(down: Fraction, allowed: Fraction) -> float:
    """``1 - down / allowed``; with no budget at all, 1.0 if nothing was down, else -inf."""
    if allowed == 0:
        return 1.0 if down == 0 else -math.inf
    return float(1 - down / allowed)


def error_budget(objective: float, acct: TimeAccount) -> BudgetReport:
    """The error budget of ``acct`` under ``objective``, measured on known time only.

    Maintenance is not known time: a window neither spends the budget nor earns any.
    """
    bad = 1 - _objective(objective)
    allowed = bad * Fraction(acct.known_s)
    down = Fraction(acct.down_s)
    return BudgetReport(
        objective=objective,
        window_s=acct.total_s,
        allowed_down_s=float(allowed),
        down_s=acct.down_s,
        remaining_ratio=_remaining(down, allowed),
    )


def burn_rate(objective: float, acct: TimeAccount) -> float | None:
    """How fast ``acct`` spends the budget: (down share of known time) / (1 - objective).

    1.0 spends the budget exactly over the SLO window, 14.4 over an hour is the
    classic fast-burn page. None when no time is known. With objective 1 any
    downtime burns at ``inf`` and none at 0.0.
    """
    bad = 1 - _objective(objective)
    if acct.known_s == 0:
        return None
    share = Fraction(acct.down_s) / Fraction(acct.known_s)
    if bad == 0:
        return math.inf if share > 0 else 0.0
    return float(share / bad)


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One incident as stored: a reopened incident keeps its original ``started_at``."""

    target: str
    incident_id: str
    started_at: datetime  # the first failed probe
    resolved_at: datetime | None  # first good probe of the closing streak; None while open
    deployment_version: str | None = None
    acknowledged_at: datetime | None = None  # a person took it (its issue's ack label)

    def __post_init__(self) -> None:
        _require_aware("IncidentRecord.started_at", self.started_at)
        if self.acknowledged_at is not None:
            _require_aware("IncidentRecord.acknowledged_at", self.acknowledged_at)
        if self.resolved_at is not None:
            _require_aware("IncidentRecord.resolved_at", self.resolved_at)
            if self.resolved_at < self.started_at:
                raise ValueError(
                    f"incident {self.incident_id} on {self.target} resolved "
                    f"({self.resolved_at}) before it started ({self.started_at})"
                )


@dataclass(frozen=True, slots=True)
class MttrStats:
    """Incident figures for a window."""

    count: int  # incidents overlapping the window, open ones included
    resolved: int  # incidents resolved inside the window: the MTTR population
    mean_s: float | None  # mean time to resolve; None when none resolved
    median_s: float | None
    longest_s: float | None
    downtime_s: float  # incident time inside the window, open ones up to now


def _unique_incidents(incidents: Sequence[IncidentRecord]) -> list[IncidentRecord]:
    """One record per ``(target, incident_id)``: the later in the sequence wins."""
    latest: dict[tuple[str, str], IncidentRecord] = {}
    for incident in incidents:
        latest[(incident.target, incident.incident_id)] = incident
    return list(latest.values())


def mttr(incidents: Sequence[IncidentRecord], window: Span, now: datetime) -> MttrStats:
    """MTTR and downtime of ``incidents`` in ``window``, as seen at ``now``.

    Time to resolve is ``resolved_at - started_at`` of incidents resolved inside
    the window (``start <= resolved_at < end``). An incident counts when it
    started before the window ends and was still open at its start (resolved or
    ``now`` at or after ``window.start``). Downtime clips each incident to the
    window; open ones run to ``min(now, window.end)``. Incidents of all targets
    given are pooled (filter per target first for per-target figures), and
    several records of one ``(target, incident_id)`` collapse to the last one.
    """
    _require_aware("now", now)
    durations: list[float] = []
    count = 0
    downtime_us = 0
    for incident in _unique_incidents(incidents):
        end = incident.resolved_at if incident.resolved_at is not None else now
        if incident.started_at < window.end and end >= window.start:
            count += 1
        if incident.resolved_at is not None and window.contains(incident.resolved_at):
            durations.append((incident.resolved_at - incident.started_at).total_seconds())
        clipped_start = max(incident.started_at, window.start)
        clipped_end = min(end, window.end)
        if clipped_end > clipped_start:
            downtime_us += _us(clipped_end - clipped_start)
    return MttrStats(
        count=count,
        resolved=len(durations),
        mean_s=statistics.fmean(durations) if durations else None,
        median_s=statistics.median(durations) if durations else None,
        longest_s=max(durations) if durations else None,
        downtime_s=downtime_us / _US_PER_S,
    )


@dataclass(frozen=True, slots=True)
class AckStats:
    """Time to acknowledge: how long incidents waited for a person, beside MTTR."""

    acknowledged: int  # incidents acknowledged inside the window: the population
    mean_s: float | None  # None when none was acknowledged
    median_s: float | None


def mtta(incidents: Sequence[IncidentRecord], window: Span) -> AckStats:
    """Mean and median of ``acknowledged_at - started_at`` over incidents acknowledged
    in ``window`` (``start <= acknowledged_at < end``), as MTTR counts resolutions.

    The acknowledgement's time comes from GitHub's clock and the start from the
    monitor's: a skew that would put it before the first failure counts as 0 s.
    """
    waits = [
        max(0.0, (incident.acknowledged_at - incident.started_at).total_seconds())
        for incident in _unique_incidents(incidents)
        if incident.acknowledged_at is not None and window.contains(incident.acknowledged_at)
    ]
    return AckStats(
        acknowledged=len(waits),
        mean_s=statistics.fmean(waits) if waits else None,
        median_s=statistics.median(waits) if waits else None,
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """A version change of a target, as first seen by the monitor."""

    target: str
    from_version: str | None  # None for the first version ever seen
    to_version: str
    seen_at: datetime

    def __post_init__(self) -> None:
        _require_aware("Deployment.seen_at", self.seen_at)


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    """Deployment frequency and change failure rate for a window."""

    deployments: int  # seen inside the window
    per_week: float
    failed: int  # of those, followed by an incident they are blamed for
    change_failure_ratio: float | None  # failed / deployments; None without deployments


def _check_failure_window(failure_window_s: float) -> timedelta:
    if not (math.isfinite(failure_window_s) and failure_window_s >= 0):
        raise ValueError(f"failure_window_s must be a finite number >= 0, got {failure_window_s}")
    return timedelta(seconds=failure_window_s)


def deployment_before(
    incident_started_at: datetime,
    deployments: Sequence[Deployment],
    failure_window_s: float,
    *,
    target: str | None = None,
) -> Deployment | None:
    """The deployment to blame for an incident starting at ``incident_started_at``.

    The latest deployment seen at or before the first failure and at most
    ``failure_window_s`` before it; None if there is none. Pass ``target`` (or
    only that target's deployments) to ignore other targets. Of several seen at
    the same instant the later in the sequence wins.
    """
    limit = _check_failure_window(failure_window_s)
    best: Deployment | None = None
    for deployment in deployments:
        if target is not None and deployment.target != target:
            continue
        lead = incident_started_at - deployment.seen_at
        if timedelta(0) <= lead <= limit and (best is None or deployment.seen_at >= best.seen_at):
            best = deployment
    return best


def deployment_stats(
    deployments: Sequence[Deployment],
    incidents: Sequence[IncidentRecord],
    window: Span,
    failure_window_s: float = 3600,
) -> DeploymentStats:
    """Deployment frequency and change failure rate of the deployments seen in ``window``.

    A deployment failed when an incident of the same target started within
    ``failure_window_s`` after it was first seen *and* it is the one
    :func:`deployment_before` blames: when two deployments precede an incident,
    only the later one failed. The incident may start after the window ends.
    Identical deployment records count once.
    """
    _check_failure_window(failure_window_s)
    unique = list(dict.fromkeys(deployments))
    in_window = [d for d in unique if window.contains(d.seen_at)]
    blamed: set[Deployment] = set()
    for incident in _unique_incidents(incidents):
        culprit = deployment_before(
            incident.started_at, unique, failure_window_s, target=incident.target
        )
        if culprit is not None:
            blamed.add(culprit)
    failed = sum(1 for d in in_window if d in blamed)
    weeks = window.seconds / _WEEK_S
    return DeploymentStats(
        deployments=len(in_window),
        per_week=len(in_window) / weeks if weeks > 0 else 0.0,
        failed=failed,
        change_failure_ratio=failed / len(in_window) if in_window else None,
    )
