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
from monitor.daemon.kpis import KpiWatch
from monitor.daemon.leader import LeaderElection
from monitor.daemon.maintenance import MaintenanceWatch
from monitor.daemon.recorder import CycleRecorder, update_incident_metrics
from monitor.daemon.runtime import TargetRuntime
from monitor.daemon.schedule import ProbeSchedule
from monitor.daemon.watchdog import STALL_EXIT_CODE, Watchdog
from monitor.daemon.writer import CycleWriter
from monitor.figures.history import History
from monitor.figures.maintenance import Window
from monitor.incidents.channels.base import Channel
from monitor.incidents.channels.factory import configured_channels
from monitor.incidents.tracker import TrackerState, Transition
from monitor.logs import get_logger, secrets
from monitor.metrics import Metrics
from monitor.probing.prober import Prober
from monitor.probing.results import TargetResult
from monitor.store.base import Store, StoreError
from monitor.store.factory import open_store
from monitor.web.maintenance_api import maintenance_routes
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
        self.election = LeaderElection(self.store, settings.monitor, clock, monotonic)
        self.dispatch = Dispatch(
            self.store,
            channels or configured_channels(settings),
            self.metrics,
            clock,
            may_act=lambda: self.election.acting,
        )
        # writes each cycle (in monitor run, with the others of its turn of the loop)
        self.writer = CycleWriter(
            self.store,
            self.metrics,
            on_not_leader=self.election.lost,
            on_actions=self.dispatch.wake,  # after the commit: the steps are there to read
        )
        self.maintenance = MaintenanceWatch(settings, self.store, self.metrics)
        self._deployments = DeploymentWatch(
            self.store, self.metrics, settings.monitor.failure_window
        )
        self._recorder = CycleRecorder(
            settings,
            self.store,
            self.metrics,
            self.writer,
            self._deployments,
            EventBuilder(self.store, settings, self.metrics),
            self.dispatch.channels,
            self.election,
            monotonic,
            self.maintenance,
        )
        self._figures = FigureRefresher(self.store, self.history, settings, self.metrics)
        self.kpis = KpiWatch(
            self.store, self.history, settings, self.metrics, clock, wake=self.dispatch.wake
        )
        self._kpi_task: asyncio.Future[None] | None = None
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
        """Tracker state and last versions from the store: incidents survive restarts,
        and a new leader continues where the last one stopped."""
        saved = self.store.load_states()
        region = self.election.region
        last_seen = {v.target: v.at for v in self.store.region_views() if v.region == region}
        for name, runtime in self.targets.items():
            if name in saved:
                runtime.state = saved[name]
                runtime.cadence_s = self._recorder.cadence_s(runtime)
            if name in last_seen:
                # a window the last cycle before the restart was already in was noted then
                runtime.maintenance = self.maintenance.covering(name, last_seen[name])
            self._deployments.restore(name)
            update_incident_metrics(self.metrics, runtime.state, [])

    def _elected(self, epoch: int) -> bool:
        """This instance leads from now on: load what the last leader decided."""
        try:
            self._restore()
        except StoreError as exc:
            log.error("cannot load the state to lead; giving the lead back", error=str(exc))
            return False
        self.metrics.leader.set(1)
        self.dispatch.rearm_reconcile()
        self.dispatch.wake()
        for runtime in self.targets.values():
            self._adjust_cadence(runtime)
        return True

    def _deposed(self) -> None:
        self.metrics.leader.set(0)

    @property
    def store_problem(self) -> str | None:
        """Why the database refuses writes right now, or None."""
        return self.writer.problem

    # ---- one cycle -------------------------------------------------------------------

    def commit_per_turn(self) -> None:
        """Commit the cycles that complete in one turn of the running event loop
        together, at its end (``run`` does this; see ``daemon.writer``). Until then each
        :meth:`record` commits before it returns, which is what a caller that reads the
        store right after needs."""
        self.writer.commit_per_turn(asyncio.get_running_loop())

    async def probe(self, name: str) -> TargetResult:
        """Probe one target now and record everything that follows from it."""
        result = await self._prober.probe_target(self.targets[name].config)
        self.record(result)
        if self.election.acting:
            self.dispatch.maybe_reconcile(self._committed_states, self._unprobed)
        return result

    def record(self, result: TargetResult) -> list[Transition]:
        """Metrics, tracker, store, outbox and cadence for one target result."""
        runtime = self.targets[result.target]
        _, transitions = self._recorder.record(runtime, result, self._clock())
        self._unprobed.discard(result.target)
        self._adjust_cadence(runtime)
        return transitions

    def _adjust_cadence(self, runtime: TargetRuntime) -> None:
        wanted = self._recorder.cadence_s(runtime)
        if wanted == runtime.cadence_s:
            return
        runtime.cadence_s = wanted
        self.metrics.probe_interval.labels(runtime.name).set(wanted)
        log.info("cadence", target=runtime.name, interval_s=wanted)
        self._schedule.reschedule(runtime.name, wanted)

    def _committed_states(self) -> dict[str, TrackerState]:
        """The tracker states, once the cycles that made them are in the store: the
        reconcile reads both (an incident resolved in this turn, its resolve step)."""
        self.writer.flush()
        return {name: rt.state for name, rt in self.targets.items()}

    def live_targets(self) -> dict[str, LiveTarget]:
        """A consistent view of every target for the status page, in config order."""
        monitor = self.settings.monitor
        region, quorum, min_regions = self.election.region, monitor.quorum, monitor.min_regions
        return {name: rt.live(region, quorum, min_regions) for name, rt in self.targets.items()}

    def now(self) -> datetime:
        """The daemon's clock (injected in tests)."""
        return self._clock()

    # ---- maintenance windows (the API's control; run in a worker thread) --------------

    def maintenance_windows(self) -> list[Window]:
        """Windows open now or starting within a day."""
        return self.maintenance.upcoming(self._clock())

    def start_maintenance(self, targets: Sequence[str], duration_s: float, reason: str) -> Window:
        """Open an ad-hoc window now (POST /api/maintenance)."""
        return self.maintenance.start(list(targets), duration_s, reason, self._clock())

    def end_maintenance(self, target: str) -> int:
        """End the ad-hoc windows ``target`` is in (DELETE /api/maintenance)."""
        return self.maintenance.end(target, self._clock())

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
            channels=self.dispatch.channel_health(),
            outbox=self.dispatch.stats(self._clock()),
            started_at=self._started_at,
            cluster=self._cluster(),
        )

    @property
    def _store_kind(self) -> str:
        return "postgresql" if self.election.shared else "sqlite"

    def _cluster(self) -> dict[str, object]:
        """This instance's region and role, the leader's, and each region's latest result."""
        now_mono = self._monotonic()
        ages: dict[str, float] = {}
        for runtime in self.targets.values():
            since_read = now_mono - runtime.views_read_at
            for view in runtime.views:
                age = view.age_s + since_read
                ages[view.region] = min(age, ages.get(view.region, age))
            if runtime.last_result is not None:  # this region: its own last cycle
                own = now_mono - runtime.last_completed
                ages[self.election.region] = min(own, ages.get(self.election.region, own))
        holder = self.election.holder
        return {
            "region": self.election.region,
            "instance": self.election.instance,
            "role": self.election.role,
            "store": self._store_kind,
            "leader": None
            if holder is None
            else {
                "region": holder.region,
                "instance": holder.instance,
                "epoch": holder.epoch,
                "since": holder.since.isoformat(),
            },
            "regions": {name: {"age_s": round(ages[name], 1)} for name in sorted(ages)},
        }

    # ---- housekeeping --------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Periodic: heartbeat (so downtime of the monitor is known), retry writes, reconcile."""
        now = self._clock()
        if self._session_id is not None:
            try:
                self.store.heartbeat(self._session_id, now)
            except StoreError as exc:
                self.writer.failed("heartbeat", exc)
        if self.writer.backlog:
            self.writer.flush()
        self.maintenance.reload(now)  # windows another instance opened, and the next day's
        if self.election.shared:
            self._follow_regions()
        if self.election.acting:
            self.dispatch.maybe_reconcile(self._committed_states, self._unprobed)
        # also when a leader's proof lapsed while its thread still hangs on the lock
        self.metrics.leader.set(1 if self.election.acting else 0)
        self.dispatch.refresh_metrics()
        # GitHub may be slow or down: the KPIs run in a thread of their own, never
        # holding up the figures below or a probe
        if self._kpi_task is None or self._kpi_task.done():
            self._kpi_task = asyncio.get_running_loop().run_in_executor(
                None, self.kpis.tick, self.election.acting
            )
        # rollups and SLO figures read many rows: off the event loop, never blocking probes
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.refresh_figures)
        except StoreError as exc:
            self.metrics.store_errors.labels("figures").inc()
            log.error("could not refresh figures", error=str(exc))

    def refresh_figures(self) -> None:
        """Roll up history and apply retention (the leader), and refresh the SLO gauges
        and figures (every instance: they read the same store)."""
        self._figures.refresh(self._clock(), maintain=self.election.acting)

    def _follow_regions(self) -> None:
        """Every region's views (and, on a follower, the leader's decisions): the cadence
        speeds up from any region's first failure, and every instance shows the same."""
        try:
            views = self.store.region_views()
            states = {} if self.election.acting else self.store.load_states()
        except StoreError as exc:
            self.metrics.store_errors.labels("read").inc()
            log.error("could not read the other regions' views", error=str(exc))
            return
        read_at = self._monotonic()
        for name, runtime in self.targets.items():
            runtime.views = tuple(v for v in views if v.target == name)
            runtime.views_read_at = read_at
            fresh = [v for v in runtime.views if v.fresh]
            self.metrics.regions_fresh.labels(name).set(len(fresh))
            self.metrics.regions_failing.labels(name).set(sum(1 for v in fresh if v.down))
            if name in states:
                runtime.state = states[name]
                update_incident_metrics(self.metrics, runtime.state, [])
            self._adjust_cadence(runtime)

    # ---- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (signal handlers call this)."""
        self._stopping.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a stall; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        routes = [*status_routes(self), *maintenance_routes(self)]
        app = create_app(self.metrics, self, extra_routes=routes)
        self.http = HttpServer(app, self.settings.monitor.listen)
        server_task = asyncio.create_task(self.http.serve(), name="http")
        for runtime in self.targets.values():
            runtime.last_completed = self._monotonic()
        self._session_id = self.store.start_session(
            self._clock(), self.settings.monitor.instance_id
        )
        self.election.start(self._elected, self._deposed)
        self.metrics.leader.set(1 if self.election.acting else 0)
        self.dispatch.start()
        self.commit_per_turn()
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
            region=self.election.region,
            role=self.election.role,
            store=self._store_kind,
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
        self.election.retire()  # a follower must not take the lead another is handing over
        await self._schedule.drain(self.settings.monitor.shutdown_grace)
        self.writer.commit_at_once()  # what the last turn recorded, before the store closes
        await self._prober.aclose()
        self.dispatch.stop()
        if self._kpi_task is not None:  # it reads the store, which closes below
            self.kpis.stop()  # a sync in progress sends no further request
            try:
                await asyncio.wait_for(self._kpi_task, timeout=self.settings.monitor.shutdown_grace)
            except TimeoutError:
                log.warning("KPI sync still running at shutdown")
            except Exception as exc:  # tick catches its own; this is belt and braces
                log.error("KPI pass failed at shutdown", error=repr(exc))
        self.election.stop()  # after the workers: a successor may take over at once
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
