"""Durations as people write them (``500ms``, ``30s``, ``15m``, ``1h30m``), in seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``15m``, ``1h30m``."""
    seconds = _duration_seconds(value)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def _parse_optional_duration(value: object) -> float:
    # For settings where 0 means "off" (jitter): a duration, or zero.
    seconds = _duration_seconds(value)
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


def _duration_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 1h, or a number of seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range: TOML allows it, we do not
            raise ValueError(f"duration is too large, got {value!r}") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or a string "
                    "such as 500ms, 30s, 15m, 1h"
                )
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    else:
        raise ValueError("expected a duration such as 30s, 15m or 1h, or a number of seconds")
    if not math.isfinite(seconds):  # TOML's inf and nan, or digits beyond float range
        raise ValueError(f"duration must be a finite number of seconds, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``90`` -> ``1m30s``, ``0.5`` -> ``500ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(out) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
# A duration where 0 switches the feature off.  One validator rather than the union
# ``Duration | Literal[0]``: a union reports a bad value once per branch, under
# pydantic's branch names (``monitor.jitter.literal[0]: Input should be 0``).
OptionalDuration = Annotated[float, BeforeValidator(_parse_optional_duration)]
