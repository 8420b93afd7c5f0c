"""History: rollups agree with raw results, retention keeps the file bounded, report figures."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Settings, load_settings
from monitor.figures.history import History
from monitor.figures.maintenance import Window, spans_for
from monitor.figures.slo import Sample, Span, account
from monitor.figures.target import target_figures
from monitor.incidents.tracker import Incident, TrackerState
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from monitor.store.base import PendingCycle
from monitor.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_settings(
    state: Path, maintenance: list[dict[str, object]] | None = None, **monitor: object
) -> Settings:
    """Two-target settings with a one-minute healthy cadence (and configured windows)."""
    base = {"interval": 60, "incident_interval": 60, "timeout": 5, "state_path": str(state)}
    return load_settings(None, monitor={**base, **monitor}, maintenance=maintenance or [])


def cycle(target: str, at: datetime, outcome: Outcome, latency_s: float = 0.05) -> TargetResult:
    """One target result with a health and a monitoring check."""
    reason = {
        Outcome.UP: Reason.OK,
        Outcome.DEGRADED: Reason.SLOW,
        Outcome.UNKNOWN: Reason.EMPTY,
        Outcome.DOWN: Reason.STATUS,
    }[outcome]
    checks = tuple(
        CheckResult(
            target, name, f"https://{target}/{name}", at, latency_s, outcome, reason, "", 200
        )
        for name in ("health", "monitoring")
    )
    return TargetResult(target, at, checks)


def write(store: SqliteStore, results: list[TargetResult], hold_s: float = 125.0) -> None:
    """Commit results as the daemon would (no transitions)."""
    for result in results:
        store.commit_cycle(PendingCycle(result, hold_s, TrackerState(result.target), None, []))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    outcomes=st.lists(st.sampled_from(list(Outcome)), min_size=1, max_size=400),
    gaps=st.lists(st.integers(min_value=10, max_value=400), min_size=400, max_size=400),
    start_offset_s=st.integers(min_value=0, max_value=7200),
    length_s=st.integers(min_value=60, max_value=6 * 3600),
    planned=st.lists(
        st.tuples(st.integers(0, 8 * 3600), st.integers(1, 3 * 3600), st.booleans()), max_size=3
    ),
)
def test_rollups_agree_with_raw(
    tmp_path_factory: pytest.TempPathFactory,
    outcomes: list[Outcome],
    gaps: list[int],
    start_offset_s: int,
    length_s: int,
    planned: list[tuple[int, int, bool]],
) -> None:
    """Any window's account from rollups + raw equals the account from raw samples alone,
    maintenance included (stored windows, for every target or for another one only)."""
    path = tmp_path_factory.mktemp("h") / "m.db"
    store = SqliteStore(path)
    history = History(store, make_settings(path))
    windows = [
        Window(
            T0 + timedelta(seconds=offset),
            T0 + timedelta(seconds=offset + length),
            None if everyone else frozenset({"production"}),
            "hypothesis",
            "api",
        )
        for offset, length, everyone in planned
    ]
    for window in windows:
        store.add_maintenance(window, T0)
    at = T0
    results = []
    for outcome, gap in zip(outcomes, gaps, strict=False):
        at += timedelta(seconds=gap)
        results.append(cycle("staging", at, outcome))
    write(store, results)
    session_end = at + timedelta(minutes=5)
    store.start_session(T0)
    store.stop_session(1, session_end)
    now = session_end + timedelta(hours=2)
    while history.rollup(now):
        pass
    window = Span(
        T0 + timedelta(seconds=start_offset_s), T0 + timedelta(seconds=start_offset_s + length_s)
    )
    from_history = history.account("staging", window, now)
    samples = [Sample(r.at, r.outcome) for r in results]
    direct = account(
        samples,
        window,
        history.max_hold_s,
        [Span(T0, session_end)],
        maintenance=spans_for(windows, "staging", window),
    )
    for part in ("up_s", "degraded_s", "down_s", "unknown_s", "maintenance_s"):
        assert math.isclose(getattr(from_history, part), getattr(direct, part), abs_tol=1e-6), part
    store.close()


def test_rollups_carry_maintenance_and_agree_with_raw(tmp_path: Path) -> None:
    """A configured daily window (staging only) and a stored one (every target): the hours
    and the day carry maintenance_s, failures inside a window are not down, and accounts
    from rollups, from raw samples, and from both agree to the microsecond."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    nightly = {"targets": ["staging"], "start": "02:00", "every": "daily", "duration": "30m"}
    history = History(store, make_settings(path, maintenance=[{**nightly, "reason": "backup"}]))
    deploy = Window(
        T0 + timedelta(hours=5), T0 + timedelta(hours=5, minutes=30), None, "deploy", "api"
    )
    store.add_maintenance(deploy, T0)

    def outcome(minute: int) -> Outcome:
        failing = 120 <= minute < 140 or 240 <= minute < 250 or 300 <= minute < 330
        return Outcome.DOWN if failing else Outcome.UP

    results = [cycle("staging", T0 + timedelta(minutes=m), outcome(m)) for m in range(480)]
    write(store, results)
    store.start_session(T0)
    store.stop_session(1, T0 + timedelta(hours=8))
    now = T0 + timedelta(hours=10)
    raw_only = history.account("staging", Span(T0, T0 + timedelta(hours=8)), now)
    while history.rollup(now, ["staging"]):
        pass

    hours = {
        datetime.fromtimestamp(row["bucket"], UTC).hour: row
        for row in store.rollups("hour", "staging", "*", T0, now)
    }
    assert [hours[h]["maintenance_s"] for h in range(8)] == [0, 0, 1800, 0, 0, 1800, 0, 0]
    assert (hours[2]["down_s"], hours[4]["down_s"], hours[5]["down_s"]) == (0.0, 600.0, 0.0)
    for check in ("health", "monitoring"):  # per check too
        (row,) = store.rollups(
            "hour", "staging", check, T0 + timedelta(hours=2), T0 + timedelta(hours=3)
        )
        assert (row["maintenance_s"], row["down_s"]) == (1800.0, 0.0)
    (day,) = store.rollups("day", "staging", "*", T0, now)
    assert (day["maintenance_s"], day["down_s"]) == (3600.0, 600.0)

    rolled = history.account("staging", Span(T0, T0 + timedelta(hours=8)), now)
    assert rolled == raw_only
    assert (rolled.maintenance_s, rolled.down_s, rolled.unknown_s) == (3600.0, 600.0, 0.0)
    assert rolled.coverage == 1.0
    assert rolled.uptime == pytest.approx(1 - 600 / (7 * 3600))
    straddling = Span(T0 + timedelta(minutes=95), T0 + timedelta(hours=9, minutes=15))
    samples = [Sample(r.at, r.outcome) for r in results]
    windows = history.maintenance_windows(straddling)
    direct = account(
        samples,
        straddling,
        history.max_hold_s,
        [Span(T0, T0 + timedelta(hours=8))],
        maintenance=spans_for(windows, "staging", straddling),
    )
    from_history = history.account("staging", straddling, now)
    for part in ("up_s", "degraded_s", "down_s", "unknown_s", "maintenance_s"):
        assert math.isclose(getattr(from_history, part), getattr(direct, part), abs_tol=1e-6), part
    store.close()


