"""The probe engine against Prometheus' blackbox_exporter and bare aiohttp, same run.

    python bench/blackbox.py            # 1,000 checks (10 targets x 100), 5 repetitions
    python bench/blackbox.py --checks 10000 --reps 2   # linearity: time per check at 10,000
    python bench/blackbox.py --per-target 1            # 1,000 one-check targets
    python bench/blackbox.py --quick    # smoke: 100 checks, 1 repetition

Each repetition runs, side by side in a rotated order, on the same N endpoints of one
local server (nginx when installed):

* ``exporter``: blackbox_exporter (Debian ``prometheus-blackbox-exporter``) on 127.0.0.1
  with a generated config (module ``http_2xx``), driven the way Prometheus drives it: one
  ``GET /probe?target=URL&module=http_2xx`` per endpoint from a lean keep-alive asyncio
  driver at the daemon's concurrency. A probe counts only when it says ``probe_success 1``.
* ``monitor_check``: ``monitor check``'s probe path (``release.check.probe_until_healthy``,
  the function the command runs, on a fresh ``Prober``), process start-up excluded.
* ``monitor_run``: ``monitor run``'s path, ``Daemon.probe`` of every target, on one
  long-lived daemon with a real SQLite store and the journal sink: probe, metrics,
  tracker, commit, outbox and the JSON log line (rendered to /dev/null). Its pool is
  emptied before each cycle.
* ``bare_aiohttp``: one ``aiohttp.ClientSession`` doing N GETs under a semaphore of the
  same concurrency, body read: the floor for Python.

Every variant starts on a cold pool, as production does (its cadence is past every
keep-alive). Reported: medians and per-repetition ratios; probes that were not up, with
their reasons (a time-out the target did not cause is a failure of the engine); the
exporter's resident memory idle and after the load, and its throughput under ``wrk``
when installed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c

EXPORTER = "prometheus-blackbox-exporter"
CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: 10s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      valid_status_codes: [200]
"""


def find_exporter() -> str | None:
    """The exporter binary (Debian installs it in /usr/bin)."""
    found = shutil.which(EXPORTER)
    if found is None and Path(f"/usr/bin/{EXPORTER}").exists():
        found = f"/usr/bin/{EXPORTER}"
    return found


