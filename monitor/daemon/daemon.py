"""The daemon: wiring, the scheduler, graceful stop and the stall watchdog."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor import __version__
from monitor.clock import Clock, utcnow
from monitor.config import Settings, TargetConfig, secret_values
from monitor.figures.history import History, target_figures
from monitor.figures.slo import WINDOWS, Deployment, Span, deployment_before
from monitor.incidents import text
from monitor.incidents.channels.base import IncidentSink
from monitor.incidents.channels.journal import JournalSink
from monitor.incidents.outbox import OutboxWorker
from monitor.incidents.tracker import (
    Incident,
    Policy,
    TrackerState,
    Transition,
    TransitionKind,
    step,
)
from monitor.logs import get_logger, secrets
from monitor.metrics import BURN_WINDOWS, UPTIME_WINDOWS, Metrics
from monitor.probing.prober import Prober
from monitor.probing.results import TargetResult
from monitor.store.base import NewAction, StoreError
from monitor.store.codec import dt
from monitor.store.sqlite import Store
from monitor.web.server import HttpServer, create_app
from monitor.web.source import LiveTarget
from monitor.web.status import status_routes

STALL_EXIT_CODE = 70  # EX_SOFTWARE: the loop stopped making progress
BACKLOG_LIMIT = 5_000  # cycles kept in memory while the database refuses writes
TIMELINE_ROWS = 20
log = get_logger("monitor.daemon")


class PendingCycle(NamedTuple):
    """One target's probe cycle as ``Store.commit_cycle`` takes it, kept while writes fail."""

    result: TargetResult
    hold_s: float
    state: TrackerState
    incident: Incident | None
    actions: list[NewAction]
    deployment: Deployment | None  # a version change seen in this cycle
    incident_deployment: Deployment | None  # the deployment a newly opened incident followed


@dataclass
class _TargetRuntime:
    """What the daemon tracks per target between cycles (monotonic times)."""

    config: TargetConfig
    state: TrackerState
    cadence_s: float
    last_completed: float  # monotonic time of the last completed cycle (or of start-up)
    last_result: TargetResult | None = None
    versions: dict[str, str] = field(default_factory=dict)  # last version seen per check
    outcome_since: datetime | None = None  # when the current outcome began


def _nan(value: float | None) -> float:
    """Prometheus has no null: an undefined ratio is NaN."""
    return math.nan if value is None else value


