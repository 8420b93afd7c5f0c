"""Running a chaos bench (``bench/*.py``) from a test: bounded, its summary read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_bench(
    script: str, args: list[str], tmp_path: Path, limit_s: float
) -> tuple[int, dict[str, Any], str]:
    """Run ``bench/<script>`` with ``args``; (exit code, JSON summary, the summary as shown
    in an assertion). Fails the test if it does not finish in ``limit_s`` or says nothing."""
    name = Path(script).stem
    out, log = tmp_path / f"{name}.json", tmp_path / f"{name}.log"
    command = [
        sys.executable,
        str(REPO_ROOT / "bench" / script),
        *args,
        f"--workdir={tmp_path / 'work'}",
        f"--out={out}",
    ]
    with log.open("wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=output, cwd=REPO_ROOT)
        try:
            code: int | None = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: the run stops what it started on the way out
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            code = None
    said = log.read_text("utf-8", errors="replace")[-4000:]
    assert code is not None, f"the {name} run did not finish in {limit_s} s\n{said}"
    assert out.exists(), f"no summary (exit {code})\n{said}"
    summary: dict[str, Any] = json.loads(out.read_text("utf-8"))
    shown = json.dumps({k: v for k, v in summary.items() if k != "plan"}, indent=1)[:16000]
    return code, summary, shown
