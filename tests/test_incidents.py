"""The incident tracker, as transcripts and as properties."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.incidents.tracker import Phase, Policy, TrackerState, TransitionKind, step
from monitor.probing.results import Outcome, Reason, TargetResult
from tests.builders import T0, at, check, down, up

POLICY = Policy(open_after=3, close_after=2, reopen_window_s=1800, reminder_interval_s=3600)


def run(
    script: str, policy: Policy = POLICY, spacing_min: float = 1.0
) -> tuple[TrackerState, list[str]]:
    """Feed F (down), U (up), D (degraded) probes a minute apart; list the kinds per probe."""
    state = TrackerState(target="production")
    log = []
    for index, letter in enumerate(script):
        when = at(index * spacing_min)
        result = {
            "F": down(when),
            "U": up(when),
            "D": TargetResult("production", when, (check(Outcome.DEGRADED, when=when),)),
        }[letter]
        state, transitions = step(state, result, when, policy)
        log.append("+".join(t.kind for t in transitions) or "-")
    return state, log


@pytest.mark.parametrize(
    ("script", "expected", "final"),
    [
        ("FFF", ["-", "-", "opened"], Phase.OPEN),
        ("FFU", ["-", "-", "cancelled"], Phase.HEALTHY),
        ("FFFUU", ["-", "-", "opened", "-", "resolved"], Phase.HEALTHY),
        ("FFFUFUU", ["-", "-", "opened", "-", "-", "-", "resolved"], Phase.HEALTHY),
        ("FFFUUFFF", ["-", "-", "opened", "-", "resolved", "-", "-", "reopened"], Phase.OPEN),
        ("UUUU", ["-", "-", "-", "-"], Phase.HEALTHY),
        ("FFFD", ["-", "-", "opened", "changed"], Phase.RECOVERING),
        ("DDDD", ["-", "-", "-", "-"], Phase.HEALTHY),
    ],
    ids=[
        "three-fails-open",
        "blip-cancels-quietly",
        "open-then-resolve",
        "relapse-while-recovering-restarts-streak",
        "flap-in-window-reopens",
        "healthy-stays-quiet",
        "down-to-degraded-is-a-change",
        "degraded-is-not-an-incident",
    ],
)
def test_transcripts(script: str, expected: list[str], final: Phase) -> None:
    """Probe sequences produce exactly the listed transitions."""
    state, log = run(script)
    assert log == expected
    assert state.phase is final


def test_duration_runs_from_first_failure_to_first_good_probe_of_closing_streak() -> None:
    """Start is the first failed probe, end the first good probe that began the close."""
    state, _ = run("UFFFFUFUU")
    incident = state.incident
    assert incident is not None
    assert incident.started_at == at(1)
    assert incident.resolved_at == at(7)
    assert incident.duration_s == 6 * 60
    assert (incident.probes_total, incident.probes_failed) == (8, 5)


def test_reopen_keeps_id_and_start() -> None:
    """A flap within reopen_window reopens the same incident, not a new one."""
    state, _ = run("FFFUU")
    first = state.incident
    assert first is not None
    state, _ = run("FFFUUFFF")
    assert state.incident is not None
    assert state.incident.id == first.id
    assert state.incident.started_at == first.started_at
    assert state.incident.reopened == 1


def test_failure_after_reopen_window_opens_a_new_incident() -> None:
    """Past reopen_window a new failure is a new incident with a new id."""
    policy = Policy(open_after=3, close_after=2, reopen_window_s=60, reminder_interval_s=3600)
    state, log = run("FFFUUUUFFF", policy=policy)
    assert log[-1] == "opened"
    assert state.incident is not None
    assert state.incident.started_at == at(7)


def test_reason_change_while_open_comments_once() -> None:
    """Another reason while open is one CHANGED transition, not one per probe."""
    state = TrackerState(target="production")
    kinds = []
    for minute, reason in enumerate([Reason.STATUS] * 3 + [Reason.TIMEOUT] * 3):
        state, transitions = step(state, down(at(minute), reason=reason), at(minute), POLICY)
        kinds.append([t.kind for t in transitions])
    assert kinds[3] == [TransitionKind.CHANGED]
    assert kinds[4:] == [[], []]


def test_reminder_every_interval_not_every_probe() -> None:
    """Reminders come once per reminder_interval while the incident stays open."""
    state = TrackerState(target="production")
    reminders = []
    for minute in range(0, 150):
        state, transitions = step(state, down(at(minute)), at(minute), POLICY)
        reminders += [t.at for t in transitions if t.kind is TransitionKind.REMINDER]
    # opened at minute 2; reminders at 62 and 122
    assert reminders == [at(62), at(122)]


def test_open_after_one_opens_on_first_failure() -> None:
    """open_after=1 confirms on the first failed probe."""
    _, log = run("FUU", policy=Policy(open_after=1, close_after=2))
    assert log == ["opened", "-", "resolved"]


outcomes = st.lists(st.sampled_from([Outcome.UP, Outcome.DEGRADED, Outcome.DOWN]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    outcomes,
    st.lists(st.integers(min_value=1, max_value=600), min_size=60, max_size=60),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=4),
)
def test_properties(
    sequence: list[Outcome], gaps_s: list[int], open_after: int, close_after: int
) -> None:
    """Any sequence: one open incident at most, recovery resolves, durations exact."""
    policy = Policy(open_after=open_after, close_after=close_after, reopen_window_s=900)
    state = TrackerState(target="t")
    when = T0
    opened: dict[str, int] = {}
    open_now: set[str] = set()
    sequence = sequence + [Outcome.UP] * close_after
    for outcome, gap in zip(sequence, gaps_s + [1] * close_after, strict=False):
        when += timedelta(seconds=gap)
        result = TargetResult("t", when, (check(outcome, target="t", when=when),))
        state, transitions = step(state, result, when, policy)
        for t in transitions:
            if t.kind in (TransitionKind.OPENED, TransitionKind.REOPENED):
                assert not open_now, "a second incident opened while one is open"
                assert t.incident is not None
                open_now.add(t.incident.id)
                opened[t.incident.id] = opened.get(t.incident.id, 0) + 1
            if t.kind is TransitionKind.RESOLVED:
                assert t.incident is not None
                open_now.discard(t.incident.id)
                duration = t.incident.duration_s
                assert duration is not None
                assert duration >= 0
                assert t.incident.resolved_at is not None
                assert duration == (t.incident.resolved_at - t.incident.started_at).total_seconds()
        assert len(open_now) <= 1
        assert state.in_incident == bool(open_now)
    assert not open_now, "an incident stayed open after close_after good probes"
    assert state.phase is Phase.HEALTHY


def test_clock_stepping_backwards_never_gives_a_negative_duration() -> None:
    """NTP stepping the clock back mid-incident: the duration is clamped at zero, not negative."""
    state = TrackerState(target="production")
    for minute in (10, 11, 12):
        state, _ = step(state, down(at(minute)), at(minute), POLICY)
    for minute in (5, 6):  # the clock jumped back seven minutes
        state, transitions = step(state, up(at(minute)), at(minute), POLICY)
    [resolved] = transitions
    assert resolved.kind is TransitionKind.RESOLVED
    assert resolved.incident is not None
    assert resolved.incident.duration_s == 0
