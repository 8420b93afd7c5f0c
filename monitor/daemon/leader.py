"""Who decides: the single instance, or the holder of PostgreSQL's leader lock.

Every instance probes and publishes its region's view; only the leader turns
views into incident decisions and performs channel steps. A thread keeps the
lock: followers try to take it every ``leader_check``; the leader proves it
still holds it just as often. Taking it begins a new epoch in the database,
which fences off anything a previous leader still has in flight (see
``store.sql``).

A leader that cannot prove its lock for :data:`STEP_DOWN_CHECKS` checks stops
acting at once, even while its proof is still hanging on a dead connection.
PostgreSQL releases the lock of a session it cannot reach only after its
keep-alive time (11 s, see ``store.postgres``), so a leader cut off from the
database always stops before a successor can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from monitor.clock import Clock
from monitor.config import MonitorSection
from monitor.logs import get_logger
from monitor.store.base import LeaderLock, Leadership, Store, StoreError

STEP_DOWN_CHECKS = 3
log = get_logger("monitor.leader")


class LeaderElection:
    """This instance's role. ``acting`` is the question every decision asks."""

    def __init__(
        self,
        store: Store,
        monitor: MonitorSection,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._lock: LeaderLock | None = store.leader_lock()
        self.region = monitor.region
        self.instance = monitor.instance_id
        self._check_s = float(monitor.leader_check)
        self._clock = clock
        self._monotonic = monotonic
        # the sole instance leads from the start; a shared one only once elected (this
        # changes on the event loop only, once the new leader's state is loaded)
        self.is_leader = self._lock is None
        self.epoch: int | None = None
        self.holder: Leadership | None = None  # the database's record, refreshed each check
        self._holding = False  # the thread's view: the lock is ours
        self._proven_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_elected: Callable[[int], bool] = lambda epoch: True
        self._on_deposed: Callable[[], None] = lambda: None

    @property
    def shared(self) -> bool:
        """True when other instances may share the store (PostgreSQL)."""
        return self._lock is not None

    @property
    def acting(self) -> bool:
        """True while this instance may decide and perform channel steps."""
        if not self.is_leader:
            return False
        if self._lock is None:
            return True
        return self._monotonic() - self._proven_at < STEP_DOWN_CHECKS * self._check_s

    @property
    def role(self) -> str:
        """``leader`` or ``follower``, as ``/healthz`` says it."""
        return "leader" if self.acting else "follower"

    def start(
        self,
        on_elected: Callable[[int], bool],
        on_deposed: Callable[[], None],
    ) -> None:
        """Begin: the sole instance leads at once; a shared one starts as a follower.

        ``on_elected(epoch)`` runs on the event loop and returns False when the new
        leader could not load its state (the lock is then given back); the caller
        sets nothing itself.
        """
        self._on_elected, self._on_deposed = on_elected, on_deposed
        if self._lock is None:
            # a new epoch per start: a second daemon on the same file fences this one off
            self._take(self._store.claim_leadership(self.region, self.instance, self._clock()))
            self.holder = self._store.leadership()
            return
        self._store.fence(0)  # a follower decides nothing, even by mistake
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def retire(self) -> None:
        """Stopping: take no lead from now on (a lead held is kept until :meth:`stop`,
        so the outbox workers can finish the step in hand)."""
        self._stop.set()

    def stop(self) -> None:
        """Hand the lock over (a graceful stop lets a successor take over at once)."""
        self.retire()
        if self._thread is not None:
            self._thread.join(self._check_s + 5)
        if self._lock is not None:
            self._lock.release()
        self._holding = False
        self.is_leader = False

    def lost(self, reason: str) -> None:
        """A fenced write was refused: another instance leads now."""
        if self._lock is None or not self.is_leader:
            return
        log.warning("leadership lost", reason=reason, epoch=self.epoch)
        self._depose()

    # ---- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._check()
            self._stop.wait(self._check_s)

    def _check(self) -> None:
        assert self._lock is not None
        if self._stop.is_set():
            return  # a retiring instance takes no lead
        if self._holding:
            if self._lock.alive():
                self._proven_at = self._monotonic()
            else:
                log.warning("leader lock lost; stepping down", epoch=self.epoch)
                self._depose()
        elif self._lock.try_acquire():
            try:
                epoch = self._store.claim_leadership(self.region, self.instance, self._clock())
            except StoreError as exc:
                log.error("could not begin a leadership epoch", error=str(exc))
                self._lock.release()
                return
            self._take(epoch)
            self._holding = True
            self._proven_at = self._monotonic()
            self._call(self._elected, epoch)
        # on failure /healthz keeps the last known holder; the store's problem shows there
        with contextlib.suppress(StoreError):
            self.holder = self._store.leadership()

    def _take(self, epoch: int) -> None:
        self.epoch = epoch
        self._store.fence(epoch)

    def _depose(self) -> None:
        self._store.fence(0)
        self._holding = False
        if self._lock is not None:
            self._lock.release()
        self._call(self._deposed)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    # ---- on the event loop ------------------------------------------------------------

    def _elected(self, epoch: int) -> None:
        if epoch != self.epoch or not self._holding:
            return  # deposed again before the loop got here
        if self._stop.is_set():
            self._depose()  # elected while stopping: hand it straight on
            return
        if not self._on_elected(epoch):
            self._depose()
            return
        self.is_leader = True
        log.warning("leading", region=self.region, instance=self.instance, epoch=epoch)

    def _deposed(self) -> None:
        if self._holding:
            return  # elected again meanwhile
        was = self.is_leader
        self.is_leader = False
        if was:
            self._on_deposed()
            log.warning("following", region=self.region, instance=self.instance)
