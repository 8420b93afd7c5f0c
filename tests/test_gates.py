"""The release pipeline's gates against live local servers: check --wait and verify."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from monitor.config import Settings, load_settings
from monitor.release.check import run_check
from monitor.release.verify import run_verify
from monitor.store.sqlite import SqliteStore
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.targets import TargetServer, respond


def settings_for(server: TargetServer, tmp_path: Path, **github: object) -> Settings:
    """One target, `production`, with a health check on the local server."""
    return load_settings(
        None,
        monitor={"timeout": 1, "incident_interval": 0.2, "state_path": str(tmp_path / "s.db")},
        github={"enabled": bool(github), **github},
        targets=[
            {
                "name": "production",
                "url": server.url,
                "checks": [{"name": "health", "path": "/health"}],
            }
        ],
    )


def test_check_wait_retries_until_healthy(target_server: TargetServer, tmp_path: Path) -> None:
    """Staging still starting: --wait retries and passes once it answers 200."""
    target_server.route("/health", respond(503))
    threading.Timer(0.5, lambda: target_server.set("/health", respond(200, b"ok"))).start()
    out, progress = io.StringIO(), io.StringIO()

    code = run_check(
        settings_for(target_server, tmp_path),
        as_json=True,
        wait_s=10,
        retry_every_s=0.2,
        out=out,
        progress=progress,
    )

    report = json.loads(out.getvalue())
    assert code == 0
    assert report["ok"] is True
    assert report["attempts"] > 1
    assert "attempt 1: FAIL: production is down" in progress.getvalue()


def test_check_wait_gives_up(target_server: TargetServer, tmp_path: Path) -> None:
    """A target that stays down fails the gate after --wait, with the table and a FAIL line."""
    target_server.route("/health", respond(503))
    out = io.StringIO()

    code = run_check(
        settings_for(target_server, tmp_path),
        as_json=False,
        wait_s=0.5,
        retry_every_s=0.2,
        out=out,
        progress=io.StringIO(),
    )

    assert code == 1
    assert (
        out.getvalue()
        .splitlines()[-1]
        .startswith("FAIL: production is down (health: expected 200, got 503)")
    )


def test_verify_passes_when_production_stays_healthy(
    target_server: TargetServer, tmp_path: Path
) -> None:
    """Healthy for the whole duration: exit 0, a line per probe, a PASS verdict."""
    target_server.route("/health", respond(200, b"ok"))
    out = io.StringIO()
    settings = settings_for(target_server, tmp_path)

    code = run_verify(
        settings,
        settings.targets[0],
        duration_s=0.6,
        interval_s=0.2,
        file_incident=False,
        as_json=False,
        out=out,
    )

    lines = out.getvalue().splitlines()
    assert code == 0
    assert len([line for line in lines if "production: UP" in line]) >= 3
    assert lines[-1].startswith("PASS: production stayed healthy")


def test_verify_trips_on_open_after_failures_and_stops_early(
    target_server: TargetServer, tmp_path: Path
) -> None:
    """open_after failures in a row: exit 1 (roll back) without waiting out the duration."""
    target_server.route("/health", respond(502))
    out = io.StringIO()
    settings = settings_for(target_server, tmp_path)

    code = run_verify(
        settings,
        settings.targets[0],
        duration_s=60,
        interval_s=0.1,
        file_incident=False,
        as_json=True,
        out=out,
    )

    report = json.loads(out.getvalue())
    assert code == 1
    assert report["healthy"] is False
    assert report["probes"] == settings.monitor.open_after
    assert target_server.hits("/health") == settings.monitor.open_after


def test_verify_files_the_incident_issue(
    target_server: TargetServer,
    fake_github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--file-incident opens one marked issue through the outbox, for the daemon to adopt."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)
    target_server.route("/health", respond(503))
    settings = settings_for(
        target_server, tmp_path, repository=DEFAULT_REPO, api_url=fake_github.url
    )

    code = run_verify(
        settings,
        settings.targets[0],
        duration_s=60,
        interval_s=0.1,
        file_incident=True,
        as_json=True,
        out=io.StringIO(),
    )

    assert code == 1
    [issue] = fake_github.issues()
    assert issue["title"] == "production is down: /health returned 503"
    assert "<!-- monitor:incident target=production id=production-" in issue["body"]
    store = SqliteStore(settings.monitor.state_path)
    try:
        assert store.pending_actions() == []
    finally:
        store.close()
