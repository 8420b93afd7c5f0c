"""The status page: a snapshot rendered through ``templates/status.html``.

:func:`render_page` takes the snapshot dict alone (never the store), so the
page says exactly what ``/api/status`` says. Python derives what needs logic
(bar labels, chart geometry, the error-budget line); the templates lay it out,
and Jinja2's autoescaping escapes every value on the way in.

The page carries a strict Content-Security-Policy: its only script is the
inline reload below, allowed by hash, and its only style is
``static/status.css``, served from this origin at a URL that carries the
file's hash (so it can be cached for a year) and allowed as ``'self'``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from markupsafe import Markup

from monitor.probing.results import Outcome
from monitor.web.formats import duration, milliseconds, parse_time, percent, plural
from monitor.web.snapshot import DAYS, REFRESH_S, SUMMARY_TEXT, UPTIME_WINDOWS, State, Summary
from monitor.web.templating import TEMPLATES

__all__ = [
    "CSP",
    "PAGE_HEADERS",
    "PALETTE",
    "SCRIPT",
    "STYLESHEET",
    "STYLESHEET_DIGEST",
    "STYLESHEET_URL",
    "render_page",
    "render_unavailable",
]

STYLESHEET: bytes = resources.files("monitor.web").joinpath("static", "status.css").read_bytes()
"""The page's stylesheet, as served."""
STYLESHEET_DIGEST = hashlib.sha256(STYLESHEET).hexdigest()[:16]
"""The first 64 bits of its SHA-256: enough to tell any two versions apart."""
STYLESHEET_URL = f"/static/status.{STYLESHEET_DIGEST}.css"
"""Where the page links it: root-relative, so it is same-origin (``'self'``) wherever
the page is served from, ``public_url`` or not."""


def _custom_properties(css: str) -> dict[str, str]:
    root = re.search(r":root\s*\{(.*?)\}", css, re.S)
    found = re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})\b", root.group(1) if root else "")
    return dict(found)


PALETTE: Mapping[str, str] = _custom_properties(STYLESHEET.decode("utf-8"))
"""The page's colours, read from the stylesheet's ``:root`` (their one source)."""

# Reload while nobody is reading closely: not when hidden or while something has focus.
SCRIPT = (
    "setTimeout(function r(){var a=document.activeElement;"
    "if(document.hidden||(a&&a!==document.body)){setTimeout(r,5000);return}"
    f"location.reload()}},{REFRESH_S * 1000})"
)
"""The page's one script, inline, allowed by its hash in :data:`CSP`."""


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