def test_windows_read_ahead_answer_inside_their_span_and_read_outside_it(
    tmp_path: Path,
) -> None:
    """Pins read_ahead: inside its span the windows come from the list read once (a window
    stored since does not show), outside it the store is read again."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    history = History(store, make_settings(path))
    first = Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2), None, "first", "api")
    store.add_maintenance(first, T0)
    ahead = history.read_ahead(Span(T0, T0 + timedelta(hours=6)))
    later = Window(T0 + timedelta(hours=3), T0 + timedelta(hours=8), None, "later", "api")
    store.add_maintenance(later, T0)

    def reasons(span: Span) -> list[str]:
        return [w.reason for w in ahead.maintenance_windows(span)]

    assert reasons(Span(T0, T0 + timedelta(hours=6))) == ["first"]
    assert reasons(Span(T0 + timedelta(hours=2), T0 + timedelta(hours=6))) == []
    assert reasons(Span(T0, T0 + timedelta(hours=7))) == ["first", "later"]
    assert [w.reason for w in history.maintenance_windows(Span(T0, T0 + timedelta(hours=6)))] == [
        "first",
        "later",
    ]
    store.close()


def test_retention_drops_raw_only_after_rollup(tmp_path: Path) -> None:
    """Raw results older than raw_retention go, but only once rolled up; rollups stay."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    history = History(
        store,
        make_settings(
            path, interval=600, incident_interval=60, raw_retention="1d", rollup_retention="30d"
        ),
    )
    store.start_session(T0)
    write(
        store,
        [cycle("staging", T0 + timedelta(minutes=m), Outcome.UP) for m in range(0, 3 * 1440, 10)],
    )
    now = T0 + timedelta(days=3, hours=1)
    store.heartbeat(1, now)
    assert history.purge(now)["check_results"] == 0  # nothing rolled up yet: nothing may go
    while history.rollup(now):
        pass
    removed = history.purge(now)
    assert removed["check_results"] > 0
    day_rows = store.rollups("day", "staging", "*", T0, now)
    assert len(day_rows) == 4  # three whole days and the day in progress
    three_days = history.account("staging", Span(T0, T0 + timedelta(days=3)), now)
    assert three_days.uptime == 1.0
    assert math.isclose(three_days.coverage or 0, 1.0, rel_tol=1e-3)
    store.close()


