"""Shields-style SVG badges: a target's state, and its uptime over a window.

The SVG comes from ``templates/badge.svg`` with autoescaping on, so a label
from configuration cannot break out of its element or attribute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from monitor.web.snapshot import State
from monitor.web.templating import TEMPLATES

__all__ = ["BADGE_COLOURS", "badge_svg", "state_colour", "text_width", "uptime_colour"]

BADGE_COLOURS: Mapping[str, str] = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "lightgrey": "#9f9f9f",
    "blue": "#007ec6",
}
_HEX = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?")
# Approximate advance widths of Verdana 11px, the font of shields-style badges.
_CHAR_WIDTHS = {
    **dict.fromkeys("ijl|!.,:;'", 3.1),
    **dict.fromkeys(" ()[]{}-rtf/", 4.5),
    **dict.fromkeys("0123456789abcdeghknopqsuvxyz?_#$+<=>~^", 6.8),
    **dict.fromkeys("mw%", 10.4),
    **dict.fromkeys("MW", 11.0),
}
_DEFAULT_WIDTH = 7.6  # capitals and anything else
_STATE_COLOUR: Mapping[State, str] = {
    State.UP: "brightgreen",
    State.DEGRADED: "yellow",
    State.DOWN: "red",
    State.UNKNOWN: "lightgrey",
    State.MAINTENANCE: "blue",
}
_UPTIME_FLOORS = ((0.999, "brightgreen"), (0.99, "green"), (0.97, "yellow"), (0.95, "orange"))


def text_width(text: str) -> float:
    """Estimated width in pixels of ``text`` in Verdana 11px."""
    return sum(_CHAR_WIDTHS.get(char, _DEFAULT_WIDTH) for char in text)


def badge_svg(label: str, message: str, colour: str) -> str:
    """A shields-style flat badge: ``label | message``; colour is a name or ``#hex``."""
    fill = BADGE_COLOURS.get(colour, colour)
    if not _HEX.fullmatch(fill):
        raise ValueError(f"badge colour must be one of {sorted(BADGE_COLOURS)} or #hex: {colour!r}")
    left = round(text_width(label) + 12)
    right = round(text_width(message) + 12)
    return TEMPLATES.get_template("badge.svg").render(
        label=label,
        message=message,
        fill=fill,
        left=left,
        right=right,
        total=left + right,
        left_x=f"{left / 2:g}",
        right_x=f"{left + right / 2:g}",
    )


def state_colour(state: State) -> str:
    """Badge colour for a target's state."""
    return _STATE_COLOUR[state]


def uptime_colour(ratio: float | None) -> str:
    """Badge colour for an uptime ratio."""
    if ratio is None:
        return "lightgrey"
    for floor, colour in _UPTIME_FLOORS:
        if ratio >= floor:
            return colour
    return "red"
