"""The store: commit throughput, report and status latency on 90 days of history, file size.

    python bench/store.py                      # full (~2 min)
    python bench/store.py --profile /tmp/prof  # + pyinstrument of the figures and the snapshot
    python bench/store.py --quick              # smoke: 3 days of history, few repetitions

1. ``SqliteStore.commit_cycle`` throughput, the daemon's write path (one transaction per target
   result: check rows, target sample, tracker state): results of 1, 2 and 10 checks;
   probe cycles of 2, 100 and 1,000 targets committed back to back as the daemon does;
   the same on the 90-day file; and, for reference, the same rows in one transaction
   (what batching a whole cycle would buy).
2. 90 days of one-minute history for 50 checks (25 targets x 2 checks), made by
   ``tests.test_history.generate_history`` (hourly rollups before the last 7 days, raw
   rows for the last 7 days), then the real rollup path (``History.rollup``) over the 7
   raw days. Timed before and after that rollup: ``monitor report`` as a subprocess
   (default 30-day window and ``--window 90d``), ``target_figures`` in process, and
   ``/api/status`` (``build_snapshot`` in process, and the route through the ASGI app:
   uncached; cold, the first request of a fresh process with the shipped cache; warm,
   a request served by that cache; and a rebuild once the cache's TTL has passed with
   nothing new committed). Bars: under 200 ms each, ``/api/status`` warm under 50 ms.
   The database size after all of it.
3. PostgreSQL against SQLite (``bench/store_backends.py``): 90 days x 50 checks x
   ``--regions`` regions (3) loaded into each ``--backend`` (both when PostgreSQL is
   installed), rolled up by ``History.rollup``; then ``region_views()``, ``/api/status``
   cold and warm, and ``commit_cycle`` (median, p95, p99 over ``--commits`` commits) of
   observation and decided cycles, on the same data. PostgreSQL is a throwaway
   ``tests.pgserver`` cluster on 127.0.0.1 (fsync off; the commits again with it on).

    python bench/store.py --only backends                  # section 3 alone (~3 min)
    python bench/store.py --only backends --backend sqlite --regions 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c

BAR_S = 0.2
BAR_WARM_S = 0.05  # /api/status served warm (issue 16)
TARGETS = 25  # x 2 checks = 50 checks
PARTS = ("write", "history", "backends")  # sections 1, 2 and 3


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=None, help="days of history (default 90)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--targets", type=int, default=TARGETS, help="targets of 2 checks (25)")
    p.add_argument("--profile", type=Path)
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)",
    )
    p.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "both"),
        default=None,
        help="backends compared in part 'backends' (default: both if PostgreSQL is installed)",
    )
    p.add_argument("--regions", type=int, default=3, help="regions in part 'backends' (3)")
    p.add_argument("--commits", type=int, default=None, help="commits per kind (2000)")
    p.add_argument("--api-status-cold", type=Path, help=argparse.SUPPRESS)  # see api_status_cold
    args = p.parse_args()
    if args.api_status_cold is not None:
        print(json.dumps(_api_status_once(args.api_status_cold)))
        return
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--only takes a comma-separated list of {', '.join(PARTS)}")
    if args.regions < 1:
        p.error("--regions must be at least 1")
    days = args.days or (3 if args.quick else 90)
    reps = args.reps or (2 if args.quick else 5)
    c.null_logging()
    result: dict[str, Any] = {"bench": "store", "parts": parts}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        if "write" in parts:
            result["commit"] = commit_throughput(Path(tmp), args.quick, reps)
        if "history" in parts:
            result["history"] = history(
                Path(tmp), days, reps, args.quick, args.profile, args.targets
            )
        if "backends" in parts:
            import store_backends

            backend = args.backend or ("both" if store_backends.backends_available() else "sqlite")
            chosen = ["sqlite", "postgres"] if backend == "both" else [backend]
            commits = args.commits or (200 if args.quick else 2000)
            sub = Path(tmp) / "backends"
            sub.mkdir()
            result["backends"] = store_backends.run(
                chosen, days, args.targets, args.regions, commits, reps, sub
            )
    c.emit(result, args.out)


# ---- 1. the write path ------------------------------------------------------------------------


def _result(target: str, at: datetime, checks: int) -> Any:
    from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

    return TargetResult(
        target,
        at,
        tuple(
            CheckResult(
                target,
                f"c{i}",
                f"http://127.0.0.1/{i}",
                at,
                0.012,
                Outcome.UP,
                Reason.OK,
                "200 in 12 ms",
                200,
            )
            for i in range(checks)
        ),
    )


def _commit_many(store: Any, targets: int, checks: int, cycles: int, t0: datetime) -> float:
    """Seconds to commit ``cycles`` probe cycles of ``targets`` targets, as the daemon does."""
    from monitor.incidents.tracker import TrackerState
    from monitor.store.base import PendingCycle

    states = {f"t{i:04d}": TrackerState(f"t{i:04d}") for i in range(targets)}
    results = [
        _result(name, t0 + timedelta(seconds=60 * n), checks)
        for n in range(cycles)
        for name in states
    ]
    start = time.perf_counter()
    for result in results:
        store.commit_cycle(PendingCycle(result, 130.0, states[result.target], None, []))
    return time.perf_counter() - start


def commit_throughput(tmp: Path, quick: bool, reps: int) -> dict[str, Any]:
    from monitor.store.sqlite import SqliteStore

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    n = 200 if quick else 2000
    out: dict[str, Any] = {"method": "median of repetitions; fresh file per repetition"}
    by_checks: dict[str, Any] = {}
    for checks in (1, 2, 10):
        per_commit = []
        for rep in range(reps):
            store = SqliteStore(tmp / f"commit-{checks}-{rep}.db")
            per_commit.append(_commit_many(store, 1, checks, n, t0) / n)
            store.close()
        med = statistics.median(per_commit)
        by_checks[str(checks)] = {
            "commit_us": c.summary([s * 1e6 for s in per_commit], 1),
            "commits_per_s": round(1 / med),
            "check_rows_per_s": round(checks / med),
        }
        c.say(f"commit_cycle, {checks} checks: {med * 1e6:.0f} us")
    out["per_target_result_by_checks"] = by_checks
    cycles: dict[str, Any] = {}
    for targets in (2, 100, 1000):
        rounds = max(1, (200 if quick else 2000) // targets)
        seconds = []
        for rep in range(reps):
            store = SqliteStore(tmp / f"cycle-{targets}-{rep}.db")
            seconds.append(_commit_many(store, targets, 2, rounds, t0) / rounds)
            store.close()
        cycles[str(targets)] = {"cycle_commit_ms": c.summary([s * 1e3 for s in seconds], 2)}
        c.say(f"a cycle of {targets} targets x 2 checks: {statistics.median(seconds) * 1e3:.1f} ms")
    out["per_cycle_by_targets_2_checks"] = cycles
    # reference: the rows of 1,000 commit_cycle calls in one transaction (no SqliteStore API does this)
    rows = 1000 if not quick else 100
    batch = []
    for rep in range(reps):
        store = SqliteStore(tmp / f"batch-{rep}.db")
        store.close()
        db = sqlite3.connect(tmp / f"batch-{rep}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        check_rows = [
            (f"t{i:04d}", f"c{k}", t0.timestamp(), 0.012, "up", "ok", 200, "200 in 12 ms")
            for i in range(rows)
            for k in range(2)
        ]
        samples = [(f"t{i:04d}", t0.timestamp(), "up", 130.0) for i in range(rows)]
        states = [(f"t{i:04d}", '{"target": "x"}', t0.timestamp()) for i in range(rows)]
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO check_results (target, check_name, started_at, duration_s, outcome,"
            " reason, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            check_rows,
        )
        db.executemany("INSERT OR REPLACE INTO target_samples VALUES (?, ?, ?, ?)", samples)
        db.executemany("INSERT OR REPLACE INTO tracker_state VALUES (?, ?, ?)", states)
        db.execute("COMMIT")
        batch.append(time.perf_counter() - start)
        db.close()
    out["reference_one_transaction"] = {
        "targets": rows,
        "checks_per_target": 2,
        "cycle_commit_ms": c.summary([s * 1e3 for s in batch], 2),
    }
    return out


# ---- 2. history ---------------------------------------------------------------------------------


def _config(path: Path, state: Path, count: int) -> Path:
    targets = "\n".join(
        f'[[targets]]\nname = "svc{t:02d}"\nurl = "http://127.0.0.1:1"\nslo = 0.99\n'
        'mttr_objective = "30m"\n'
        '  [[targets.checks]]\n  name = "health"\n  path = "/health"\n'
        '  [[targets.checks]]\n  name = "monitoring"\n  path = "/m"\n'
        for t in range(count)
    )
    path.write_text(
        f'[monitor]\ninterval = 60\nincident_interval = 60\nstate_path = "{state}"\n\n{targets}'
    )
    return path


def _sizes(state: Path) -> dict[str, float]:
    wal = state.with_name(state.name + "-wal")
    return {
        "db_mb": round(state.stat().st_size / 1e6, 1),
        "wal_mb": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0,
    }


def _report_subprocess(config: Path, window: str | None, reps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "monitor", "report", "--config", str(config), "--json"]
    if window:
        cmd += ["--window", window]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"monitor report failed: {proc.stderr[-2000:]}")
    return c.summary(times)


def _import_floor(reps: int) -> dict[str, Any]:
    """Interpreter start plus the imports ``monitor report`` needs, computing nothing."""
    code = "import monitor.cli, monitor.figures.history, monitor.figures.report, monitor.store.sqlite, monitor.figures.slo"
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        times.append(time.perf_counter() - start)
    return c.summary(times)


def _latencies(settings: Any, store: Any, config: Path, reps: int) -> dict[str, Any]:
    from monitor.daemon.daemon import Daemon
    from monitor.figures.history import History
    from monitor.figures.slo import Span
    from monitor.figures.target import target_figures
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics

    history = History(store, settings)
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    for label, days in (("30d", 30), ("90d", 90)):
        span = Span.ending(now, days * 86400)
        all_targets = []
        for _ in range(reps):
            start = time.perf_counter()
            for target in settings.targets:
                target_figures(history, target, span, now)
            all_targets.append(time.perf_counter() - start)
        out[f"target_figures_{label}_all_{len(settings.targets)}_targets_s"] = c.summary(
            all_targets
        )
        out[f"target_figures_{label}_per_target_s"] = round(
            statistics.median(all_targets) / len(settings.targets), 4
        )
    out["report_subprocess_30d_s"] = _report_subprocess(config, None, reps)
    out["report_subprocess_90d_s"] = _report_subprocess(config, "90d", reps)
    try:
        from monitor.web.snapshot import build_snapshot
    except ImportError:
        out["api_status"] = "pending: monitor/web/snapshot.py has no build_snapshot"
        return out
    daemon = Daemon(settings, store=store, channels=[JournalChannel()], metrics=Metrics())
    builds = []
    for _ in range(reps):
        start = time.perf_counter()
        build_snapshot(daemon, daemon.now())
        builds.append(time.perf_counter() - start)
    out["status_build_snapshot_s"] = c.summary(builds)
    out["api_status_asgi_uncached_s"] = asyncio.run(api_status_uncached(daemon, reps))
    out["api_status_cold_s"] = api_status_cold(config, reps)
    out.update(asyncio.run(api_status_cached(daemon, reps)))
    return out


def _api_status_once(config: Path) -> dict[str, float]:
    """In this (fresh) process: the daemon and its app on ``config``'s store, then the first
    GET /api/status, as after a start-up (wall and CPU seconds)."""
    import httpx

    from monitor.config import load_settings
    from monitor.daemon.daemon import Daemon
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics
    from monitor.web.routes import status_routes
    from monitor.web.server import create_app

    c.null_logging()
    daemon = Daemon(load_settings(config), channels=[JournalChannel()], metrics=Metrics())
    app = create_app(daemon.metrics, daemon, status_routes(daemon))

    async def first() -> dict[str, float]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://monitor"
        ) as client:
            wall, cpu = time.perf_counter(), time.process_time()
            response = await client.get("/api/status")
            response.raise_for_status()
            return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}

    try:
        return asyncio.run(first())
    finally:
        daemon.store.close()


def api_status_cold(config: Path, reps: int) -> dict[str, Any]:
    """The first GET /api/status after start-up: each repetition a fresh process (nothing
    cached in it, a new database connection; the OS page cache is warm), with the
    shipped ``SnapshotCache``. Wall time, and the CPU time beside it (the machine is shared)."""
    walls, cpus = [], []
    for _ in range(reps):
        proc = subprocess.run(
            [sys.executable, __file__, "--api-status-cold", str(config)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"cold /api/status failed: {proc.stderr[-2000:]}")
        once = json.loads(proc.stdout.strip().splitlines()[-1])
        walls.append(once["wall_s"])
        cpus.append(once["cpu_s"])
    return {**c.summary(walls), "cpu_s": c.summary(cpus)}


async def api_status_cached(daemon: Any, reps: int) -> dict[str, Any]:
    """GET /api/status through the daemon's app with the shipped ``SnapshotCache``: warm
    (served from it: the TTL has not passed and the live view has not changed) and a
    rebuild (the TTL passed, nothing new committed: what the store-side caches save)."""
    import httpx

    from monitor.web.routes import status_routes
    from monitor.web.server import create_app
    from monitor.web.snapshot import CACHE_TTL_S, SnapshotCache

    ticks = [0.0]
    cache = SnapshotCache(daemon, monotonic=lambda: ticks[0])
    app = create_app(daemon.metrics, daemon, status_routes(daemon, cache=cache))
    warm, rebuilt = [], []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://monitor"
    ) as client:
        (await client.get("/api/status")).raise_for_status()  # the build the others reuse
        for _ in range(reps):
            start = time.perf_counter()
            (await client.get("/api/status")).raise_for_status()
            warm.append(time.perf_counter() - start)
        for _ in range(reps):
            ticks[0] += CACHE_TTL_S
            start = time.perf_counter()
            (await client.get("/api/status")).raise_for_status()
            rebuilt.append(time.perf_counter() - start)
    return {
        "api_status_warm_s": c.summary(warm),
        "api_status_rebuild_after_ttl_s": c.summary(rebuilt),
        "snapshot_builds": cache.builds,
    }


async def api_status_uncached(daemon: Any, reps: int) -> dict[str, Any]:
    """GET /api/status through the daemon's ASGI app with an uncached snapshot (TTL 0)."""
    import httpx

    from monitor.web.routes import status_routes
    from monitor.web.server import create_app
    from monitor.web.snapshot import SnapshotCache

    app = create_app(daemon.metrics, daemon, status_routes(daemon, cache=SnapshotCache(daemon, 0)))
    times = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://monitor"
    ) as client:
        for _ in range(reps):
            start = time.perf_counter()
            response = await client.get("/api/status")
            response.raise_for_status()
            times.append(time.perf_counter() - start)
    return c.summary(times)


