"""Driving a channel's outbox in tests: commit an event's steps as the daemon does, run a
real worker until its queue is empty, read its error counter."""

from __future__ import annotations

from datetime import timedelta

from monitor.incidents.channels.base import Channel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import OutboxWorker
from monitor.incidents.tracker import Phase, TrackerState
from monitor.store.base import PendingCycle
from monitor.store.sqlite import SqliteStore
from tests.builders import ManualClock


def commit_event(store: SqliteStore, channel: Channel, event: IncidentEvent) -> None:
    """Store the event's steps with the cycle, as the daemon does."""
    phase = Phase.HEALTHY if event.kind is EventKind.RESOLVED else Phase.OPEN
    state = TrackerState(event.target, phase, incident=event.incident)
    store.commit_cycle(PendingCycle(event.result, 60.0, state, event.incident, channel.plan(event)))


def drain(worker: OutboxWorker, clock: ManualClock, rounds: int = 20) -> None:
    """Run the worker until the outbox is empty, jumping the clock past every wait."""
    for _ in range(rounds):
        pending = worker.store.pending_actions()
        if not pending:
            return
        latest = max(a.next_attempt_at for a in pending)
        if latest >= clock():
            clock.now = latest + timedelta(seconds=1)
        worker.run_once()
    raise AssertionError(f"outbox not drained: {worker.store.pending_actions()}")


def channel_errors(worker: OutboxWorker, reason: str) -> float:
    """``monitor_channel_errors_total`` of the worker's channel for ``reason``."""
    value = worker.metrics.registry.get_sample_value(
        "monitor_channel_errors_total", {"channel": worker.channel.name, "reason": reason}
    )
    return value or 0.0
