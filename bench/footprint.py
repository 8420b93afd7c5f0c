"""Footprint of ``monitor run``: resident memory, growth over 100,000 probes, idle CPU, start-up.

    python bench/footprint.py            # 100,000 probes, 4 idle minutes (~8 min)
    python bench/footprint.py --quick    # 5,000 probes, 5 idle seconds, 1 start-up
    python bench/footprint.py --only startup --python /tmp/prodvenv/bin/python  # ~1.5 min

The daemon runs as a subprocess on the shipped two-target config (``monitor/default_config
.toml``: staging and production, a ``/health`` and a JSON ``/api/monitoring/health`` check
each) with only the target URLs rewritten to a local server, and ``MONITOR_*`` variables
for the state file, the listener and, where stated, the cadence.

* Resident memory (VmRSS from /proc/PID/status) after start-up, with the journal sink and
  with the GitHub sink (fake GitHub in this process: PyGithub loaded, as in production).
* Growth: the GitHub-sink daemon at a fast cadence (``interval = incident_interval =
  0.01s``; jobs are per target, so two targets make about two cycles per 10 ms at best)
  until N check probes (``monitor_probes_total`` on /metrics), RSS sampled throughout.
  Bar: <= 80 MB and growth <= 2 MB.
* CPU per hour at the default 15-minute cadence: CPU time (utime + stime, all threads) of
  an idle daemon over a few minutes after its start-up probes, scaled to an hour, plus
  the CPU of the 8 target cycles an hour needs (CPU per cycle from the fast run).
* Start-up: from exec to the first probe arriving at the target, and to /healthz 200.

The daemon starts as the image's CMD starts it: ``python -OO -m monitor run`` (the flags
are read from deploy/Dockerfile). ``--python`` runs it with another interpreter. The
production figure comes from a venv built like the image: ``requirements.lock`` only (no
test tools such as ``rich``, which structlog and httpx import when present), the package
installed, not editable, and the image's compileall step run, so that the standard
library and the venv have bytecode at the daemon's level::

    python3.11 -m venv /tmp/prodvenv
    /tmp/prodvenv/bin/pip install --no-deps -r requirements.lock
    /tmp/prodvenv/bin/pip install --no-deps .
    /tmp/prodvenv/bin/python -OO -m compileall -q -j0 -x '/(test|tests|idle_test)/' \
        "$(/tmp/prodvenv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
        /tmp/prodvenv/lib/python3.11/site-packages

The result says which package ran and how many of its modules and of the standard
library's had bytecode at that level: under ``PYTHONDONTWRITEBYTECODE`` (the image's)
a module without it is compiled at each start (0.70 s to the first probe instead of
0.35 s when the standard library has none, as in the base image). The daemon runs in a
scratch directory, so the working tree does not shadow the installed package.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c

from tests.daemon_process import image_python_flags
from tests.fakegithub import DEFAULT_TOKEN, FakeGitHub
from tests.targets import TargetServer, json_body, respond

BAR_RSS_MB = 80.0
BAR_GROWTH_MB = 2.0
BAR_STARTUP_RSS_MB = 70.0  # GitHub sink, after start-up (issue 16)
BAR_FIRST_PROBE_S = 0.5  # exec to the first probe (issue 16)
SHIPPED = c.REPO / "monitor" / "default_config.toml"
PARTS = ("startup", "growth", "idle")
HOUSEKEEPING_S = 7.0  # the first housekeeping pass (KPI sync included) runs 5 s after start
PYTHON = [sys.executable]  # the daemon's interpreter: ``main`` sets it from --python
FLAGS = list(image_python_flags())  # and its flags, the image's CMD's (-OO)

_INTERPRETER = """
import importlib.metadata as m, importlib.util, json, pathlib, platform, sys, sysconfig, monitor
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
def cached(source):
    pyc = pathlib.Path(importlib.util.cache_from_source(str(source)))
    return pyc.exists() and pyc.stat().st_mtime >= source.stat().st_mtime
