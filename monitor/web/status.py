"""The public status page: one snapshot of the daemon's state as HTML, JSON and badges.

Everything a reader sees comes from one dict, the *snapshot*, built by
:func:`build_snapshot` from the live tracker state and the store. ``/api/status``
serves the dict as JSON (schema: ``status_schema.json``); ``/status`` is
:func:`render_page` of the same dict; the badges read it too. So the page, the
API and the badges cannot disagree, and nothing here computes a figure twice.

Building reads the store, so it runs in a worker thread, and the result is kept
for :data:`CACHE_TTL_S`: a burst of page loads costs one build. Every string that
comes from configuration or from a probed response is escaped where it is
written (HTML, SVG/XML), and the page carries a strict Content-Security-Policy
whose only script and style are the two inline blocks below, allowed by hash.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import html
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from monitor import __version__
from monitor.config import Settings, TargetConfig
from monitor.figures.history import DAY_S, TARGET_LEVEL, floor_to, target_figures
from monitor.figures.slo import WINDOWS, Span, TimeAccount
from monitor.incidents.tracker import Phase
from monitor.logs import get_logger, secrets
from monitor.probing.results import Outcome
from monitor.store.base import IncidentRow, StoreError
from monitor.store.codec import dt, ts
from monitor.web.source import LiveTarget, StatusSource

__all__ = [
    "CACHE_TTL_S",
    "SCHEMA_VERSION",
    "State",
    "StatusSource",
    "Summary",
    "badge_svg",
    "build_snapshot",
    "render_page",
    "status_routes",
    "summarise",
]

SCHEMA_VERSION = 1
UPTIME_WINDOWS = ("24h", "7d", "30d", "90d")
DAYS = 90  # bars in the daily strip
CHART_WINDOW_S = 86_400.0  # the response-time chart covers the last 24 hours
CHART_POINTS = 300  # at most this many points per chart (downsampled above it)
RECENT_INCIDENTS = 5
DETAIL_CHARS = 200  # of a probed response's detail line
CACHE_TTL_S = 5.0
REFRESH_S = 30  # the page reloads itself this often (when nobody is using it)
BADGE_MAX_AGE_S = 60

log = get_logger("monitor.status")


class State(enum.StrEnum):
    """What the page says about a target right now."""

    UP = "up"  # the last probe was good and within its latency budget
    DEGRADED = "degraded"  # the last probe was good but slow
    DOWN = "down"  # the last probe failed
    UNKNOWN = "unknown"  # no probe yet, or the last one is too old to vouch for now


class Summary(enum.StrEnum):
    """The header line: the whole, from the same states as the per-target sections."""

    OPERATIONAL = "operational"  # every target up
    DEGRADED = "degraded"  # none down, at least one degraded
    PARTIAL_OUTAGE = "partial_outage"  # some targets down, not all
    MAJOR_OUTAGE = "major_outage"  # every target down
    PARTIAL_DATA = "partial_data"  # none down or degraded, but some unknown
    NO_DATA = "no_data"  # nothing known about any target yet
    STALE = "stale"  # every target unknown, though probed before: the monitor is not probing


SUMMARY_TEXT: Mapping[Summary, str] = {
    Summary.OPERATIONAL: "All systems operational",
    Summary.DEGRADED: "Degraded performance",
    Summary.PARTIAL_OUTAGE: "Partial outage",
    Summary.MAJOR_OUTAGE: "Major outage",
    Summary.PARTIAL_DATA: "Some systems have no recent data",
    Summary.NO_DATA: "No data yet",
    Summary.STALE: "No recent data",
}
STATE_TEXT: Mapping[State, str] = {
    State.UP: "Up",
    State.DEGRADED: "Degraded",
    State.DOWN: "Down",
    State.UNKNOWN: "Unknown",
}


def summarise(states: Sequence[State]) -> Summary:
    """The header line for these target states (worst first: down, degraded, unknown)."""
    if all(s is State.UNKNOWN for s in states):
        return Summary.NO_DATA
    if all(s is State.DOWN for s in states):
        return Summary.MAJOR_OUTAGE
    if State.DOWN in states:
        return Summary.PARTIAL_OUTAGE
    if State.DEGRADED in states:
        return Summary.DEGRADED
    if State.UNKNOWN in states:
        return Summary.PARTIAL_DATA
    return Summary.OPERATIONAL


# ---- the snapshot ------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _safe_url(url: str | None) -> str | None:
    """Only http(s) URLs become links: an issue URL is data, never ``javascript:``."""
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def visible_targets(settings: Settings) -> list[TargetConfig]:
    """The targets the page shows, in ``status_page.targets`` order (default: config order)."""
    names = settings.status_page.targets
    if names is None:
        return list(settings.targets)
    return [settings.target(name) for name in dict.fromkeys(names)]


def build_snapshot(
    source: StatusSource, now: datetime, live: Mapping[str, LiveTarget] | None = None
) -> dict[str, Any]:
    """Everything the page, the API and the badges say, as one JSON-safe dict.

    ``live`` is the daemon's live view, read on the event loop by the caller
    (it defaults to ``source.live_targets()``); the rest is read from the store.
    Raises :class:`~monitor.store.StoreError` when the store cannot be read.
    """
    live = source.live_targets() if live is None else live
    settings = source.settings
    sink = "github" if settings.github.active else "journal"
    targets = [
        _target_snapshot(source, config, live.get(config.name), now, sink)
        for config in visible_targets(settings)
    ]
    states = [State(t["state"]) for t in targets]
    summary = summarise(states)
    if summary is Summary.NO_DATA and any(t["last_checked_at"] for t in targets):
        summary = Summary.STALE  # not "yet": results exist, but none recent enough
    return {
        "schema_version": SCHEMA_VERSION,
        "monitor_version": __version__,
        "title": settings.status_page.title,
        "generated_at": _iso(now),
        "public_url": settings.status_page.public_url,
        "refresh_s": REFRESH_S,
        "incident_sink": sink,
        "summary": {
            "state": summary.value,
            "text": SUMMARY_TEXT[summary],
            **{state.value: states.count(state) for state in State},
        },
        "targets": targets,
    }


def _target_snapshot(
    source: StatusSource,
    config: TargetConfig,
    live: LiveTarget | None,
    now: datetime,
    sink: str,
) -> dict[str, Any]:
    settings = source.settings
    name = config.name
    incidents = source.store.incidents(name, since=now - timedelta(days=DAYS))
    state, note = _state(live, now, settings)
    uptime = {
        window: source.history.account(name, Span.ending(now, WINDOWS[window]), now)
        for window in UPTIME_WINDOWS
    }
    result = live.last_result if live is not None else None
    return {
        "name": name,
        "state": state.value,
        "state_text": STATE_TEXT[state],
        "note": note,
        "phase": live.state.phase.value if live is not None else Phase.HEALTHY.value,
        **_since(live, state, now),
        "last_checked_at": _iso(result.at) if result is not None else None,
        "cadence_s": live.cadence_s if live is not None else settings.monitor.interval,
        "checks": [
            {
                "name": c.check,
                "state": c.outcome.value,
                "reason": c.reason.value,
                "status": c.status_code,
                "duration_ms": round(c.duration_s * 1000, 1),
                # a probed response's words: masked like a log line, and kept short
                "detail": secrets.redact(c.detail)[:DETAIL_CHARS],
            }
            for c in (result.checks if result is not None else ())
        ],
        "failing": _failing(live, state, settings),
        "open_incident": _open_incident(live, incidents, now, sink),
        "uptime": {
            window: {"ratio": _ratio(acct.uptime), "coverage": _ratio(acct.coverage)}
            for window, acct in uptime.items()
        },
        "days": _days(source, name, now, incidents),
        "response_time": _charts(source, config, now),
        "recent_incidents": [
            _incident_dict(i, now) for i in incidents if i.resolved_at is not None
        ][:RECENT_INCIDENTS],
        "slo": _slo(source, config, now),
    }


def _state(live: LiveTarget | None, now: datetime, settings: Settings) -> tuple[State, str | None]:
    """The state to show, and a note when it is unknown (why)."""
    if live is None or live.last_result is None:
        return State.UNKNOWN, "Not probed yet."
    result = live.last_result
    # a result vouches for as long as the daemon's own samples hold: two cadences and a timeout
    hold_s = 2 * live.cadence_s + settings.monitor.timeout
    age_s = (now - result.at).total_seconds()
    if age_s > hold_s:
        return State.UNKNOWN, f"No probe result for {_duration(age_s)}: the monitor is not probing."
    return State(result.outcome.value), None


def _since(live: LiveTarget | None, state: State, now: datetime) -> dict[str, Any]:
    """Since when the state holds: the incident's first failed probe when there is one."""
    since: datetime | None = None
    if live is not None and state is not State.UNKNOWN:
        since = live.outcome_since
        tracker = live.state
        if state is State.DOWN and tracker.in_incident and tracker.incident is not None:
            since = tracker.incident.started_at
        elif state is State.DOWN and tracker.phase is Phase.FAILING:
            since = tracker.streak_started_at or since
    if since is None:
        return {"since": None, "for_s": None}
    return {"since": _iso(since), "for_s": round(max(0.0, (now - since).total_seconds()), 1)}