def history(
    tmp: Path, days: int, reps: int, quick: bool, profile_dir: Path | None, targets: int
) -> dict:
    from monitor.config import load_settings
    from monitor.figures.history import History
    from monitor.store.sqlite import SqliteStore
    from tests.test_history import generate_history

    state = tmp / "history.db"
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = time.perf_counter()
    generate_history(state, days=days, targets=targets, now=now, raw_days=min(7, days))
    generated_s = time.perf_counter() - start
    config = _config(tmp / "config.toml", state, targets)
    settings = load_settings(config)
    out: dict[str, Any] = {
        "days": days,
        "targets": targets,
        "checks": targets * 2,
        "generate_s": round(generated_s, 1),
        "size_as_generated": _sizes(state),
        "import_floor_subprocess_s": _import_floor(reps),
    }
    c.say(f"generated {days} days in {generated_s:.1f} s: {out['size_as_generated']}")
    store = SqliteStore(state)
    out["before_rollup"] = _latencies(settings, store, config, reps)
    c.say(f"before rollup: {_brief(out['before_rollup'])}")
    hist = History(store, settings)
    watermark = hist.watermark()
    assert watermark is not None
    one = time.perf_counter()
    hist.rollup(watermark + timedelta(hours=1, minutes=1), [t.name for t in settings.targets])
    one_hour_s = time.perf_counter() - one
    rest = time.perf_counter()
    hours = 1
    while done := hist.rollup(datetime.now(UTC), [t.name for t in settings.targets]):
        hours += done
    rest_s = time.perf_counter() - rest
    purge = time.perf_counter()
    removed = hist.purge(datetime.now(UTC))
    purge_s = time.perf_counter() - purge
    out["rollup"] = {
        "one_hour_all_targets_s": round(one_hour_s, 3),
        "catch_up_hours": hours - 1,
        "catch_up_s": round(rest_s, 2),
        "per_hour_s": round(rest_s / max(1, hours - 1), 3),
        "purge_s": round(purge_s, 3),
        "purged_rows": removed,
    }
    c.say(f"rollup: {out['rollup']}")
    out["after_rollup"] = _latencies(settings, store, config, reps)
    c.say(f"after rollup: {_brief(out['after_rollup'])}")
    commit_big = []
    from monitor.incidents.tracker import TrackerState
    from monitor.store.base import PendingCycle

    tracker = TrackerState("svc00")
    n = 200 if quick else 2000
    for rep in range(reps):
        results = [
            _result("svc00", now + timedelta(seconds=rep * n + i), 2)  # fresh keys
            for i in range(n)
        ]
        begin = time.perf_counter()
        for result in results:
            store.commit_cycle(PendingCycle(result, 130.0, tracker, None, []))
        commit_big.append((time.perf_counter() - begin) / n)
    out["commit_cycle_2_checks_on_this_file_us"] = c.summary([s * 1e6 for s in commit_big], 1)
    if profile_dir is not None:
        out["profile"] = _profile(settings, store, profile_dir)
    store.close()
    out["size_final"] = _sizes(state)
    bars = {
        key: value["median"] <= (BAR_WARM_S if key == "api_status_warm_s" else BAR_S)
        for key, value in out["after_rollup"].items()
        if isinstance(value, dict) and "median" in value and "all_" not in key
    }
    out["bar_s"] = BAR_S
    out["bar_warm_s"] = BAR_WARM_S
    out["bar_met_after_rollup"] = bars
    return out


