"""The daemon against Prometheus' blackbox_exporter on the same N endpoints.

    python bench/blackbox.py            # 1,000 endpoints, 5 repetitions (~2 min)
    python bench/blackbox.py --quick    # smoke: 100 endpoints, 1 repetition

blackbox_exporter (Debian ``prometheus-blackbox-exporter``) runs on 127.0.0.1 with a
generated config (module ``http_2xx``) and is driven the way Prometheus drives it: one
``GET /probe?target=URL&module=http_2xx`` per endpoint, from a lean keep-alive asyncio
driver with the same concurrency as the daemon (``monitor.concurrency``). A probe counts
only when the exporter says ``probe_success 1``. In each repetition, side by side: a cold
daemon cycle (fresh pool, as production sees it), a cold bare-httpx cycle, and the
exporter cycle. Also reported: the exporter's resident memory idle and after the load,
and its throughput under ``wrk`` (one target URL, 100 connections) when wrk is installed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import urllib.parse
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


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
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
            result = asyncio.run(run(target, Path(tmp), port, proc.pid, checks, reps, args.quick))
        finally:
            c.stop_process(proc)
    result["exporter_version"] = exporter_version(binary)
    result["server"] = {"kind": target.kind, **capacity}
    c.emit(result, args.out)


async def run(
    target: c.LocalTarget, tmp: Path, port: int, pid: int, checks: int, reps: int, quick: bool
) -> dict[str, Any]:
    import httpx

    from monitor.daemon.daemon import Daemon
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics
    from monitor.probing.prober import Prober
    from monitor.store.sqlite import SqliteStore

    settings = c.target_settings(target.url, checks, tmp / "monitor.db")
    conc = settings.monitor.concurrency
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    urls = [t.check_url(t.checks[0]) for t in settings.targets]
    probe_paths = [
        "/probe?" + urllib.parse.urlencode({"target": u, "module": "http_2xx"}) for u in urls
    ]
    store = SqliteStore(tmp / "monitor.db")

    def success(body: bytes) -> bool:
        return b"\nprobe_success 1" in body

    async def exporter_cycle() -> float:
        seconds, statuses, _ = await c.drive(port, probe_paths, conc, accept=success)
        if sum(1 for s in statuses if s == 200) != checks:
            raise RuntimeError("the exporter reported failed probes")
        return seconds

    async def daemon_cycle() -> float:
        prober = Prober(settings.monitor)
        daemon = Daemon(
            settings, store=store, channels=[JournalChannel()], metrics=Metrics(), prober=prober
        )
        try:
            start = time.perf_counter()
            results = await asyncio.gather(*(daemon.probe(t.name) for t in settings.targets))
            seconds = time.perf_counter() - start
        finally:
            await prober.aclose()
        if sum(1 for r in results if r.outcome.value == "up") != checks:
            raise RuntimeError("the daemon saw failed probes")
        return seconds

    async def bare_cycle() -> float:
        async with httpx.AsyncClient(limits=limits) as client:
            gate = asyncio.Semaphore(conc)

            async def one(url: str) -> int:
                async with gate:
                    return (await client.get(url)).status_code

            start = time.perf_counter()
            codes = await asyncio.gather(*(one(u) for u in urls))
            seconds = time.perf_counter() - start
        if sum(1 for code in codes if code == 200) != checks:
            raise RuntimeError("bare httpx saw failures")
        return seconds

    rss_idle_kb = c.proc_status_kb(pid)
    c.say(f"exporter idle RSS {rss_idle_kb / 1024:.1f} MB; warm-up ...")
    await exporter_cycle()
    await daemon_cycle()
    await bare_cycle()
    cycles = {"exporter": exporter_cycle, "daemon": daemon_cycle, "bare_httpx": bare_cycle}
    times: dict[str, list[float]] = {k: [] for k in cycles}
    names = list(cycles)
    for rep in range(reps):
        for name in names[rep % 3 :] + names[: rep % 3]:
            times[name].append(await cycles[name]())
        c.say(f"rep {rep + 1}/{reps}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    rss_after_kb = c.proc_status_kb(pid)
    hwm_kb = c.proc_status_kb(pid, "VmHWM")
    store.close()
    wrk = c.wrk_rps(
        f"http://{c.HOST}:{port}{probe_paths[0]}", connections=conc, seconds=1 if quick else 5
    )
    return {
        "bench": "blackbox",
        "checks": checks,
        "concurrency": conc,
        "reps": reps,
        "cycle_s": {k: c.summary(v) for k, v in times.items()},
        "probes_per_s_median": {
            k: round(checks / c.summary(v)["median"]) for k, v in times.items()
        },
        "ratio_daemon_over_exporter": c.ratios(times["daemon"], times["exporter"]),
        "ratio_bare_httpx_over_exporter": c.ratios(times["bare_httpx"], times["exporter"]),
        "exporter_rss_mb": {
            "idle": round(rss_idle_kb / 1024, 1),
            "after_load": round(rss_after_kb / 1024, 1),
            "peak_hwm": round(hwm_kb / 1024, 1),
        },
        "exporter_wrk_probes_per_s": wrk,
        "method": (
            "one /probe?target=...&module=http_2xx per endpoint, keep-alive asyncio driver at "
            f"concurrency {conc}; daemon and bare httpx: cold pool per cycle"
        ),
    }


if __name__ == "__main__":
    main()
