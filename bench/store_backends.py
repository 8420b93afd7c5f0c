"""Section 3 of ``bench/store.py``: PostgreSQL against SQLite, several regions, same data.

    python bench/store.py --only backends                     # 90 d x 50 checks x 3 regions
    python bench/store.py --only backends --backend postgres  # one backend
    python bench/store.py --only backends --quick             # 3 days, few commits

The history is generated once, in memory, and loaded into each backend: hourly and
daily rollups for the days before the last week; for the last week, every region's
one-minute results of every check (what each region's instance writes with its
observation cycles: ``check_results`` rows naming the region), the leader's decided
target samples, incidents with their finished outbox rows, deployments, one session
per instance, each region's latest view and the tracker states. Rows are written in
bulk through the store's own transaction (``_tx().executemany``), interleaved in
time as the instances write them; then ``History.rollup`` rolls the raw week up and
``History.purge`` runs, as the leader's housekeeping does. On PostgreSQL a
``VACUUM ANALYZE`` follows the load and the rollup (what autovacuum does soon after
such changes, and has long done on a database that grew a minute at a time; run here
so that it does not run in the middle of a measurement).

Measured on each backend, on the same data, in this order:

- ``region_views()`` reads: one target (what the leader reads before each decision)
  and all targets (each instance's housekeeping);
- ``/api/status``: ``build_snapshot`` on a freshly opened store (cold: a new
  connection; on PostgreSQL also right after a server restart, so shared buffers are
  empty; neither empties the OS page cache), then warm, and the route through the ASGI
  app uncached, as section 2 measures it; the store time of one warm build by Store
  method, and on PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)`` of the statements behind the
  costliest methods (SQLite: ``EXPLAIN QUERY PLAN``);
- ``commit_cycle`` one commit at a time: an observation cycle (a follower region's
  two check results and its view) and a decided cycle (the leader's results, view,
  fenced decision, target sample, tracker state, incident upsert and one outbox action).

The throwaway PostgreSQL cluster is ``tests.pgserver.PostgresServer`` on 127.0.0.1:
``fsync`` and ``full_page_writes`` off (speed a test needs), ``synchronous_commit`` on.
The commits are measured again after restarting the same cluster with both on
(PostgreSQL's defaults, as in production); SQLite's are measured again with
``PRAGMA synchronous=FULL`` (the store uses NORMAL, which in WAL mode does not sync on
commit) so that both sides are shown at matched durability.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c
from store import api_status_uncached

REGION_NAMES = ("ams", "iad", "sin", "syd", "gru", "nrt", "fra", "lax", "jnb")
CHECKS = ("health", "monitoring")
HOLD_S = 130.0  # 2 x 60 s + 10 s: how long a result vouches for its target


def region_names(count: int) -> list[str]:
    """``count`` region names, Fly's style; the first is the leader's."""
    return [REGION_NAMES[i] if i < len(REGION_NAMES) else f"r{i}" for i in range(count)]


def backends_available() -> bool:
    """Whether PostgreSQL's binaries are installed (then ``--backend`` defaults to both)."""
    from tests.pgserver import postgres_binaries

    return postgres_binaries() is not None


# ---- the data ------------------------------------------------------------------------------


