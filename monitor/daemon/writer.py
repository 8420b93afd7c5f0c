"""Writing probe cycles: one transaction each, held in memory while the database refuses."""

from __future__ import annotations

from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import PendingCycle, Store, StoreError

BACKLOG_LIMIT = 5_000  # cycles kept in memory while the database refuses writes
log = get_logger("monitor.daemon")


class CycleWriter:
    """Commits cycles in order; a failed write keeps them (and every action) for a retry."""

    def __init__(self, store: Store, metrics: Metrics, limit: int = BACKLOG_LIMIT) -> None:
        self._store = store
        self._metrics = metrics
        self._limit = limit
        self._backlog: list[PendingCycle] = []
        self.problem: str | None = None  # what /healthz says while writes fail

    @property
    def backlog(self) -> int:
        """Cycles waiting in memory."""
        return len(self._backlog)

    def write(self, cycle: PendingCycle) -> None:
        """Commit a cycle after any older ones still waiting."""
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
