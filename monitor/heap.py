"""The garbage collector in a process that probes: what start-up made is left alone."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Take every object alive now out of the cyclic collector's sight, for good.

    What start-up made (modules, settings, the daemon and its pools) lives as long as
    the process, and a full collection walks all of it: about 40 ms a pass with the
    daemon's libraries, and passes come every few cycles of 1,000 checks, which made a
    cycle take 0.20 s or 0.25 s by chance (docs/benchmarks.md, section 1). Frozen, it
    is never walked again. Reference counting still frees what is dropped; only a
    reference cycle among these objects, should one become garbage later, stays.

    Called by `monitor run` and `monitor check` once they are set up; never by library code,
    which would freeze the objects of whoever calls it (a test run's, say).
    """
    # No gc.collect() first: at this point it finds no garbage (0 unreachable objects
    # with the shipped config, measured) and would add ~50 ms to the start-up.
    gc.freeze()