def _failing(live: LiveTarget | None, state: State, settings: Settings) -> dict[str, int] | None:
    """Failed probes not yet confirmed as an incident (``open_after`` not reached)."""
    if live is None or state is not State.DOWN or live.state.phase is not Phase.FAILING:
        return None
    return {"failed_probes": live.state.fail_streak, "open_after": settings.monitor.open_after}


def _open_incident(
    live: LiveTarget | None, incidents: Sequence[IncidentRow], now: datetime, sink: str
) -> dict[str, Any] | None:
    tracker = live.state if live is not None else None
    if tracker is None or not tracker.in_incident or tracker.incident is None:
        return None
    incident = tracker.incident
    row = next((i for i in incidents if i.id == incident.id), None)
    url = _safe_url(row.issue_url) if row is not None else None
    number = row.issue_number if row is not None else None
    if url is not None:
        note = None
    elif sink == "journal":
        note = "No GitHub issue: this monitor records incidents in its log (journal sink)."
    else:
        note = "The GitHub issue is being filed."
    return {
        "id": incident.id,
        "phase": tracker.phase.value,
        "started_at": _iso(incident.started_at),
        "for_s": round(incident.elapsed_s(now), 1),
        "probes_failed": incident.probes_failed,
        "probes_total": incident.probes_total,
        "issue_number": number,
        "issue_url": url,
        "issue_note": note,
    }


def _incident_dict(incident: IncidentRow, now: datetime) -> dict[str, Any]:
    end = incident.resolved_at or now
    return {
        "id": incident.id,
        "started_at": _iso(incident.started_at),
        "resolved_at": _iso(incident.resolved_at) if incident.resolved_at else None,
        "duration_s": round((end - incident.started_at).total_seconds(), 1),
        "issue_number": incident.issue_number,
        "issue_url": _safe_url(incident.issue_url),
    }


def _day_state(acct: TimeAccount) -> State:
    if acct.known_s <= 0:
        return State.UNKNOWN
    if acct.down_s > 0:
        return State.DOWN
    if acct.degraded_s > 0:
        return State.DEGRADED
    return State.UP


