"""The daemon: wiring, the scheduler, graceful stop and the stall watchdog."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor import __version__
from monitor.config import Settings, TargetConfig
from monitor.incidents import Policy, TrackerState, Transition, TransitionKind, step
from monitor.logging import get_logger, secrets
from monitor.metrics import Metrics
from monitor.probe import Clock, Prober, utcnow
from monitor.results import TargetResult
from monitor.server import HttpServer, create_app

STALL_EXIT_CODE = 70  # EX_SOFTWARE: the loop stopped making progress
log = get_logger("monitor.daemon")


@dataclass
class _TargetRuntime:
    """What the daemon tracks per target between cycles (monotonic times)."""

    config: TargetConfig
    state: TrackerState
    cadence_s: float
    last_completed: float = field(default_factory=time.monotonic)
    last_result: TargetResult | None = None


def register_secrets(settings: Settings) -> None:
    """Tell the log redactor every secret value the configuration holds."""
    values = [
        h.get_secret_value() for t in settings.targets for c in t.checks for h in c.headers.values()
    ]
    if settings.github.token is not None:
        values.append(settings.github.token.get_secret_value())
    secrets.add(values)


class Daemon:
    """Probes every target on its cadence, exports metrics, tracks incidents."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        prober: Prober | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._monotonic = monotonic
        self._prober = prober or Prober(settings.monitor, clock=clock)
        self.policy = Policy(
            open_after=settings.monitor.open_after,
            close_after=settings.monitor.close_after,
            reopen_window_s=settings.monitor.reopen_window,
            reminder_interval_s=settings.monitor.reminder_interval,
        )
        self.targets = {
            t.name: _TargetRuntime(t, TrackerState(target=t.name), settings.monitor.interval)
            for t in settings.targets
        }
        self._scheduler: AsyncIOScheduler | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._started_at = clock()
        self.exit_code = 0
        self.http: HttpServer | None = None
        register_secrets(settings)
        self.metrics.declare(settings.targets)

    # ---- one cycle -------------------------------------------------------------

    async def probe(self, name: str) -> TargetResult:
        """Probe one target now and record everything that follows from it."""
        runtime = self.targets[name]
        result = await self._prober.probe_target(runtime.config)
        self.record(result)
        return result

    def record(self, result: TargetResult) -> list[Transition]:
        """Metrics, tracker and cadence for one target result."""
        runtime = self.targets[result.target]
        now = self._clock()
        self.metrics.observe(result, now.timestamp())
        new_state, transitions = step(runtime.state, result, now, self.policy)
        runtime.state = new_state
        runtime.last_result = result
        runtime.last_completed = self._monotonic()
        self._log_cycle(result)
        for transition in transitions:
            self._log_transition(transition)
        self._update_incident_metrics(new_state, transitions)
        self._adjust_cadence(runtime)
        return transitions

    def _log_cycle(self, result: TargetResult) -> None:
        for check in result.checks:
            fields = {
                "target": check.target,
                "check": check.check,
                "outcome": check.outcome.value,
                "reason": check.reason.value,
                "status": check.status_code,
                "duration_ms": round(check.duration_s * 1000, 1),
                "detail": check.detail,
            }
            if check.ok:
                log.info("probe", **fields)
            else:
                log.warning("probe", **fields)

    def _log_transition(self, transition: Transition) -> None:
        incident = transition.incident
        log.warning(
            f"incident {transition.kind}",
            target=transition.target,
            incident=incident.id if incident else None,
            started_at=incident.started_at.isoformat() if incident else None,
            duration_s=incident.duration_s if incident else None,
            detail=transition.detail or None,
        )

    def _update_incident_metrics(self, state: TrackerState, transitions: list[Transition]) -> None:
        target = state.target
        open_now = state.in_incident and state.incident is not None
        self.metrics.incident_open.labels(target).set(1 if open_now else 0)
        started = state.incident.started_at.timestamp() if open_now and state.incident else 0
        self.metrics.incident_started.labels(target).set(started)
        for transition in transitions:
            if transition.kind is TransitionKind.OPENED:
                self.metrics.incidents.labels(target).inc()
            if transition.kind is TransitionKind.RESOLVED and transition.incident:
                duration = transition.incident.duration_s
                if duration is not None:
                    self.metrics.incident_duration.labels(target).observe(duration)

    def _adjust_cadence(self, runtime: _TargetRuntime) -> None:
        monitor = self.settings.monitor
        wanted = monitor.incident_interval if runtime.state.needs_fast_cadence else monitor.interval
        if wanted == runtime.cadence_s:
            return
        runtime.cadence_s = wanted
        log.info("cadence", target=runtime.config.name, interval_s=wanted)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.reschedule_job(runtime.config.name, trigger=self._trigger(wanted))

    # ---- health ------------------------------------------------------------------

    def stale_targets(self) -> dict[str, float]:
        """Targets with no completed cycle for ``stall_after`` cadences (seconds since)."""
        now = self._monotonic()
        limit = self.settings.monitor.stall_after
        grace = self.settings.monitor.timeout
        return {
            name: round(now - rt.last_completed, 1)
            for name, rt in self.targets.items()
            if now - rt.last_completed > limit * rt.cadence_s + grace
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, reasons) for ``/healthz``."""
        scheduler_alive = self._scheduler is not None and self._scheduler.running
        stale = self.stale_targets()
        problems = []
        if not scheduler_alive:
            problems.append("scheduler is not running")
        if stale:
            problems.append("no completed probe cycle for: " + ", ".join(sorted(stale)))
        detail: dict[str, Any] = {
            "version": __version__,
            "started_at": self._started_at.isoformat(),
            "problems": problems,
            "targets": {
                name: {
                    "phase": rt.state.phase.value,
                    "cadence_s": rt.cadence_s,
                    "seconds_since_cycle": round(self._monotonic() - rt.last_completed, 1),
                }
                for name, rt in self.targets.items()
            },
        }
        return not problems, detail

    # ---- lifecycle ---------------------------------------------------------------

    def _trigger(self, seconds: float) -> IntervalTrigger:
        jitter = min(float(self.settings.monitor.jitter), seconds / 10)
        return IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=UTC)

    async def _job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self.probe(name)
        except Exception:
            # a bug of ours must not stop the schedule: log it, the watchdog sees stalls
            log.exception("probe cycle failed", target=name)
        finally:
            if task is not None:
                self._inflight.discard(task)

    def _start_scheduler(self) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,  # after a pause, one catch-up run, not a burst
                "max_instances": 1,  # never two cycles of one target at once
                # a run that is late (busy loop) still runs rather than being dropped
                "misfire_grace_time": int(self.settings.monitor.interval),
            },
        )
        first = datetime.now(UTC)
        for name, runtime in self.targets.items():
            self._scheduler.add_job(
                self._job,
                trigger=self._trigger(runtime.cadence_s),
                args=[name],
                id=name,
                name=f"probe {name}",
                next_run_time=first,
            )
        self._scheduler.start()

    def request_stop(self) -> None:
        """Begin a graceful stop (signal handlers call this)."""
        self._stopping.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a stall; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        app = create_app(self.metrics, self)
        self.http = HttpServer(app, self.settings.monitor.listen)
        server_task = asyncio.create_task(self.http.serve(), name="http")
        for runtime in self.targets.values():
            runtime.last_completed = self._monotonic()
        self._start_scheduler()
        watchdog = threading.Thread(target=self._watchdog, name="watchdog", daemon=True)
        watchdog.start()
        log.info(
            "started",
            version=__version__,
            targets=list(self.targets),
            listen=self.settings.monitor.listen,
            pid=os.getpid(),
        )
        stop_wait = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({stop_wait, server_task}, return_when=asyncio.FIRST_COMPLETED)
        if server_task in done and not self._stopping.is_set():
            error = server_task.exception()
            log.error("http server stopped", error=str(error) if error else "exited")
            self.exit_code = self.exit_code or 1
        await self._shutdown(server_task)
        return self.exit_code

    async def _shutdown(self, server_task: asyncio.Task[None]) -> None:
        log.info("stopping", inflight=len(self._inflight))
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.settings.monitor.shutdown_grace)
        await self._prober.aclose()
        if self.http is not None:
            self.http.stop()
        try:
            await asyncio.wait_for(server_task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            server_task.cancel()
        except Exception as exc:  # a bind failure was already reported
            log.debug("http server ended", error=str(exc))
        log.info("stopped", exit_code=self.exit_code)

    def _watchdog(self) -> None:
        """Exit the process when the loop stops completing cycles (Fly will restart us)."""
        check_every = max(0.5, min(rt.cadence_s for rt in self.targets.values()) / 4)
        while not self._stopping.is_set():
            time.sleep(check_every)
            stale = self.stale_targets()
            if stale and not self._stopping.is_set():
                log.critical("stalled: no probe cycle completed; exiting", stale=stale)
                os._exit(STALL_EXIT_CODE)