def test_monitor_downtime_is_unknown_not_up(tmp_path: Path) -> None:
    """A gap while the monitor was stopped counts as unknown: coverage drops, uptime does not lie."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    history = History(store, make_settings(path))
    store.start_session(T0)
    write(store, [cycle("staging", T0 + timedelta(minutes=m), Outcome.UP) for m in range(60)])
    store.stop_session(1, T0 + timedelta(minutes=60))
    store.start_session(T0 + timedelta(minutes=120))
    write(
        store, [cycle("staging", T0 + timedelta(minutes=m), Outcome.DOWN) for m in range(120, 180)]
    )
    store.stop_session(2, T0 + timedelta(minutes=180))
    acct = history.account("staging", Span(T0, T0 + timedelta(hours=3)), T0 + timedelta(hours=4))
    assert acct.unknown_s == pytest.approx(3600, abs=1)
    assert acct.uptime == pytest.approx(0.5, abs=1e-3)
    assert acct.coverage == pytest.approx(2 / 3, abs=1e-3)
    store.close()


def _incident(target: str, start: datetime, minutes: float) -> Incident:
    return Incident(
        id=f"{target}-{start:%Y%m%dT%H%M%SZ}",
        target=target,
        started_at=start,
        resolved_at=start + timedelta(minutes=minutes),
        probes_total=10,
        probes_failed=8,
    )


def test_figures_trace_back_to_incidents_and_deployments(tmp_path: Path) -> None:
    """MTTR and change failure rate come from stored incidents and version changes."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    settings = make_settings(path)
    history = History(store, settings)
    store.start_session(T0)
    from monitor.figures.slo import Deployment

    first = cycle("staging", T0, Outcome.UP)
    store.commit_cycle(
        PendingCycle(
            first,
            125,
            TrackerState("staging"),
            None,
            [],
            Deployment("staging", "1.4.1", "1.4.2", T0),
        )
    )
    store.commit_cycle(
        PendingCycle(
            cycle("staging", T0 + timedelta(hours=5), Outcome.UP),
            125,
            TrackerState("staging"),
            None,
            [],
            Deployment("staging", "1.4.2", "1.4.3", T0 + timedelta(hours=5)),
        )
    )
    for start, minutes in ((T0 + timedelta(hours=5, minutes=6), 20), (T0 + timedelta(days=2), 30)):
        incident = _incident("staging", start, minutes)
        store.commit_cycle(
            PendingCycle(
                cycle("staging", start, Outcome.DOWN), 125, TrackerState("staging"), incident, []
            )
        )
    now = T0 + timedelta(days=3)
    store.heartbeat(1, now)
    figures = target_figures(history, settings.target("staging"), Span(T0, now), now)
    assert figures.mttr.count == 2
    assert figures.mttr.mean_s == pytest.approx(25 * 60)
    assert figures.mttr.median_s == pytest.approx(25 * 60)
    assert figures.mttr.longest_s == pytest.approx(30 * 60)
    assert figures.deployments.deployments == 2
    assert figures.deployments.failed == 1  # 1.4.3 was followed by an incident within 1h
    assert figures.deployments.change_failure_ratio == pytest.approx(0.5)
    assert figures.mttr_objective_s == 1800  # the seed's MTTR < 30 minutes
    assert figures.mttr_met is True
    store.close()


