"""The channels' outbox workers, and the start-up reconcile of issues left open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from monitor.clock import Clock
from monitor.incidents.channels.base import Channel
from monitor.incidents.outbox import OutboxWorker, SinkHealth
from monitor.incidents.tracker import TrackerState
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import Store, StoreError

log = get_logger("monitor.daemon")


class Dispatch:
    """One outbox worker per channel: a failing channel never delays another."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        metrics: Metrics,
        clock: Clock,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        if not channels:
            raise ValueError("at least one channel (the journal, when nothing else)")
        self.channels = list(channels)
        self.workers = [
            OutboxWorker(store, c, metrics, clock=clock, may_act=may_act) for c in self.channels
        ]
        self._store = store
        self._clock = clock
        metrics.declare_channels([c.name for c in self.channels])
        self._reconciled = False

    @property
    def primary(self) -> OutboxWorker:
        """The incident tracker's worker (GitHub, or the journal): ``/healthz`` "sink"."""
        return self.workers[0]

    def start(self) -> None:
        """Start every worker thread; say so when steps wait for a channel not configured."""
        self._warn_orphans()
        for worker in self.workers:
            worker.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let each worker finish its current step, all within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            worker.request_stop()
        for worker in self.workers:
            worker.stop(max(0.0, deadline - time.monotonic()))
        for channel in self.channels:
            close = getattr(channel, "close", None)  # an HTTP channel's connections
            if callable(close):
                close()

    def wake(self) -> None:
        """New steps were written: every worker looks now."""
        for worker in self.workers:
            worker.wake()

    def refresh_metrics(self) -> None:
        """The outbox gauges: the totals, and each channel's pending steps."""
        for worker in self.workers:
            worker.refresh_metrics()

    def health(self) -> SinkHealth:
        """The primary channel's health."""
        return self.primary.health

    def channel_health(self) -> dict[str, SinkHealth]:
        """Every other channel's health, by name (``/healthz`` "channels")."""
        return {w.channel.name: w.health for w in self.workers[1:]}

    def stats(self, now: datetime) -> tuple[int, float]:
        """(pending steps, age of the oldest); (-1, 0) when the store cannot say."""
        try:
            return self._store.outbox_stats(now)
        except StoreError:
            return -1, 0.0

    # ---- start-up reconcile -----------------------------------------------------------

    def rearm_reconcile(self) -> None:
        """A new leader compares open issues with the state once more."""
        self._reconciled = False

    def maybe_reconcile(
        self, states: Callable[[], Mapping[str, TrackerState]], unprobed: set[str]
    ) -> None:
        """Once every target has a result, compare open issues with our state (once).

        ``states`` is called only when a reconcile starts: this runs after every probe.
        """
        if self._reconciled or unprobed:
            return
        loop = asyncio.get_running_loop()
        snapshot = dict(states())

        def work() -> None:
            # False from any worker: housekeeping tries again
            self._reconciled = all([w.reconcile(snapshot) for w in self.workers])
            self.wake()

        self._reconciled = True  # at most one attempt in flight; a failure re-arms it
        future = loop.run_in_executor(None, work)
        future.add_done_callback(self._reconcile_done)

    def _reconcile_done(self, future: asyncio.Future[None]) -> None:
        error = future.exception()
        if error is not None:
            self._reconciled = False  # try again at the next housekeeping
            log.error("reconcile crashed", error=str(error))

    def _warn_orphans(self) -> None:
        names = {c.name for c in self.channels}
        try:
            pending = self._store.pending_actions()
        except StoreError:
            return
        orphans = sorted({a.channel for a in pending} - names)
        for name in orphans:
            count = sum(1 for a in pending if a.channel == name)
            log.warning(
                "outbox steps wait for a channel that is not configured",
                channel=name,
                pending=count,
            )
