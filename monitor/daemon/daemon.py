"""The daemon: wires the parts together and runs the loop until SIGTERM or a stall.

Each part lives in its own module: the probe schedule (``schedule``), what one
cycle implies (``recorder``, with ``deployments``, ``events`` and ``writer``),
the channels' outbox workers (``dispatch``), the figures (``figures``), health
(``health``) and the stall watchdog (``watchdog``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from monitor import __version__
from monitor.clock import Clock, utcnow
from monitor.config import Settings, secret_values
from monitor.daemon.deployments import DeploymentWatch
from monitor.daemon.dispatch import Dispatch
from monitor.daemon.events import EventBuilder
from monitor.daemon.figures import FigureRefresher
from monitor.daemon.health import assess, stale_targets
from monitor.daemon.recorder import CycleRecorder, update_incident_metrics
from monitor.daemon.runtime import TargetRuntime
from monitor.daemon.schedule import ProbeSchedule
from monitor.daemon.watchdog import STALL_EXIT_CODE, Watchdog
from monitor.daemon.writer import CycleWriter
from monitor.figures.history import History
from monitor.incidents.channels.base import Channel
from monitor.incidents.channels.factory import configured_channels
from monitor.incidents.tracker import TrackerState, Transition
from monitor.logs import get_logger, secrets
from monitor.metrics import Metrics
from monitor.probing.prober import Prober
from monitor.probing.results import TargetResult
from monitor.store.base import Store, StoreError
from monitor.store.factory import open_store
from monitor.web.routes import status_routes
from monitor.web.server import HttpServer, create_app
from monitor.web.source import LiveTarget

__all__ = ["STALL_EXIT_CODE", "Daemon"]

HTTP_STOP_S = 5.0  # after the probes and the outbox workers, uvicorn gets this long
log = get_logger("monitor.daemon")


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
        store: Store | None = None,
        channels: Sequence[Channel] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._monotonic = monotonic
        self._prober = prober or Prober(settings.monitor, clock=clock)
        self.store = store or open_store(settings)
        self.history = History(self.store, settings)
        self.dispatch = Dispatch(
            self.store, channels or configured_channels(settings), self.metrics, clock
        )
        self._writer = CycleWriter(self.store, self.metrics)
        self._deployments = DeploymentWatch(
            self.store, self.metrics, settings.monitor.failure_window
        )
        self._recorder = CycleRecorder(
            settings,
            self.metrics,
            self._writer,
            self._deployments,
            EventBuilder(self.store, settings, self.metrics),
            self.dispatch.channels,
            monotonic,
        )
        self._figures = FigureRefresher(self.store, self.history, settings, self.metrics)
        self._schedule = ProbeSchedule(settings.monitor)
        self.targets = {
            t.name: TargetRuntime(
                t, TrackerState(target=t.name), settings.monitor.interval, monotonic()
            )
            for t in settings.targets
        }
        self._unprobed = set(self.targets)  # reconcile waits until every target has a result
        self._restore()
        self._session_id: int | None = None
        self._stopping = asyncio.Event()
        self._started_at = clock()
        self.exit_code = 0
        self.http: HttpServer | None = None
        secrets.add(secret_values(settings))
        self.metrics.declare(settings.targets)
        for name, runtime in self.targets.items():
            self.metrics.probe_interval.labels(name).set(runtime.cadence_s)

    def _restore(self) -> None:
        """Tracker state and last versions from the store: incidents survive restarts."""
        saved = self.store.load_states()
        for name, runtime in self.targets.items():
            if name in saved:
                runtime.state = saved[name]
                runtime.cadence_s = self._recorder.cadence_s(runtime.state)
            self._deployments.restore(name)
            update_incident_metrics(self.metrics, runtime.state, [])

    @property
    def store_problem(self) -> str | None:
        """Why the database refuses writes right now, or None."""
        return self._writer.problem

    # ---- one cycle -------------------------------------------------------------------

    async def probe(self, name: str) -> TargetResult:
        """Probe one target now and record everything that follows from it."""
        result = await self._prober.probe_target(self.targets[name].config)
        self.record(result)
        self.dispatch.maybe_reconcile(self._states, self._unprobed)
        return result

    def record(self, result: TargetResult) -> list[Transition]:
        """Metrics, tracker, store, outbox and cadence for one target result."""
        runtime = self.targets[result.target]
        cycle, transitions = self._recorder.record(runtime, result, self._clock())
        self._unprobed.discard(result.target)
        if cycle.actions:
            self.dispatch.wake()
        self._adjust_cadence(runtime)
        return transitions

    def _adjust_cadence(self, runtime: TargetRuntime) -> None:
        wanted = self._recorder.cadence_s(runtime.state)
        if wanted == runtime.cadence_s:
            return
        runtime.cadence_s = wanted
        self.metrics.probe_interval.labels(runtime.name).set(wanted)
        log.info("cadence", target=runtime.name, interval_s=wanted)
        self._schedule.reschedule(runtime.name, wanted)

    def _states(self) -> dict[str, TrackerState]:
        return {name: rt.state for name, rt in self.targets.items()}

    def live_targets(self) -> dict[str, LiveTarget]:
        """A consistent view of every target for the status page, in config order."""
        return {name: rt.live() for name, rt in self.targets.items()}

    def now(self) -> datetime:
        """The daemon's clock (injected in tests)."""
        return self._clock()

    # ---- health ------------------------------------------------------------------------

    def stale_targets(self) -> dict[str, float]:
        """Targets with no completed cycle for ``stall_after`` cadences (seconds since)."""
        return stale_targets(self.targets, self._monotonic(), self.settings.monitor)

    def health(self) -> tuple[bool, dict[str, object]]:
        """(healthy, reasons) for ``/healthz``."""
        return assess(
            targets=self.targets,
            now_mono=self._monotonic(),
            monitor=self.settings.monitor,
            scheduler_alive=self._schedule.running,
            store_problem=self.store_problem,
            sink_name=self.dispatch.channels[0].name,
            sink=self.dispatch.health(),
            outbox=self.dispatch.stats(self._clock()),
            started_at=self._started_at,
        )

    # ---- housekeeping --------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Periodic: heartbeat (so downtime of the monitor is known), retry writes, reconcile."""
        now = self._clock()
        if self._session_id is not None:
            try:
                self.store.heartbeat(self._session_id, now)
            except StoreError as exc:
                self._writer.failed("heartbeat", exc)
        if self._writer.backlog:
            self._writer.flush()
        self.dispatch.maybe_reconcile(self._states, self._unprobed)
        self.dispatch.refresh_metrics()
        # rollups and SLO figures read many rows: off the event loop, never blocking probes
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.refresh_figures)
        except StoreError as exc:
            self.metrics.store_errors.labels("figures").inc()
            log.error("could not refresh figures", error=str(exc))

    def refresh_figures(self) -> None:
        """Roll up history, apply retention, and refresh the SLO gauges and figures."""
        self._figures.refresh(self._clock())

    # ---- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (signal handlers call this)."""
        self._stopping.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a stall; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        app = create_app(self.metrics, self, extra_routes=status_routes(self))
        self.http = HttpServer(app, self.settings.monitor.listen)
        server_task = asyncio.create_task(self.http.serve(), name="http")
        for runtime in self.targets.values():
            runtime.last_completed = self._monotonic()
        self._session_id = self.store.start_session(self._clock())
        self.dispatch.start()
        self._schedule.start(
            {name: rt.cadence_s for name, rt in self.targets.items()},
            self._probe_job,
            self._housekeeping,
        )
        check_every = max(0.5, min(rt.cadence_s for rt in self.targets.values()) / 4)
        Watchdog(self.stale_targets, check_every, self._stopping.is_set).start()
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

    async def _probe_job(self, name: str) -> None:
        await self.probe(name)

    async def _shutdown(self, server_task: asyncio.Task[None]) -> None:
        log.info("stopping", inflight=len(self._schedule.inflight))
        await self._schedule.drain(self.settings.monitor.shutdown_grace)
        await self._prober.aclose()
        self.dispatch.stop()
        if self._session_id is not None:
            try:
                self.store.stop_session(self._session_id, self._clock())
            except StoreError as exc:
                log.error("could not record the stop", error=str(exc))
        self.store.close()
        if self.http is not None:
            self.http.stop()
        try:
            await asyncio.wait_for(server_task, timeout=HTTP_STOP_S)
        except (TimeoutError, asyncio.CancelledError):
            server_task.cancel()
        except Exception as exc:  # a bind failure was already reported
            log.debug("http server ended", error=str(exc))
        log.info("stopped", exit_code=self.exit_code)
