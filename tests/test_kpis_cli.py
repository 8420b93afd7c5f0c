"""``monitor kpis`` end to end: a real subprocess against the fake GitHub and a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.store.sqlite import SqliteStore
from tests import kpi_fixture as fx
from tests.daemon_process import clean_env
from tests.fakegithub import DEFAULT_TOKEN, FakeGitHub

REPO = Path(__file__).resolve().parents[1]
WINDOW = ["--since", fx.START.isoformat(), "--until", fx.END.isoformat()]
KEYS = [
    "deployment_frequency_per_week",
    "lead_time_median_s",
    "change_failure_rate",
    "mttr_s",
    "test_pass_rate",
    "security_scan_pass_rate",
    "performance_score",
    "staging_health",
]


def config(tmp_path: Path, api_url: str | None, objectives: str = "") -> Path:
    """Staging and production at an hourly cadence; GitHub on the fake when given."""
    path = tmp_path / "config.toml"
    text = fx.config_text(tmp_path / "state.db", api_url, objectives=objectives)
    path.write_text(text, encoding="utf-8")
    return path


def monitor_kpis(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``monitor kpis`` with the fake's token in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", "kpis", "--config", str(path), *WINDOW, *args],
        cwd=REPO,
        env=clean_env(GITHUB_TOKEN=DEFAULT_TOKEN),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def loaded(tmp_path: Path, fake_github: FakeGitHub) -> FakeGitHub:
    """The fixture's two weeks in the fake GitHub and in the store."""
    fx.load_github(fake_github)
    store = SqliteStore(tmp_path / "state.db")
    try:
        fx.load_store(store)
    finally:
        store.close()
    return fake_github


def test_check_fails_naming_each_missed_kpi(tmp_path: Path, loaded: FakeGitHub) -> None:
    """Exit 1; stderr names the four KPIs the fixture misses; the table shows all eight."""
    run = monitor_kpis(config(tmp_path, loaded.url), "--check")
    assert run.returncode == 1, run.stderr
    missed = sorted(
        line.split(":")[2].split("=")[0].strip()
        for line in run.stderr.splitlines()
        if line.startswith("monitor: KPI missed:")
    )
    assert missed == ["change_failure_rate", "mttr_s", "staging_health", "test_pass_rate"]
    table = run.stdout
    for row in ("deployment frequency", "2.0/week", "lead time (median)", "1h", "50.0 %"):
        assert row in table
    assert "GitHub data as of" in table
    assert "missed: change failure rate, MTTR, test pass rate, staging health" in table
    assert DEFAULT_TOKEN not in run.stdout + run.stderr


def test_json_has_every_kpi_with_value_objective_met_and_samples(
    tmp_path: Path, loaded: FakeGitHub
) -> None:
    """The contract's keys; each object's four fields are the fixture's figures."""
    run = monitor_kpis(config(tmp_path, loaded.url), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert [k for k in data if k in KEYS] == KEYS
    for key, (value, met, samples) in fx.EXPECTED.items():
        assert data[key]["value"] == pytest.approx(value), key
        assert (data[key]["met"], data[key]["samples"]) == (met, samples), key
        assert "objective" in data[key]
    assert data["github"]["error"] is None
    assert data["change_failure_rate"]["by_rollback"] == 1


def test_check_passes_when_every_kpi_meets_its_objective(
    tmp_path: Path, loaded: FakeGitHub
) -> None:
    """Objectives from [kpis.objectives]: relaxed to the fixture's figures, exit 0."""
    relaxed = (
        'change_failure_rate = 0.6\nmttr_s = "1h"\ntest_pass_rate = 0.8\nstaging_health = 0.99\n'
    )
    run = monitor_kpis(config(tmp_path, loaded.url, relaxed), "--check")
    assert run.returncode == 0, run.stderr
    assert "every KPI with data meets its objective" in run.stdout


def test_offline_without_github_reports_only_the_monitors_own_figures(
    tmp_path: Path, loaded: FakeGitHub
) -> None:
    """No GitHub configured: its KPIs are null, never zero or missed; ours are there."""
    run = monitor_kpis(config(tmp_path, None), "--json", "--check")
    data = json.loads(run.stdout)
    assert run.returncode == 1  # staging health and MTTR still miss
    for key in KEYS[:3] + KEYS[4:7]:
        assert (data[key]["value"], data[key]["met"]) == (None, None), key
    assert data["mttr_s"]["value"] == 1800.0
    assert data["github"]["configured"] is False
    assert loaded.request_count() == 0


def test_without_a_store_or_github_it_says_what_is_missing(tmp_path: Path) -> None:
    """Exit 2 and a message naming monitor.state_path, not a traceback."""
    run = monitor_kpis(config(tmp_path, None))
    assert run.returncode == 2
    assert "monitor.state_path" in run.stderr
    assert "Traceback" not in run.stderr


def test_github_down_prints_stale_figures_and_says_so(tmp_path: Path, loaded: FakeGitHub) -> None:
    """A first sync GitHub refuses: the command still answers, and names the failure."""
    from tests import fakegithub as fg

    loaded.inject("GET", r"/repos/acme/web/deployments", fg.status(503), count=None)
    run = monitor_kpis(config(tmp_path, loaded.url))
    assert run.returncode == 0
    assert "GitHub sync failed" in run.stderr
    assert "GitHub data: never read yet; the last sync failed" in run.stdout
    assert DEFAULT_TOKEN not in run.stdout + run.stderr