def make_sink(settings: Settings) -> IncidentSink:
    """GitHub when a token and repository are configured, else the journal."""
    if settings.github.active:
        from monitor.incidents.channels.github import (
            GithubSink,  # PyGithub costs ~20 MB: only when used
        )

        return GithubSink(settings.github)
    return JournalSink()


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
        sink: IncidentSink | None = None,
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
            t.name: _TargetRuntime(
                t, TrackerState(target=t.name), settings.monitor.interval, monotonic()
            )
            for t in settings.targets
        }
        self.store = store or Store(settings.monitor.state_path)
        self.sink = sink or make_sink(settings)
        self.outbox = OutboxWorker(self.store, self.sink, self.metrics, clock=clock)
        self.history = History(self.store, settings)
        self._last_purge: datetime | None = None
        self._backlog: list[PendingCycle] = []
        self.store_problem: str | None = None
        self._session_id: int | None = None
        self._reconciled = False
        self._unprobed = set(self.targets)  # reconcile waits until every target has a result
        self._restore()
        self._scheduler: AsyncIOScheduler | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
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
                if runtime.state.needs_fast_cadence:
                    runtime.cadence_s = self.settings.monitor.incident_interval
            runtime.versions = self.store.last_versions(name)
            self._update_incident_metrics(runtime.state, [])

    # ---- one cycle -------------------------------------------------------------

    async def probe(self, name: str) -> TargetResult:
        """Probe one target now and record everything that follows from it."""
        runtime = self.targets[name]
        result = await self._prober.probe_target(runtime.config)
        self.record(result)
        self._maybe_reconcile()
        return result

    def record(self, result: TargetResult) -> list[Transition]:
        """Metrics, tracker, store, outbox and cadence for one target result."""
        runtime = self.targets[result.target]
        now = self._clock()
        self.metrics.observe(result, now.timestamp())
        new_state, transitions = step(runtime.state, result, now, self.policy)
        deployment = self._detect_deployment(runtime, result)
        actions: list[NewAction] = []
        followed: Deployment | None = None  # the deployment a newly opened incident followed
        for transition in transitions:
            if transition.incident is None or transition.kind is TransitionKind.CANCELLED:
                continue
            before = self._deployment_before(transition.incident, deployment)
            if transition.kind is TransitionKind.OPENED:
                followed = before
            actions += self._actions_for(transition, now, before)
        incident = new_state.incident if (transitions or new_state.in_incident) else None
        previous = runtime.last_result
        if previous is None or previous.outcome is not result.outcome:
            runtime.outcome_since = result.at
        runtime.state = new_state
        runtime.last_result = result
        self._unprobed.discard(result.target)
        runtime.last_completed = self._monotonic()
        cadence = self._wanted_cadence(runtime)
        hold_s = 2 * cadence + self.settings.monitor.timeout
        self._persist(
            PendingCycle(result, hold_s, new_state, incident, actions, deployment, followed)
        )
        if actions:
            self.outbox.wake()
        self._log_cycle(result)
        for transition in transitions:
            self._log_transition(transition)
        self._update_incident_metrics(new_state, transitions)
        self._adjust_cadence(runtime)
        return transitions

    def _persist(self, cycle: PendingCycle) -> None:
        """Write a cycle; while the database refuses, keep cycles in memory and retry."""
        self._backlog.append(cycle)
        if len(self._backlog) > BACKLOG_LIMIT:
            # shed the oldest cycle that carries no GitHub action: actions are never dropped
            for index, pending in enumerate(self._backlog):
                if not pending.actions:
                    del self._backlog[index]
                    break
        self._persist_backlog()

    def _persist_backlog(self) -> None:
        while self._backlog:
            try:
                self.store.commit_cycle(*self._backlog[0])
            except StoreError as exc:
                self.metrics.store_errors.labels("commit_cycle").inc()
                if self.store_problem is None:
                    log.error(
                        "state database write failed; keeping results in memory", error=str(exc)
                    )
                self.store_problem = f"state database write failed: {exc}"
                return
            self._backlog.pop(0)
        if self.store_problem is not None:
            log.info("state database writable again")
            self.store_problem = None

    def _detect_deployment(
        self, runtime: _TargetRuntime, result: TargetResult
    ) -> Deployment | None:
        """A version change on any check of the target is one deployment."""
        deployment = None
        for check in result.checks:
            if check.version is None:
                continue
            previous = runtime.versions.get(check.check)
            if previous is not None and previous != check.version and deployment is None:
                deployment = Deployment(result.target, previous, check.version, check.started_at)
                log.info(
                    "deployment seen",
                    target=result.target,
                    from_version=previous,
                    to_version=check.version,
                )
            runtime.versions[check.check] = check.version
        return deployment

    def _deployment_before(
        self, incident: Incident, new_deployment: Deployment | None
    ) -> Deployment | None:
        """The version change first seen within failure_window before the first failure."""
        window = self.settings.monitor.failure_window
        try:
            deployments = self.store.deployments(
                incident.target, since=incident.started_at - timedelta(seconds=window)
            )
        except StoreError as exc:
            self.metrics.store_errors.labels("read").inc()
            log.error("state database read failed; deployments unknown", error=str(exc))
            deployments = []
        if new_deployment is not None:
            deployments.append(new_deployment)
        return deployment_before(incident.started_at, deployments, window, target=incident.target)

    def _actions_for(
        self, transition: Transition, now: datetime, deployment: Deployment | None
    ) -> list[NewAction]:
        """The GitHub actions a transition implies, rendered now (bodies are data in the outbox)."""
        incident = transition.incident
        if incident is None or transition.kind is TransitionKind.CANCELLED:
            return []
        result = transition.result
        key = f"{incident.id}:{transition.kind}:{transition.at:%Y%m%dT%H%M%S}"

        def act(kind: str, **payload: Any) -> NewAction:
            return NewAction(incident.id, incident.target, kind, payload)

        body = self._issue_body(incident, result, now, deployment)
        kind = transition.kind
        if kind is TransitionKind.OPENED:
            return [
                act(
                    "open",
                    title=text.title(result),
                    body=body,
                    labels=text.labels_for(incident.target, self.settings.github.labels),
                    assignees=list(self.settings.github.assignees),
                )
            ]
        if kind is TransitionKind.REOPENED:
            comment = text.reopened_comment(incident, result, key)
            return [
                act("reopen"),
                act("comment", body=comment, key=key),
                act("edit", body=body, title=text.title(result)),
            ]
        if kind is TransitionKind.CHANGED:
            comment = text.changed_comment(incident, result, transition.detail, key)
            return [
                act("comment", body=comment, key=key),
                act("edit", body=body, title=text.title(result)),
            ]
        if kind is TransitionKind.REMINDER:
            comment = text.reminder_comment(incident, result, now, key)
            return [act("comment", body=comment, key=key), act("edit", body=body)]
        if kind is TransitionKind.RESOLVED:
            comment = text.resolved_comment(incident, key)
            # the final body rides on the close: one write less on the recovery path
            return [act("comment", body=comment, key=key), act("close", body=body)]
        return []

    def _issue_body(
        self,
        incident: Incident,
        result: TargetResult,
        now: datetime,
        deployment: Deployment | None,
    ) -> str:
        try:
            rows = self.store.recent_check_results(
                incident.target, since=incident.started_at, limit=TIMELINE_ROWS
            )
        except StoreError as exc:
            # the issue still gets written, from what this probe alone knows
            self.metrics.store_errors.labels("read").inc()
            log.error("state database read failed; issue text without history", error=str(exc))
            rows = []
        timeline = [
            text.TimelineRow(
                dt(r["started_at"]),
                r["check_name"],
                r["outcome"],
                r["status"],
                r["duration_s"],
                r["detail"],
            )
            for r in rows
        ]
        timeline += [
            text.TimelineRow(
                c.started_at, c.check, c.outcome.value, c.status_code, c.duration_s, c.detail
            )
            for c in result.checks
        ]
        public = self.settings.status_page.public_url
        return text.body(
            incident,
            result,
            now,
            timeline=timeline[-TIMELINE_ROWS:],
            deployment=deployment,
            runbook_url=self.settings.github.runbook_url,
            status_url=f"{public}/status" if public else None,
        )

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
                # one observation per incident (its first resolve), so the histogram's
                # count matches monitor_incidents_total; a reopened incident's full
                # duration is in the store and in monitor_mttr_seconds
                if duration is not None and transition.incident.reopened == 0:
                    self.metrics.incident_duration.labels(target).observe(duration)

    def _wanted_cadence(self, runtime: _TargetRuntime) -> float:
        monitor = self.settings.monitor
        return monitor.incident_interval if runtime.state.needs_fast_cadence else monitor.interval

    def _adjust_cadence(self, runtime: _TargetRuntime) -> None:
        wanted = self._wanted_cadence(runtime)
        if wanted == runtime.cadence_s:
            return
        runtime.cadence_s = wanted
        self.metrics.probe_interval.labels(runtime.config.name).set(wanted)
        log.info("cadence", target=runtime.config.name, interval_s=wanted)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.reschedule_job(runtime.config.name, trigger=self._trigger(wanted))

    def live_targets(self) -> dict[str, LiveTarget]:
        """A consistent view of every target for the status page, in config order."""
        return {
            name: LiveTarget(name, rt.state, rt.last_result, rt.outcome_since, rt.cadence_s)
            for name, rt in self.targets.items()
        }

    def now(self) -> datetime:
        """The daemon's clock (injected in tests)."""
        return self._clock()

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
        if self.store_problem:
            problems.append(self.store_problem)
        sink = self.outbox.health
        if sink.auth_problem:
            problems.append(f"GitHub refuses the token or repository: {sink.last_error}")
        pending, oldest_s = self._outbox_stats()
        detail: dict[str, Any] = {
            "version": __version__,
            "started_at": self._started_at.isoformat(),
            "problems": problems,
            "sink": {"name": self.sink.name, **sink.as_dict()},
            "outbox": {"pending": pending, "oldest_age_s": round(oldest_s, 1)},
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

    def _outbox_stats(self) -> tuple[int, float]:
        try:
            return self.store.outbox_stats(self._clock())
        except StoreError:
            return -1, 0.0

    # ---- lifecycle ---------------------------------------------------------------

    def _trigger(self, seconds: float) -> IntervalTrigger:
        jitter = min(float(self.settings.monitor.jitter), seconds / 10)
        return IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=UTC)

    async def _housekeeping(self) -> None:
        """Periodic: heartbeat (so downtime of the monitor is known), retry writes, reconcile."""
        now = self._clock()
        if self._session_id is not None:
            try:
                self.store.heartbeat(self._session_id, now)
            except StoreError as exc:
                self.metrics.store_errors.labels("heartbeat").inc()
                self.store_problem = f"state database write failed: {exc}"
        if self._backlog:
            self._persist_backlog()
        self._maybe_reconcile()
        self.outbox.refresh_metrics()
        # rollups and SLO figures read many rows: off the event loop, never blocking probes
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.refresh_figures)
        except StoreError as exc:
            self.metrics.store_errors.labels("figures").inc()
            log.error("could not refresh figures", error=str(exc))

    def refresh_figures(self) -> None:
        """Roll up history, apply retention, and refresh the SLO gauges and figures."""
        now = self._clock()
        self.history.rollup(now, [t.name for t in self.settings.targets])
        if self._last_purge is None or (now - self._last_purge).total_seconds() >= 3600:
            removed = self.history.purge(now)
            self._last_purge = now
            if any(removed.values()):
                log.info("retention", removed=removed)
        m = self.metrics
        for target in self.settings.targets:
            name = target.name
            for window in UPTIME_WINDOWS:
                acct = self.history.account(name, Span.ending(now, WINDOWS[window]), now)
                m.uptime.labels(name, window).set(_nan(acct.uptime))
                m.coverage.labels(name, window).set(_nan(acct.coverage))
            figures = target_figures(
                self.history, target, Span.ending(now, self.settings.monitor.slo_window), now
            )
            if figures.budget is not None:
                m.budget_remaining.labels(name).set(figures.budget.remaining_ratio)
            for window in BURN_WINDOWS:
                rate = figures.burn_rates.get(window)
                if target.slo is not None:
                    m.burn_rate.labels(name, window).set(_nan(rate))
            for window in UPTIME_WINDOWS[1:]:
                span = Span.ending(now, WINDOWS[window])
                windowed = target_figures(self.history, target, span, now)
                m.mttr.labels(name, window).set(_nan(windowed.mttr.mean_s))
                m.change_failure.labels(name, window).set(
                    _nan(windowed.deployments.change_failure_ratio)
                )
            m.deployments.labels(name).set(len(self.store.deployments(name)))

    def _maybe_reconcile(self) -> None:
        """Once every target has a fresh result, compare GitHub's open issues with our state."""
        if self._reconciled or self._unprobed:
            return
        states = {name: rt.state for name, rt in self.targets.items()}
        loop = asyncio.get_running_loop()

        def work() -> None:
            self._reconciled = self.outbox.reconcile(states)  # False: housekeeping tries again
            self.outbox.wake()

        self._reconciled = True  # at most one attempt in flight; a failure re-arms it
        future = loop.run_in_executor(None, work)
        future.add_done_callback(self._reconcile_done)

    def _reconcile_done(self, future: asyncio.Future[None]) -> None:
        error = future.exception()
        if error is not None:
            self._reconciled = False  # try again at the next housekeeping
            log.error("reconcile crashed", error=str(error))

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
                "misfire_grace_time": max(1, int(self.settings.monitor.interval)),
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
        app = create_app(self.metrics, self, extra_routes=status_routes(self))
        self.http = HttpServer(app, self.settings.monitor.listen)
        server_task = asyncio.create_task(self.http.serve(), name="http")
        for runtime in self.targets.values():
            runtime.last_completed = self._monotonic()
        self._session_id = self.store.start_session(self._clock())
        self.outbox.start()
        self._start_scheduler()
        assert self._scheduler is not None
        self._scheduler.add_job(
            self._housekeeping,
            IntervalTrigger(seconds=self.settings.monitor.metrics_refresh, timezone=UTC),
            id="housekeeping",
            name="housekeeping",
            # soon after the first probes, so SLO gauges exist early
            next_run_time=datetime.now(UTC)
            + timedelta(seconds=min(5.0, self.settings.monitor.metrics_refresh)),
        )
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
        running = self._scheduler is not None and self._scheduler.running
        if running:
            # pause, not shutdown: APScheduler's shutdown cancels the jobs in flight, and
            # a probe that is half done should finish and be recorded
            assert self._scheduler is not None
            self._scheduler.pause()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.settings.monitor.shutdown_grace)
        if running:
            assert self._scheduler is not None
            self._scheduler.shutdown(wait=False)
        await self._prober.aclose()
        self.outbox.stop()
        if self._session_id is not None:
            try:
                self.store.stop_session(self._session_id, self._clock())
            except StoreError as exc:
                log.error("could not record the stop", error=str(exc))
        self.store.close()
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