def _days(
    source: StatusSource, name: str, now: datetime, incidents: Sequence[IncidentRow]
) -> list[dict[str, Any]]:
    """The daily strip: rolled-up days from the daily rollups, the rest from ``History.account``."""
    history, store = source.history, source.store
    today = floor_to(now, DAY_S)
    first = today - timedelta(days=DAYS - 1)
    watermark = history.watermark()
    first_sample = store.first_sample_at(name)
    rows = {
        float(r["bucket"]): r
        for r in store.rollups("day", name, TARGET_LEVEL, first, today + timedelta(days=1))
    }
    days = []
    for index in range(DAYS):
        start = first + timedelta(days=index)
        end = min(start + timedelta(days=1), now)
        if watermark is not None and end <= watermark:
            row = rows.get(ts(start))
            acct = (
                TimeAccount(row["up_s"], row["degraded_s"], row["down_s"], row["unknown_s"])
                if row is not None
                else TimeAccount(0.0, 0.0, 0.0, DAY_S)
            )
        elif first_sample is None or end <= first_sample:
            acct = TimeAccount(0.0, 0.0, 0.0, (end - start).total_seconds())
        else:  # not rolled up yet (today, and yesterday just after midnight): hours plus raw
            acct = history.account(name, Span(start, end), now)
        overlapping = sum(
            1
            for i in incidents
            if i.started_at < start + timedelta(days=1)
            and (i.resolved_at is None or i.resolved_at > start)
        )
        days.append(
            {
                "date": start.date().isoformat(),
                "state": _day_state(acct).value,
                "uptime": _ratio(acct.uptime),
                "coverage": _ratio(acct.coverage),
                "down_s": round(acct.down_s, 1),
                "degraded_s": round(acct.degraded_s, 1),
                "incidents": overlapping,
            }
        )
    return days


def _charts(source: StatusSource, config: TargetConfig, now: datetime) -> list[dict[str, Any]]:
    """Response time per check over the last 24 hours.

    A busy day (more probes than CHART_POINTS) is downsampled in SQL to the slowest
    probe of each slot, so a spike survives; a quiet one is charted probe by probe.
    """
    start = now - timedelta(seconds=CHART_WINDOW_S)
    slot_s = CHART_WINDOW_S / CHART_POINTS
    slots = source.store.latency_slots(config.name, start, now, slot_s)
    monitor = source.settings.monitor
    max_gap_s = 2 * monitor.interval + monitor.timeout
    names = [c.name for c in config.checks]
    names += sorted(set(slots) - set(names))  # a check renamed since: its history still shows
    charts = []
    for name in names:
        check_slots = slots.get(name, [])
        probes = sum(n for _, _, n, _, _ in check_slots)
        points = [
            (dt(at), slowest * 1000, _worst(down, degraded))
            for at, slowest, _, down, degraded in check_slots
        ]
        median = source.store.median_duration(config.name, name, start, now, probes)
        charts.append(
            {
                "check": name,
                "start": _iso(start),
                "end": _iso(now),
                "probes": probes,
                "failed": sum(down for _, _, _, down, _ in check_slots),
                "median_ms": None if median is None else round(median * 1000, 1),
                "max_ms": round(max(ms for _, ms, _ in points), 1) if points else None,
                # with one probe per slot every probe is a point: nothing was sampled away
                "slot_s": slot_s if probes > len(points) else None,
                "max_gap_s": max_gap_s,
                "points": [
                    {"at": _iso(at), "ms": round(ms, 1), "outcome": o.value} for at, ms, o in points
                ],
            }
        )
    return charts


def _worst(down: int, degraded: int) -> Outcome:
    if down:
        return Outcome.DOWN
    return Outcome.DEGRADED if degraded else Outcome.UP


def _slo(source: StatusSource, config: TargetConfig, now: datetime) -> dict[str, Any]:
    window = Span.ending(now, source.settings.monitor.slo_window)
    figures = target_figures(source.history, config, window, now)
    budget = figures.budget
    return {
        "objective": figures.objective,
        "window_s": window.seconds,
        "uptime": _ratio(figures.account.uptime),
        "coverage": _ratio(figures.account.coverage),
        "met": figures.slo_met,
        "error_budget_remaining": _ratio(_finite(budget.remaining_ratio)) if budget else None,
        "allowed_down_s": round(budget.allowed_down_s, 1) if budget else None,
        "down_s": round(figures.account.down_s, 1),
        "incidents": figures.mttr.count,
        "mttr_mean_s": _finite(figures.mttr.mean_s),
        "mttr_objective_s": figures.mttr_objective_s,
    }


# ---- formatting ---------------------------------------------------------------------------------


def _e(text: object) -> str:
    """Escaped for HTML text and double-quoted attributes (and XML)."""
    return html.escape(str(text), quote=True)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 5 min``, ``3 d 4 h``."""
    if 0 < seconds < 1:
        return f"{round(seconds, 1):g} s"  # sub-second cadences (test setups): not "0 s"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _when(moment: datetime, now: datetime, *, seconds: bool = False) -> str:
    """A UTC time, with the date when it is not today's."""
    moment = moment.astimezone(UTC)
    clock = f"{moment:%H:%M:%S} UTC" if seconds else f"{moment:%H:%M} UTC"
    if moment.date() == now.date():
        return clock
    day = f"{moment.day} {moment:%b}"
    if moment.year != now.year:
        day += f" {moment.year}"
    return f"{day}, {clock}"


def _time(value: str, now: datetime, *, seconds: bool = False) -> str:
    text = _when(_parse(value), now, seconds=seconds)
    return f'<time datetime="{_e(value)}">{_e(text)}</time>'


def _pct(ratio: float | None) -> str:
    """A percentage that never rounds up to 100 (99.999 % shows as 99.99 %)."""
    if ratio is None:
        return "no data"
    if ratio >= 1:
        return "100%"
    if 0 < ratio < 0.0001:
        return "<0.01%"
    return f"{math.floor(ratio * 10_000) / 100:.2f}%"


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---- the page -----------------------------------------------------------------------------------

