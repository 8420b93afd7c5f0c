"""The raw part of an account, summed by the database: equal to the SLO maths over the
samples, to the microsecond, on both backends.

``History.account`` reads the hours not rolled up yet with ``Store.holds_us`` (one query per
watched part of the window) instead of building a ``Sample`` per stored row; these tests
hold it to :func:`monitor.figures.slo.account` over the same samples, sessions and
maintenance, exactly (``==`` on the account, not ``isclose``).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Settings, load_settings
from monitor.figures.history import LATENCY_BOUNDS_S, TARGET_LEVEL, History
from monitor.figures.maintenance import Window, spans_for
from monitor.figures.slo import Sample, Span, TimeAccount, account, held_account, watched
from monitor.probing.results import Outcome
from monitor.store.codec import dt, ts
from monitor.store.postgres import PostgresStore
from monitor.store.sql import SqlStore
from monitor.store.sqlite import SqliteStore
from tests.builders import T0

HOLD_S = 125.0  # two one-minute cadences and a five-second timeout


def _settings(tmp_path: Path) -> Settings:
    monitor = {"interval": 60, "incident_interval": 60, "timeout": 5}
    return load_settings(None, monitor={**monitor, "state_path": str(tmp_path / "unused.db")})


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """An empty store of each backend."""
    opened: SqlStore = (
        SqliteStore(tmp_path / "s.db")
        if request.param == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres_url"))
    )
    yield opened
    opened.close()


def _us(offset_us: int) -> datetime:
    return T0 + timedelta(microseconds=offset_us)


def _reset(store: SqlStore) -> None:
    with store._tx() as db:
        for table in ("target_samples", "sessions", "maintenance"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608  # fixed names


def _samples(store: SqlStore, target: str, samples: dict[datetime, Outcome]) -> None:
    with store._tx() as db:
        db.executemany(
            "INSERT INTO target_samples (target, at, outcome, hold_s) VALUES (?, ?, ?, ?)",
            [(target, ts(when), outcome.value, HOLD_S) for when, outcome in samples.items()],
        )


def _direct(history: History, target: str, window: Span, now: datetime) -> TimeAccount:
    """The account as the SLO maths computes it from every sample, in Python."""
    store = history.store
    return account(
        store.samples(target, window, history.max_hold_s),
        window,
        history.max_hold_s,
        store.sessions(window, now, live_grace_s=3 * history.settings.monitor.metrics_refresh),
        maintenance=spans_for(history.maintenance_windows(window), target, window),
    )


MINUTE_US = 60_000_000
_times = st.integers(min_value=-30 * MINUTE_US, max_value=7 * 60 * MINUTE_US)  # to the us


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # gaps around the 125 s hold limit, to the microsecond: holds end at the next sample
    # or at the limit, both
    samples=st.lists(
        st.tuples(st.integers(1, 250_000_000), st.sampled_from(list(Outcome))), max_size=150
    ),
    sessions=st.lists(
        st.tuples(_times, _times, st.sampled_from(["stopped", "killed", "live"]), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    planned=st.lists(st.tuples(_times, _times, st.booleans()), max_size=3),
    window=st.tuples(_times, _times),
)
def test_raw_account_equals_the_slo_maths(
    store: SqlStore,
    tmp_path: Path,
    samples: list[tuple[int, Outcome]],
    sessions: list[tuple[int, int, str, bool]],
    planned: list[tuple[int, int, bool]],
    window: tuple[int, int],
) -> None:
    """Pins ``History.account`` on raw samples to ``slo.account``, exactly: unknown samples
    end holds and count nothing, holds end at the next sample, the hold limit and their
    session's end, overlapping sessions of two instances and a live one, maintenance
    (for every target, or another one) wins, samples outside every session vouch for nothing."""
    _reset(store)
    history = History(store, _settings(tmp_path))
    times = list(itertools.accumulate(gap for gap, _ in samples))
    _samples(store, "production", {_us(t): o for t, (_, o) in zip(times, samples, strict=True)})
    _samples(store, "staging", {_us(t + 7 * MINUTE_US): Outcome.DOWN for t in times})
    now = _us(7 * 60 * MINUTE_US)
    for (a, b, end, second), instance in zip(sessions, itertools.count(), strict=False):
        start, stop = sorted((a, b))
        session = store.start_session(_us(start), "b" if second else "a")
        if end == "stopped":
            store.stop_session(session, _us(stop))
        elif end == "killed":
            store.heartbeat(session, _us(stop))
        else:  # still running: heartbeats within the grace of now
            store.heartbeat(session, now - timedelta(seconds=30 + instance))
    for a, b, everyone in planned:
        start, stop = sorted((a, b))
        if stop > start:
            targets = None if everyone else frozenset({"staging"})
            store.add_maintenance(Window(_us(start), _us(stop), targets, "planned", "api"), T0)
    start, stop = sorted(window)
    span = Span(_us(start), _us(stop))
    for target in ("production", "staging"):
        assert history.account(target, span, now) == _direct(history, target, span, now), target


@pytest.mark.parametrize("seed", range(6))
def test_raw_account_equals_the_slo_maths_on_busy_histories(
    store: SqlStore, tmp_path: Path, seed: int
) -> None:
    """Pins the same as above on larger random histories (hundreds of samples, gaps on
    both sides of the hold limit, restarts, two instances, windows of every length)."""
    rng = random.Random(seed)
    history = History(store, _settings(tmp_path))
    hold_us = int(history.max_hold_s * 1_000_000)
    at_us, samples = 0, {}
    for _ in range(400):
        at_us += rng.choice([rng.randrange(1, 90_000_000), hold_us, hold_us + 1, hold_us - 1,
                             rng.randrange(hold_us, 3 * hold_us)])  # fmt: skip
        samples[_us(at_us)] = rng.choice([*[Outcome.UP] * 6, Outcome.DOWN, Outcome.DEGRADED,
                                         Outcome.UNKNOWN])  # fmt: skip
    _samples(store, "production", samples)
    now = _us(at_us + 10 * MINUTE_US)
    for instance in ("a", "b"):
        start = -MINUTE_US
        while start < at_us:
            stop = start + rng.randrange(10, 240) * MINUTE_US
            session = store.start_session(_us(start), instance)
            if rng.random() < 0.5:
                store.stop_session(session, _us(stop))
            else:
                store.heartbeat(session, _us(stop))
            start = stop + rng.randrange(0, 60) * MINUTE_US
    store.heartbeat(session, now)
    for _ in range(2):
        start = rng.randrange(0, at_us)
        window = Window(_us(start), _us(start + rng.randrange(MINUTE_US, 90 * MINUTE_US)),
                        None, "planned", "api")  # fmt: skip
        store.add_maintenance(window, T0)
    for _ in range(15):
        a, b = sorted(rng.randrange(-MINUTE_US, at_us + 5 * MINUTE_US) for _ in range(2))
        span = Span(_us(a), _us(b))
        assert history.account("production", span, now) == _direct(
            history, "production", span, now
        ), span


def _reference_hour(
    history: History, target: str, check: str, hour: Span, now: datetime
) -> dict[str, object]:
    """An hour's rollup row as the Python maths makes it from every raw result."""
    store = history.store
    sessions = store.sessions(hour, now, live_grace_s=3 * history.settings.monitor.metrics_refresh)
    planned = spans_for(history.maintenance_windows(hour), target, hour)
    if check == TARGET_LEVEL:
        samples = store.samples(target, hour, history.max_hold_s)
        inside = [s for s in samples if hour.contains(s.at)]
        counts = {o: sum(1 for s in inside if s.outcome is o) for o in Outcome}
        durations: list[float] = []
    else:
        raw = store.check_samples(target, check, hour, history.max_hold_s)
        samples = [Sample(dt(r["started_at"]), Outcome(r["outcome"])) for r in raw]
        rows = [r for r in raw if hour.contains(dt(r["started_at"]))]
        counts = {o: sum(1 for r in rows if r["outcome"] == o.value) for o in Outcome}
        durations = [float(r["duration_s"]) for r in rows]
    acct = account(samples, hour, history.max_hold_s, sessions, maintenance=planned)
    histogram = [0] * len(LATENCY_BOUNDS_S)
    for duration in durations:
        histogram[next(i for i, b in enumerate(LATENCY_BOUNDS_S) if duration <= b)] += 1
    return {
        "probes": sum(counts.values()),
        "failures": counts[Outcome.DOWN],
        "degraded": counts[Outcome.DEGRADED],
        "up_s": acct.up_s,
        "degraded_s": acct.degraded_s,
        "down_s": acct.down_s,
        "unknown_s": acct.unknown_s,
        "maintenance_s": acct.maintenance_s,
        "latency_sum": sum(durations),
        "latency_min": min(durations, default=None),
        "latency_max": max(durations, default=None),
        "latency_hist": histogram,
    }


