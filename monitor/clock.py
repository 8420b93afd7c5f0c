"""The wall clock, injected everywhere time matters so tests can move it by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, UTC: the default :data:`Clock`."""
    return datetime.now(UTC)