# Colours with at least 4.5:1 against white (WCAG AA for text); bars at least 3:1.
PALETTE: Mapping[str, str] = {
    "up": "#1a7f37",
    "degraded": "#9a6700",
    "down": "#cf222e",
    "unknown": "#57606a",
    "ink": "#1f2328",
    "mute": "#57606a",
    "link": "#0969da",
    "line": "#d0d7de",
    "nodata": "#8c959f",
    "page": "#f6f8fa",
    "card": "#ffffff",
    "incident": "#ffebe9",  # the open-incident box: links on it still reach 4.5:1
}
_SUMMARY_COLOUR = {
    Summary.OPERATIONAL: "up",
    Summary.DEGRADED: "degraded",
    Summary.PARTIAL_OUTAGE: "down",
    Summary.MAJOR_OUTAGE: "down",
    Summary.PARTIAL_DATA: "unknown",
    Summary.NO_DATA: "unknown",
    Summary.STALE: "unknown",
}
_SUMMARY_ICON = {
    Summary.OPERATIONAL: State.UP,
    Summary.DEGRADED: State.DEGRADED,
    Summary.PARTIAL_OUTAGE: State.DOWN,
    Summary.MAJOR_OUTAGE: State.DOWN,
    Summary.PARTIAL_DATA: State.UNKNOWN,
    Summary.NO_DATA: State.UNKNOWN,
    Summary.STALE: State.UNKNOWN,
}

_P = PALETTE
CSS = (
    "*{box-sizing:border-box}"
    f"body{{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    f"color:{_P['ink']};background:{_P['page']}}}"
    "header,main,footer{max-width:60rem;margin:0 auto;padding:0 .75rem}"
    "h1{font-size:1.4rem;margin:.75rem 0 .5rem;overflow-wrap:anywhere}"
    "h2{font-size:1.25rem;margin:0;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;"
    "overflow-wrap:anywhere}"
    "h3{font-size:1rem;margin:1.25rem 0 .4rem}"
    f"a{{color:{_P['link']}}}"
    f":focus-visible{{outline:3px solid {_P['link']};outline-offset:2px}}"
    ".defs{position:absolute;width:0;height:0;overflow:hidden}"
    ".icon{width:1.1em;height:1.1em;fill:currentColor;flex:none;vertical-align:-.15em}"
    ".banner{color:#fff;border-radius:8px;padding:.6rem .9rem;margin:0 0 .5rem}"
    ".banner a{color:#fff}.banner a:focus-visible{outline-color:#fff}"
    ".banner .head{display:flex;gap:.5rem;align-items:center;font-size:1.25rem;font-weight:700;"
    "margin:0}"
    ".banner ul{margin:.4rem 0 0;padding:0;list-style:none}.banner li{margin:.3rem 0}"
    + "".join(f".c-{key}{{background:{_P[key]}}}" for key in ("up", "degraded", "down", "unknown"))
    + f".meta,.mute{{color:{_P['mute']};font-size:.875rem}}.meta{{margin:.25rem 0}}"
    f".target{{background:{_P['card']};border:1px solid {_P['line']};border-radius:8px;"
    "padding:.9rem;margin:.9rem 0}"
    ".pill{display:inline-flex;gap:.3rem;align-items:center;color:#fff;border-radius:1rem;"
    "padding:0 .65rem;font-size:.95rem;font-weight:600}"
    ".since{margin:.4rem 0}"
    f".incident{{border-left:4px solid {_P['down']};background:{_P['incident']};border-radius:4px;"
    "padding:.5rem .75rem;margin:.6rem 0}.incident h3{margin:0 0 .2rem}.incident p{margin:.2rem 0}"
    ".checks{margin:.4rem 0;padding-left:1.2rem}.checks li{overflow-wrap:anywhere}"
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}"
    f"th,td{{text-align:left;padding:.25rem .4rem .25rem 0;border-bottom:1px solid {_P['line']}}}"
    "thead th{font-weight:600}"
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);"
    "white-space:nowrap}"
    ".strip{position:relative}"
    ".bars{display:flex;gap:1px;align-items:flex-end;height:2.25rem;margin:0;padding:0;"
    "list-style:none}"
    f".bars li{{flex:1 1 0;min-width:0;height:100%;border-radius:1px;background:{_P['up']}}}"
    f".bars .d{{background:{_P['down']}}}"
    f".bars .g{{background:repeating-linear-gradient(0deg,{_P['degraded']} 0 3px,#d4a72c 3px 5px)}}"
    f".bars .n{{height:35%;background:{_P['nodata']}}}"
    f".bars li:hover,.bars li:focus{{outline:2px solid {_P['ink']};outline-offset:1px}}"
    ".bars li:hover::after,.bars li:focus::after{content:attr(aria-label);position:absolute;"
    f"left:0;right:0;top:100%;margin-top:.3rem;background:{_P['ink']};color:#fff;"
    "padding:.25rem .5rem;border-radius:4px;font-size:.85rem;z-index:1}"
    ".axis{display:flex;justify-content:space-between;margin:.15rem 0 0}"
    ".legend{display:flex;flex-wrap:wrap;gap:.25rem .9rem;margin:.3rem 0 0;padding:0;"
    "list-style:none}"
    ".legend span{display:inline-block;width:.6rem;height:.9rem;margin-right:.3rem;"
    "vertical-align:-.1rem}"
    f".k-u{{background:{_P['up']}}}.k-d{{background:{_P['down']}}}"
    f".k-g{{background:repeating-linear-gradient(0deg,{_P['degraded']} 0 3px,#d4a72c 3px 5px)}}"
    f".legend .k-n{{background:{_P['nodata']};height:.35rem}}"
    ".chart{margin:.5rem 0}.chart svg{display:block;width:100%;height:auto}"
    ".chart figcaption{font-size:.875rem}"
    f".chart text{{font-size:22px;fill:{_P['mute']}}}"
    f".chart .grid{{stroke:{_P['line']};stroke-width:1}}"
    f".chart .line{{fill:none;stroke:{_P['link']};stroke-width:2.5;stroke-linejoin:round}}"
    f".chart .fail{{stroke:{_P['down']};stroke-width:3}}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .75rem;margin:.3rem 0}"
    "dt{font-weight:600}dd{margin:0}"
    "footer{padding-bottom:2rem}"
    "@media (min-width:40rem){header,main,footer{padding:0 1.5rem}.target{padding:1.25rem}}"
)
# Reload while nobody is reading closely: not when hidden or while something has focus.
SCRIPT = (
    "setTimeout(function r(){var a=document.activeElement;"
    "if(document.hidden||(a&&a!==document.body)){setTimeout(r,5000);return}"
    f"location.reload()}},{REFRESH_S * 1000})"
)


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