def generate_history(path: Path, days: int, targets: int, now: datetime, raw_days: int = 7) -> None:
    """A realistic file after ``days`` of one-minute probing: raw for the last week, rollups before.

    Rows are written in bulk (the daemon's own write path is timed in bench/), with a
    seeded random outage now and then.
    """
    rng = random.Random(7)
    store = SqliteStore(path)
    db = store._db  # bulk load for the test's speed; the daemon writes through commit_cycle
    start = now - timedelta(days=days)
    raw_start = now - timedelta(days=raw_days)
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO sessions (started_at, last_seen_at) VALUES (?, ?)",
        (start.timestamp(), now.timestamp()),
    )
    hour_rows = []
    for t in range(targets):
        name = f"svc{t:02d}"
        hour = start
        while hour < raw_start:
            down = 60.0 * rng.choice([0] * 40 + [1, 3, 10])
            # a weekly window: Sunday 03:00 to 04:00 is maintenance, whatever was probed
            planned = 3600.0 if (hour.weekday(), hour.hour) == (6, 3) else 0.0
            down = 0.0 if planned else down
            for check in ("*", "health", "monitoring"):
                hour_rows.append(
                    ("hour", name, check, hour.timestamp(), 60, int(down // 60), 0, 3600 - down - planned, 0.0, down, 0.0, planned,
                     3.0, 0.02, 0.2, json.dumps([0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
                )  # fmt: skip
            hour += timedelta(hours=1)
        rows = []
        samples = []
        at = raw_start
        while at < now:
            outcome = "down" if rng.random() < 0.002 else "up"
            for check in ("health", "monitoring"):
                rows.append((name, check, at.timestamp(), 0.05, outcome, "ok", 200, ""))
            samples.append((name, at.timestamp(), outcome, 185.0))
            at += timedelta(minutes=1)
        db.executemany(
            "INSERT INTO check_results (target, check_name, started_at, duration_s, outcome, reason, status, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO target_samples (target, at, outcome, hold_s) VALUES (?, ?, ?, ?)", samples
        )
    db.executemany(
        "INSERT INTO rollups (period, target, check_name, bucket, probes, failures, degraded,"
        " up_s, degraded_s, down_s, unknown_s, maintenance_s, latency_sum, latency_min,"
        " latency_max, latency_hist) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        hour_rows,
    )
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_watermark', ?)",
        (str(raw_start.timestamp()),),
    )
    db.execute("COMMIT")
    store.close()


@pytest.mark.slow
def test_report_answers_on_90_days_of_history(tmp_path: Path) -> None:
    """90 days of one-minute history for 50 checks: `monitor report` answers with sane figures."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    path = tmp_path / "big.db"
    generate_history(path, days=90, targets=25, now=now)
    config = tmp_path / "c.toml"
    targets = "\n".join(
        f'[[targets]]\nname = "svc{t:02d}"\nurl = "http://127.0.0.1:1"\nslo = 0.99\n'
        '  [[targets.checks]]\n  name = "health"\n  path = "/health"\n'
        '  [[targets.checks]]\n  name = "monitoring"\n  path = "/m"\n'
        for t in range(25)
    )
    config.write_text(
        f'[monitor]\ninterval = 60\nincident_interval = 60\nstate_path = "{path}"\n\n{targets}'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "report",
            "--config",
            str(config),
            "--window",
            "90d",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["targets"]) == 25
    for target in report["targets"]:
        assert 0.95 < target["uptime_ratio"] <= 1.0
        assert target["coverage_ratio"] > 0.99
        assert sum(target["time_s"].values()) == pytest.approx(90 * 86400, rel=1e-6)
        # about eleven Sunday windows of an hour in the rolled-up 83 days, read back
        assert 10 * 3600 <= target["time_s"]["maintenance"] <= 12 * 3600
