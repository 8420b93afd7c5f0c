"""KPI sync economy: GitHub requests per hour in steady state, and the first sync's cost.

    python bench/kpi_sync.py            # 90 days of history, then 3 steady days
    python bench/kpi_sync.py --quick    # smoke: 7 days of history, 1 steady day

The real ``KpiSync`` against the fake GitHub in this process (every request counted
there, 304s apart), with the shipped ``sync_interval`` (15 minutes) and a team that
deploys 10 times a day, each deployment with a test and a security run and a
Lighthouse status. The bar (issue 14): under 60 requests an hour in steady state.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c

from monitor.config import load_settings
from monitor.kpis.sync import KpiSync
from monitor.store.sqlite import SqliteStore
from tests import kpi_fixture as fx
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

BAR_PER_HOUR = 60
DAY0 = datetime(2026, 9, 1, tzinfo=UTC)


def _settings(tmp: Path, api_url: str) -> Path:
    path = tmp / "config.toml"
    path.write_text(fx.config_text(tmp / "state.db", api_url), encoding="utf-8")
    return path


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--history-days", type=int, default=None, help="days before the first sync")
    p.add_argument("--days", type=int, default=None, help="steady days measured")
    p.add_argument("--deployments", type=int, default=10, help="deployments a day")
    args = p.parse_args()
    history_days = args.history_days or (7 if args.quick else 90)
    days = args.days or (1 if args.quick else 3)
    c.null_logging()
    os.environ["GITHUB_TOKEN"] = DEFAULT_TOKEN
    with tempfile.TemporaryDirectory(prefix="bench-kpi-") as tmp, FakeGitHub() as fake:
        settings = load_settings(_settings(Path(tmp), fake.url))
        store = SqliteStore(Path(tmp) / "state.db")
        try:
            sync = KpiSync(store, settings, lambda: DAY0)

            # the workflows the config names exist (the rollback one seldom runs)
            for path, name in (("ci.yml", "CI"), ("security.yml", "Security")):
                fake.add_workflow(DEFAULT_REPO, f".github/workflows/{path}", name)
            fake.add_workflow(DEFAULT_REPO, ".github/workflows/rollback-production.yml", "Rollback")
            # history nobody synced: the first sync reads all of it
            for day in range(history_days):
                fx.steady_day(
                    fake,
                    lambda _moment: fx.SyncState(),
                    DAY0 + timedelta(days=day),
                    deployments=args.deployments,
                )
            first_at = DAY0 + timedelta(days=history_days)
            before = len(fake.requests)
            state = sync.sync(first_at)
            first = {"requests": len(fake.requests) - before, "error": state.error}
            steady = []
            for day in range(days):
                spent = fx.steady_day(
                    fake, sync.sync, first_at + timedelta(days=day), deployments=args.deployments
                )
                steady.append(
                    {
                        "requests": spent.requests,
                        "not_modified": spent.not_modified,
                        "syncs": spent.syncs,
                        "deployments": spent.deployments,
                        "per_hour": spent.requests / 24,
                        "rate_limited_per_hour": (spent.requests - spent.not_modified) / 24,
                    }
                )
        finally:
            store.close()
    worst = max(s["per_hour"] for s in steady)
    result = {
        "bench": "kpi_sync",
        "machine": c.machine(),
        "history_days": history_days,
        "deployments_per_day": args.deployments,
        "sync_interval_s": 900,
        "first_sync": first,
        "steady_days": steady,
        "worst_requests_per_hour": worst,
        "bar_requests_per_hour": BAR_PER_HOUR,
        "within_bar": worst < BAR_PER_HOUR,
    }
    c.say(f"first sync over {history_days} days: {first['requests']} requests")
    c.say(f"steady state: {worst:.1f} requests/h at worst (bar {BAR_PER_HOUR})")
    c.emit(result, args.out)


if __name__ == "__main__":
    main()
