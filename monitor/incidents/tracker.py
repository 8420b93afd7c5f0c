"""The incident tracker: pure, ``(state, result, now) -> (state, transitions)``.

No I/O and no clock reads: the daemon feeds it target results and the time,
stores the new state and the transitions in one transaction, and the outbox
turns transitions into GitHub actions later.

Per target::

    HEALTHY --fail--> FAILING --(open_after fails)--> OPEN --good--> RECOVERING
       ^                 |                              ^               |
       +------good-------+ (blip: cancelled quietly)    +-----fail------+
       ^                                                                |
       +----------------------(close_after goods: resolved)-------------+

A confirmed failure whose first failed probe falls within ``reopen_window``
of the last resolve reopens that incident (same id, same issue).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.probing.results import Outcome, TargetResult


class Phase(enum.StrEnum):
    """Where a target stands in the incident lifecycle."""

    HEALTHY = "healthy"  # no incident in progress
    FAILING = "failing"  # failed probes seen, not yet open_after of them
    OPEN = "open"  # incident confirmed; its issue is (or is being) filed
    RECOVERING = "recovering"  # incident open, good probes seen, not yet close_after


class TransitionKind(enum.StrEnum):
    """What the tracker decided, for the sinks to act on."""

    OPENED = "opened"  # a new incident was confirmed: file an issue
    REOPENED = "reopened"  # a failure soon after a resolve: reopen the same issue
    CHANGED = "changed"  # the failure changed character: comment
    REMINDER = "reminder"  # still open after reminder_interval: comment
    RESOLVED = "resolved"  # recovered for close_after probes: comment and close
    CANCELLED = "cancelled"  # failures that never reached open_after: log only


@dataclass(frozen=True, slots=True)
class Policy:
    """The thresholds from ``[monitor]`` that drive the tracker."""

    open_after: int = 3
    close_after: int = 2
    reopen_window_s: float = 1800.0
    reminder_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Incident:
    """One outage of one target, from its first failed probe to its recovery."""

    id: str
    target: str
    started_at: datetime  # the first failed probe
    resolved_at: datetime | None = None  # the first good probe of the closing streak
    probes_total: int = 0  # probes seen since started_at
    probes_failed: int = 0
    signature: tuple[str, ...] = ()  # what is failing, to notice a change of character
    last_notice_at: datetime | None = None  # last open/reopen/reminder, for reminders
    reopened: int = 0  # how often it was reopened within reopen_window
    # people: an acknowledgement (the ack label) or a person closing the issue
    # while the target still fails stops the reminders; the resolve still goes out
    acknowledged_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def taken(self) -> bool:
        """True once a person has taken it (acknowledged it, or closed its issue)."""
        return self.acknowledged_at is not None or self.closed_at is not None

    @property
    def duration_s(self) -> float | None:
        """Resolved minus started, or None while open."""
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.started_at).total_seconds()

    def elapsed_s(self, now: datetime) -> float:
        """Time since the first failed probe, up to the resolve if there was one."""
        end = self.resolved_at or now
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class TrackerState:
    """Everything the tracker remembers about one target between probes."""

    target: str
    phase: Phase = Phase.HEALTHY
    fail_streak: int = 0
    good_streak: int = 0
    streak_started_at: datetime | None = None  # first probe of the current fail/good streak
    incident: Incident | None = None  # current, or the last resolved one (for reopen)

    @property
    def in_incident(self) -> bool:
        """True while an incident is open (including recovering)."""
        return self.phase in (Phase.OPEN, Phase.RECOVERING)

    @property
    def needs_fast_cadence(self) -> bool:
        """Probe at incident_interval from the first failure until resolved."""
        return self.phase is not Phase.HEALTHY


@dataclass(frozen=True, slots=True)
class Transition:
    """A decision of the tracker, with the incident as it stands after it."""

    kind: TransitionKind
    target: str
    at: datetime  # the probe (or, for reminders, the moment) it refers to
    incident: Incident | None
    result: TargetResult
    detail: str = ""


def incident_id(target: str, started_at: datetime) -> str:
    """A stable, readable id: the target and its first failure, to the second (UTC)."""
    return f"{target}-{started_at:%Y%m%dT%H%M%SZ}"


def signature(result: TargetResult) -> tuple[str, ...]:
    """What is wrong, as a comparable value: failing checks with reasons, or degraded."""
    failing = result.failing
    if failing:
        return tuple(sorted(f"{c.check}:{c.reason}" for c in failing))
    if result.outcome is Outcome.DEGRADED:
        slow = (c for c in result.checks if c.outcome is Outcome.DEGRADED)
        return tuple(sorted(f"{c.check}:degraded" for c in slow))
    return ()


def step(
    state: TrackerState,
    result: TargetResult,
    now: datetime,
    policy: Policy,
    *,
    maintenance: bool = False,
) -> tuple[TrackerState, list[Transition]]:
    """Advance one target's state by one probe result.

    In a ``maintenance`` window nobody is paged: failures do not count towards
    ``open_after`` (after the window a failing target opens on the normal rule, not
    at once), and an incident already open is still counted and may resolve, but
    announces no change and no reminder.

    An unknown result (a check that could not tell, none down) counts towards
    neither opening nor resolving, with one exception: during an incident, when
    every check that failed is good again, what cannot tell was not the failure,
    and the result counts as good.
    """
    if not result.outcome.is_known and not _failed_checks_recovered(state, result):
        return state, []
    if maintenance and not state.in_incident:
        return _paused(state, result), []
    if not result.down:
        new_state, transitions = _on_good(state, result, policy)
    else:
        new_state, transitions = _on_failure(state, result, policy)
    if maintenance:
        return new_state, [t for t in transitions if t.kind is TransitionKind.RESOLVED]
    return _maybe_remind(new_state, transitions, result, now, policy)


def _failed_checks_recovered(state: TrackerState, result: TargetResult) -> bool:
    """True in an incident whose failing checks (its signature) all came back good."""
    if not state.in_incident or state.incident is None or not state.incident.signature:
        return False
    failed = {entry.split(":", 1)[0] for entry in state.incident.signature}
    seen = {c.check: c.outcome for c in result.checks}
    return all(name in seen and seen[name].is_good for name in failed)


def _paused(state: TrackerState, result: TargetResult) -> TrackerState:
    """A target in maintenance with no incident: healthy, every streak forgotten."""
    return TrackerState(
        target=state.target,
        phase=Phase.HEALTHY,
        good_streak=1 if result.ok else 0,
        streak_started_at=result.at,
        incident=state.incident,  # the last resolved one: a reopen still finds it
    )


def _on_failure(
    state: TrackerState, result: TargetResult, policy: Policy
) -> tuple[TrackerState, list[Transition]]:
    if state.in_incident:
        assert state.incident is not None
        incident = _count(state.incident, failed=True)
        transitions = []
        new_sig = signature(result)
        if new_sig != incident.signature:
            transitions.append(
                Transition(
                    TransitionKind.CHANGED,
                    state.target,
                    result.at,
                    replace(incident, signature=new_sig),
                    result,
                    detail=_describe_change(incident.signature, new_sig),
                )
            )
            incident = replace(incident, signature=new_sig)
        return (
            replace(
                state,
                phase=Phase.OPEN,
                fail_streak=state.fail_streak + 1,
                good_streak=0,
                streak_started_at=result.at,
                incident=incident,
            ),
            transitions,
        )
    streak_start = state.streak_started_at if state.phase is Phase.FAILING else result.at
    fail_streak = state.fail_streak + 1 if state.phase is Phase.FAILING else 1
    assert streak_start is not None
    failing = replace(
        state,
        phase=Phase.FAILING,
        fail_streak=fail_streak,
        good_streak=0,
        streak_started_at=streak_start,
    )
    if fail_streak < policy.open_after:
        return failing, []
    return _confirm(failing, result, policy)


def _confirm(
    state: TrackerState, result: TargetResult, policy: Policy
) -> tuple[TrackerState, list[Transition]]:
    """open_after failures in a row: open a new incident or reopen the last one."""
    first_failure = state.streak_started_at
    assert first_failure is not None
    last = state.incident
    reopen = (
        last is not None
        and last.resolved_at is not None
        and (first_failure - last.resolved_at).total_seconds() <= policy.reopen_window_s
    )
    sig = signature(result)
    if reopen:
        assert last is not None
        incident = replace(
            last,
            resolved_at=None,
            probes_total=last.probes_total + state.fail_streak,
            probes_failed=last.probes_failed + state.fail_streak,
            signature=sig,
            last_notice_at=result.at,
            reopened=last.reopened + 1,
            acknowledged_at=None,  # failing again: it needs a person again
            closed_at=None,
        )
        kind = TransitionKind.REOPENED
    else:
        incident = Incident(
            id=incident_id(state.target, first_failure),
            target=state.target,
            started_at=first_failure,
            probes_total=state.fail_streak,
            probes_failed=state.fail_streak,
            signature=sig,
            last_notice_at=result.at,
        )
        kind = TransitionKind.OPENED
    new_state = replace(state, phase=Phase.OPEN, incident=incident)
    return new_state, [Transition(kind, state.target, result.at, incident, result)]


def _on_good(
    state: TrackerState, result: TargetResult, policy: Policy
) -> tuple[TrackerState, list[Transition]]:
    if state.phase is Phase.HEALTHY:
        return replace(state, good_streak=state.good_streak + 1, fail_streak=0), []
    if state.phase is Phase.FAILING:
        cancelled = replace(
            state,
            phase=Phase.HEALTHY,
            fail_streak=0,
            good_streak=1,
            streak_started_at=result.at,
        )
        detail = f"{state.fail_streak} failed probe(s), fewer than open_after={policy.open_after}"
        return cancelled, [
            Transition(TransitionKind.CANCELLED, state.target, result.at, None, result, detail)
        ]
    assert state.incident is not None
    incident = _count(state.incident, failed=False)
    transitions: list[Transition] = []
    new_sig = signature(result)
    if new_sig and new_sig != incident.signature:
        # down -> degraded is a change of character worth a comment
        incident = replace(incident, signature=new_sig)
        transitions.append(
            Transition(
                TransitionKind.CHANGED,
                state.target,
                result.at,
                incident,
                result,
                detail=_describe_change(state.incident.signature, new_sig),
            )
        )
    recovering_since = state.streak_started_at if state.phase is Phase.RECOVERING else result.at
    good_streak = state.good_streak + 1 if state.phase is Phase.RECOVERING else 1
    if good_streak < policy.close_after:
        return (
            replace(
                state,
                phase=Phase.RECOVERING,
                fail_streak=0,
                good_streak=good_streak,
                streak_started_at=recovering_since,
                incident=incident,
            ),
            transitions,
        )
    assert recovering_since is not None
    # a wall clock stepped backwards must not produce a negative duration
    resolved = replace(incident, resolved_at=max(recovering_since, incident.started_at))
    transitions.append(
        Transition(TransitionKind.RESOLVED, state.target, result.at, resolved, result)
    )
    healthy = TrackerState(
        target=state.target,
        phase=Phase.HEALTHY,
        good_streak=good_streak,
        streak_started_at=recovering_since,
        incident=resolved,
    )
    return healthy, transitions


def _count(incident: Incident, *, failed: bool) -> Incident:
    return replace(
        incident,
        probes_total=incident.probes_total + 1,
        probes_failed=incident.probes_failed + (1 if failed else 0),
    )


def _maybe_remind(
    state: TrackerState,
    transitions: list[Transition],
    result: TargetResult,
    now: datetime,
    policy: Policy,
) -> tuple[TrackerState, list[Transition]]:
    incident = state.incident
    if not state.in_incident or incident is None or incident.last_notice_at is None:
        return state, transitions
    if incident.taken:
        return state, transitions  # a person has it: no more reminders
    if any(t.kind in (TransitionKind.OPENED, TransitionKind.REOPENED) for t in transitions):
        return state, transitions
    if (now - incident.last_notice_at).total_seconds() < policy.reminder_interval_s:
        return state, transitions
    incident = replace(incident, last_notice_at=now)
    reminder = Transition(TransitionKind.REMINDER, state.target, now, incident, result)
    transitions = [replace(t, incident=incident) for t in transitions]
    return replace(state, incident=incident), [*transitions, reminder]


def _describe_change(before: tuple[str, ...], after: tuple[str, ...]) -> str:
    def show(sig: tuple[str, ...]) -> str:
        return ", ".join(sig) if sig else "nothing"

    return f"was {show(before)}; now {show(after)}"
