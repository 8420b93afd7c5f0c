"""One probe cycle's consequences: metrics, tracker, events, store and logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from monitor.config import Settings
from monitor.daemon.deployments import DeploymentWatch
from monitor.daemon.events import EventBuilder
from monitor.daemon.leader import LeaderElection
from monitor.daemon.maintenance import MaintenanceWatch
from monitor.daemon.runtime import TargetRuntime
from monitor.daemon.writer import CycleWriter
from monitor.figures.maintenance import Window
from monitor.figures.slo import Deployment
from monitor.incidents.channels.base import Channel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.quorum import RegionView, Verdict, decide
from monitor.incidents.text import defuse, utc
from monitor.incidents.tracker import Policy, TrackerState, Transition, TransitionKind, step
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.probing.results import Outcome, TargetResult
from monitor.store.base import NewAction, PendingCycle, Store, StoreError

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
    """Feeds a target result through the quorum and the tracker, and writes everything
    it implies at once."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        writer: CycleWriter,
        deployments: DeploymentWatch,
        events: EventBuilder,
        channels: Sequence[Channel],
        election: LeaderElection,
        monotonic: Callable[[], float],
        maintenance: MaintenanceWatch,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._writer = writer
        self._deployments = deployments
        self._events = events
        self._channels = channels
        self._election = election
        self._monotonic = monotonic
        self._maintenance = maintenance
        self.policy = policy_of(settings)

    def record(
        self, runtime: TargetRuntime, result: TargetResult, now: datetime
    ) -> tuple[PendingCycle, list[Transition]]:
        """Advance ``runtime`` by ``result``: the cycle as written (or held), and the
        tracker's transitions (none on a follower, or without a quorum)."""
        self._metrics.observe(result, now.timestamp())
        runtime.streak.observe(result)
        runtime.last_completed = self._monotonic()
        own = runtime.view(self._election.region, result, self.view_hold_s(runtime))
        window = self._maintenance.active(runtime.name, now)
        verdict = self._verdict(runtime, own) if self._election.acting else None
        if verdict is None or verdict.result is None:
            runtime.maintenance = window
            return self._observed(runtime, result, own), []
        judged = verdict.result
        notes = self._people(runtime, judged, now) + self._window_began(
            runtime, window, judged, now
        )
        new_state, transitions = step(
            runtime.state, judged, now, self.policy, maintenance=window is not None
        )
        deployment = self._deployments.observe(result)
        actions: list[NewAction] = [a for note in notes for a in self._plan(note)]
        followed: Deployment | None = None  # the deployment a newly opened incident followed
        for transition in transitions:
            if transition.incident is None or transition.kind is TransitionKind.CANCELLED:
                continue
            before = self._deployments.followed_by(transition.incident, deployment)
            if transition.kind is TransitionKind.OPENED:
                followed = before
            event = self._events.build(
                transition,
                now,
                before,
                self._regions(verdict),
                verdict.result_region or self._election.region,
            )
            if event is not None:
                actions += self._plan(event)
        incident = new_state.incident if (transitions or new_state.in_incident) else None
        self._remember(runtime, judged)
        runtime.state = new_state
        cycle = PendingCycle(
            result,
            self.hold_s(new_state),
            new_state,
            incident,
            actions,
            deployment,
            followed,
            region=self._election.region,
            # the verdict's own view, held as long as the cadence after this decision says
            view=replace(own, hold_s=self.view_hold_s(runtime)),
            decided=None if judged is result else judged,
        )
        self._writer.write(cycle, then=lambda: _log_decided(result, transitions))
        update_incident_metrics(self._metrics, new_state, transitions)
        return cycle, transitions

    def _plan(self, event: IncidentEvent) -> list[NewAction]:
        return [action for channel in self._channels for action in channel.plan(event)]

    def _people(
        self, runtime: TargetRuntime, result: TargetResult, now: datetime
    ) -> list[IncidentEvent]:
        """What people did to the open incident's issue since the last cycle (the GitHub
        worker records it): an acknowledgement, or a close while it still fails. Either
        stops the reminders; each is announced once, to the channels that carry it."""
        state = runtime.state
        incident = state.incident
        if not state.in_incident or incident is None:
            return []
        try:
            row = self._store.incident(incident.id)
        except StoreError:
            return []  # known at the next cycle
        if row is None:
            return []
        notes = []
        if row.acknowledged_at is not None and incident.acknowledged_at is None:
            incident = replace(incident, acknowledged_at=row.acknowledged_at)
            notes.append(
                self._events.note(
                    EventKind.ACKNOWLEDGED,
                    incident,
                    result,
                    now,
                    "acknowledged on the issue; reminders stop.",
                    actor=row.acknowledged_by,
                )
            )
        if row.closed_at is not None and incident.closed_at is None:
            incident = replace(incident, closed_at=row.closed_at)
            notes.append(
                self._events.note(
                    EventKind.ACKNOWLEDGED,
                    incident,
                    result,
                    now,
                    "its issue was closed while the target still fails; reminders stop,"
                    " and the resolution will be posted with its duration.",
                    actor=row.closed_by,
                    tag="-closed",
                )
            )
        if notes:
            log.warning(
                "incident taken by a person",
                target=runtime.name,
                incident=incident.id,
                acknowledged_by=row.acknowledged_by,
                closed_by=row.closed_by,
            )
            runtime.state = replace(state, incident=incident)
        return notes

    def _window_began(
        self, runtime: TargetRuntime, window: Window | None, result: TargetResult, now: datetime
    ) -> list[IncidentEvent]:
        """A window that begins while an incident is open: its issue notes it."""
        began = window is not None and window != runtime.maintenance
        runtime.maintenance = window
        state = runtime.state
        if not began or window is None or not state.in_incident or state.incident is None:
            return []
        detail = (
            f"from {utc(window.start)} to {utc(window.end)}: {defuse(window.reason, 200)}."
            " Nobody is paged until it ends; the incident stays open and its duration counts."
        )
        return [self._events.note(EventKind.MAINTENANCE, state.incident, result, now, detail)]

    def _observed(
        self, runtime: TargetRuntime, result: TargetResult, own: RegionView
    ) -> PendingCycle:
        """A cycle that decides nothing: this region's results and view only."""
        if not self._election.acting:
            self._remember(runtime, result)
        cycle = PendingCycle(
            result, self.view_hold_s(runtime), None, None, (), region=own.region, view=own
        )
        self._writer.write(cycle, then=lambda: _log_cycle(result))
        return cycle

    def _verdict(self, runtime: TargetRuntime, own: RegionView) -> Verdict | None:
        """What the regions say; None when the other regions' views cannot be read."""
        monitor = self._settings.monitor
        if self._election.shared:
            try:
                runtime.views = tuple(self._store.region_views(runtime.name))
                runtime.views_read_at = self._monotonic()
            except StoreError:
                return None  # deciding on this region alone could page for its own network
        verdict = decide(runtime.views, own, monitor.quorum, monitor.min_regions)
        if runtime.verdict is None or runtime.verdict.kind is not verdict.kind:
            log.info(
                "quorum",
                target=runtime.name,
                verdict=verdict.kind.value,
                failing=[v.region for v in verdict.failing],
                fresh=[v.region for v in verdict.fresh],
                needed=verdict.needed,
            )
        runtime.verdict = verdict
        return verdict

    def _regions(self, verdict: Verdict) -> tuple[RegionView, ...]:
        """The regions' views an event shows: none for a lone instance, as before."""
        return verdict.views if self._election.shared else ()

    @staticmethod
    def _remember(runtime: TargetRuntime, result: TargetResult) -> None:
        previous = runtime.last_result
        if previous is None or previous.outcome is not result.outcome:
            runtime.outcome_since = result.at
        runtime.last_result = result

    def cadence_s(self, runtime: TargetRuntime) -> float:
        """The interval a target is probed at: fast from any region's first failure
        until the incident is resolved."""
        monitor = self._settings.monitor
        fast = runtime.state.needs_fast_cadence or runtime.any_region_failing
        return monitor.incident_interval if fast else monitor.interval

    def hold_s(self, state: TrackerState) -> float:
        """How long a decided result vouches for its target: two cadences and a timeout."""
        monitor = self._settings.monitor
        cadence = monitor.incident_interval if state.needs_fast_cadence else monitor.interval
        return 2 * cadence + monitor.timeout

    def view_hold_s(self, runtime: TargetRuntime) -> float:
        """How long this region's view stays fresh: two of its cadences and a timeout,
        the slower of now and next (a recovery slows the cadence down)."""
        monitor = self._settings.monitor
        return 2 * max(runtime.cadence_s, self.cadence_s(runtime)) + monitor.timeout


def update_incident_metrics(
    metrics: Metrics, state: TrackerState, transitions: Sequence[Transition]
) -> None:
    """The incident gauges from the state; counters and durations from the transitions."""
    target = state.target
    open_now = state.in_incident and state.incident is not None
    started = state.incident.started_at.timestamp() if open_now and state.incident else 0
    metrics.incident_state(target, open_now, started)
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


def _log_decided(result: TargetResult, transitions: Sequence[Transition]) -> None:
    _log_cycle(result)
    for transition in transitions:
        _log_transition(transition)


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
        if check.outcome is not Outcome.DOWN:
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
