"""``monitor kpis``: sync with GitHub (unless offline), then print the table or JSON.

Exit codes as the other commands: 0, 1 when ``--check`` finds a KPI with data
missing its objective (or the store cannot be read), 2 for bad usage.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TextIO

from monitor.config import Settings
from monitor.figures.history import History
from monitor.figures.slo import Span
from monitor.kpis.report import objective_text, render_table, value_text
from monitor.kpis.sync import KpiSync
from monitor.kpis.table import kpi_table
from monitor.store.base import StoreError
from monitor.store.factory import open_store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def run_kpis(
    settings: Settings,
    window: tuple[datetime, datetime],
    now: datetime,
    *,
    as_json: bool,
    check: bool,
    offline: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """Print the KPI table over ``window``; see the module docstring for exit codes."""
    local = settings.monitor.database_url is None
    sync_wanted = not offline and settings.kpis.enabled and settings.github.active
    if local and not sync_wanted and not settings.monitor.state_path.exists():
        err.write(
            f"monitor: no state database at {settings.monitor.state_path} (monitor.state_path)"
            " and no GitHub to read (github.repository and a token); has the daemon run?\n"
        )
        return EXIT_CONFIG
    try:
        store = open_store(settings)
        try:
            if sync_wanted:
                state = KpiSync(store, settings, lambda: now).sync(now)
                if state.error:
                    err.write(
                        f"monitor: GitHub sync failed, figures use older data: {state.error}\n"
                    )
            table = kpi_table(History(store, settings), settings, Span(*window), now)
        finally:
            store.close()
    except StoreError as exc:
        err.write(f"monitor: cannot read the state database: {exc}\n")
        return EXIT_FAILED
    if as_json:
        json.dump(table.as_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(render_table(table))
    if check and table.missed:
        for kpi in table.missed:
            err.write(
                f"monitor: KPI missed: {kpi.key} = {value_text(kpi.key, kpi.value)}"
                f" (objective {objective_text(kpi)})\n"
            )
        return EXIT_FAILED
    return EXIT_OK
