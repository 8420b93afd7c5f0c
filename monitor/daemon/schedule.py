"""The probe schedule: one APScheduler job per target, at the target's current cadence."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import MonitorSection
from monitor.logs import get_logger

log = get_logger("monitor.daemon")
Job = Callable[[str], Awaitable[None]]


class ProbeSchedule:
    """Runs ``job(target)`` on each target's cadence; tracks the runs in flight."""

    def __init__(self, monitor: MonitorSection) -> None:
        self._monitor = monitor
        self._scheduler: AsyncIOScheduler | None = None
        self.inflight: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> bool:
        """True while the scheduler runs jobs."""
        return self._scheduler is not None and self._scheduler.running

    def trigger(self, seconds: float) -> IntervalTrigger:
        """An interval trigger with jitter of at most a tenth of the interval."""
        jitter = min(float(self._monitor.jitter), seconds / 10)
        return IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=UTC)

    def start(
        self,
        cadences: Mapping[str, float],
        job: Job,
        housekeeping: Callable[[], Awaitable[None]],
    ) -> None:
        """Every target's first probe now; housekeeping soon after, then every refresh."""
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,  # after a pause, one catch-up run, not a burst
                "max_instances": 1,  # never two cycles of one target at once
                # a run that is late (busy loop) still runs rather than being dropped
                "misfire_grace_time": max(1, int(self._monitor.interval)),
            },
        )
        first = datetime.now(UTC)
        for name, cadence_s in cadences.items():
            self._scheduler.add_job(
                self._tracked(job),
                trigger=self.trigger(cadence_s),
                args=[name],
                id=name,
                name=f"probe {name}",
                next_run_time=first,
            )
        self._scheduler.start()
        refresh = self._monitor.metrics_refresh
        self._scheduler.add_job(
            self._tracked_housekeeping(housekeeping),
            IntervalTrigger(seconds=refresh, timezone=UTC),
            id="housekeeping",
            name="housekeeping",
            # soon after the first probes, so SLO gauges exist early
            next_run_time=datetime.now(UTC) + timedelta(seconds=min(5.0, refresh)),
        )

    async def _in_flight(self, work: Awaitable[None]) -> None:
        """Await ``work`` as a run that a stop waits for (see :meth:`drain`)."""
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            await work
        finally:
            if task is not None:
                self.inflight.discard(task)

    def _tracked(self, job: Job) -> Job:
        async def run(name: str) -> None:
            try:
                await self._in_flight(job(name))
            except Exception:
                # a bug of ours must not stop the schedule: log it, the watchdog sees stalls
                log.exception("probe cycle failed", target=name)

        return run

    def _tracked_housekeeping(
        self, housekeeping: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Housekeeping in flight is waited for at a stop, like a probe: cancelling it
        half-way through a figure refresh would only log a traceback."""

        async def run() -> None:
            await self._in_flight(housekeeping())

        return run

    def reschedule(self, name: str, seconds: float) -> None:
        """Probe ``name`` every ``seconds`` from now on."""
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.reschedule_job(name, trigger=self.trigger(seconds))

    async def drain(self, grace_s: float) -> None:
        """Stop starting probes and let those in flight finish (up to ``grace_s``).

        Pause, not shutdown: APScheduler's shutdown cancels the jobs in flight, and a
        probe that is half done should finish and be recorded.
        """
        running = self.running
        if running:
            assert self._scheduler is not None
            self._scheduler.pause()
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=grace_s)
        if running:
            assert self._scheduler is not None
            self._scheduler.shutdown(wait=False)
