"""The status page held to the seed's bar: Lighthouse accessibility >= 90, performance >= 80."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_process import clean_env, http_get
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
LIGHTHOUSE = REPO / ".ci" / "node" / "node_modules" / ".bin" / "lighthouse"
CHROMIUM = Path("/usr/bin/chromium")
CHROME_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
    " --disable-background-networking --disable-component-update --disable-sync"
)


def _require(path: Path, why: str) -> None:
    if not path.exists() or (path.name == "lighthouse" and shutil.which("node") is None):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing in CI: {why}")
        pytest.skip(f"{path} is missing: {why}")


def _status(url: str) -> int | None:
    try:
        return http_get(url)[0]
    except OSError:  # not listening yet
        return None


@pytest.mark.slow
def test_lighthouse_scores_the_status_page(tmp_path: Path) -> None:
    """Mobile Lighthouse on /status of a running daemon: accessibility >= 0.9, performance >= 0.8."""
    _require(CHROMIUM, "install Debian's chromium (.ci/run does)")
    _require(LIGHTHOUSE, "npm install --prefix .ci/node lighthouse@12 (.ci/run does)")
    listen = f"127.0.0.1:{free_port()}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "monitor", "demo", "--listen", listen, "--duration", "90"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    report = tmp_path / "lighthouse.json"
    try:
        deadline = time.monotonic() + 20
        while _status(f"http://{listen}/status") != 200:
            assert time.monotonic() < deadline, "the daemon never served /status"
            time.sleep(0.3)
        time.sleep(3)  # a few probes in, so the page shows data
        subprocess.run(
            [
                str(LIGHTHOUSE),
                f"http://{listen}/status",
                "--only-categories=performance,accessibility,best-practices",
                "--form-factor=mobile",
                f"--chrome-flags={CHROME_FLAGS} --user-data-dir={tmp_path / 'profile'}",
                "--output=json",
                f"--output-path={report}",
                "--quiet",
            ],
            env={**os.environ, "CHROME_PATH": str(CHROMIUM)},
            check=True,
            timeout=150,
        )
    finally:
        demo.terminate()
        demo.wait(timeout=20)
    scores = {name: c["score"] for name, c in json.loads(report.read_text())["categories"].items()}
    print("lighthouse:", scores)
    assert scores["accessibility"] >= 0.9, scores
    assert scores["performance"] >= 0.8, scores
