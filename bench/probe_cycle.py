"""Probe engine overhead: one cycle of N checks through the daemon vs bare aiohttp.

    python bench/probe_cycle.py                 # 1,000 checks, 5 repetitions (~2 min)
    python bench/probe_cycle.py --checks 10000 --reps 3 --variants daemon,bare_aiohttp
    python bench/probe_cycle.py --per-target 100   # 10 targets of 100 checks
    python bench/probe_cycle.py --profile /tmp/prof   # + pyinstrument of one daemon cycle
    python bench/probe_cycle.py --quick         # smoke: 100 checks, 1 repetition

The daemon's side is ``asyncio.gather(*(daemon.probe(name) ...))`` on a ``Daemon`` with N
checks (one per target unless ``--per-target``), a real SQLite store in a temp dir and
the journal sink: the exact per-target path ``monitor run`` takes (probe through the
shared ``Prober``, metrics, tracker, SQLite commit, outbox, the JSON log line rendered to
/dev/null), committing per turn of the event loop as ``monitor run`` does. ``record_s`` is
the time spent in ``Daemon.record`` and in the writer's flushes (the commits and the log
lines), the per-result work outside the network. The floor is bare ``aiohttp`` doing the
same N GETs under an ``asyncio.Semaphore`` of the same size; ``bare_httpx_on_aiohttp`` is the same GETs
through ``httpx.AsyncClient.get`` on the daemon's own transport: what the httpx API
costs by itself. For comparison, the engine before issue 16:
``daemon_httpcore`` (the Prober on httpx's own transport) and ``bare_httpx``; and,
when the package is installed, ``daemon_httpx_aiohttp``: the Prober on the
``httpx-aiohttp`` transport, the candidate engine we measured and did not take. Each
repetition measures every variant side by side, in a rotated order, twice:

* cold: on a fresh connection pool. This is what production sees: at a 15-minute (or
  1-minute) cadence every pooled connection has passed the 5 s keep-alive expiry.
* warm: the same pool again, immediately after.

The target is nginx (``apt-get install nginx-light``) or, without it, a raw asyncio
server in its own process; its capacity is load-tested first and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common as c

ALL_VARIANTS = (
    "daemon",
    "bare_aiohttp",
    "bare_httpx_on_aiohttp",
    "daemon_httpcore",
    "bare_httpx",
    "daemon_httpx_aiohttp",
)
BAR_RATIO = 2.0  # the daemon's cycle over bare aiohttp's


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=None, help="checks per cycle (default 1000)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5)")
    p.add_argument("--concurrency", type=int, default=None, help="default: monitor.concurrency")
    p.add_argument("--per-target", type=int, default=1, help="checks per target (1)")
    p.add_argument("--server", choices=["auto", "nginx", "raw"], default="auto")
    p.add_argument("--variants", default=",".join(ALL_VARIANTS))
    p.add_argument("--phases", default="cold,warm", help="cold,warm (default both)")
    p.add_argument("--profile", type=Path, help="write pyinstrument profiles of one cycle here")
    args = p.parse_args()
    checks = args.checks or (100 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 5)
    variants = [v for v in args.variants.split(",") if v]
    if importlib.util.find_spec("httpx_aiohttp") is None and "daemon_httpx_aiohttp" in variants:
        variants.remove("daemon_httpx_aiohttp")  # not a dependency: measured where installed
    c.null_logging()
    with c.local_target(args.server) as target, tempfile.TemporaryDirectory() as tmp:
        c.say(f"target: {target.kind} at {target.url}; load-testing it ...")
        capacity = c.server_capacity(target.port, target.url, args.quick)
        c.say(f"  capacity: {capacity}")
        result = asyncio.run(
            run(
                target,
                Path(tmp),
                checks,
                reps,
                args.concurrency,
                args.per_target,
                variants,
                args.phases.split(","),
                args.profile,
            )
        )
    result["server"] = {"kind": target.kind, **capacity}
    c.emit(result, args.out)


async def run(
    target: c.LocalTarget,
    tmp: Path,
    checks: int,
    reps: int,
    concurrency: int | None,
    per_target: int,
    variants: list[str],
    phases: list[str],
    profile_dir: Path | None,
) -> dict[str, Any]:
    import httpx

    from monitor.daemon.daemon import Daemon
    from monitor.heap import freeze_startup_objects
    from monitor.incidents.channels.journal import JournalChannel
    from monitor.metrics import Metrics
    from monitor.probing.prober import Prober
    from monitor.store.sqlite import SqliteStore

    state = tmp / "monitor.db"
    overrides = {"concurrency": concurrency} if concurrency else {}
    settings = c.target_settings(target.url, checks, state, per_target, **overrides)
    conc = settings.monitor.concurrency
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    urls = [t.check_url(check) for t in settings.targets for check in t.checks]
    names = [t.name for t in settings.targets]
    store = SqliteStore(state)
    setup_s: list[float] = []

    def new_daemon(transport: Any = None, per_turn: bool = True) -> tuple[Any, Any, Any]:
        start = time.perf_counter()
        prober = Prober(settings.monitor, transport=transport)
        daemon = Daemon(
            settings, store=store, channels=[JournalChannel()], metrics=Metrics(), prober=prober
        )
        timer = c.time_recording(daemon, per_turn=per_turn)
        freeze_startup_objects()  # as `monitor run` does once its daemon is built
        setup_s.append(time.perf_counter() - start)
        return daemon, prober, timer

    failures: list[dict[str, Any]] = []  # every check that was not up, with its reason

    async def daemon_cycle(daemon: Any, variant: str) -> int:
        results = await asyncio.gather(*(daemon.probe(name) for name in names))
        for r in results:
            for check in r.checks:
                if check.outcome.value != "up":
                    failures.append(
                        {
                            "variant": variant,
                            "reason": check.reason.value,
                            "detail": check.detail,
                            "duration_s": round(check.duration_s, 3),
                        }
                    )
        return sum(1 for r in results for check in r.checks if check.outcome.value == "up")

    async def bare_httpx_cycle(client: httpx.AsyncClient) -> int:
        gate = asyncio.Semaphore(conc)

        async def one(url: str) -> int:
            async with gate:
                start = time.perf_counter()
                try:
                    response = await client.get(url, timeout=settings.monitor.timeout)
                except httpx.HTTPError as exc:
                    failures.append(
                        {
                            "variant": "bare_httpx",
                            "reason": type(exc).__name__,
                            "detail": str(exc)[:200],
                            "duration_s": round(time.perf_counter() - start, 3),
                        }
                    )
                    return 0
                return response.status_code

        codes = await asyncio.gather(*(one(u) for u in urls))
        return sum(1 for code in codes if code == 200)

    async def bare_aiohttp_cycle(session: Any) -> int:
        codes = await c.aiohttp_gets(session, urls, conc)
        return sum(1 for code in codes if code == 200)

    def other_transport(variant: str) -> Any:
        if variant == "daemon_httpcore":  # the engine before issue 16
            return httpx.AsyncHTTPTransport(limits=limits)
        from httpx_aiohttp import AiohttpTransport  # the candidate not taken

        return AiohttpTransport(limits=limits)

    async def measure(make: Callable[[], Awaitable[tuple[Any, Any, Callable[[], Any]]]]) -> dict:
        """(cold, warm) wall and CPU seconds of one variant, from a fresh pool."""
        subject, cycle, close = await make()
        out: dict[str, Any] = {}
        try:
            for phase in phases:
                gc.collect()
                timer = subject if isinstance(subject, c.TimedRecord) else None
                before_ours = timer.seconds if timer else 0.0
                cpu0, wall0 = time.process_time(), time.perf_counter()
                ok = await cycle()
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                if ok != checks:
                    c.say(f"  {checks - ok} of {checks} checks not up: {failures[-1:]}")
                out[phase] = {"wall_s": wall, "cpu_s": cpu, "not_up": checks - ok}
                if timer:
                    out[phase]["record_s"] = timer.seconds - before_ours
        finally:
            await close()
        return out

    def maker(variant: str) -> Callable[[], Awaitable[tuple[Any, Any, Any]]]:
        async def make() -> tuple[Any, Any, Any]:
            if variant.startswith("daemon"):
                transport = other_transport(variant) if variant != "daemon" else None
                daemon, prober, timer = new_daemon(transport)
                return timer, lambda: daemon_cycle(daemon, variant), prober.aclose
            if variant in ("bare_httpx", "bare_httpx_on_aiohttp"):
                from monitor.probing.transport import AiohttpTransport

                ours = AiohttpTransport(True, max_connections=conc, keepalive_s=5.0)
                transport = ours if variant == "bare_httpx_on_aiohttp" else None
                client = httpx.AsyncClient(limits=limits, transport=transport)
                return None, lambda: bare_httpx_cycle(client), client.aclose
            import aiohttp

            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))
            return None, lambda: bare_aiohttp_cycle(session), session.close

        return make

    if checks <= 2000:  # a 10,000-check cycle dwarfs first-call costs: no warm-up there
        c.say(f"warm-up: one cycle of each variant ({', '.join(variants)}) ...")
        for variant in variants:
            await measure(maker(variant))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(reps if variants else 0):  # --variants "": record_only alone
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for variant in order:
            runs[variant].append(await measure(maker(variant)))
        line = "  ".join(
            f"{v} " + "/".join(f"{runs[v][-1][ph]['wall_s']:.2f}" for ph in phases) + "s"
            for v in variants
        )
        c.say(f"rep {rep + 1}/{reps} ({'/'.join(phases)}): {line}")

    figures: dict[str, Any] = {}
    for variant, measured in runs.items():
        figures[variant] = {}
        for phase in phases:
            walls = [m[phase]["wall_s"] for m in measured]
            entry = {
                "wall_s": c.summary(walls),
                "cpu_s": c.summary([m[phase]["cpu_s"] for m in measured]),
                "checks_per_s": round(checks / sorted(walls)[len(walls) // 2]),
                "not_up_total": sum(m[phase]["not_up"] for m in measured),
            }
            if "record_s" in measured[0][phase]:
                entry["record_s"] = c.summary([m[phase]["record_s"] for m in measured])
                entry["record_share_of_wall"] = c.summary(
                    [m[phase]["record_s"] / m[phase]["wall_s"] for m in measured], 3
                )
            figures[variant][phase] = entry
    result: dict[str, Any] = {
        "bench": "probe_cycle",
        "checks": checks,
        "concurrency": conc,
        "limits": {"max_connections": conc, "max_keepalive_connections": conc},
        "reps": reps,
        "variants": figures,
        "daemon_setup_s": c.summary(setup_s),
        "failures_total": len(failures),
        "failures": failures[:50],
    }
    for ours, theirs in (("daemon", "bare_aiohttp"), ("daemon_httpcore", "bare_httpx")):
        if ours in runs and theirs in runs:
            result[f"ratio_{ours}_over_{theirs}"] = {
                phase: c.ratios(
                    [m[phase]["wall_s"] for m in runs[ours]],
                    [m[phase]["wall_s"] for m in runs[theirs]],
                )
                for phase in phases
            }
    if "ratio_daemon_over_bare_aiohttp" in result:
        result["bar"] = {"ratio_max": BAR_RATIO}
        for phase in phases:
            median = result["ratio_daemon_over_bare_aiohttp"][phase]["median"]
            result["bar"][f"met_{phase}"] = median <= BAR_RATIO
    result["record_only"] = await record_only(new_daemon, settings, checks, reps, profile_dir)
    if profile_dir is not None:
        result["profile"] = await profile(profile_dir, maker, variants)
    store.close()
    return result


async def record_only(
    new_daemon: Callable[..., tuple[Any, Any, c.TimedRecord]],
    settings: Any,
    checks: int,
    reps: int,
    profile_dir: Path | None,
) -> dict[str, Any]:
    """``Daemon.record`` alone over N ready results: our bookkeeping without the network.

    Metrics, tracker step, SQLite commit, outbox check, the JSON log line. Measured on a
    daemon whose first cycle is done, i.e. the steady state, with one transaction per
    target result: the most it costs (in a cycle of `monitor run` the results that
    complete in one turn of the loop share one).
    """
    from datetime import UTC, datetime, timedelta

    from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

    daemon, prober, _ = new_daemon(per_turn=False)
    record = daemon.record
    t0 = datetime.now(UTC).replace(microsecond=0)

    def results(offset: int) -> list[Any]:
        at = t0 + timedelta(seconds=offset)
        return [
            TargetResult(
                t.name,
                at,
                tuple(
                    CheckResult(
                        t.name,
                        check.name,
                        t.check_url(check),
                        at,
                        0.002,
                        Outcome.UP,
                        Reason.OK,
                        "200 in 2 ms",
                        200,
                    )
                    for check in t.checks
                ),
            )
            for t in settings.targets
        ]

    start = time.perf_counter()
    for result in results(0):  # the first cycle after start also arms the reconcile
        record(result)
    first_cycle_s = time.perf_counter() - start
    per_result = []
    for rep in range(reps):
        batch = results(rep + 1)
        start = time.perf_counter()
        for result in batch:
            record(result)
        per_result.append((time.perf_counter() - start) / len(batch))
    targets = len(settings.targets)
    out: dict[str, Any] = {
        "targets": targets,
        "checks": checks,
        "record_us_per_target_result": c.summary([s * 1e6 for s in per_result], 1),
        "record_us_per_check_result": c.summary(
            [s * 1e6 * targets / checks for s in per_result], 1
        ),
        "first_cycle_record_us_per_target_result": round(first_cycle_s / targets * 1e6, 1),
    }
    if profile_dir is not None:
        from pyinstrument import Profiler

        batch = results(reps + 1)
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        for result in batch:
            record(result)
        profiler.stop()
        profile_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - outside the timing
        (profile_dir / "probe_cycle_record_only.txt").write_text(
            profiler.output_text(unicode=False, color=False)
        )
        out["profile"] = c.profile_shares(profiler)
    await prober.aclose()
    return out


async def profile(
    directory: Path, maker: Callable[[str], Callable[[], Awaitable[Any]]], variants: list[str]
) -> dict[str, Any]:
    """pyinstrument over one cold daemon cycle and one cold bare-httpx cycle."""
    from pyinstrument import Profiler

    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - outside the timing
    out: dict[str, Any] = {}
    for variant in ("daemon", "bare_httpx", "daemon_aiohttp_transport"):
        if variant not in variants:
            continue
        _, cycle, close = await maker(variant)()
        profiler = Profiler(interval=0.001, async_mode="disabled")
        try:
            profiler.start()
            await cycle()
        finally:
            with contextlib.suppress(RuntimeError):
                profiler.stop()
            await close()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (directory / f"probe_cycle_{variant}.txt").write_text(text)
        (directory / f"probe_cycle_{variant}.html").write_text(profiler.output_html())
        out[variant] = c.profile_shares(profiler)
        c.say(f"profile {variant}: {out[variant]['share_by_package']}")
    return out


if __name__ == "__main__":
    main()
