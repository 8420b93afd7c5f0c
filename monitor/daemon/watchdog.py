"""The stall watchdog: a thread that ends the process when probe cycles stop completing.

Fly does not restart a machine whose check fails, so the daemon exits by itself
(code 70) and lets the restart policy bring it back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from monitor.logs import get_logger

STALL_EXIT_CODE = 70  # EX_SOFTWARE: the loop stopped making progress
log = get_logger("monitor.daemon")


class Watchdog:
    """Checks ``stale()`` every ``check_every_s`` from its own thread, independent of the loop."""

    def __init__(
        self,
        stale: Callable[[], dict[str, float]],
        check_every_s: float,
        stopping: Callable[[], bool],
    ) -> None:
        self._stale = stale
        self._check_every_s = check_every_s
        self._stopping = stopping

    def start(self) -> None:
        """Run in a daemon thread."""
        threading.Thread(target=self._run, name="watchdog", daemon=True).start()

    def _run(self) -> None:
        while not self._stopping():
            time.sleep(self._check_every_s)
            stale = self._stale()
            if stale and not self._stopping():
                log.critical("stalled: no probe cycle completed; exiting", stale=stale)
                os._exit(STALL_EXIT_CODE)
