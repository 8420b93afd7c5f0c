"""The command line as a newcomer meets it: demo, version, an unusable state file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_process import clean_env
from tests.ports import free_port


def monitor(
    *args: str, cwd: Path, timeout_s: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m monitor`` with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    """--version prints the package version."""
    proc = monitor("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("monitor ")


def test_unusable_state_path_is_a_clear_error(tmp_path: Path) -> None:
    """A state path that cannot be created exits 74 with a message naming the key, no traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = monitor(
        "run",
        cwd=tmp_path,
        MONITOR_MONITOR__STATE_PATH=str(blocker / "state.db"),
        MONITOR_MONITOR__LISTEN=f"127.0.0.1:{free_port()}",
    )
    assert proc.returncode == 74
    assert "monitor.state_path" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_demo_shows_an_incident_opened_and_resolved(tmp_path: Path) -> None:
    """`monitor demo` needs no token or network and shows a whole incident in its log."""
    proc = monitor(
        "demo",
        "--duration",
        "27",
        "--listen",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        timeout_s=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    for expected in (
        "started",
        "incident opened",
        "journal: incident opened",
        "incident resolved",
        "journal: incident closed",
        "stopped",
    ):
        assert expected in events, expected
    assert events.index("journal: incident opened") < events.index("journal: incident closed")