CSP = (
    "default-src 'none'; "
    "style-src 'self'; "
    f"script-src {_sha256(SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Nothing but the inline reload script (by hash), the same-origin stylesheet and
``data:`` images (the empty favicon): no other script, style, frame, form or base."""
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
"""The headers of ``/status`` (and of its 503 page)."""

_SUMMARY_COLOUR: Mapping[Summary, str] = {
    Summary.OPERATIONAL: "up",
    Summary.DEGRADED: "degraded",
    Summary.MAINTENANCE: "maintenance",
    Summary.PARTIAL_OUTAGE: "down",
    Summary.MAJOR_OUTAGE: "down",
    Summary.PARTIAL_DATA: "unknown",
    Summary.NO_DATA: "unknown",
    Summary.STALE: "unknown",
}
_SUMMARY_ICON: Mapping[Summary, State] = {
    Summary.OPERATIONAL: State.UP,
    Summary.DEGRADED: State.DEGRADED,
    Summary.MAINTENANCE: State.MAINTENANCE,
    Summary.PARTIAL_OUTAGE: State.DOWN,
    Summary.MAJOR_OUTAGE: State.DOWN,
    Summary.PARTIAL_DATA: State.UNKNOWN,
    Summary.NO_DATA: State.UNKNOWN,
    Summary.STALE: State.UNKNOWN,
}
_WINDOW_TEXT: Mapping[str, str] = {
    "24h": "24 h",
    "7d": "7 days",
    "30d": "30 days",
    "90d": "90 days",
}
_BAR_CLASS: Mapping[State, str] = {
    State.UP: "u",
    State.DEGRADED: "g",
    State.DOWN: "d",
    State.UNKNOWN: "n",
    State.MAINTENANCE: "m",
}
# The plot's own coordinates; preserveAspectRatio="none" stretches them to the column.
_PLOT_W, _PLOT_H = 500, 152
_FAIL_MARK = 10  # the height of a failed probe's mark on the time axis, in plot units


def render_page(snapshot: Mapping[str, Any]) -> str:
    """The status page as one HTML document, from a snapshot only."""
    now = parse_time(snapshot["generated_at"])
    summary = Summary(snapshot["summary"]["state"])
    base = snapshot["public_url"]
    targets = snapshot["targets"]
    return TEMPLATES.get_template("status.html").render(
        snapshot=snapshot,
        now=now,
        summary={
            "text": SUMMARY_TEXT[summary],
            "colour": _SUMMARY_COLOUR[summary],
            "icon": _SUMMARY_ICON[summary],
        },
        description=f"Live status of {', '.join(t['name'] for t in targets)}",
        canonical_url=f"{base}/status" if base else None,
        json_url=f"{base}/api/status" if base else "/api/status",
        stylesheet_url=STYLESHEET_URL,
        script=Markup(SCRIPT),  # noqa: S704 - our own constant, and its hash is in the CSP
        banner=[t for t in targets if t["state"] != State.UP or t["open_incident"] is not None],
        targets=[_target(t, now) for t in targets],
        windows=[(window, _WINDOW_TEXT[window]) for window in UPTIME_WINDOWS],
        days=DAYS,
    )


def render_unavailable(message: str) -> str:
    """The short page ``/status`` answers with while the state database cannot be read."""
    return TEMPLATES.get_template("unavailable.html").render(message=message)


def _target(target: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The target's snapshot, plus what its section derives from it."""
    today = now.date().isoformat()
    return {
        **target,
        "anchor": f"t-{target['name']}",
        "bars": [
            {"class": _BAR_CLASS[State(day["state"])], "label": _day_label(day, today)}
            for day in target["days"]
        ],
        "strip_facts": _strip_facts(target),
        # the legend names maintenance only where a bar shows it
        "maintenance_key": any(d["state"] == State.MAINTENANCE for d in target["days"]),
        "charts": [_chart(target["name"], i, c) for i, c in enumerate(target["response_time"])],
        "slo_rows": _slo_rows(target["slo"]),
    }


def _day_label(day: Mapping[str, Any], today: str) -> str:
    date = datetime.fromisoformat(day["date"])
    day_text = "Today so far" if day["date"] == today else f"{date.day} {date:%b} {date.year}"
    if day["state"] == State.UNKNOWN and not day["maintenance_s"]:
        return f"{day_text}: no data"
    mostly_maintenance = day["state"] == State.MAINTENANCE
    clauses = [_maintenance_clause(day)] if mostly_maintenance else []
    if day["uptime"] is not None:
        clauses.append(f"{percent(day['uptime'])} up, coverage {percent(day['coverage'])}")
    elif not mostly_maintenance:
        clauses.append("no data")
    if day["down_s"]:
        clauses.append(f"down {duration(day['down_s'])}")
    if day["degraded_s"]:
        clauses.append(f"degraded {duration(day['degraded_s'])}")
    if day["maintenance_s"] and not mostly_maintenance:
        clauses.append(_maintenance_clause(day))
    clauses.append(plural(day["incidents"], "incident"))
    return f"{day_text}: {', '.join(clauses)}"


def _maintenance_clause(day: Mapping[str, Any]) -> str:
    """``maintenance 2 h (database upgrade)``: how long, and why when the windows say."""
    reasons = day["maintenance_reasons"]
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return f"maintenance {duration(day['maintenance_s'])}{why}"


def _strip_facts(target: Mapping[str, Any]) -> str:
    days = target["days"]
    counts = {state: sum(1 for d in days if d["state"] == state) for state in State}
    facts = [f"uptime {percent(target['uptime']['90d']['ratio'])}"]
    facts.append(plural(counts[State.DOWN], "day") + " with downtime")
    if counts[State.DEGRADED]:
        facts.append(plural(counts[State.DEGRADED], "day") + " degraded")
    if counts[State.MAINTENANCE]:
        facts.append(plural(counts[State.MAINTENANCE], "day") + " mostly in maintenance")
    if counts[State.UNKNOWN]:
        facts.append(plural(counts[State.UNKNOWN], "day") + " without data")
    return "; ".join(facts)


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _chart(target: str, index: int, chart: Mapping[str, Any]) -> dict[str, Any]:
    """The chart's snapshot, plus its plot: paths in plot units, and its text description."""
    view: dict[str, Any] = {**chart, "id": f"c-{target}-{index}", "path": None}
    if not chart["points"]:
        return view
    start, end = parse_time(chart["start"]), parse_time(chart["end"])
    span_s = max(1.0, (end - start).total_seconds())
    top_ms = _nice_ceiling(chart["max_ms"] or 1.0)

    def x(at: datetime) -> float:
        return (at - start).total_seconds() / span_s * _PLOT_W

    def y(ms: float) -> float:
        return _PLOT_H - min(ms, top_ms) / top_ms * _PLOT_H

    path: list[str] = []
    fails: list[str] = []
    previous: datetime | None = None
    for point in chart["points"]:
        at = parse_time(point["at"])
        # the line breaks where the monitor was not probing
        gap = previous is None or (at - previous).total_seconds() > chart["max_gap_s"]
        path.append(f"{'M' if gap else 'L'}{x(at):.1f} {y(point['ms']):.1f}")
        if point["outcome"] == Outcome.DOWN:
            fails.append(f"M{x(at):.1f} {_PLOT_H}v-{_FAIL_MARK}")
        previous = at
    return {
        **view,
        "width": _PLOT_W,
        "height": _PLOT_H,
        "top_ms": top_ms,
        "grid": [f"{y(v):.1f}" for v in (0.0, top_ms / 2, top_ms)],
        "path": "".join(path),
        "fails": "".join(fails),
        "desc": _chart_desc(chart),
    }


def _chart_desc(chart: Mapping[str, Any]) -> str:
    slot = chart["slot_s"]
    sampled = f" Each point is the slowest probe of its {duration(slot)} slot." if slot else ""
    failed = chart["failed"]
    return (
        f"{plural(chart['probes'], 'probe')} of {chart['check']} in the last 24 hours: median "
        f"{milliseconds(chart['median_ms'])}, slowest {milliseconds(chart['max_ms'])}, "
        f"{failed} failed{' (red marks on the time axis)' if failed else ''}.{sampled}"
    )


def _slo_rows(slo: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The SLO section as (term, definition) pairs."""
    window = duration(slo["window_s"])
    rows = []
    if slo["objective"] is None:
        rows.append(("Objective", "none set for this target"))
    else:
        verdict = {True: "met", False: "missed", None: "no data"}[slo["met"]]
        rows.append(("Objective", f"{slo['objective'] * 100:g}% uptime over {window}"))
        rows.append(
            (
                "Measured",
                f"{percent(slo['uptime'])} ({verdict}), coverage {percent(slo['coverage'])}",
            )
        )
        rows.append(("Error budget left", _budget(slo)))
    if slo["maintenance_s"]:
        maintenance = duration(slo["maintenance_s"])
        rows.append(("Maintenance", f"{maintenance} excluded from uptime and the error budget"))
    mttr = slo["mttr_mean_s"]
    rows.append(
        (
            "Mean time to recover",
            "no resolved incidents" if mttr is None else f"{duration(mttr)} ({window})",
        )
    )
    if slo["mtta_mean_s"] is not None:
        acknowledged = plural(slo["acknowledged"], "incident")
        rows.append(
            (
                "Mean time to acknowledge",
                f"{duration(slo['mtta_mean_s'])} ({acknowledged} acknowledged in {window})",
            )
        )
    return rows


def _budget(slo: Mapping[str, Any]) -> str:
    """What is left of the error budget; an overspent one as the seconds, not a percentage.

    "-4650%" says nothing a reader can use (and a clamp at -999% said less): on a
    fresh monitor one 10 s outage overspends a budget of a fraction of a second.
    """
    remaining, allowed, down_s = slo["error_budget_remaining"], slo["allowed_down_s"], slo["down_s"]
    if allowed is None:
        return "no data"
    spent = f"{duration(down_s)} down of {duration(allowed)} allowed"
    # no finite ratio: no budget at all (objective 1, or no known time) against some downtime
    if (remaining is None and down_s > 0) or (remaining is not None and remaining < 0):
        return f"overspent: {spent}"
    if remaining is None:
        return "no data"
    left = f"{remaining * 100:.0f}%"
    return f"{left} ({spent})" if allowed else left