def exporter_version(binary: str) -> str:
    """``blackbox_exporter, version 0.23.0 ...`` first line."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


VARIANTS = ("exporter", "monitor_check", "monitor_run", "bare_aiohttp")


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=None, help="checks per cycle (1000)")
    p.add_argument("--per-target", type=int, default=100, help="checks per target (100)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (5)")
    p.add_argument("--server", choices=["auto", "nginx", "raw"], default="auto")
    args = p.parse_args()
    checks = args.checks or (100 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 5)
    binary = find_exporter()
    if binary is None:
        c.emit({"bench": "blackbox", "skipped": f"{EXPORTER} is not installed"}, args.out)
        return
    c.null_logging()
    with c.local_target(args.server) as target, tempfile.TemporaryDirectory() as tmp:
        capacity = c.server_capacity(target.port, target.url, args.quick)
        config = Path(tmp) / "blackbox.yml"
        config.write_text(CONFIG)
        port = c.free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address={c.HOST}:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            c.wait_port(port, proc=proc)
            time.sleep(0.3)
            shape = Shape(checks, args.per_target, reps, args.quick)
            result = asyncio.run(run(target, Path(tmp), port, proc.pid, shape))
        finally:
            c.stop_process(proc)
    result["exporter_version"] = exporter_version(binary)
    result["server"] = {"kind": target.kind, **capacity}
    c.emit(result, args.out)


@dataclass(frozen=True)
class Shape:
    checks: int
    per_target: int
    reps: int
    quick: bool


async def run(
    target: c.LocalTarget, tmp: Path, port: int, pid: int, shape: Shape
) -> dict[str, Any]:
    import aiohttp

    from monitor.release.check import probe_until_healthy

    checks = shape.checks
    settings = c.target_settings(target.url, checks, tmp / "monitor.db", shape.per_target)
    conc = settings.monitor.concurrency
    urls = [t.check_url(check) for t in settings.targets for check in t.checks]
    probe_paths = [
        "/probe?" + urllib.parse.urlencode({"target": u, "module": "http_2xx"}) for u in urls
    ]
    not_up: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}

    def count(variant: str, results: list[Any]) -> None:
        for check in (check for r in results for check in r.checks):
            if check.outcome.value != "up":
                not_up[variant].append({"reason": check.reason.value, "detail": check.detail[:160]})

    def success(body: bytes) -> bool:
        return b"\nprobe_success 1" in body

    async def exporter_cycle() -> float:
        seconds, statuses, _ = await c.drive(port, probe_paths, conc, accept=success)
        failed = sum(1 for s in statuses if s != 200)
        not_up["exporter"].extend({"reason": "probe_success 0"} for _ in range(failed))
        return seconds

    async def check_cycle() -> float:
        start = time.perf_counter()
        _, results = await probe_until_healthy(settings, 0, 0, lambda *_: None)
        seconds = time.perf_counter() - start
        count("monitor_check", results)
        return seconds

    # monitor run: one long-lived daemon, as in production (also freezes what start-up
    # made, as `monitor run` does, and `monitor check` before it probes)
    daemon = c.DaemonCycle(settings, tmp / "monitor.db")
    record_s: list[float] = []

    async def run_cycle() -> float:
        seconds, recorded, results = await daemon.cycle()
        record_s.append(recorded)
        count("monitor_run", results)
        return seconds

    async def bare_cycle() -> float:
        connector = aiohttp.TCPConnector(limit=conc)
        async with aiohttp.ClientSession(connector=connector) as session:
            start = time.perf_counter()
            codes = await c.aiohttp_gets(session, urls, conc)
            seconds = time.perf_counter() - start
        failed = sum(1 for code in codes if code != 200)
        not_up["bare_aiohttp"].extend({"reason": "status"} for _ in range(failed))
        return seconds

    cycles = {
        "exporter": exporter_cycle,
        "monitor_check": check_cycle,
        "monitor_run": run_cycle,
        "bare_aiohttp": bare_cycle,
    }
    rss_idle_kb = c.proc_status_kb(pid)
    c.say(f"exporter idle RSS {rss_idle_kb / 1024:.1f} MB; warm-up ...")
    for cycle in cycles.values():
        await cycle()
    for variant in not_up:
        not_up[variant].clear()  # the warm-up's first calls are not measured
    record_s.clear()
    times: dict[str, list[float]] = {k: [] for k in cycles}
    names = list(cycles)
    for rep in range(shape.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(await cycles[name]())
        c.say(
            f"rep {rep + 1}/{shape.reps}: "
            + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items())
        )
    await daemon.aclose()
    rss_after_kb = c.proc_status_kb(pid)
    hwm_kb = c.proc_status_kb(pid, "VmHWM")
    wrk = c.wrk_rps(
        f"http://{c.HOST}:{port}{probe_paths[0]}", connections=conc, seconds=1 if shape.quick else 5
    )
    process = await asyncio.to_thread(check_process, target.url, tmp, shape)
    times["monitor_run_probe_path"] = [
        cycle - recorded for cycle, recorded in zip(times["monitor_run"], record_s, strict=True)
    ]
    ratios = {
        f"{ours}_over_{theirs}": c.ratios(times[ours], times[theirs])
        for ours in ("monitor_check", "monitor_run", "monitor_run_probe_path")
        for theirs in ("exporter", "bare_aiohttp")
    }
    return {
        "bench": "blackbox",
        "checks": checks,
        "checks_per_target": shape.per_target,
        "concurrency": conc,
        "reps": shape.reps,
        "cycle_s": {k: c.summary(v) for k, v in times.items()},
        "us_per_check_median": {
            k: round(c.summary(v)["median"] / checks * 1e6, 1) for k, v in times.items()
        },
        "ratios": ratios,
        "bars": {
            "over_exporter_max": 1.0,
            "over_bare_aiohttp_max": 2.0,
            "met": {
                name: ratio["median"] <= (1.0 if name.endswith("exporter") else 2.0)
                for name, ratio in ratios.items()
            },
        },
        "monitor_check_process": process,
        "not_up": {k: len(v) for k, v in not_up.items()},
        "not_up_examples": {k: v[:5] for k, v in not_up.items() if v},
        "exporter_rss_mb": {
            "idle": round(rss_idle_kb / 1024, 1),
            "after_load": round(rss_after_kb / 1024, 1),
            "peak_hwm": round(hwm_kb / 1024, 1),
        },
        "exporter_wrk_probes_per_s": wrk,
        "method": (
            "one /probe?target=...&module=http_2xx per endpoint, keep-alive asyncio driver at "
            f"concurrency {conc}; every variant on a cold pool per cycle; order rotated; "
            "monitor_run_probe_path is monitor_run's cycle minus the time it spent recording "
            "its results (Daemon.record, inline as each target completes)"
        ),
    }


def check_process(url: str, tmp: Path, shape: Shape) -> dict[str, Any]:
    """The whole ``monitor check`` process on N checks and on 1 (its start-up), as the
    issue measured it: N's wall time minus 1's is the probe cycle as a user sees it."""

    def config(checks: int) -> Path:
        path = tmp / f"check-{checks}.toml"
        lines = []
        for t in range(-(-checks // shape.per_target)):
            lines += ["[[targets]]", f'name = "t{t:05d}"', f'url = "{url}"']
            for i in range(t * shape.per_target, min(checks, (t + 1) * shape.per_target)):
                lines += ["[[targets.checks]]", f'name = "h{i:05d}"', f'path = "/t{i:05d}/health"']
        path.write_text("\n".join(lines) + "\n")
        return path

    def run_once(path: Path) -> float:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "monitor", "check", "--config", str(path)],
            capture_output=True,
            check=False,
            cwd=c.REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"monitor check failed: {done.stdout[-300:]!r}")
        return time.perf_counter() - start

    full, one = config(shape.checks), config(1)
    walls: dict[str, list[float]] = {"all": [], "one": []}
    for _ in range(shape.reps):
        walls["all"].append(run_once(full))
        walls["one"].append(run_once(one))
    return {
        "wall_s": {k: c.summary(v) for k, v in walls.items()},
        "cycle_s_minus_start_up": c.summary(
            [a - b for a, b in zip(walls["all"], walls["one"], strict=True)]
        ),
    }


if __name__ == "__main__":
    main()
