"""``monitor check --no-open-incident``: the gate fails while an incident is open.

Asked of a real daemon (its ``/api/status``) and of the fake GitHub (open issues with
the incident and target labels); a source that cannot answer fails the gate.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Settings, load_settings
from monitor.release.check import gate_incidents, run_check
from monitor.release.incidents import from_github, from_monitor
from tests.daemon_process import Daemons, clean_env, wait_for, write_config
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.ports import free_port
from tests.targets import TargetServer, respond

HOST = "127.0.0.1"


def settings_for(
    server: TargetServer, tmp_path: Path, github_url: str | None = None, path: str = "/health"
) -> Settings:
    """One target, ``production``, probed at ``path`` on the local server; GitHub at
    ``github_url``."""
    github: dict[str, object] = {"enabled": False}
    if github_url is not None:
        github = {"repository": DEFAULT_REPO, "api_url": github_url, "timeout": 5}
    return load_settings(
        None,
        monitor={"timeout": 2, "state_path": str(tmp_path / "s.db")},
        github=github,
        targets=[
            {
                "name": "production",
                "url": server.url,
                "checks": [{"name": "health", "path": path}],
            }
        ],
    )


def monitor_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m monitor ARGS`` in a clean environment (no GITHUB_TOKEN): a process of
    its own, so its logging set-up stays out of this one's."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def gate(settings: Settings, source: str, **lookup: object) -> tuple[int, str]:
    """``run_check`` with the incident gate asking ``source``; (exit code, output)."""
    names = [t.name for t in settings.targets]
    if source == "monitor":
        url = str(lookup["url"])
        incidents = lambda: gate_incidents("monitor", lambda: from_monitor(url, names, 2.0))  # noqa: E731
    else:
        incidents = lambda: gate_incidents("github", lambda: from_github(settings.github, names))  # noqa: E731
    out = io.StringIO()
    code = run_check(
        settings,
        as_json=False,
        wait_s=0,
        retry_every_s=1,
        out=out,
        progress=io.StringIO(),
        incidents=incidents,
    )
    return code, out.getvalue()


# -- GitHub ---------------------------------------------------------------------------------


@pytest.fixture
def healthy(target_server: TargetServer) -> TargetServer:
    """The target answers 200: only the incident gate can fail the check."""
    target_server.route("/health", respond(200, b"ok"))
    return target_server


def test_github_without_an_open_incident_passes(
    healthy: TargetServer,
    fake_github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closed incidents, other targets' incidents and unlabelled issues do not block."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)
    fake_github.add_issue(title="old", labels=["incident", "target:production"], state="closed")
    fake_github.add_issue(title="staging down", labels=["incident", "target:staging"])
    fake_github.add_issue(title="a feature request", labels=["target:production"])

    code, output = gate(settings_for(healthy, tmp_path, fake_github.url), "github")

    assert code == 0, output
    assert "PASS: no incident is open (asked github)" in output


def test_github_open_incident_fails_the_gate_with_its_link(
    healthy: TargetServer,
    fake_github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open issue with the incident and target labels fails the gate and is linked,
    whoever filed it."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)
    issue = fake_github.add_issue(
        title="production is down: /health returned 503",
        labels=["incident", "monitor", "target:production"],
    )

    code, output = gate(settings_for(healthy, tmp_path, fake_github.url), "github")

    assert code == 1
    assert f"OPEN INCIDENT  production  #{issue['number']} production is down" in output
    assert issue["html_url"] in output
    assert output.rstrip().endswith("FAIL: an incident is open for production")


def test_github_that_cannot_answer_fails_the_gate(
    healthy: TargetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer is no approval: a refused connection fails the gate, naming the API and
    never the token."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_never_printed_0123456789")
    settings = settings_for(healthy, tmp_path, f"http://{HOST}:{free_port()}")

    code, output = gate(settings, "github")

    assert code == 1
    assert "FAIL: cannot tell whether an incident is open: cannot reach http://127.0.0.1:" in output
    assert "ghp_never_printed" not in output


def test_github_refusing_the_token_fails_the_gate(
    healthy: TargetServer,
    fake_github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 401 is a failure of the gate with GitHub's words, not a pass."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong_token_0123456789")

    code, output = gate(settings_for(healthy, tmp_path, fake_github.url), "github")

    assert code == 1
    assert f"cannot list the open issues of {DEFAULT_REPO}: 401" in output
    assert "ghp_wrong_token" not in output


def plain_config(server: TargetServer, tmp_path: Path) -> Path:
    """A config file with ``production`` on ``server`` and no GitHub: for the command."""
    return write_config(
        tmp_path / "config.toml",
        target_url=server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
        target="production",
    )


def test_the_command_needs_a_source(healthy: TargetServer, tmp_path: Path) -> None:
    """Without --monitor-url and without a GitHub token the command says what it needs."""
    config = plain_config(healthy, tmp_path)

    done = monitor_command("check", "--config", str(config), "--no-open-incident", "--json")

    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert report["ok"] is False
    assert report["incidents"]["source"] == "github"
    assert "needs --monitor-url, or a GitHub token" in report["incidents"]["error"]


def test_monitor_url_alone_is_a_usage_error(healthy: TargetServer, tmp_path: Path) -> None:
    """--monitor-url without --no-open-incident would be silently ignored: refuse it."""
    config = plain_config(healthy, tmp_path)

    done = monitor_command("check", "--config", str(config), "--monitor-url", "http://127.0.0.1:1")

    assert done.returncode == 2
    assert "--monitor-url only serves --no-open-incident" in done.stderr


# -- the running daemon ---------------------------------------------------------------------


def test_daemon_open_incident_fails_the_gate_until_it_resolves(
    target_server: TargetServer,
    fake_github: FakeGitHub,
    daemons: Daemons,
    tmp_path: Path,
) -> None:
    """From the daemon's /api/status: the gate passes while healthy, fails with the
    issue's link while the incident is open, and passes again once it is resolved."""
    target_server.route("/health", respond(200, b"ok"))
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state" / "monitor.db",
        github_url=fake_github.url,
        target="production",
    )
    daemon = daemons.start(config, clean_env(GITHUB_TOKEN=DEFAULT_TOKEN))
    daemon.wait_healthy()
    monitor_url = daemon.base_url
    # the gate probes a path that stays healthy: only the incident can fail it
    target_server.route("/ready", respond(200, b"ok"))
    settings = settings_for(target_server, tmp_path, path="/ready")

    def status() -> dict[str, Any]:
        [target] = daemon.api_status()["targets"]
        return dict(target)

    assert gate(settings, "monitor", url=monitor_url)[0] == 0

    target_server.set("/health", respond(503))
    wait_for(
        lambda: (status().get("open_incident") or {}).get("issue_url"),
        20,
        "the incident's issue on /api/status",
        daemon.logs,
    )
    code, output = gate(settings, "monitor", url=monitor_url)
    [issue] = fake_github.issues(DEFAULT_REPO)
    assert code == 1, output
    assert "OPEN INCIDENT  production  incident production-" in output
    assert issue["html_url"] in output

    target_server.set("/health", respond(200, b"ok"))
    wait_for(lambda: status()["open_incident"] is None, 20, "the resolution", daemon.logs)
    code, output = gate(settings, "monitor", url=monitor_url)
    assert code == 0, output
    assert "PASS: no incident is open (asked monitor)" in output


