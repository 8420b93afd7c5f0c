"""Writing probe cycles: in order, atomically, held in memory while the database refuses.

Each cycle is atomic. In ``monitor run`` the cycles that complete in the same turn of
the event loop (the targets whose answers arrived together) also share their
transaction: a commit is most of a cycle's database time, about 55 of 75 us with
SQLite (docs/benchmarks.md, section 1.9), and a cycle waits for its commit at most
until the loop's next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import NotLeader, PendingCycle, Store, StoreError

BACKLOG_LIMIT = 5_000  # cycles kept in memory while the database refuses writes
# cycles in one transaction at most: a turn of the loop rarely completes more than the
# concurrency bound (100), and a backlog that lands after an outage goes in slices
BATCH_LIMIT = 500
log = get_logger("monitor.daemon")


class CycleWriter:
    """Commits cycles in order; a failed write keeps them (and every action) for a retry."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        limit: int = BACKLOG_LIMIT,
        on_not_leader: Callable[[str], None] = lambda reason: None,
        on_actions: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._limit = limit
        self._on_not_leader = on_not_leader
        self._on_actions = on_actions  # outbox steps were committed: the workers look
        self._backlog: list[PendingCycle] = []
        self._then: list[Callable[[], None]] = []  # each written cycle's, after its flush
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_due = False
        self.problem: str | None = None  # what /healthz says while writes fail

    @property
    def backlog(self) -> int:
        """Cycles waiting in memory."""
        return len(self._backlog)

    def commit_per_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on, commit at the end of ``loop``'s current turn (``monitor run``):
        the cycles written in one turn share a transaction. Before this, and after
        :meth:`commit_at_once`, each write commits before it returns."""
        self._loop = loop

    def commit_at_once(self) -> None:
        """Commit what waits now, and every later write as it is made (the stop)."""
        self._loop = None
        self.flush()

    def write(self, cycle: PendingCycle, then: Callable[[], None] | None = None) -> None:
        """Commit a cycle after any older ones still waiting; call ``then`` once the
        commit has been tried (the cycle's log lines: a probe logged is a probe stored,
        or one the database refused, which is logged too)."""
        if cycle.view is not None:
            # only a target's newest view is its region's vote: one flushed late must not
            # look fresh (a view's age is counted from when it is written)
            self._backlog = [
                c.without_view() if c.result.target == cycle.result.target else c
                for c in self._backlog
            ]
        self._backlog.append(cycle)
        if then is not None:
            self._then.append(then)
        if len(self._backlog) > self._limit:
            # shed the oldest cycle that carries no action: actions are never dropped
            for index, pending in enumerate(self._backlog):
                if not pending.actions:
                    del self._backlog[index]
                    break
        if self._loop is None:
            self.flush()
        elif not self._flush_due:
            self._flush_due = True
            # after the callbacks already due this turn: the other targets' answers
            # that arrived with this one are recorded first
            self._loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_due = False
        self.flush()

    def failed(self, operation: str, exc: StoreError) -> None:
        """Another write failed (a heartbeat): count it and report it until writes succeed."""
        self._metrics.store_errors.labels(operation).inc()
        self.problem = f"state database write failed: {exc}"

    def flush(self) -> None:
        """Commit what waits, oldest first, until the database refuses again; then wake
        the outbox workers if steps were committed, and write the cycles' log lines."""
        acted = False
        try:
            acted = self._commit_waiting()
        finally:  # whatever happened, every cycle written so far was tried
            then, self._then = self._then, []
            for call in then:
                call()
            if acted:
                self._on_actions()

    def _commit_waiting(self) -> bool:
        """The flush's commits; True when one of them carried outbox steps."""
        acted = False
        # cycles to try one at a time before the next batch: while the database refuses,
        # the oldest alone (it is counted and kept, and a database that is down is not
        # sent the whole backlog again and again); after a refused batch, its cycles
        alone = 0 if self.problem is None else 1
        while self._backlog:
            if alone == 0 and len(self._backlog) > 1:
                batch = self._backlog[:BATCH_LIMIT]
                try:
                    self._store.commit_cycles(batch)
                except Exception:
                    # nothing of it was written: one at a time below names the cycle
                    # that failed, and handles it
                    alone = len(batch)
                    continue
                del self._backlog[: len(batch)]
                acted = acted or any(c.actions for c in batch)
                continue
            alone = max(0, alone - 1)
            cycle = self._backlog[0]
            try:
                self._store.commit_cycle(cycle)
            except NotLeader as exc:
                # another instance leads now and decides from the views: every decision
                # waiting is refused alike, and each cycle's results and view are kept
                log.warning("decision refused: no longer the leader", error=str(exc))
                self._backlog = [c if c.state is None else c.observation() for c in self._backlog]
                self._on_not_leader(str(exc))
                alone = 0  # observations need no epoch: together again
                continue
            except StoreError as exc:
                self._metrics.store_errors.labels("commit_cycle").inc()
                if self.problem is None:
                    log.error(
                        "state database write failed; keeping results in memory", error=str(exc)
                    )
                self.problem = f"state database write failed: {exc}"
                break
            except Exception:
                # not the database: this cycle cannot be written at all (a bug of ours).
                # Kept, it would hold back every later cycle for good; dropped, they land
                self._metrics.store_errors.labels("commit_cycle").inc()
                log.exception("a cycle cannot be written; dropped", target=cycle.result.target)
                self._backlog.pop(0)
                continue
            self._backlog.pop(0)
            acted = acted or bool(cycle.actions)
            if self.problem is not None:
                log.info("state database writable again")
                self.problem = None
        return acted
