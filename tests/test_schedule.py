"""The probe schedule at a stop: what is in flight, probes and housekeeping, finishes."""

from __future__ import annotations

import asyncio

from monitor.config import MonitorSection
from monitor.daemon.schedule import ProbeSchedule


async def test_a_stop_waits_for_housekeeping_in_flight() -> None:
    """SIGTERM during a figure refresh lets it finish instead of cancelling it (which
    logged an ERROR with a CancelledError traceback)."""
    schedule = ProbeSchedule(MonitorSection(metrics_refresh=0.05, jitter=0))
    housekeeping_started = asyncio.Event()
    finished: list[str] = []

    async def probe(name: str) -> None:
        finished.append(name)

    async def housekeeping() -> None:
        housekeeping_started.set()
        await asyncio.sleep(0.3)
        finished.append("housekeeping")

    schedule.start({"web": 3600.0}, probe, housekeeping)
    await asyncio.wait_for(housekeeping_started.wait(), 5)
    assert len(schedule.inflight) == 1
    await schedule.drain(grace_s=5)
    assert "housekeeping" in finished
