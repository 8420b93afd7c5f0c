"""Smoke run of every benchmark in bench/ at tiny sizes: each runs and emits its result JSON.

Timings are never asserted here (a shared CI machine says nothing about them); the
figures live in docs/benchmarks.md. The scripts run concurrently, once per module,
so the whole smoke costs about as long as the slowest of them. A case that needs
PostgreSQL skips without its binaries, except in CI (``CI=true``), which installs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pgserver import MISSING, postgres_binaries

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150

# Tiny sizes: enough to walk every code path of a bench, nothing more.
SMOKE_ARGS = {
    "probe_cycle": ["--checks", "20", "--reps", "1"],
    "blackbox": ["--checks", "20", "--reps", "1"],
    "linearity": ["--sizes", "10,30", "--reps", "1"],
    "request_build": ["--requests", "20", "--reps", "1"],
    "store": ["--days", "1", "--targets", "2", "--reps", "1"],
    "latency": ["--reps", "1", "--modes", "subprocess", "--labels-exist"],
    "github_economy": ["--healthy-s", "1", "--reps", "1", "--labels-exist"],
    "footprint": ["--probes", "200", "--idle-s", "1", "--reps", "1", "--settle-s", "0"],
    # bench/store.py's PostgreSQL-against-SQLite part, on both backends, three regions
    "store-backends": [
        "--only",
        "backends",
        "--backend",
        "both",
        "--regions",
        "3",
        "--days",
        "2",
        "--targets",
        "2",
        "--reps",
        "1",
        "--commits",
        "30",
    ],
}
SMOKE_ARGS["kpi_sync"] = ["--history-days", "2", "--days", "1"]
SMOKE_ARGS["remote_db"] = ["--delays-ms", "0,2", "--commits", "3"]
SCRIPTS = {"store-backends": "store"}  # cases that run another case's script
NEEDS_POSTGRES = {"store-backends", "remote_db"}

pytestmark = pytest.mark.slow


@dataclass
class Run:
    """One finished bench process."""

    returncode: int
    stdout: str
    stderr: str
    out_file: Path
    seconds: float


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Start every bench at once, wait for all of them (bounded), keep what they said."""
    tmp = tmp_path_factory.mktemp("bench")
    started = {}
    for name, args in SMOKE_ARGS.items():
        if name in NEEDS_POSTGRES and postgres_binaries() is None:
            continue  # the test says why
        out_file = tmp / f"{name}.json"
        script = SCRIPTS.get(name, name)
        stdout = (tmp / f"{name}.stdout").open("wb")
        stderr = (tmp / f"{name}.stderr").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / f"{script}.py"), *args, "--out", str(out_file)],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        started[name] = (proc, out_file, stdout, stderr, time.monotonic())
    finished = {}
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for name, (proc, out_file, stdout, stderr, begin) in started.items():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            stdout.close()
            stderr.close()
            finished[name] = Run(
                proc.returncode,
                (tmp / f"{name}.stdout").read_text("utf-8", errors="replace"),
                (tmp / f"{name}.stderr").read_text("utf-8", errors="replace"),
                out_file,
                time.monotonic() - begin,
            )
    finally:
        for proc, *_ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return finished


@pytest.mark.parametrize("name", list(SMOKE_ARGS))
def test_bench_runs_and_emits_its_result(runs: dict[str, Run], name: str) -> None:
    """The bench exits 0 and its last stdout line (and --out file) is its result JSON."""
    if name in NEEDS_POSTGRES and postgres_binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI must install it")
        pytest.skip(MISSING)
    run = runs[name]
    assert run.returncode == 0, f"{name} exited {run.returncode}\n{run.stderr[-4000:]}"
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines, f"{name} printed nothing\n{run.stderr[-4000:]}"
    result = json.loads(lines[-1])
    bench = SCRIPTS.get(name, name)
    assert result["bench"] == bench
    assert "machine" in result
    assert json.loads(run.out_file.read_text("utf-8"))["bench"] == bench
    if name == "store-backends":
        assert {"sqlite", "postgresql"} <= result["backends"].keys()
