"""Writing probe cycles: one transaction each, held in memory while the database refuses."""

from __future__ import annotations

from collections.abc import Callable

from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import NotLeader, PendingCycle, Store, StoreError

BACKLOG_LIMIT = 5_000  # cycles kept in memory while the database refuses writes
log = get_logger("monitor.daemon")


class CycleWriter:
    """Commits cycles in order; a failed write keeps them (and every action) for a retry."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        limit: int = BACKLOG_LIMIT,
        on_not_leader: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._limit = limit
        self._on_not_leader = on_not_leader
        self._backlog: list[PendingCycle] = []
        self.problem: str | None = None  # what /healthz says while writes fail

    @property
    def backlog(self) -> int:
        """Cycles waiting in memory."""
        return len(self._backlog)

    def write(self, cycle: PendingCycle) -> None:
        """Commit a cycle after any older ones still waiting."""
        if cycle.view is not None:
            # only a target's newest view is its region's vote: one flushed late must not
            # look fresh (a view's age is counted from when it is written)
            self._backlog = [
                c.without_view() if c.result.target == cycle.result.target else c
                for c in self._backlog
            ]
        self._backlog.append(cycle)
        if len(self._backlog) > self._limit:
            # shed the oldest cycle that carries no action: actions are never dropped
            for index, pending in enumerate(self._backlog):
                if not pending.actions:
                    del self._backlog[index]
                    break
        self.flush()

    def failed(self, operation: str, exc: StoreError) -> None:
        """Another write failed (a heartbeat): count it and report it until writes succeed."""
        self._metrics.store_errors.labels(operation).inc()
        self.problem = f"state database write failed: {exc}"

    def flush(self) -> None:
        """Commit what waits, oldest first, until the database refuses again."""
        while self._backlog:
            try:
                self._store.commit_cycle(self._backlog[0])
            except NotLeader as exc:
                # another instance leads now and decides from the views: keep the results
                log.warning("decision refused: no longer the leader", error=str(exc))
                self._backlog[0] = self._backlog[0].observation()
                self._on_not_leader(str(exc))
                continue
            except StoreError as exc:
                self._metrics.store_errors.labels("commit_cycle").inc()
                if self.problem is None:
                    log.error(
                        "state database write failed; keeping results in memory", error=str(exc)
                    )
                self.problem = f"state database write failed: {exc}"
                return
            self._backlog.pop(0)
        if self.problem is not None:
            log.info("state database writable again")
            self.problem = None
