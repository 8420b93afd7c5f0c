"""``monitor report``: maintenance time and what people did, in the text and in the JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import load_settings
from monitor.figures.history import History
from monitor.figures.maintenance import Window
from monitor.figures.report import render_target
from monitor.figures.slo import AckStats, DeploymentStats, MttrStats, Span, TimeAccount
from monitor.figures.target import TargetFigures, target_figures
from monitor.incidents.tracker import Incident, TrackerState
from monitor.store.base import IncidentRow, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests.builders import down, up

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = Span(T0, T0 + timedelta(days=1))
INCIDENT = IncidentRow(
    id="staging-20261101T100000Z",
    target="staging",
    started_at=T0 + timedelta(hours=10),
    resolved_at=T0 + timedelta(hours=10, minutes=30),
    issue_number=7,
    issue_url="https://github.com/acme/web/issues/7",
    probes_total=30,
    probes_failed=28,
    reopened=0,
    deployment=None,
    acknowledged_at=T0 + timedelta(hours=10, minutes=4),
    acknowledged_by="alice",
    closed_at=T0 + timedelta(hours=10, minutes=20),
    closed_by="bob",
)


def figures(**changes: object) -> TargetFigures:
    """A day of staging: 2 h of maintenance, one incident acknowledged after 4 minutes."""
    base = TargetFigures(
        target="staging",
        window=DAY,
        account=TimeAccount(77_400, 0, 1_800, 0, 7_200),
        objective=0.995,
        budget=None,
        burn_rates={"1h": 0.0, "6h": 0.0},
        mttr=MttrStats(1, 1, 1_800, 1_800, 1_800, 1_800),
        mttr_objective_s=1_800,
        mtta=AckStats(1, 240, 240),
        deployments=DeploymentStats(0, 0.0, 0, None),
        incidents=[INCIDENT],
    )
    return replace(base, **changes)


def test_text_names_maintenance_and_time_to_acknowledge() -> None:
    """Pins the maintenance line (left out of every share), MTTA beside MTTR, and who
    acknowledged and who closed the issue on the incident's line."""
    lines = render_target(figures()).splitlines()
    assert "unknown 0s" in lines[1]
    assert lines[2] == "  coverage        100.0 %   (time the monitor could vouch for)"
    assert lines[3] == (
        "  maintenance     2h   (left out of uptime, coverage and the error budget)"
    )
    mttr = next(i for i, line in enumerate(lines) if line.startswith("  MTTR"))
    assert lines[mttr + 1] == (
        "  MTTA            mean 4m, median 4m  (1 acknowledged; time to acknowledge)"
    )
    assert lines[-1].endswith(
        "staging-20261101T100000Z  acknowledged by @alice after 4m"
        "  issue closed by @bob at 2026-11-01 10:20 UTC (still failing)"
    )


def test_text_without_maintenance_or_acknowledgements() -> None:
    """Pins the quiet case: no maintenance line, MTTA n/a, an incident line without people."""
    quiet = replace(INCIDENT, acknowledged_at=None, acknowledged_by=None, closed_at=None)
    text = render_target(
        figures(
            account=TimeAccount(84_600, 0, 1_800, 0),
            mtta=AckStats(0, None, None),
            incidents=[quiet],
        )
    )
    assert "maintenance" not in text
    assert "  MTTA            mean n/a, median n/a  (0 acknowledged; time to acknowledge)" in text
    assert text.splitlines()[-1].endswith("#7  staging-20261101T100000Z")


def test_json_carries_maintenance_and_people() -> None:
    """Pins the JSON: maintenance seconds among the parts (which still sum to the window),
    MTTA beside MTTR, and each incident's acknowledgement and early close."""
    data = json.loads(json.dumps(figures().as_dict()))
    assert data["time_s"] == {
        "up": 77_400,
        "degraded": 0,
        "down": 1_800,
        "unknown": 0,
        "maintenance": 7_200,
    }
    assert sum(data["time_s"].values()) == data["window"]["seconds"]
    incidents = data["incidents"]
    assert (incidents["acknowledged"], incidents["mtta_mean_s"], incidents["mtta_median_s"]) == (
        1,
        240,
        240,
    )
    (record,) = incidents["records"]
    assert record["acknowledged_at"] == "2026-11-01T10:04:00+00:00"
    assert record["acknowledged_by"] == "alice"
    assert (record["closed_at"], record["closed_by"]) == ("2026-11-01T10:20:00+00:00", "bob")


def test_figures_from_the_store_leave_maintenance_out_and_time_acknowledgements(
    tmp_path: Path,
) -> None:
    """Pins target_figures on a real store: downtime inside a stored window is maintenance,
    not down (so the budget is untouched), and the stored acknowledgement gives the MTTA."""
    path = tmp_path / "m.db"
    settings = load_settings(
        None, monitor={"interval": 60, "incident_interval": 60, "state_path": str(path)}
    )
    store = SqliteStore(path)
    try:
        store.start_session(T0)
        window = Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2), None, "upgrade", "api")
        store.add_maintenance(window, T0)
        for minute in range(180):
            at = T0 + timedelta(minutes=minute)
            failing = 70 <= minute < 100 or 130 <= minute < 140
            result = down(at, "staging") if failing else up(at, "staging")
            store.commit_cycle(PendingCycle(result, 125.0, TrackerState("staging"), None, []))
        started = T0 + timedelta(minutes=130)
        incident = Incident(
            "staging-1", "staging", started, started + timedelta(minutes=10), 10, 10
        )
        store.commit_cycle(
            PendingCycle(down(started, "staging"), 125.0, TrackerState("staging"), incident, [])
        )
        store.record_acknowledged("staging-1", "alice", started + timedelta(minutes=3))
        now = T0 + timedelta(hours=3)
        store.heartbeat(1, now)
        found = target_figures(
            History(store, settings), settings.target("staging"), Span(T0, now), now
        )
    finally:
        store.close()
    assert (found.account.maintenance_s, found.account.down_s) == (3600.0, 600.0)
    assert found.account.coverage == pytest.approx(1.0)
    assert found.mtta == AckStats(1, 180.0, 180.0)
    assert found.mttr.mean_s == 600.0