def _brief(figures: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v['median'] * 1000:.0f} ms" for k, v in figures.items() if isinstance(v, dict)
    )


def _profile(settings: Any, store: Any, directory: Path) -> dict[str, Any]:
    from pyinstrument import Profiler

    from monitor.daemon.daemon import Daemon
    from monitor.figures.history import History
    from monitor.figures.slo import Span
    from monitor.figures.target import target_figures
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics

    directory.mkdir(parents=True, exist_ok=True)
    history = History(store, settings)
    now = datetime.now(UTC)
    out = {}
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for target in settings.targets:
        target_figures(history, target, Span.ending(now, 30 * 86400), now)
    profiler.stop()
    (directory / "store_target_figures_30d.txt").write_text(
        profiler.output_text(unicode=False, color=False)
    )
    out["target_figures_30d_all_targets"] = c.profile_shares(profiler)
    try:
        from monitor.web.snapshot import build_snapshot
    except ImportError:
        return out
    daemon = Daemon(settings, store=store, channels=[JournalChannel()], metrics=Metrics())
    profiler = Profiler(interval=0.0005)
    profiler.start()
    build_snapshot(daemon, daemon.now())
    profiler.stop()
    (directory / "store_build_snapshot.txt").write_text(
        profiler.output_text(unicode=False, color=False)
    )
    out["build_snapshot"] = c.profile_shares(profiler)
    return out


if __name__ == "__main__":
    main()
