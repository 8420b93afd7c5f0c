"""Does the probe engine scale linearly? Time per check at 1,000 and at 10,000, same run.

    python bench/linearity.py             # 1,000 and 10,000 checks, 3 repetitions (~2 min)
    python bench/linearity.py --quick     # smoke: 100 and 1,000 checks, 1 repetition

Each repetition runs, sizes alternately, over N checks, 100 checks to a target, against
one local server (nginx when installed):

* ``monitor check``'s probe path (``release.check.probe_until_healthy`` on a fresh
  ``Prober``): the top-level figures;
* ``monitor run``'s (``monitor_run``): one long-lived daemon per size, its results
  recorded, its pool emptied before each cycle (``_common.DaemonCycle``); its probe path
  is the cycle minus the recording.

The figure is the time per check at the large size over the time per check at the small
one (bar: <= 1.2), and every probe that was not up, by reason: a time-out against a
server that answers in microseconds is the engine's fault, never the target's.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c

BAR_RATIO = 1.2
PER_TARGET = 100


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="small,large (1000,10000)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (3)")
    p.add_argument("--server", choices=["auto", "nginx", "raw"], default="auto")
    args = p.parse_args()
    small, large = (
        (int(n) for n in args.sizes.split(","))
        if args.sizes
        else ((100, 1000) if args.quick else (1000, 10_000))
    )
    reps = args.reps or (1 if args.quick else 3)
    c.null_logging()
    with c.local_target(args.server) as target, tempfile.TemporaryDirectory() as tmp:
        capacity = c.server_capacity(target.port, target.url, args.quick)
        result = asyncio.run(run(target, Path(tmp), small, large, reps))
    result["server"] = {"kind": target.kind, **capacity}
    c.emit(result, args.out)


async def run(target: c.LocalTarget, tmp: Path, small: int, large: int, reps: int) -> dict:
    from monitor.release.check import probe_until_healthy

    sizes = (small, large)
    settings = {n: c.target_settings(target.url, n, tmp / "unused.db", PER_TARGET) for n in sizes}
    not_up: dict[int, Counter[str]] = {n: Counter() for n in sizes}
    seconds: dict[int, list[float]] = {n: [] for n in sizes}
    daemons = {n: c.DaemonCycle(settings[n], tmp / f"run-{n}.db") for n in sizes}
    run_not_up: dict[int, Counter[str]] = {n: Counter() for n in sizes}
    run_s: dict[int, list[float]] = {n: [] for n in sizes}
    run_probe_path_s: dict[int, list[float]] = {n: [] for n in sizes}

    def count(counter: Counter[str], results: list[Any]) -> None:
        for check in (check for r in results for check in r.checks):
            if check.outcome.value != "up":
                counter[check.reason.value] += 1

    async def cycle(n: int) -> float:
        start = time.perf_counter()
        _, results = await probe_until_healthy(settings[n], 0, 0, lambda *_: None)
        elapsed = time.perf_counter() - start
        count(not_up[n], results)
        return elapsed

    async def run_cycle(n: int) -> None:
        elapsed, recorded, results = await daemons[n].cycle()
        count(run_not_up[n], results)
        run_s[n].append(elapsed)
        run_probe_path_s[n].append(elapsed - recorded)

    await cycle(small)  # warm-up: imports and first calls
    for n in sizes:  # the daemons' first cycles build their requests and first rows
        await daemons[n].cycle()
    for counter in not_up.values():
        counter.clear()
    for rep in range(reps):
        for n in sizes if rep % 2 == 0 else sizes[::-1]:
            seconds[n].append(await cycle(n))
            await run_cycle(n)
        c.say(
            f"rep {rep + 1}/{reps}: "
            + "  ".join(f"check {n} {s[-1]:.2f}s" for n, s in seconds.items())
            + "  "
            + "  ".join(f"run {n} {s[-1]:.2f}s" for n, s in run_s.items())
        )
    for daemon in daemons.values():
        await daemon.aclose()

    def per_check(cycles: dict[int, list[float]]) -> tuple[dict[int, list[float]], dict]:
        """Microseconds per check at each size, and the large size's over the small's."""
        us = {n: [s / n * 1e6 for s in cycles[n]] for n in sizes}
        return us, c.ratios(us[large], us[small])

    check_us, ratio = per_check(seconds)
    run_us, run_ratio = per_check(run_s)
    path_us, path_ratio = per_check(run_probe_path_s)
    return {
        "bench": "linearity",
        "sizes": sizes,
        "checks_per_target": PER_TARGET,
        "reps": reps,
        "cycle_s": {str(n): c.summary(seconds[n]) for n in sizes},
        "us_per_check": {str(n): c.summary(check_us[n], 1) for n in sizes},
        "ratio_per_check_large_over_small": ratio,
        "bar": {
            "ratio_max": BAR_RATIO,
            "met": ratio["median"] <= BAR_RATIO and run_ratio["median"] <= BAR_RATIO,
        },
        "not_up": {str(n): dict(counter) for n, counter in not_up.items()},
        "timeouts": {str(n): not_up[n].get("timeout", 0) for n in sizes},
        "monitor_run": {
            "cycle_s": {str(n): c.summary(run_s[n]) for n in sizes},
            "us_per_check": {str(n): c.summary(run_us[n], 1) for n in sizes},
            "ratio_per_check_large_over_small": run_ratio,
            "probe_path_us_per_check": {str(n): c.summary(path_us[n], 1) for n in sizes},
            "probe_path_ratio_large_over_small": path_ratio,
            "not_up": {str(n): dict(counter) for n, counter in run_not_up.items()},
            "timeouts": {str(n): run_not_up[n].get("timeout", 0) for n in sizes},
        },
    }


if __name__ == "__main__":
    main()