@dataclass
class Seed:
    """Every row of the history, generated once and loaded into each backend alike."""

    now: datetime
    raw_start: datetime
    targets: list[str]
    regions: list[str]
    rollups: list[tuple[Any, ...]] = field(default_factory=list)
    check_results: list[tuple[Any, ...]] = field(default_factory=list)
    target_samples: list[tuple[Any, ...]] = field(default_factory=list)
    incidents: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    deployments: list[tuple[Any, ...]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    views: list[Any] = field(default_factory=list)  # RegionView

    def counts(self) -> dict[str, int]:
        """Rows per table as generated (before the rollup of the raw week)."""
        return {
            "rollups": len(self.rollups),
            "check_results": len(self.check_results),
            "target_samples": len(self.target_samples),
            "incidents": len(self.incidents),
            "outbox": len(self.outbox),
            "deployments": len(self.deployments),
            "sessions": len(self.sessions),
            "region_views": len(self.views),
        }


def _check(target: str, check: str, at: datetime, duration: float, outcome: str) -> Any:
    from monitor.probing.results import CheckResult, Outcome, Reason

    down = outcome == "down"
    return CheckResult(
        target,
        check,
        f"http://127.0.0.1:1/{check}",
        at,
        duration,
        Outcome(outcome),
        Reason.STATUS if down else Reason.OK,
        f"{503 if down else 200} in {duration * 1000:.0f} ms",
        503 if down else 200,
    )


def generate(days: int, targets: int, regions: int, now: datetime) -> Seed:
    """``days`` of one-minute history of ``targets`` x 2 checks probed from ``regions``."""
    from monitor.figures.history import LATENCY_BOUNDS_S, _sum_rows
    from monitor.incidents.quorum import RegionView
    from monitor.probing.results import Outcome, TargetResult

    rng = random.Random(7)
    raw_days = min(7, days)
    start = now - timedelta(days=days)
    raw_start = (now - timedelta(days=raw_days)).replace(minute=0, second=0, microsecond=0)
    names = [f"svc{t:02d}" for t in range(targets)]
    seed = Seed(now, raw_start, names, region_names(regions))
    base_s = [0.02 + 0.06 * r for r in range(regions)]  # each region's distance
    hist = json.dumps([0, 0, 60, *([0] * (len(LATENCY_BOUNDS_S) - 3))])
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    for name in names:
        hour, day_hours = first_hour, {}
        while hour < raw_start:
            down = 60.0 * rng.choice([0] * 40 + [1, 3, 10])
            for check in ("*", *CHECKS):
                probes = 60 if check == "*" else 60 * regions
                row = {
                    "period": "hour", "target": name, "check_name": check,
                    "bucket": hour.timestamp(), "probes": probes,
                    "failures": int(down // 60) * (1 if check == "*" else regions),
                    "degraded": 0, "up_s": 3600 - down, "degraded_s": 0.0, "down_s": down,
                    "unknown_s": 0.0, "maintenance_s": 0.0, "latency_sum": 0.05 * probes,
                    "latency_min": 0.02,
                    "latency_max": 0.2, "latency_hist": hist,
                }  # fmt: skip
                seed.rollups.append(tuple(row.values()))
                day = hour.replace(hour=0)
                day_hours.setdefault((check, day), []).append(row)
            hour += timedelta(hours=1)
        for (check, day), rows in day_hours.items():
            seed.rollups.append(tuple(_sum_rows("day", name, check, day, rows).values()))
        for n in range(3):  # a few resolved incidents, each with its issue's steps done
            at = start + timedelta(seconds=rng.uniform(0, days * 86400 - 3600))
            resolved = at + timedelta(minutes=rng.randint(5, 30))
            incident_id = f"{name}-{at:%Y%m%dT%H%M%S}"
            seed.incidents.append(
                (incident_id, name, at.timestamp(), resolved.timestamp(), 100 + n,
                 f"https://github.com/acme/status/issues/{100 + n}", 20, 8, 0, None,
                 resolved.timestamp())
            )  # fmt: skip
            for kind, when in (("open", at), ("close", resolved)):
                seed.outbox.append(
                    ("github", incident_id, name, kind, "{}", when.timestamp(), 1,
                     when.timestamp(), when.timestamp() + 1)
                )  # fmt: skip
        for week in range(0, days, 14):  # a deployment a fortnight
            at = start + timedelta(days=week, hours=rng.randint(8, 18))
            seed.deployments.append((name, f"1.{week}", f"1.{week + 14}", at.timestamp()))
    for region in seed.regions:
        seed.sessions.append((start.timestamp(), now.timestamp(), f"{region}-1"))
    # the raw week, minute by minute, as the instances write it: every target's results
    # from every region (each at its own second of the minute), then the leader's sample
    at = raw_start
    last: dict[tuple[str, str], Any] = {}
    while at < now:
        for name in names:
            outage = rng.random() < 0.002
            outcomes = []
            for r, region in enumerate(seed.regions):
                blip = rng.random() < 0.001  # one region's own network
                outcome = "down" if outage or blip else "up"
                outcomes.append(outcome)
                started = at + timedelta(seconds=7 * r + 2)
                checks = []
                for check in CHECKS:
                    duration = round(base_s[r] * rng.lognormvariate(0, 0.3), 4)
                    seed.check_results.append(
                        (name, check, started.timestamp(), duration, outcome,
                         "status" if outcome == "down" else "ok", 503 if outcome == "down" else 200,
                         f"{503 if outcome == 'down' else 200} in {duration * 1000:.0f} ms", region)
                    )  # fmt: skip
                    if at + timedelta(minutes=1) >= now:
                        checks.append(_check(name, check, started, duration, outcome))
                if checks:
                    last[(name, region)] = TargetResult(name, started, tuple(checks))
            decided = "down" if outcomes.count("down") * 2 > len(outcomes) else "up"
            seed.target_samples.append((name, at.timestamp(), decided, HOLD_S))
        at += timedelta(minutes=1)
    for (name, region), result in sorted(last.items()):
        seed.views.append(
            RegionView(
                target=name,
                region=region,
                at=result.at,
                outcome=result.outcome,
                since=raw_start if result.outcome is Outcome.UP else result.at,
                streak=42,
                hold_s=HOLD_S,
                result=result,
            )
        )
    return seed


_INSERTS = {
    "rollups": "INSERT INTO rollups (period, target, check_name, bucket, probes, failures,"
    " degraded, up_s, degraded_s, down_s, unknown_s, maintenance_s, latency_sum, latency_min,"
    " latency_max, latency_hist) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "check_results": "INSERT INTO check_results (target, check_name, started_at, duration_s,"
    " outcome, reason, status, detail, region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "target_samples": "INSERT INTO target_samples (target, at, outcome, hold_s)"
    " VALUES (?, ?, ?, ?)",
    "incidents": "INSERT INTO incidents (id, target, started_at, resolved_at, issue_number,"
    " issue_url, probes_total, probes_failed, reopened, deployment, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "outbox": "INSERT INTO outbox (channel, incident_id, target, kind, payload, created_at,"
    " attempts, next_attempt_at, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "deployments": "INSERT INTO deployments (target, from_version, to_version, seen_at)"
    " VALUES (?, ?, ?, ?)",
    "sessions": "INSERT INTO sessions (started_at, last_seen_at, instance) VALUES (?, ?, ?)",
}


def load(store: Any, seed: Seed) -> float:
    """Write the seed through the store's own transaction; seconds taken."""
    from monitor.incidents.tracker import TrackerState
    from monitor.store.codec import state_to_json

    begin = time.perf_counter()
    with store._tx() as db:  # bulk load: the daemon writes the same rows through commit_cycle
        for table, sql in _INSERTS.items():
            db.executemany(sql, getattr(seed, table))
        db.executemany(
            "INSERT INTO tracker_state (target, state, updated_at) VALUES (?, ?, ?)",
            [(t, state_to_json(TrackerState(t)), seed.now.timestamp()) for t in seed.targets],
        )
        for view in seed.views:
            store._upsert_view(db, view)
        store._set_meta(db, "rollup_watermark", str(seed.raw_start.timestamp()))
    return time.perf_counter() - begin


def refresh_views(store: Any, seed: Seed) -> None:
    """Every region publishes its view again (the views are fresh for HOLD_S by the
    database's clock, and the measurements come minutes after the load)."""
    with store._tx() as db:
        for view in seed.views:
            store._upsert_view(db, view)


def settings_for(seed: Seed, tmp: Path) -> Any:
    """The configuration of every instance: the targets, the leader's region."""
    from monitor.config import load_settings

    targets = [
        {
            "name": name,
            "url": "http://127.0.0.1:1",
            "slo": 0.99,
            "mttr_objective": "30m",
            "checks": [{"name": check, "path": f"/{check}"} for check in CHECKS],
        }
        for name in seed.targets
    ]
    monitor = {
        "interval": 60,
        "incident_interval": 60,
        "state_path": str(tmp / "unused.db"),
        "region": seed.regions[0],
    }
    return load_settings(None, monitor=monitor, targets=targets)


# ---- measurements -----------------------------------------------------------------------------


def percentiles(values_s: Sequence[float], scale: float = 1e6, digits: int = 1) -> dict[str, Any]:
    """Median, p95, p99, mean and max of single timings (microseconds by default)."""
    vals = sorted(v * scale for v in values_s)
    cuts = statistics.quantiles(vals, n=100, method="inclusive") if len(vals) > 1 else vals * 99
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), digits),
        "p95": round(cuts[94], digits),
        "p99": round(cuts[98], digits),
        "mean": round(statistics.fmean(vals), digits),
        "max": round(vals[-1], digits),
    }


def _rollup(store: Any, settings: Any, now: datetime) -> dict[str, Any]:
    """The raw week rolled up and purged, as the leader's housekeeping does."""
    from monitor.figures.history import History

    history = History(store, settings)
    names = [t.name for t in settings.targets]
    watermark = history.watermark()
    assert watermark is not None
    with _timed_methods(store) as spent:
        one = time.perf_counter()
        history.rollup(watermark + timedelta(hours=1, minutes=1), names)
        one_hour_s = time.perf_counter() - one
    rest = time.perf_counter()
    hours = 1
    while done := history.rollup(now, names):
        hours += done
    rest_s = time.perf_counter() - rest
    purge = time.perf_counter()
    history.purge(now)
    return {
        "one_hour_all_targets_s": round(one_hour_s, 3),
        "one_hour_store_by_method": _by_method(spent),
        "catch_up_hours": hours - 1,
        "catch_up_s": round(rest_s, 2),
        "per_hour_s": round(rest_s / max(1, hours - 1), 3),
        "purge_s": round(time.perf_counter() - purge, 3),
    }


def _region_views(store: Any, seed: Seed, reads: int) -> dict[str, Any]:
    one, every = [], []
    for i in range(reads):
        target = seed.targets[i % len(seed.targets)]
        begin = time.perf_counter()
        views = store.region_views(target)
        one.append(time.perf_counter() - begin)
        assert len(views) == len(seed.regions), views
    for _ in range(max(10, reads // 5)):
        begin = time.perf_counter()
        views = store.region_views()
        every.append(time.perf_counter() - begin)
        assert len(views) == len(seed.views)
    return {
        "one_target_us": percentiles(one),
        f"all_{len(seed.views)}_views_us": percentiles(every),
    }


def _daemon(settings: Any, store: Any, seed: Seed) -> Any:
    """A daemon on the store as the leader's instance right after a cycle: every region's
    view read, and its own last result (the status page shows what the quorum decided)."""
    from monitor.daemon.daemon import Daemon
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics

    daemon = Daemon(
        settings,
        store=store,
        channels=[JournalChannel()],
        metrics=Metrics(),
        clock=lambda: seed.now,  # every backend computes the same page, whenever it runs
    )
    daemon._follow_regions()
    own = {v.target: v for v in seed.views if v.region == seed.regions[0]}
    for name, runtime in daemon.targets.items():
        runtime.last_result = own[name].result
        runtime.outcome_since = own[name].since
    return daemon


@contextmanager
def _timed_methods(store: Any) -> Iterator[dict[str, list[float]]]:
    """Wall seconds of every Store method called on ``store`` inside the block."""
    from monitor.store.base import Store

    names = [n for n, v in vars(Store).items() if not n.startswith("_") and callable(v)]
    spent: dict[str, list[float]] = {}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - begin)

        return timed

    for name in names:
        setattr(store, name, wrap(name, getattr(store, name)))
    try:
        yield spent
    finally:
        for name in names:
            with suppress(AttributeError):
                delattr(store, name)


def _by_method(spent: dict[str, list[float]]) -> dict[str, Any]:
    """Calls and seconds per Store method, costliest first."""
    return {
        name: {"calls": len(times), "s": round(sum(times), 4)}
        for name, times in sorted(spent.items(), key=lambda kv: -sum(kv[1]))
    }


def _status(
    settings: Any, open_store: Callable[[], Any], seed: Seed, reps: int
) -> tuple[dict[str, Any], Any, Any]:
    """/api/status cold and warm; returns the figures, the open store and its daemon."""
    from monitor.web.snapshot import build_snapshot

    store = open_store()
    daemon = _daemon(settings, store, seed)
    begin = time.perf_counter()
    snapshot = build_snapshot(daemon, daemon.now())
    cold = time.perf_counter() - begin
    assert len(snapshot["targets"]) == len(seed.targets)
    warm = []
    for _ in range(reps):
        begin = time.perf_counter()
        build_snapshot(daemon, daemon.now())
        warm.append(time.perf_counter() - begin)
    with _timed_methods(store) as spent:
        begin = time.perf_counter()
        build_snapshot(daemon, daemon.now())
        total = time.perf_counter() - begin
    out = {
        "build_snapshot_cold_s": round(cold, 4),
        "build_snapshot_warm_s": c.summary(warm),
        "api_status_asgi_uncached_s": asyncio.run(api_status_uncached(daemon, reps)),
        "one_warm_build": {
            "total_s": round(total, 4),
            "store_s": round(sum(sum(t) for t in spent.values()), 4),
            "store_by_method": _by_method(spent),
        },
        "summary_state": snapshot["summary"]["state"],
    }
    return out, store, daemon


def _plans(store: Any, backend: str, seed: Seed, daemon: Any) -> dict[str, Any]:
    """The statements behind the snapshot's costliest store calls, as the database plans
    them: EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    from monitor.figures.slo import Span
    from monitor.web.snapshot import CHART_POINTS, CHART_WINDOW_S

    now = daemon.now()
    target = seed.targets[0]
    start = now - timedelta(seconds=CHART_WINDOW_S)
    calls: dict[str, Callable[[], Any]] = {
        "latency_slots": lambda: store.latency_slots(
            target, start, now, CHART_WINDOW_S / CHART_POINTS
        ),
        "median_duration": lambda: store.median_duration(
            target, CHECKS[0], start, now, 1440 * len(seed.regions)
        ),
        "samples": lambda: store.samples(target, Span(start, now), HOLD_S),
        "sessions": lambda: store.sessions(Span(start, now), now),
        "region_views": lambda: store.region_views(target),
        "check_names": lambda: store.check_names(target),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        captured: list[tuple[str, Sequence[Any]]] = []
        original = store._query

        def capture(
            sql: str, params: Sequence[Any] = (), _orig: Any = original, _into: Any = captured
        ) -> Any:
            _into.append((sql, params))
            return _orig(sql, params)

        store._query = capture
        try:
            call()
        finally:
            del store._query
        times = []
        for _ in range(5):
            begin = time.perf_counter()
            call()
            times.append(time.perf_counter() - begin)
        plans: list[Any] = [{"call_ms_median_of_5": round(statistics.median(times) * 1e3, 2)}]
        for sql, params in captured:
            if backend == "postgresql":
                from monitor.store.postgres import _paramstyle

                with store._lock:
                    rows = store._conn.execute(
                        "EXPLAIN (ANALYZE, BUFFERS) " + _paramstyle(sql), params
                    ).fetchall()
                plan = [r[0] for r in rows]
            else:
                with store._lock:
                    rows = store._db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                plan = [r[-1] for r in rows]
            plans.append({"sql": sql, "plan": plan})
        out[name] = plans
    return out


_BATCHES = itertools.count(1)  # each batch of commits writes its own, later, minutes


def _cycles(store: Any, seed: Seed) -> Callable[[int, bool], Any]:
    """Cycle ``i`` of a new batch, observation or decided; the store leads (fenced)."""
    from monitor.incidents.quorum import RegionView
    from monitor.incidents.tracker import Incident, Phase, TrackerState
    from monitor.probing.results import TargetResult
    from monitor.store.base import NewAction, PendingCycle

    leader, follower = seed.regions[0], seed.regions[min(1, len(seed.regions) - 1)]
    store.fence(store.claim_leadership(leader, f"{leader}-1", seed.now))
    batch = next(_BATCHES)
    t0 = seed.now + timedelta(days=batch)  # after the seeded history and earlier batches
    ids = {t: f"{t}-bench-{batch}" for t in seed.targets}

    def cycle(i: int, decided: bool) -> Any:
        target = seed.targets[i % len(seed.targets)]
        at = t0 + timedelta(minutes=i // len(seed.targets), seconds=i % len(seed.targets))
        region = leader if decided else follower
        result = TargetResult(
            target, at, tuple(_check(target, ch, at, 0.05, "down") for ch in CHECKS)
        )
        view = RegionView(target, region, at, result.outcome, t0, i + 1, HOLD_S, result)
        if not decided:
            return PendingCycle(result, HOLD_S, None, None, (), region=region, view=view)
        incident = Incident(ids[target], target, t0, None, i + 1, i + 1)
        state = TrackerState(target, Phase.OPEN, i + 1, 0, t0, incident)
        action = NewAction("github", incident.id, target, "comment", {"body": f"probe {i}"})
        return PendingCycle(result, HOLD_S, state, incident, (action,), region=region, view=view)

    return cycle


KINDS = (("observation", False), ("decided_with_outbox_action", True))
WARMUP = 20


def _commits(store: Any, seed: Seed, commits: int, label: str) -> dict[str, Any]:
    """commit_cycle one at a time, each timed: observation cycles, then decided ones."""
    out: dict[str, Any] = {"warmup_commits_not_counted": WARMUP}
    for kind, decided in KINDS:
        cycle = _cycles(store, seed)
        pending = [cycle(i, decided) for i in range(commits + WARMUP)]
        times = []
        for n, one in enumerate(pending):
            begin = time.perf_counter()
            store.commit_cycle(one)
            if n >= WARMUP:
                times.append(time.perf_counter() - begin)
        out[kind + "_us"] = figures = percentiles(times)
        c.say(f"  {label} {kind}: median {figures['median']:.0f} us, p99 {figures['p99']:.0f} us")
    store.fence(None)
    return out


def _statements_per_commit(store: Any, seed: Seed) -> dict[str, int]:
    """Statements one commit of each kind sends, BEGIN and COMMIT included (PostgreSQL:
    a round trip each; psycopg pipelines an executemany into one)."""
    import monitor.store.postgres as pg

    counted = [0]
    execute, executemany = pg._PgTx.execute, pg._PgTx.executemany

    def count_execute(self: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        counted[0] += 1
        return execute(self, sql, params)

    def count_many(self: Any, sql: str, params: Any) -> None:
        counted[0] += 1
        executemany(self, sql, params)

    out = {}
    for kind, decided in KINDS:
        one = _cycles(store, seed)(0, decided)
        pg._PgTx.execute, pg._PgTx.executemany = count_execute, count_many  # type: ignore[method-assign]
        try:
            counted[0] = 0
            store.commit_cycle(one)
        finally:
            pg._PgTx.execute, pg._PgTx.executemany = execute, executemany  # type: ignore[method-assign]
        out[kind] = counted[0] + 2
    store.fence(None)
    return out


# ---- backends ---------------------------------------------------------------------------------


def _bench_postgres_class() -> type:
    from tests.pgserver import PostgresServer

    class BenchPostgres(PostgresServer):
        """``tests.pgserver``'s cluster, whose durability can be switched on for a restart:
        ``fsync`` and ``full_page_writes`` on, PostgreSQL's defaults (later ``-c`` options
        on the postgres command line override earlier ones)."""

        durable = False

        def _pg_ctl(self, *args: str) -> None:
            if self.durable and args[:1] == ("start",):
                at = args.index("-o") + 1
                extra = " -c fsync=on -c full_page_writes=on"
                args = (*args[:at], args[at] + extra, *args[at + 1 :])
            super()._pg_ctl(*args)

    return BenchPostgres


def _vacuum(store: Any) -> float:
    """VACUUM ANALYZE, as autovacuum does after a bulk change; seconds taken."""
    begin = time.perf_counter()
    with store._lock:
        store._conn.execute("VACUUM ANALYZE")
    return round(time.perf_counter() - begin, 1)


def _pg_settings(store: Any) -> dict[str, Any]:
    names = (
        "server_version", "fsync", "full_page_writes", "synchronous_commit", "wal_sync_method",
        "shared_buffers", "work_mem", "listen_addresses",
    )  # fmt: skip
    with store._lock:
        return {n: store._conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def _pg_size(store: Any) -> dict[str, Any]:
    with store._lock:
        total = store._conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        tables = store._conn.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables"
            " ORDER BY 2 DESC LIMIT 4"
        ).fetchall()
    return {
        "db_mb": round(total / 1e6, 1),
        "largest_mb": {r[0]: round(r[1] / 1e6, 1) for r in tables},
    }


def _rows(store: Any) -> dict[str, int]:
    return {
        table: int(store._query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])  # noqa: S608
        for table in ("check_results", "target_samples", "rollups", "region_views")
    }


def run_backend(
    backend: str, seed: Seed, tmp: Path, commits: int, reps: int, reads: int
) -> dict[str, Any]:
    """Load, roll up and measure one backend."""
    from monitor.store.sqlite import SqliteStore

    settings = settings_for(seed, tmp)
    out: dict[str, Any] = {"backend": backend}
    server = None
    try:
        if backend == "postgresql":
            from monitor.store.postgres import PostgresStore

            server = _bench_postgres_class()().start()
            url = server.create_database("bench")
            out["pgserver_start"] = "tests.pgserver.PostgresServer on 127.0.0.1"

            def open_store() -> Any:
                return PostgresStore(url)
        else:
            path = tmp / "backends.db"

            def open_store() -> Any:
                return SqliteStore(path)

        store = open_store()
        if backend == "postgresql":
            out["server"] = _pg_settings(store)
        out["load_s"] = round(load(store, seed), 1)
        c.say(f"{backend}: loaded in {out['load_s']} s")
        if backend == "postgresql":
            out["vacuum_analyze_after_load_s"] = _vacuum(store)
        out["rollup"] = _rollup(store, settings, seed.now)
        c.say(f"{backend}: rollup {out['rollup']}")
        if backend == "postgresql":
            out["vacuum_analyze_after_rollup_s"] = _vacuum(store)
        out["rows"] = _rows(store)
        if server is not None:
            out["size"] = _pg_size(store)
        store.close()
        if server is None:
            out["size"] = _sqlite_size(tmp / "backends.db")  # WAL checkpointed by close()
        if server is not None:
            server.restart()  # cold: shared buffers empty (the OS page cache is not)
        refresh_store = open_store()
        refresh_views(refresh_store, seed)
        refresh_store.close()
        status, store, daemon = _status(settings, open_store, seed, reps)
        out["status"] = status
        c.say(
            f"{backend}: build_snapshot cold {status['build_snapshot_cold_s'] * 1e3:.0f} ms,"
            f" warm {status['build_snapshot_warm_s']['median'] * 1e3:.0f} ms,"
            f" /api/status {status['api_status_asgi_uncached_s']['median'] * 1e3:.0f} ms"
        )
        out["region_views"] = _region_views(store, seed, reads)
        c.say(f"{backend}: region_views {out['region_views']['one_target_us']['median']} us")
        out["plans"] = _plans(store, backend, seed, daemon)
        out["commit"] = _commits(store, seed, commits, "main")
        if backend == "postgresql":
            out["commit"]["statements_per_commit"] = _statements_per_commit(store, seed)
            store.close()
            assert server is not None
            server.durable = True  # type: ignore[attr-defined]
            server.restart()
            store = open_store()
            out["server_durable"] = _pg_settings(store)
            assert out["server_durable"]["fsync"] == "on", out["server_durable"]
            out["commit_fsync_on"] = _commits(store, seed, commits, "fsync-on")
        else:
            with store._lock:
                store._db.execute("PRAGMA synchronous=FULL")
            out["commit_synchronous_full"] = _commits(store, seed, commits, "sync-full")
        store.close()
    finally:
        if server is not None:
            server.close()
    return out


def _sqlite_size(path: Path) -> dict[str, Any]:
    wal = path.with_name(path.name + "-wal")
    return {
        "db_mb": round(path.stat().st_size / 1e6, 1),
        "wal_mb": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0,
    }


def run(
    backends: Sequence[str],
    days: int,
    targets: int,
    regions: int,
    commits: int,
    reps: int,
    tmp: Path,
) -> dict[str, Any]:
    """The whole comparison: one seed, each backend in turn."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    begin = time.perf_counter()
    seed = generate(days, targets, regions, now)
    out: dict[str, Any] = {
        "days": days,
        "targets": targets,
        "checks": targets * len(CHECKS),
        "regions": seed.regions,
        "leader_region": seed.regions[0],
        "commits_per_kind": commits,
        "reps": reps,
        "generate_s": round(time.perf_counter() - begin, 1),
        "seeded_rows": seed.counts(),
    }
    c.say(f"generated {out['seeded_rows']} in {out['generate_s']} s")
    reads = max(50, commits // 2)
    for backend in backends:
        name = {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
        sub = tmp / name
        sub.mkdir()
        out[name] = run_backend(name, seed, sub, commits, reps, reads)
        shutil.rmtree(sub, ignore_errors=True)
    if "sqlite" in out and "postgresql" in out:
        out["postgresql_over_sqlite"] = _ratios(out["postgresql"], out["sqlite"])
    return out


def _ratios(pg: dict[str, Any], lite: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b > 0 and math.isfinite(a / b) else None

    out = {
        "commit_observation_median": ratio(
            pg["commit"]["observation_us"]["median"], lite["commit"]["observation_us"]["median"]
        ),
        "commit_decided_median": ratio(
            pg["commit"]["decided_with_outbox_action_us"]["median"],
            lite["commit"]["decided_with_outbox_action_us"]["median"],
        ),
        "build_snapshot_cold": ratio(
            pg["status"]["build_snapshot_cold_s"], lite["status"]["build_snapshot_cold_s"]
        ),
        "build_snapshot_warm_median": ratio(
            pg["status"]["build_snapshot_warm_s"]["median"],
            lite["status"]["build_snapshot_warm_s"]["median"],
        ),
        "region_views_one_target_median": ratio(
            pg["region_views"]["one_target_us"]["median"],
            lite["region_views"]["one_target_us"]["median"],
        ),
    }
    return out
