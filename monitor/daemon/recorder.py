"""One probe cycle's consequences: metrics, tracker, events, store and logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from monitor.config import Settings
from monitor.daemon.deployments import DeploymentWatch
from monitor.daemon.events import EventBuilder
from monitor.daemon.runtime import TargetRuntime
from monitor.daemon.writer import CycleWriter
from monitor.figures.slo import Deployment
from monitor.incidents.channels.base import Channel
from monitor.incidents.tracker import Policy, TrackerState, Transition, TransitionKind, step
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.probing.results import TargetResult
from monitor.store.base import NewAction, PendingCycle

log = get_logger("monitor.daemon")


def policy_of(settings: Settings) -> Policy:
    """The tracker's thresholds from ``[monitor]``."""
    monitor = settings.monitor
    return Policy(
        open_after=monitor.open_after,
        close_after=monitor.close_after,
        reopen_window_s=monitor.reopen_window,
        reminder_interval_s=monitor.reminder_interval,
    )


class CycleRecorder:
    """Feeds a target result through the tracker and writes everything it implies at once."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        writer: CycleWriter,
        deployments: DeploymentWatch,
        events: EventBuilder,
        channels: Sequence[Channel],
        monotonic: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._writer = writer
        self._deployments = deployments
        self._events = events
        self._channels = channels
        self._monotonic = monotonic
        self.policy = policy_of(settings)

    def record(
        self, runtime: TargetRuntime, result: TargetResult, now: datetime
    ) -> tuple[PendingCycle, list[Transition]]:
        """Advance ``runtime`` by ``result``: the cycle as written (or held), and the
        tracker's transitions."""
        self._metrics.observe(result, now.timestamp())
        new_state, transitions = step(runtime.state, result, now, self.policy)
        deployment = self._deployments.observe(result)
        actions: list[NewAction] = []
        followed: Deployment | None = None  # the deployment a newly opened incident followed
        for transition in transitions:
            if transition.incident is None or transition.kind is TransitionKind.CANCELLED:
                continue
            before = self._deployments.followed_by(transition.incident, deployment)
            if transition.kind is TransitionKind.OPENED:
                followed = before
            event = self._events.build(transition, now, before)
            if event is not None:
                for channel in self._channels:
                    actions += channel.plan(event)
        incident = new_state.incident if (transitions or new_state.in_incident) else None
        previous = runtime.last_result
        if previous is None or previous.outcome is not result.outcome:
            runtime.outcome_since = result.at
        runtime.state = new_state
        runtime.last_result = result
        runtime.last_completed = self._monotonic()
        cycle = PendingCycle(
            result,
            self.hold_s(new_state),
            new_state,
            incident,
            actions,
            deployment,
            followed,
        )
        self._writer.write(cycle)
        _log_cycle(result)
        for transition in transitions:
            _log_transition(transition)
        update_incident_metrics(self._metrics, new_state, transitions)
        return cycle, transitions

    def cadence_s(self, state: TrackerState) -> float:
        """The interval a target in this state is probed at."""
        monitor = self._settings.monitor
        return monitor.incident_interval if state.needs_fast_cadence else monitor.interval

    def hold_s(self, state: TrackerState) -> float:
        """How long a result vouches for its target: two cadences and a timeout."""
        return 2 * self.cadence_s(state) + self._settings.monitor.timeout


def update_incident_metrics(
    metrics: Metrics, state: TrackerState, transitions: Sequence[Transition]
) -> None:
    """The incident gauges from the state; counters and durations from the transitions."""
    target = state.target
    open_now = state.in_incident and state.incident is not None
    metrics.incident_open.labels(target).set(1 if open_now else 0)
    started = state.incident.started_at.timestamp() if open_now and state.incident else 0
    metrics.incident_started.labels(target).set(started)
    for transition in transitions:
        if transition.kind is TransitionKind.OPENED:
            metrics.incidents.labels(target).inc()
        if transition.kind is TransitionKind.RESOLVED and transition.incident:
            duration = transition.incident.duration_s
            # one observation per incident (its first resolve), so the histogram's
            # count matches monitor_incidents_total; a reopened incident's full
            # duration is in the store and in monitor_mttr_seconds
            if duration is not None and transition.incident.reopened == 0:
                metrics.incident_duration.labels(target).observe(duration)


def _log_cycle(result: TargetResult) -> None:
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


def _log_transition(transition: Transition) -> None:
    incident = transition.incident
    log.warning(
        f"incident {transition.kind}",
        target=transition.target,
        incident=incident.id if incident else None,
        started_at=incident.started_at.isoformat() if incident else None,
        duration_s=incident.duration_s if incident else None,
        detail=transition.detail or None,
    )