root = pathlib.Path(monitor.__file__).parent
sources = sorted(root.rglob("*.py"))
stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
stdlib_sources = [*stdlib.glob("*.py"), *stdlib.glob("asyncio/*.py"), *stdlib.glob("email/*.py")]
print(json.dumps({
    "python": platform.python_version(),
    "optimize": sys.flags.optimize,
    "monitor": str(root),
    "modules": len(sources),
    "bytecode_cached": sum(map(cached, sources)),
    "stdlib_modules_sampled": len(stdlib_sources),
    "stdlib_bytecode_cached": sum(map(cached, stdlib_sources)),
    "libraries": {name: version(name) for name in NAMES},
}))
"""


def interpreter(python: str, cwd: Path) -> dict[str, Any]:
    """Which interpreter, ``monitor`` package and libraries the daemon runs with, and how
    many of the package's modules have their bytecode cached."""
    code = f"NAMES = {[*c.LIBRARIES, 'rich']!r}\n{_INTERPRETER}"
    found = subprocess.run(
        [python, *FLAGS, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    info: dict[str, Any] = json.loads(found.stdout)
    info["executable"] = python
    info["flags"] = FLAGS
    for what, total, cached_ in (
        (info["monitor"], info["modules"], info["bytecode_cached"]),
        (
            "the standard library (sampled)",
            info["stdlib_modules_sampled"],
            info["stdlib_bytecode_cached"],
        ),
    ):
        if cached_ < total:
            c.say(
                f"note: {total - cached_} of {total} modules in {what} have no bytecode at"
                f" optimisation level {info['optimize']}: each start compiles them"
                " (not the image's figure; see --python)"
            )
    return info


def shipped_config(path: Path, target_url: str) -> Path:
    """The shipped config with its two target URLs pointed at ``target_url``."""
    text = SHIPPED.read_text("utf-8")
    text, replaced = re.subn(r'(?m)^url = "https://[^"]+"', f'url = "{target_url}"', text)
    assert replaced == 2, "the shipped config no longer has two target URLs"
    path.write_text(text, "utf-8")
    return path


def env_for(state: Path, port: int, github_url: str | None = None, **monitor: str) -> dict:
    """A clean environment: the state file, the listener, cadence overrides, GitHub or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.pop("GITHUB_TOKEN", None)
    env["MONITOR_MONITOR__STATE_PATH"] = str(state)
    env["MONITOR_MONITOR__LISTEN"] = f"{c.HOST}:{port}"
    for key, value in monitor.items():
        env[f"MONITOR_MONITOR__{key.upper()}"] = value
    if github_url is not None:
        env["GITHUB_TOKEN"] = DEFAULT_TOKEN
        env["MONITOR_GITHUB__REPOSITORY"] = "acme/web"
        env["MONITOR_GITHUB__API_URL"] = github_url
    return env


def start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``monitor run`` with its log in a file."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*PYTHON, *FLAGS, "-m", "monitor", "run", "--config", str(config)],
            cwd=log.parent,  # not the working tree, which would shadow an installed package
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """(status, body); connection errors raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """Poll every 10 ms until ``condition`` is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


def probes_total(port: int) -> int:
    """Sum of ``monitor_probes_total`` on /metrics."""
    _, text = get(f"http://{c.HOST}:{port}/metrics")
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("monitor_probes_total{")
        )
    )


def mb(kb: int) -> float:
    """kB to MB (MiB), one decimal."""
    return round(kb / 1024, 1)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM and wait: the graceful stop."""
    c.stop_process(proc, timeout_s=20)
    return proc.returncode


def startup(tmp: Path, reps: int, github: FakeGitHub) -> dict[str, Any]:
    """Exec -> first probe at the target; exec -> /healthz 200; RSS after start-up."""
    hits: list[float] = []

    async def health(request: Any, conn: Any) -> None:
        hits.append(time.time())
        await respond(200, b"ok\n")(request, conn)

    first_probe, healthy, rss_journal, rss_github = [], [], [], []
    later: dict[str, list[float]] = {"journal": [], "github": []}
    first_github: list[float] = []  # PyGithub loads after the first probe, not before it
    with TargetServer() as target:
        target.route("/health", health)
        target.route("/api/monitoring/health", json_body({"status": "ok", "version": "1.0.0"}))
        config = shipped_config(tmp / "shipped.toml", target.url)
        for rep in range(reps):
            for sink in ("journal", "github"):
                port = c.free_port()
                env = env_for(
                    tmp / f"start-{rep}-{sink}.db",
                    port,
                    github.url if sink == "github" else None,
                )
                hits.clear()
                begin = time.time()
                proc = start(config, env, tmp / f"start-{rep}-{sink}.log")
                try:
                    wait(lambda: hits, "the first probe")
                    first = hits[0] - begin
                    healthz = f"http://{c.HOST}:{port}/healthz"
                    wait(lambda url=healthz: get(url)[0] == 200, "healthz")
                    ready = time.time() - begin
                    time.sleep(2.0)  # the start-up probes and reconcile are done
                    rss = mb(c.proc_status_kb(proc.pid))
                    # and once past the first housekeeping pass: what loads then counts too
                    time.sleep(max(0.0, HOUSEKEEPING_S - (time.time() - begin)))
                    later[sink].append(mb(c.proc_status_kb(proc.pid)))
                finally:
                    stop(proc)
                if sink == "journal":
                    first_probe.append(first)
                    healthy.append(ready)
                    rss_journal.append(rss)
                else:
                    first_github.append(first)
                    rss_github.append(rss)
            c.say(
                f"start-up {rep + 1}: first probe {first_probe[-1]:.2f}s, /healthz {healthy[-1]:.2f}s,"
                f" RSS journal {rss_journal[-1]} MB, github {rss_github[-1]} MB"
            )
    return {
        "exec_to_first_probe_s": c.summary(first_probe, 3),
        "exec_to_healthz_200_s": c.summary(healthy, 3),
        "exec_to_first_probe_github_sink_s": c.summary(first_github, 3),
        "rss_after_startup_mb": {
            "journal_sink": c.summary(rss_journal, 1),
            "github_sink": c.summary(rss_github, 1),
        },
        f"rss_{HOUSEKEEPING_S:.0f}s_after_exec_mb": {
            "journal_sink": c.summary(later["journal"], 1),
            "github_sink": c.summary(later["github"], 1),
        },
        "bar": {
            "exec_to_first_probe_max_s": BAR_FIRST_PROBE_S,
            "rss_github_sink_max_mb": BAR_STARTUP_RSS_MB,
            "first_probe_met": statistics.median(first_probe) <= BAR_FIRST_PROBE_S,
            "rss_met": max(statistics.median(rss_github), statistics.median(later["github"]))
            <= BAR_STARTUP_RSS_MB,
        },
    }


def growth(
    tmp: Path, target: c.LocalTarget, github: FakeGitHub, probes: int, refresh: str | None
) -> dict[str, Any]:
    """RSS from start-up to ``probes`` check probes at a fast cadence (GitHub sink)."""
    config = shipped_config(tmp / "fast.toml", target.url)
    port = c.free_port()
    extra = {"metrics_refresh": refresh} if refresh else {}
    env = env_for(
        tmp / "fast.db",
        port,
        github.url,
        interval="0.01",
        incident_interval="0.01",
        jitter="0",
        **extra,
    )
    begin = time.time()
    proc = start(config, env, tmp / "fast.log")
    samples: list[tuple[float, int, float, float]] = []  # (t, probes, rss MB, cpu s)
    try:
        wait(lambda: probes_total(port) >= 4, "the first cycle")
        time.sleep(1.0)
        deadline = time.time() + 900
        while time.time() < deadline:
            done = probes_total(port)
            samples.append(
                (
                    round(time.time() - begin, 1),
                    done,
                    mb(c.proc_status_kb(proc.pid)),
                    round(c.proc_cpu_s(proc.pid), 2),
                )
            )
            if len(samples) % 6 == 1:
                c.say(f"  {done} probes, RSS {samples[-1][2]} MB, CPU {samples[-1][3]} s")
            if done >= probes:
                break
            time.sleep(5.0 if probes > 10_000 else 0.5)
        hwm = mb(c.proc_status_kb(proc.pid, "VmHWM"))
    finally:
        code = stop(proc)
    first, last = samples[0], samples[-1]
    tenth = next((s for s in samples if s[1] >= probes // 10), first)
    seconds = last[0] - first[0]
    cycles = (last[1] - first[1]) / 2  # two checks per target cycle
    return {
        "cadence_s": 0.01,
        "probes_done": last[1],
        "seconds": round(seconds, 1),
        "probes_per_s": round((last[1] - first[1]) / seconds, 1) if seconds else None,
        "cpu_s_per_target_cycle": round((last[3] - first[3]) / cycles, 5) if cycles else None,
        "rss_mb": {
            "after_startup": first[2],
            "at_10_percent": tenth[2],
            "final": last[2],
            "peak_hwm": hwm,
            "growth_from_startup": round(last[2] - first[2], 1),
            "growth_from_10_percent": round(last[2] - tenth[2], 1),
        },
        "samples_t_probes_rss_cpu": samples,
        "exit_code": code,
        "db_mb": round((tmp / "fast.db").stat().st_size / 1e6, 1),
    }


def idle_cpu(
    tmp: Path, target_url: str, github: FakeGitHub, seconds: float, settle_s: float
) -> dict:
    """CPU seconds of an idle daemon at the default cadence (15 m / 1 m), GitHub sink."""
    config = shipped_config(tmp / "idle.toml", target_url)
    port = c.free_port()
    proc = start(config, env_for(tmp / "idle.db", port, github.url), tmp / "idle.log")
    try:
        wait(lambda: probes_total(port) >= 4, "the start-up probes")
        time.sleep(settle_s)  # past the first housekeeping pass (5 s after start)
        cpu0, t0 = c.proc_cpu_s(proc.pid), time.time()
        time.sleep(seconds)
        cpu1, t1 = c.proc_cpu_s(proc.pid), time.time()
        probes = probes_total(port)
        rss = mb(c.proc_status_kb(proc.pid))
    finally:
        stop(proc)
    return {
        "window_s": round(t1 - t0, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_s_per_h_idle": round((cpu1 - cpu0) / (t1 - t0) * 3600, 2),
        "probes_in_process": probes,
        "rss_mb": rss,
        "clock_tick_s": 1 / os.sysconf("SC_CLK_TCK"),
    }


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--probes", type=int, default=None, help="check probes (default 100000)")
    p.add_argument("--idle-s", type=float, default=None, help="idle window (default 240)")
    p.add_argument("--reps", type=int, default=None, help="start-ups (default 5)")
    p.add_argument("--server", choices=["auto", "nginx", "raw"], default="auto")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the daemon, e.g. a venv built from requirements.lock (default: this one)",
    )
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)",
    )
    p.add_argument("--settle-s", type=float, default=7.0, help="wait before the idle window")
    p.add_argument(
        "--metrics-refresh",
        default=None,
        help="housekeeping period in the growth run (default: the daemon's, 60s)",
    )
    args = p.parse_args()
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--only takes a comma-separated list of {', '.join(PARTS)}")
    PYTHON[:] = [args.python]
    probes = args.probes or (5000 if args.quick else 100_000)
    idle_s = args.idle_s or (5.0 if args.quick else 240.0)
    reps = args.reps or (1 if args.quick else 5)
    with (
        tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp_name,
        FakeGitHub() as github,
        c.local_target(args.server) as target,
    ):
        tmp = Path(tmp_name)
        result: dict[str, Any] = {"bench": "footprint", "parts": parts}
        result["daemon_interpreter"] = interpreter(args.python, tmp)
        if "startup" in parts:
            c.say("start-up ...")
            result["startup"] = startup(tmp, reps, github)
        if "growth" in parts:
            c.say(f"growth over {probes} probes at a 10 ms cadence ({target.kind}) ...")
            result["growth"] = growth(tmp, target, github, probes, args.metrics_refresh)
        if "idle" in parts:
            c.say(f"idle CPU over {idle_s:.0f} s ...")
            result["idle"] = idle_cpu(tmp, target.url, github, idle_s, args.settle_s)
        result["server"] = target.kind
    if "growth" not in parts or "idle" not in parts:
        c.emit(result, args.out)
        return
    per_cycle = result["growth"]["cpu_s_per_target_cycle"] or 0.0
    cycles_per_h = 2 * 3600 / 900  # two targets every 15 minutes
    result["cpu_s_per_h_default_cadence"] = {
        "idle_part": result["idle"]["cpu_s_per_h_idle"],
        "probe_part": round(cycles_per_h * per_cycle, 3),
        "total": round(result["idle"]["cpu_s_per_h_idle"] + cycles_per_h * per_cycle, 2),
        "method": "idle CPU over the window scaled to 1 h + 8 target cycles x CPU per cycle",
    }
    rss = result["growth"]["rss_mb"]
    result["bar"] = {
        "rss_max_mb": BAR_RSS_MB,
        "growth_max_mb": BAR_GROWTH_MB,
        "rss_met": max(rss["final"], rss["peak_hwm"]) <= BAR_RSS_MB,
        "growth_met_from_startup": rss["growth_from_startup"] <= BAR_GROWTH_MB,
        "growth_met_from_10_percent": rss["growth_from_10_percent"] <= BAR_GROWTH_MB,
    }
    c.emit(result, args.out)


if __name__ == "__main__":
    main()