CSP = (
    "default-src 'none'; "
    f"style-src {_sha256(CSS)}; "
    f"script-src {_sha256(SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}

# One shape per state, so colour is never the only signal: circle with a tick (up),
# triangle with "!" (degraded), octagon with a cross (down), circle with a bar (unknown).
_ICONS = (
    '<svg class="defs" aria-hidden="true" focusable="false"><defs>'
    '<symbol id="i-up" viewBox="0 0 16 16"><path fill-rule="evenodd" '
    'd="M8 0a8 8 0 1 0 0 16A8 8 0 0 0 8 0ZM6.7 11.6 3.2 8.1l1.2-1.2 2.3 2.3 4.9-4.9 1.2 1.2Z"/>'
    "</symbol>"
    '<symbol id="i-degraded" viewBox="0 0 16 16"><path fill-rule="evenodd" '
    'd="M8 .5 16 15H0ZM7 5.5h2v5H7Zm0 6h2v2H7Z"/></symbol>'
    '<symbol id="i-down" viewBox="0 0 16 16"><path fill-rule="evenodd" '
    'd="M4.7 0h6.6L16 4.7v6.6L11.3 16H4.7L0 11.3V4.7ZM5.2 4 8 6.8 10.8 4 12 5.2 9.2 8l2.8 2.8'
    '-1.2 1.2L8 9.2 5.2 12 4 10.8 6.8 8 4 5.2Z"/></symbol>'
    '<symbol id="i-unknown" viewBox="0 0 16 16"><path fill-rule="evenodd" '
    'd="M8 0a8 8 0 1 0 0 16A8 8 0 0 0 8 0ZM4 7h8v2H4Z"/></symbol>'
    "</defs></svg>"
)


def _icon(state: State) -> str:
    return f'<svg class="icon" aria-hidden="true" focusable="false"><use href="#i-{state}"/></svg>'


def _link(base: str | None, path: str) -> str:
    return f"{base}{path}" if base else path


def render_page(snapshot: Mapping[str, Any]) -> str:
    """The status page as one self-contained HTML document, from a snapshot only."""
    now = _parse(snapshot["generated_at"])
    summary = Summary(snapshot["summary"]["state"])
    title = snapshot["title"]
    base = snapshot["public_url"]
    targets = snapshot["targets"]
    head_extra = f'<link rel="canonical" href="{_e(_link(base, "/status"))}">' if base else ""
    names = ", ".join(t["name"] for t in targets)
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(SUMMARY_TEXT[summary])} · {_e(title)}</title>"
        f'<meta name="description" content="{_e(f"Live status of {names}")}">'
        f'{head_extra}<link rel="icon" href="data:,"><style>{CSS}</style></head><body>',
        _ICONS,
        "<header>",
        f"<h1>{_e(title)}</h1>",
        _banner(snapshot, summary, now),
        f'<p class="meta">Updated {_time(snapshot["generated_at"], now, seconds=True)} · times in UTC · '
        f"this page refreshes every {snapshot['refresh_s']} s · "
        f'<a href="{_e(_link(base, "/api/status"))}">JSON</a></p>',
        "</header><main>",
        *(_target_section(t, snapshot, now) for t in targets),
        "</main>",
        '<footer><p class="mute">Uptime counts degraded (slow) time as up. Coverage is the '
        "share of time the monitor could vouch for; time it was not running counts as "
        "unknown, never as up. "
        f"monitor {_e(snapshot['monitor_version'])}.</p></footer>",
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "".join(parts)


def _banner(snapshot: Mapping[str, Any], summary: Summary, now: datetime) -> str:
    """The header line, and for every target that is not up: what, since when, which issue."""
    colour = _SUMMARY_COLOUR[summary]
    items = []
    for target in snapshot["targets"]:
        state = State(target["state"])
        if state is State.UP and target["open_incident"] is None:
            continue
        name = f'<a href="#t-{_e(target["name"])}">{_e(target["name"])}</a>'
        if state is State.UNKNOWN:
            items.append(f"<li>{name}: no recent data.{_issue_line(target, short=True)}</li>")
            continue
        words = {
            State.DOWN: "is <strong>down</strong>",
            State.DEGRADED: "is <strong>degraded</strong> (slow)",
            State.UP: "is up again (recovering)",
        }[state]
        since = ""
        if target["since"] is not None and state is not State.UP:
            since = f" since {_time(target['since'], now)} (for {_duration(target['for_s'])})"
        items.append(f"<li>{name} {words}{since}.{_issue_line(target, short=True)}</li>")
    listing = f"<ul>{''.join(items)}</ul>" if items else ""
    return (
        f'<div class="banner c-{colour}"><p class="head">{_icon(_SUMMARY_ICON[summary])}'
        f"<span>{_e(SUMMARY_TEXT[summary])}</span></p>{listing}</div>"
    )


def _issue_line(target: Mapping[str, Any], *, short: bool) -> str:
    incident = target["open_incident"]
    if incident is None:
        return ""
    if incident["issue_url"]:
        number = incident["issue_number"]
        label = f"GitHub issue #{number}" if number else "GitHub issue"
        return f' Tracked in <a href="{_e(incident["issue_url"])}">{_e(label)}</a>.'
    return "" if short else f" {_e(incident['issue_note'])}"


def _target_section(target: Mapping[str, Any], snapshot: Mapping[str, Any], now: datetime) -> str:
    name = target["name"]
    anchor = f"t-{name}"
    state = State(target["state"])
    return "".join(
        [
            f'<section class="target" id="{_e(anchor)}" aria-labelledby="{_e(anchor)}-h">',
            f'<h2 id="{_e(anchor)}-h"><span>{_e(name)}</span>'
            f'<span class="pill c-{state}">{_icon(state)}{_e(target["state_text"])}</span></h2>',
            _since_line(target, now),
            _incident_box(target, now),
            _checks(target),
            _uptime_table(target),
            _strip(target, now),
            _charts_html(target, now),
            _recent(target, now),
            _slo_html(target),
            "</section>",
        ]
    )


