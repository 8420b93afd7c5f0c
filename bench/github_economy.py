"""GitHub economy: REST requests per incident lifecycle and while healthy, and rate headroom.

    python bench/github_economy.py            # 2 healthy minutes, 4 lifecycles (~3 min)
    python bench/github_economy.py --quick    # smoke: 5 healthy seconds, 2 lifecycles

The real daemon (``monitor run`` subprocess) against the fake GitHub in this process,
every request counted at the fake. Phases: start-up (reconcile), N minutes healthy at a
1 s cadence with housekeeping every second (bar: no request beyond the start-up
reconcile), then incidents: open, held failing past one ``reminder_interval`` (5 s here,
so exactly one reminder), resolve. From the counts: requests per hour needed at 100
concurrent incidents against the 5,000/h primary limit, and content-creating requests
against GitHub's documented secondary limits (80/minute, 500/hour).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c
import _incident as inc

REMINDER_S = 5.0  # > the open and resolve paths, so one reminder falls between them
PRIMARY_LIMIT_PER_H = 5000
CONTENT_LIMIT_PER_MIN = 80
CONTENT_LIMIT_PER_H = 500
CONCURRENT = 100


def _shape(call: inc.GitHubCall) -> str:
    path = re.sub(r"/issues/\d+", "/issues/{n}", call.path)
    path = re.sub(r"/labels/[^/]+$", "/labels/{name}", path)
    return f"{call.method} {path}"


def _counts(calls: list[inc.GitHubCall]) -> dict[str, Any]:
    return {
        "total": len(calls),
        "writes": sum(1 for call in calls if call.method in ("POST", "PATCH", "PUT", "DELETE")),
        "by_request": dict(Counter(_shape(call) for call in calls)),
    }


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--healthy-s", type=float, default=None, help="healthy phase (default 120)")
    p.add_argument("--reps", type=int, default=None, help="lifecycles (default 3)")
    p.add_argument(
        "--labels-exist", action="store_true", help="the fake repository has the labels already"
    )
    args = p.parse_args()
    healthy_s = args.healthy_s or (5.0 if args.quick else 120.0)
    reps = args.reps or (2 if args.quick else 4)
    c.null_logging()
    with (
        tempfile.TemporaryDirectory(prefix="bench-economy-") as tmp,
        inc.servers(args.labels_exist) as (
            switch,
            github,
            target,
        ),
    ):
        config = inc.config_for(
            Path(tmp),
            target.url,
            github.url,
            Path(tmp) / "state" / "monitor.db",
            reminder_interval=REMINDER_S,
            metrics_refresh=1,
        )
        started = time.time()
        with inc.subprocess_daemon(config, Path(tmp)):
            inc.wait_for(lambda: len(switch.hits) >= 2, "the first probes")
            inc.wait_for(lambda: github.calls, "start-up reconcile")
            time.sleep(2.0)
            startup_end = time.time()
            c.say(f"healthy for {healthy_s:.0f} s ...")
            time.sleep(healthy_s)
            healthy_end = time.time()
            probes_healthy = len([h for h in switch.hits if startup_end <= h[0] < healthy_end])
            lifecycles = []
            for rep in range(reps):
                lc = inc.lifecycle(switch, github, 3, 2, reminders=1)
                lifecycles.append(
                    {
                        "open": _counts(lc.calls_open),
                        "reminder_hold": _counts(lc.calls_hold),
                        "resolve": _counts(lc.calls_resolve),
                        "open_path_s": round(lc.opened - lc.confirm_fail, 3),
                        "resolve_path_s": round(lc.closed - lc.confirm_good, 3),
                    }
                )
                c.say(f"  lifecycle {rep + 1}: {lifecycles[-1]}")
                time.sleep(1.5)
        startup = github.calls_between(started, startup_end)
        healthy = github.calls_between(startup_end, healthy_end)
    steady = lifecycles[1:] or lifecycles
    per = {
        phase: c.summary([lc[phase]["total"] for lc in steady], 1)
        for phase in ("open", "reminder_hold", "resolve")
    }
    writes = {
        phase: c.summary([lc[phase]["writes"] for lc in steady], 1)
        for phase in ("open", "reminder_hold", "resolve")
    }
    result: dict[str, Any] = {
        "bench": "github_economy",
        "startup": _counts(startup),
        "healthy": {
            "seconds": healthy_s,
            "probes": probes_healthy,
            "requests": _counts(healthy),
            "bar_met": len(healthy) == 0,
        },
        "lifecycles": lifecycles,
        "per_lifecycle_steady": per,
        "writes_per_lifecycle_steady": writes,
        "headroom_at_100_incidents": headroom(per, writes),
    }
    c.emit(result, args.out)


def headroom(per: dict[str, Any], writes: dict[str, Any]) -> dict[str, Any]:
    """Requests per hour at 100 concurrent incidents (reminders hourly, the default)."""
    opened = per["open"]["median"]
    reminder = per["reminder_hold"]["median"]
    resolved = per["resolve"]["median"]
    steady = CONCURRENT * reminder
    worst = CONCURRENT * (opened + reminder + resolved)
    content_worst = CONCURRENT * (
        writes["open"]["median"] + writes["reminder_hold"]["median"] + writes["resolve"]["median"]
    )
    return {
        "steady_requests_per_h": steady,
        "steady_share_of_5000": round(steady / PRIMARY_LIMIT_PER_H, 3),
        "worst_hour_requests": worst,
        "worst_hour_share_of_5000": round(worst / PRIMARY_LIMIT_PER_H, 3),
        "worst_hour_writes": content_worst,
        "secondary_limits": {
            "content_per_min": CONTENT_LIMIT_PER_MIN,
            "content_per_h": CONTENT_LIMIT_PER_H,
            "note": "writes are at most 240/min here: the sink spaces writes 0.25 s apart (monitor.incidents.channels.github.WRITE_GAP_S)",
        },
        "assumption": "each incident opens, gets one hourly reminder and resolves within the hour",
    }


if __name__ == "__main__":
    main()
