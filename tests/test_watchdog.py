"""The stall watchdog: a loop that stops completing cycles exits non-zero (Fly restarts it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from monitor.config import load_settings
from monitor.daemon.daemon import STALL_EXIT_CODE, Daemon
from monitor.incidents.channels.journal import JournalChannel
from monitor.metrics import Metrics
from monitor.store.sqlite import SqliteStore
from tests.ports import free_port


class Monotonic:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_names_stale_targets(tmp_path: Path) -> None:
    """No completed cycle for stall_after cadences: /healthz is unhealthy and says which target."""
    settings = load_settings(
        None,
        monitor={"state_path": str(tmp_path / "s.db"), "interval": 60, "incident_interval": 10},
        github={"enabled": False},
    )
    monotonic = Monotonic()
    store = SqliteStore(settings.monitor.state_path)
    daemon = Daemon(
        settings, metrics=Metrics(), monotonic=monotonic, store=store, channels=[JournalChannel()]
    )
    try:
        assert daemon.stale_targets() == {}
        monotonic.now += 3 * 60 + settings.monitor.timeout + 1
        assert set(daemon.stale_targets()) == {"staging", "production"}
        healthy, detail = daemon.health()
        assert not healthy
        assert "no completed probe cycle for: production, staging" in detail["problems"]
    finally:
        store.close()


def test_blocked_loop_exits_with_the_stall_code(tmp_path: Path) -> None:
    """A probe that blocks the event loop makes the process exit 70 by itself."""
    script = tmp_path / "stall.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, time
            from monitor.config import load_settings
            from monitor.daemon.daemon import Daemon
            from monitor.logs import configure
            from monitor.probing.prober import Prober

            original = Prober.probe_target
            calls = 0

            async def probe_then_block(self, target):
                global calls
                calls += 1
                if calls > 1:
                    time.sleep(60)  # a bug that blocks the loop: no cycle completes again
                return await original(self, target)

            Prober.probe_target = probe_then_block
            configure("json")
            settings = load_settings(
                None,
                monitor={{"interval": 0.5, "incident_interval": 0.5, "timeout": 0.5, "jitter": 0,
                          "listen": "127.0.0.1:{free_port()}", "state_path": {str(tmp_path / "s.db")!r}}},
                github={{"enabled": False}},
                targets=[{{"name": "t", "url": "http://127.0.0.1:9", "checks": [{{"name": "health"}}]}}],
            )
            raise SystemExit(asyncio.run(Daemon(settings).run()))
            """
        )
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == STALL_EXIT_CODE, proc.stdout + proc.stderr
    assert time.monotonic() - started < 20
    assert '"event": "stalled: no probe cycle completed; exiting"' in proc.stdout