def _since_line(target: Mapping[str, Any], now: datetime) -> str:
    state = State(target["state"])
    bits = []
    if target["note"]:
        bits.append(_e(target["note"]))
    failing = target["failing"]
    if failing is not None:
        bits.append(
            f"Failing since {_time(target['since'], now)}: "
            f"{_plural(failing['failed_probes'], 'failed probe')}, an incident opens after "
            f"{failing['open_after']}."
        )
    elif target["since"] is not None:
        bits.append(
            f"{_e(STATE_TEXT[state])} since {_time(target['since'], now)} "
            f"(for {_duration(target['for_s'])})."
        )
    if target["last_checked_at"] is not None:
        bits.append(
            f'<span class="mute">Last probe {_time(target["last_checked_at"], now)}, '
            f"every {_duration(target['cadence_s'])}.</span>"
        )
    return f'<p class="since">{" ".join(bits)}</p>'


def _incident_box(target: Mapping[str, Any], now: datetime) -> str:
    incident = target["open_incident"]
    if incident is None:
        return ""
    anchor = f"t-{target['name']}-i"
    recovering = (
        " It is recovering: the last probe was good."
        if incident["phase"] == (Phase.RECOVERING.value)
        else ""
    )
    if incident["issue_url"]:
        issue = f"<p>{_issue_line(target, short=True).strip()}</p>"
    else:
        issue = f"<p>{_e(incident['issue_note'])}</p>"
    return (
        f'<div class="incident" role="group" aria-labelledby="{_e(anchor)}">'
        f'<h3 id="{_e(anchor)}">Open incident</h3>'
        f"<p>Started {_time(incident['started_at'], now)}, ongoing for "
        f"<strong>{_duration(incident['for_s'])}</strong> "
        f"({incident['probes_failed']} of {_plural(incident['probes_total'], 'probe')} failed)."
        f"{recovering}</p>{issue}</div>"
    )


def _checks(target: Mapping[str, Any]) -> str:
    if not target["checks"]:
        return ""
    items = []
    for check in target["checks"]:
        state = State(check["state"])
        status = f"HTTP {check['status']}, " if check["status"] is not None else ""
        detail = f" — {_e(check['detail'])}" if state is not State.UP and check["detail"] else ""
        items.append(
            f"<li><strong>{_e(check['name'])}</strong>: {_e(STATE_TEXT[state].lower())}"
            f'{detail} <span class="mute">({status}{_ms(check["duration_ms"])})</span></li>'
        )
    return f'<ul class="checks" aria-label="Last probe per check">{"".join(items)}</ul>'


_WINDOW_TEXT = {"24h": "24 h", "7d": "7 days", "30d": "30 days", "90d": "90 days"}


def _uptime_table(target: Mapping[str, Any]) -> str:
    uptime = target["uptime"]
    rows = "".join(
        f'<tr><th scope="row">{_WINDOW_TEXT[w]}</th><td>{_pct(uptime[w]["ratio"])}</td>'
        f"<td>{_pct(uptime[w]['coverage'])}</td></tr>"
        for w in UPTIME_WINDOWS
    )
    return (
        "<h3>Uptime</h3><table>"
        f'<caption class="sr">Uptime and coverage of {_e(target["name"])}</caption>'
        '<thead><tr><th scope="col">Last</th><th scope="col">Uptime</th>'
        f'<th scope="col">Coverage</th></tr></thead><tbody>{rows}</tbody></table>'
    )


_BAR_CLASS = {State.UP: "u", State.DEGRADED: "g", State.DOWN: "d", State.UNKNOWN: "n"}


def _day_label(day: Mapping[str, Any], today: str) -> str:
    date = datetime.fromisoformat(day["date"])
    when = "Today so far" if day["date"] == today else f"{date.day} {date:%b} {date.year}"
    if day["state"] == State.UNKNOWN:
        return f"{when}: no data"
    text = f"{when}: {_pct(day['uptime'])} up, coverage {_pct(day['coverage'])}"
    if day["down_s"]:
        text += f", down {_duration(day['down_s'])}"
    if day["degraded_s"]:
        text += f", degraded {_duration(day['degraded_s'])}"
    return text + f", {_plural(day['incidents'], 'incident')}"


def _strip(target: Mapping[str, Any], now: datetime) -> str:
    days = target["days"]
    today = now.date().isoformat()
    bars = "".join(
        f'<li class="{_BAR_CLASS[State(d["state"])]}" tabindex="0" '
        f'aria-label="{_e(_day_label(d, today))}"></li>'
        for d in days
    )
    counts = {state: sum(1 for d in days if d["state"] == state) for state in State}
    facts = [f"uptime {_pct(target['uptime']['90d']['ratio'])}"]
    facts.append(_plural(counts[State.DOWN], "day") + " with downtime")
    if counts[State.DEGRADED]:
        facts.append(_plural(counts[State.DEGRADED], "day") + " degraded")
    if counts[State.UNKNOWN]:
        facts.append(_plural(counts[State.UNKNOWN], "day") + " without data")
    heading = f"t-{target['name']}-d"
    return (
        f'<h3 id="{_e(heading)}">Last {len(days)} days</h3>'
        f'<p class="mute">{"; ".join(facts)}.</p>'
        f'<div class="strip"><ol class="bars" aria-labelledby="{_e(heading)}">{bars}</ol></div>'
        f'<p class="axis mute" aria-hidden="true"><span>{len(days)} days ago</span>'
        "<span>Today</span></p>"
        '<ul class="legend mute" aria-label="Legend"><li><span class="k-u"></span>Up</li>'
        '<li><span class="k-g"></span>Degraded</li><li><span class="k-d"></span>Some downtime</li>'
        '<li><span class="k-n"></span>No data</li></ul>'
    )


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


_CH_W, _CH_H = 600, 200  # SVG user units; the chart scales to the column width
_CH_L, _CH_R, _CH_T, _CH_B = 92, 8, 14, 34  # margins for the axis labels


