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
from monitor.figures.slo import Sample, Span, account
from monitor.figures.target import target_figures
from monitor.incidents.tracker import Incident, TrackerState
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from monitor.store.base import PendingCycle
from monitor.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_settings(state: Path, **monitor: object) -> Settings:
    """Two-target settings with a one-minute healthy cadence."""
    base = {"interval": 60, "incident_interval": 60, "timeout": 5, "state_path": str(state)}
    return load_settings(None, monitor={**base, **monitor})


def cycle(target: str, at: datetime, outcome: Outcome, latency_s: float = 0.05) -> TargetResult:
    """One target result with a health and a monitoring check."""
    reason = {Outcome.UP: Reason.OK, Outcome.DEGRADED: Reason.SLOW, Outcome.DOWN: Reason.STATUS}[
        outcome
    ]
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
)
def test_rollups_agree_with_raw(
    tmp_path_factory: pytest.TempPathFactory,
    outcomes: list[Outcome],
    gaps: list[int],
    start_offset_s: int,
    length_s: int,
) -> None:
    """Any window's account from rollups + raw equals the account from raw samples alone."""
    path = tmp_path_factory.mktemp("h") / "m.db"
    store = SqliteStore(path)
    history = History(store, make_settings(path))
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
    direct = account(samples, window, history.max_hold_s, [Span(T0, session_end)])
    for part in ("up_s", "degraded_s", "down_s", "unknown_s"):
        assert math.isclose(getattr(from_history, part), getattr(direct, part), abs_tol=1e-6), part
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
            for check in ("*", "health", "monitoring"):
                hour_rows.append(
                    ("hour", name, check, hour.timestamp(), 60, int(down // 60), 0, 3600 - down, 0.0, down, 0.0, 3.0, 0.02, 0.2,
                     json.dumps([0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
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
        "INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", hour_rows
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
