"""The real daemon with a check that cannot tell: a prometheus check whose Prometheus is
away (a refused port), beside a healthy HTTP check.

The target is *unknown* on the page, in ``/api/status`` and in the metrics (no
``target_up``, ``probe_unknown`` 1); a real outage of the HTTP check still opens an
incident (down beats unknown), and its recovery closes it although Prometheus is still
away (what failed is good again).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    http_get,
    toml_value,
    wait_for,
    write_config,
)
from tests.ports import free_port
from tests.targets import TargetServer, respond

HOST = "127.0.0.1"


def status(daemon: DaemonProcess) -> dict[str, Any]:
    """The one target of ``/api/status``."""
    [target] = daemon.api_status()["targets"]
    return dict(target)


def test_unknown_is_shown_and_holds_nothing_that_recovered(
    target_server: TargetServer, daemons: Daemons, tmp_path: Path
) -> None:
    """Unknown on the page and in the metrics; a health outage opens and closes on time
    while the error-rate check cannot tell."""
    target_server.route("/health", respond(200, b"ok"))
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state" / "monitor.db",
        target="production",
    )
    away = f"http://{HOST}:{free_port()}"
    with config.open("a", encoding="utf-8") as file:
        file.write(
            "\n[[targets.checks]]\n"
            'name = "error-rate"\ntype = "prometheus"\n'
            f"url = {toml_value(away)}\nquery = {toml_value('vector(0)')}\nmax = 0.05\n"
        )
    daemon: DaemonProcess = daemons.start(config, clean_env())
    daemon.wait_healthy()

    def probed_unknown() -> dict[str, Any] | None:
        # "unknown" before the first probe too (not probed yet): wait for the checks
        target = status(daemon)
        return target if target["state"] == "unknown" and target["checks"] else None

    target = wait_for(probed_unknown, 10, "unknown after a probe", daemon.logs)
    checks = {c["name"]: c for c in target["checks"]}
    assert checks["health"]["state"] == "up"
    assert (checks["error-rate"]["state"], checks["error-rate"]["reason"]) == ("unknown", "connect")
    assert daemon.value("monitor_probe_unknown", target="production", check="error-rate") == 1
    assert daemon.value("monitor_probe_success", target="production", check="error-rate") is None
    assert daemon.value("monitor_target_up", target="production") is None
    code, page = http_get(f"{daemon.base_url}/status")
    assert code == 200
    assert "not probing" not in page
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "monitor.db")) as db:
        outcomes = {row[0] for row in db.execute("SELECT outcome FROM target_samples")}
    assert outcomes == {"unknown"}  # what uptime reads: the time is not counted as up

    target_server.set("/health", respond(503))
    wait_for(lambda: status(daemon)["open_incident"], 15, "the incident", daemon.logs)
    assert daemon.value("monitor_target_up", target="production") == 0

    target_server.set("/health", respond(200, b"ok"))
    wait_for(lambda: status(daemon)["open_incident"] is None, 15, "the resolution", daemon.logs)
    [resolved] = daemon.events("incident resolved")
    assert resolved["duration_s"] > 0