def _charts_html(target: Mapping[str, Any], now: datetime) -> str:
    charts = target["response_time"]
    if not charts:
        return ""
    body = "".join(_chart_svg(target["name"], i, c) for i, c in enumerate(charts))
    return f"<h3>Response time, last 24 hours</h3>{body}"


def _chart_svg(target: str, index: int, chart: Mapping[str, Any]) -> str:
    check = chart["check"]
    if not chart["points"]:
        return f'<p class="mute"><strong>{_e(check)}</strong>: no probes in the last 24 hours.</p>'
    start, end = _parse(chart["start"]), _parse(chart["end"])
    span_s = max(1.0, (end - start).total_seconds())
    top_ms = _nice_ceiling(chart["max_ms"] or 1.0)
    width, height = _CH_W - _CH_L - _CH_R, _CH_H - _CH_T - _CH_B
    bottom = _CH_T + height

    def x(at: datetime) -> float:
        return _CH_L + (at - start).total_seconds() / span_s * width

    def y(ms: float) -> float:
        return bottom - min(ms, top_ms) / top_ms * height

    path: list[str] = []
    fails: list[str] = []
    previous: datetime | None = None
    for point in chart["points"]:
        at = _parse(point["at"])
        gap = previous is None or (at - previous).total_seconds() > chart["max_gap_s"]
        path.append(f"{'M' if gap else 'L'}{x(at):.1f} {y(point['ms']):.1f}")
        if point["outcome"] == Outcome.DOWN:
            fails.append(f"M{x(at):.1f} {bottom}v-10")
        previous = at
    ident = f"c-{target}-{index}"
    slot = chart["slot_s"]
    sampled = f" Each point is the slowest probe of its {_duration(slot)} slot." if slot else ""
    failed = chart["failed"]
    desc = (
        f"{_plural(chart['probes'], 'probe')} of {check} in the last 24 hours: median "
        f"{_ms(chart['median_ms'])}, slowest {_ms(chart['max_ms'])}, {failed} failed"
        f"{' (red marks on the time axis)' if failed else ''}.{sampled}"
    )
    grid = "".join(
        f'<path class="grid" d="M{_CH_L} {y(v):.1f}H{_CH_W - _CH_R}"/>'
        f'<text x="{_CH_L - 8}" y="{y(v) + 7:.1f}" text-anchor="end">{_e(_ms(v))}</text>'
        for v in (0.0, top_ms / 2, top_ms)
    )
    ticks = (
        f'<text x="{_CH_L}" y="{_CH_H - 6}">24 h ago</text>'
        f'<text x="{_CH_L + width / 2:.1f}" y="{_CH_H - 6}" text-anchor="middle">12 h ago</text>'
        f'<text x="{_CH_W - _CH_R}" y="{_CH_H - 6}" text-anchor="end">now</text>'
    )
    fail_path = f'<path class="fail" d="{"".join(fails)}"/>' if fails else ""
    return (
        f'<figure class="chart"><svg viewBox="0 0 {_CH_W} {_CH_H}" role="img" '
        f'aria-labelledby="{_e(ident)}-t {_e(ident)}-d">'
        f'<title id="{_e(ident)}-t">Response time of {_e(check)}</title>'
        f'<desc id="{_e(ident)}-d">{_e(desc)}</desc>{grid}{ticks}'
        f'<path class="line" d="{"".join(path)}"/>{fail_path}</svg>'
        f"<figcaption><strong>{_e(check)}</strong>: median {_e(_ms(chart['median_ms']))}, "
        f"slowest {_e(_ms(chart['max_ms']))}, {failed} of {_plural(chart['probes'], 'probe')} "
        f"failed{' (red marks)' if failed else ''}.</figcaption></figure>"
    )


def _recent(target: Mapping[str, Any], now: datetime) -> str:
    incidents = target["recent_incidents"]
    if not incidents:
        return f"<h3>Recent incidents</h3><p>None resolved in the last {DAYS} days.</p>"
    rows = []
    for incident in incidents:
        if incident["issue_url"]:
            number = incident["issue_number"]
            issue = (
                f'<a href="{_e(incident["issue_url"])}">#{_e(number) if number else "issue"}</a>'
            )
        else:
            issue = "none"
        rows.append(
            f'<tr><th scope="row">{_time(incident["started_at"], now)}</th>'
            f"<td>{_duration(incident['duration_s'])}</td><td>{issue}</td></tr>"
        )
    return (
        "<h3>Recent incidents</h3><table>"
        f'<caption class="sr">Resolved incidents of {_e(target["name"])}, newest first</caption>'
        '<thead><tr><th scope="col">Started</th><th scope="col">Lasted</th>'
        f'<th scope="col">Issue</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _slo_html(target: Mapping[str, Any]) -> str:
    slo = target["slo"]
    window = _duration(slo["window_s"])
    rows = []
    if slo["objective"] is None:
        rows.append(("Objective", "none set for this target"))
    else:
        verdict = {True: "met", False: "missed", None: "no data"}[slo["met"]]
        rows.append(("Objective", f"{slo['objective'] * 100:g}% uptime over {window}"))
        rows.append(
            ("Measured", f"{_pct(slo['uptime'])} ({verdict}), coverage {_pct(slo['coverage'])}")
        )
        remaining = slo["error_budget_remaining"]
        left = "no data" if remaining is None else f"{max(remaining, -9.99) * 100:.0f}%"
        if remaining is not None and remaining < 0:
            left += " (overspent)"
        allowed = slo["allowed_down_s"]
        spent = (
            f"{_duration(slo['down_s'])} down of {_duration(allowed)} allowed" if allowed else ""
        )
        rows.append(("Error budget left", f"{left}{f' ({spent})' if spent else ''}"))
    mttr = slo["mttr_mean_s"]
    rows.append(
        (
            "Mean time to recover",
            "no resolved incidents" if mttr is None else f"{_duration(mttr)} ({window})",
        )
    )
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f"<h3>Service level objective</h3><dl>{body}</dl>"


# ---- badges -------------------------------------------------------------------------------------

BADGE_COLOURS: Mapping[str, str] = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "lightgrey": "#9f9f9f",
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
    total = left + right
    lab, msg = _e(label), _e(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lab}: {msg}"><title>{lab}: {msg}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{fill}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2:g}" y="15" fill="#010101" fill-opacity=".3">{lab}</text>'
        f'<text x="{left / 2:g}" y="14">{lab}</text>'
        f'<text x="{left + right / 2:g}" y="15" fill="#010101" fill-opacity=".3">{msg}</text>'
        f'<text x="{left + right / 2:g}" y="14">{msg}</text></g></svg>'
    )