def test_daemon_that_does_not_answer_fails_the_gate(healthy: TargetServer, tmp_path: Path) -> None:
    """A monitor URL nobody listens on fails the gate, naming the URL."""
    url = f"http://{HOST}:{free_port()}"

    code, output = gate(settings_for(healthy, tmp_path), "monitor", url=url)

    assert code == 1
    assert f"FAIL: cannot tell whether an incident is open: cannot read {url}/api/status" in output


def test_daemon_not_showing_the_target_fails_the_gate(
    healthy: TargetServer, tmp_path: Path
) -> None:
    """A status page that hides the target cannot vouch for it."""
    healthy.route(
        "/api/status",
        respond(200, json.dumps({"targets": [{"name": "staging"}]}).encode()),
    )

    code, output = gate(settings_for(healthy, tmp_path), "monitor", url=healthy.url)

    assert code == 1
    assert "does not show target 'production'" in output


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        pytest.param({"targets": [{"name": "production", "open_incident": "yes"}]}, "is not a monitor's status", id="not-a-table"),
        pytest.param({"targets": "none"}, "cannot read", id="no-list"),
        pytest.param(["x"], "cannot read", id="not-an-object"),
    ],
)  # fmt: skip
def test_a_broken_status_fails_the_gate_with_words(
    healthy: TargetServer, tmp_path: Path, answer: object, said: str
) -> None:
    """Whatever /api/status answers, the gate ends in a FAIL line, never a traceback."""
    healthy.route("/api/status", respond(200, json.dumps(answer).encode()))

    code, output = gate(settings_for(healthy, tmp_path), "monitor", url=healthy.url)

    assert code == 1
    assert said in output


def test_a_malformed_monitor_url_fails_the_gate(healthy: TargetServer, tmp_path: Path) -> None:
    """A URL httpx cannot use is a FAIL line naming it, not a traceback."""
    code, output = gate(settings_for(healthy, tmp_path), "monitor", url="http://[::1")

    assert code == 1
    assert "FAIL: cannot tell whether an incident is open: cannot read http://[::1" in output