@pytest.mark.parametrize("seed", range(3))
def test_hourly_rollups_equal_the_python_maths(store: SqlStore, tmp_path: Path, seed: int) -> None:
    """Pins the rollup rows (target level and per check) to what the Python maths makes
    of every raw result: the account to the microsecond, counts, latency sum, minimum,
    maximum and histogram, with results from two regions, unknown ones, a restart and a
    maintenance window."""
    rng = random.Random(seed)
    history = History(store, _settings(tmp_path))
    at_us = 0
    with store._tx() as db:
        while at_us < 4 * 60 * MINUTE_US:
            at_us += rng.choice([rng.randrange(1, 90_000_000), rng.randrange(100, 200) * 10**6])
            when = ts(_us(at_us))
            outcome = rng.choice(
                [*[Outcome.UP] * 6, Outcome.DOWN, Outcome.DEGRADED, Outcome.UNKNOWN]
            )
            db.execute(
                "INSERT INTO target_samples (target, at, outcome, hold_s) VALUES (?, ?, ?, ?)",
                ("production", when, outcome.value, HOLD_S),
            )
            for check, region in (("health", "ams"), ("health", "iad"), ("json", "ams")):
                latency = rng.choice([0.003, 0.01, 0.04, 0.2, 1.5, 45.0, rng.random()])
                db.execute(
                    "INSERT INTO check_results (target, check_name, started_at, duration_s,"
                    " outcome, reason, status, detail, region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ("production", check, when + rng.choice([0.0, 0.25]), latency,
                     rng.choice([outcome, Outcome.UP]).value, "ok", 200, "", region),
                )  # fmt: skip
    end = _us(at_us)
    store.stop_session(store.start_session(_us(-MINUTE_US), "a"), _us(100 * MINUTE_US))
    store.heartbeat(store.start_session(_us(110 * MINUTE_US), "a"), end)
    store.add_maintenance(Window(_us(30 * MINUTE_US), _us(75 * MINUTE_US), None, "x", "api"), T0)
    now = end + timedelta(minutes=1)
    while history.rollup(now, ["production"]):
        pass
    rows = store.rollups_any("hour", "production", T0, end)
    assert len(rows) == 4 * 3  # four complete hours, target level and two checks
    for row in rows:
        hour = Span(dt(row["bucket"]), dt(row["bucket"]) + timedelta(hours=1))
        expected = _reference_hour(history, "production", row["check_name"], hour, now)
        got = {key: row[key] for key in expected}
        got["latency_hist"] = json.loads(row["latency_hist"])
        assert got == expected, (row["check_name"], hour)