_STATE_BADGE = {
    State.UP: "brightgreen",
    State.DEGRADED: "yellow",
    State.DOWN: "red",
    State.UNKNOWN: "lightgrey",
}


def uptime_colour(ratio: float | None) -> str:
    """Badge colour for an uptime ratio."""
    if ratio is None:
        return "lightgrey"
    for floor, colour in (
        (0.999, "brightgreen"),
        (0.99, "green"),
        (0.97, "yellow"),
        (0.95, "orange"),
    ):
        if ratio >= floor:
            return colour
    return "red"


# ---- routes -------------------------------------------------------------------------------------


class SnapshotCache:
    """One snapshot (and its page) for ``ttl_s``: a burst of requests costs one build.

    Thread-safe: requests build in worker threads, and a second request waits
    for the build in progress rather than starting its own.
    """

    def __init__(
        self,
        source: StatusSource,
        ttl_s: float = CACHE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._built_at = -math.inf
        self._snapshot: dict[str, Any] | None = None
        self._page: str | None = None
        self.builds = 0  # how many times the store was read (tests)

    def snapshot(self, live: Mapping[str, LiveTarget], now: datetime) -> dict[str, Any]:
        """The cached snapshot, rebuilt from ``live`` and the store when older than the TTL."""
        with self._lock:
            if self._snapshot is None or self._monotonic() - self._built_at >= self._ttl_s:
                self._snapshot = build_snapshot(self._source, now, live)
                self._page = None
                self._built_at = self._monotonic()
                self.builds += 1
            return self._snapshot

    def page(self, live: Mapping[str, LiveTarget], now: datetime) -> str:
        """The rendered page of the cached snapshot."""
        with self._lock:
            snapshot = self.snapshot(live, now)
            if self._page is None:
                self._page = render_page(snapshot)
            return self._page


def _error(status: int, message: str, request: Request) -> JSONResponse:
    return JSONResponse({"error": message, "path": request.url.path}, status)


def _unavailable_page(message: str) -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<title>Status unavailable</title></head><body><main><h1>Status unavailable</h1>"
        f"<p>{_e(message)}</p></main></body></html>"
    )
    return HTMLResponse(body, 503, headers={**PAGE_HEADERS, "Retry-After": "5"})


def status_routes(source: StatusSource, *, cache: SnapshotCache | None = None) -> list[Route]:
    """``/status``, ``/api/status`` and the badges, for ``create_app(extra_routes=...)``.

    None at all when ``status_page.enabled`` is false: the paths then answer 404.
    """
    if not source.settings.status_page.enabled:
        return []
    cache = cache or SnapshotCache(source)
    shown = {t.name for t in visible_targets(source.settings)}

    async def fresh_snapshot() -> dict[str, Any]:
        # the live view is read here, on the event loop, where the daemon writes it
        return await run_in_threadpool(cache.snapshot, source.live_targets(), source.now())

    async def page(_: Request) -> Response:
        try:
            body = await run_in_threadpool(cache.page, source.live_targets(), source.now())
        except StoreError as exc:
            log.error("status page: cannot read the state database", error=str(exc))
            return _unavailable_page("The monitor cannot read its state database right now.")
        return HTMLResponse(body, headers=dict(PAGE_HEADERS))

    async def api(request: Request) -> Response:
        try:
            snapshot = await fresh_snapshot()
        except StoreError as exc:
            log.error("status API: cannot read the state database", error=str(exc))
            return _error(503, "cannot read the state database", request)
        return JSONResponse(
            snapshot,
            headers={
                "Cache-Control": "no-cache",
                "Access-Control-Allow-Origin": "*",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def badge(
        request: Request, target: str, make: Callable[[Mapping[str, Any]], Response]
    ) -> Response:
        if target not in shown:  # only configured, shown names ever match: no path games
            return _error(404, "no such target", request)
        try:
            snapshot = await fresh_snapshot()
        except StoreError:
            return _error(503, "cannot read the state database", request)
        entry = next(t for t in snapshot["targets"] if t["name"] == target)
        return make(entry)

    def svg(text: str) -> Response:
        return Response(
            text,
            media_type="image/svg+xml; charset=utf-8",
            headers={
                "Cache-Control": f"max-age={BADGE_MAX_AGE_S}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def state_badge(request: Request) -> Response:
        target = request.path_params["target"]
        return await badge(
            request,
            target,
            lambda t: svg(
                badge_svg(t["name"], t["state_text"].lower(), _STATE_BADGE[State(t["state"])])
            ),
        )

    async def uptime_badge(request: Request) -> Response:
        target = request.path_params["target"]
        window = request.query_params.get("window", "30d")
        if target in shown and window not in UPTIME_WINDOWS:
            return _error(400, f"window must be one of {', '.join(UPTIME_WINDOWS)}", request)

        def make(t: Mapping[str, Any]) -> Response:
            ratio = t["uptime"][window]["ratio"]
            message = "no data" if ratio is None else _pct(ratio)
            return svg(badge_svg(f"{t['name']} {window}", message, uptime_colour(ratio)))

        return await badge(request, target, make)

    return [
        Route("/status", page, methods=["GET"]),
        Route("/api/status", api, methods=["GET"]),
        Route("/badge/{target}.svg", state_badge, methods=["GET"]),
        Route("/badge/{target}/uptime.svg", uptime_badge, methods=["GET"]),
    ]
