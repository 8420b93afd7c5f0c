"""Print ``requirements.lock``: the runtime dependencies of fly-monitor, pinned exactly.

Run it in an environment where ``pip install .`` (or ``-e .``) has resolved the
dependencies, on the image's Python (3.11, Linux)::

    python deploy/lock_requirements.py > requirements.lock

It walks the installed distribution's requirements (extras only where a
requirement asks for them, markers evaluated for this interpreter) and pins
each one at the version installed here, so test tools never enter the lock.
The image installs the lock with ``--no-deps`` and then runs ``pip check``: a
missing transitive dependency fails the build instead of being fetched unpinned.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "fly-monitor"

HEADER = """\
# The runtime dependencies of fly-monitor and their transitive dependencies, pinned
# exactly as `pip install .` resolved them on Python 3.11 / Linux (no test tools).
# Regenerate: pip install -e . && python deploy/lock_requirements.py > requirements.lock
# deploy/Dockerfile installs this with --no-deps, then `pip check` proves it complete.
"""


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def runtime_pins(project: str = PROJECT) -> dict[str, str]:
    """Canonical name -> installed version for every runtime dependency of ``project``."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(Requirement(r), frozenset({""})) for r in distribution(project).requires or []]
    while queue:
        requirement, parent_extras = queue.pop()
        if not _applies(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        extras = frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            raise SystemExit(f"{requirement.name} is required but not installed here") from None
        pins[name] = dist.version
        wanted = extras or frozenset({""})
        queue += [(Requirement(r), wanted) for r in dist.requires or []]
    return pins


def main() -> int:
    """Write the lock to stdout."""
    sys.stdout.write(HEADER)
    for name, version in sorted(runtime_pins().items()):
        sys.stdout.write(f"{name}=={version}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