def test_sums_of_rolled_up_hours_are_read_once_and_not_where_retention_deletes(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the cache of rolled-up sums: the same hours are summed by the store once (they
    never change once the watermark is past them), with the same figures; a window that
    reaches back to where retention deletes hours is read every time."""
    settings = load_settings(
        None,
        monitor={
            "interval": 60,
            "incident_interval": 60,
            "timeout": 5,
            "rollup_retention": 30 * 86400,
            "state_path": str(tmp_path / "unused.db"),
        },
    )
    history = History(store, settings)
    now = T0 + timedelta(days=40, minutes=30)
    hours = [T0 + timedelta(hours=h) for h in range(40 * 24)]
    row = {
        "period": "hour", "target": "production", "check_name": TARGET_LEVEL, "probes": 60,
        "failures": 1, "degraded": 0, "up_s": 3540.0, "degraded_s": 0.0, "down_s": 60.0,
        "unknown_s": 0.0, "maintenance_s": 0.0, "latency_sum": 3.0, "latency_min": 0.05,
        "latency_max": 0.05, "latency_hist": "[]",
    }  # fmt: skip
    store.write_rollups([{**row, "bucket": ts(hour)} for hour in hours], hours[-1])
    reads: list[tuple[datetime, datetime]] = []
    totals = store.rollup_totals

    def counted(period: str, target: str, check: str, start: datetime, end: datetime) -> object:
        reads.append((start, end))
        return totals(period, target, check, start, end)

    monkeypatch.setattr(store, "rollup_totals", counted)
    week, quarter = Span.ending(now, 7 * 86400), Span.ending(now, 90 * 86400)
    first = [history.account("production", span, now) for span in (week, quarter)]
    again = [history.read_ahead(quarter).account("production", s, now) for s in (week, quarter)]
    assert again == first
    assert len(reads) == 3  # the week once; the quarter, which retention reaches, twice
    assert first[0].down_s == 166 * 60.0  # whole hours before the watermark; no raw samples


def test_a_busy_hour_is_summed_without_a_sample_object(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the cost: an hour of samples every 10 ms (what bench/footprint.py makes) is
    accounted without ``Store.samples``, i.e. no row becomes a Python object."""
    history = History(store, _settings(tmp_path))
    step_us = 10_000
    outcomes = itertools.cycle([Outcome.UP] * 98 + [Outcome.DOWN, Outcome.UNKNOWN])
    samples = {_us(n * step_us): next(outcomes) for n in range(360_000)}
    _samples(store, "production", samples)
    now = _us(3600 * 1_000_000)
    store.heartbeat(store.start_session(T0, "a"), now)
    expected = _direct(history, "production", Span(T0, now), now)

    def refuse(*_: object) -> None:
        raise AssertionError("a raw account read the samples into Python")

    monkeypatch.setattr(type(store), "samples", refuse)
    acct = history.account("production", Span(T0, now), now)
    assert acct == expected
    assert acct.down_s == pytest.approx(36.0)  # 3,600 down samples, 10 ms each
    assert acct.unknown_s == pytest.approx(36.0)  # unknown samples count nothing


@pytest.mark.parametrize(
    ("sessions", "planned", "parts"),
    [
        pytest.param([(0, 60)], [], [(0, 0, 60)], id="one-session"),
        pytest.param([(-30, 20), (10, 40)], [], [(-30, 0, 40)], id="overlapping-merge"),
        pytest.param([(0, 20), (20, 40)], [], [(0, 0, 40)], id="touching-merge"),
        pytest.param([(0, 20), (30, 70)], [], [(0, 0, 20), (30, 30, 60)], id="gap"),
        pytest.param([(0, 60)], [(10, 20), (15, 30)], [(0, 0, 10), (0, 30, 60)], id="planned"),
        pytest.param([(0, 60)], [(-5, 60)], [], id="all-planned"),
        pytest.param([(70, 80)], [], [], id="after-the-window"),
        pytest.param([], [(0, 10)], [], id="no-session"),
    ],
)
def test_watched_parts(
    sessions: list[tuple[int, int]], planned: list[tuple[int, int]], parts: list[tuple[int, ...]]
) -> None:
    """Pins how a window is split: inside a merged session, outside maintenance, each part
    with its session's start (where samples may come from)."""

    def minute(m: int) -> datetime:
        return T0 + timedelta(minutes=m)

    window = Span(minute(0), minute(60))
    got = watched(
        window,
        [Span(minute(a), minute(b)) for a, b in sessions],
        [Span(minute(a), minute(b)) for a, b in planned],
    )
    assert got == [(minute(s), Span(minute(a), minute(b))) for s, a, b in parts]


def test_held_account_leaves_the_rest_unknown_or_maintenance() -> None:
    """Pins the parts of an account built from held microseconds: they sum to the window."""
    window = Span(T0, T0 + timedelta(hours=1))
    acct = held_account(
        window,
        {Outcome.UP: 1_800_000_000, Outcome.DOWN: 600_000_000},
        [Span(T0, T0 + timedelta(minutes=5))],
    )
    assert acct == TimeAccount(1800.0, 0.0, 600.0, 900.0, 300.0)
    assert acct.total_s == 3600.0
