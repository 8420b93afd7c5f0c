"""What the daemon's process holds: start-up's objects frozen, unused modules not loaded."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

# Two threads reading a deferred module's first attribute at once (the channel worker
# and the KPI sync, say): one of them takes the stand-in out of sys.modules.
_LOADING = threading.Lock()


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


class _DeferredModule(ModuleType):
    """Stands in ``sys.modules`` for a module that has not run: the first attribute read
    from it runs the module, and this one passes every read on to it from then on."""

    def __getattr__(self, attribute: str) -> Any:  # only what this object lacks
        return getattr(_load(self), attribute)


def _load(stand_in: _DeferredModule) -> ModuleType:
    name = stand_in.__name__
    with _LOADING:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]  # so that the import below runs the module itself
    # Outside the lock: the import system's own per-module lock makes a second thread
    # wait for the first one's import (and untangles imports that wait on each other,
    # which a lock of ours around it would turn into a deadlock).
    return importlib.import_module(name)  # run once; sys.modules' copy afterwards


def defer_import(name: str) -> None:
    """Make ``import name`` cheap in this process until something uses the module.

    For a dependency's dependency that the daemon never calls: PyGithub imports PyJWT
    at its own import for GitHub App authentication, and PyJWT imports cryptography,
    ~9 MB of resident memory that a token never uses (docs/benchmarks.md, section 3).
    The import statement gets a stand-in; the first attribute read (``jwt.encode``)
    imports the real module, so a use still works, only later.

    Python 3.11's ``importlib.util.LazyLoader`` cannot do this: the import statement
    itself reads the module's ``__spec__``, which runs a lazy module. The stand-in
    holds the real spec, so that read finds it and runs nothing; and a package's
    ``__path__``, so that importing a submodule first (``import jwt.algorithms``) does
    not run the package, whose own import of that submodule would run it a second time.

    A no-op when the module is loaded already or not installed (its importer then
    fails as it would have). Called by `monitor run`, before anything imports it.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)  # a top-level name: finding it runs nothing
    if spec is None:
        return
    stand_in = _DeferredModule(name)
    stand_in.__spec__ = spec
    if spec.submodule_search_locations is not None:
        stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = stand_in
