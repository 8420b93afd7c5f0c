"""The snapshot: everything the status page, ``/api/status`` and the badges say, as one dict.

:func:`build_snapshot` reads the live tracker state and the store and returns
one JSON-safe dict (schema: ``status_schema.json``). ``/api/status`` serves it
as it is, the page and the badges render it; so they cannot disagree, and
nothing computes a figure twice. Building reads the store, so it runs in a
worker thread, and :class:`SnapshotCache` keeps the result for
:data:`CACHE_TTL_S`, or until the daemon's live view changes (a new result): a
burst of page loads costs one build, and a new result is never hidden by it.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from monitor import __version__
from monitor.config import Settings, TargetConfig
from monitor.figures.history import DAY_S, TARGET_LEVEL, History, floor_to
from monitor.figures.maintenance import Window
from monitor.figures.slo import WINDOWS, Span, TimeAccount
from monitor.figures.target import target_figures
from monitor.incidents.tracker import Phase
from monitor.logs import secrets
from monitor.probing.results import Outcome
from monitor.store.base import IncidentRow
from monitor.store.codec import ts
from monitor.web.formats import duration
from monitor.web.source import LiveTarget, StatusSource

__all__ = [
    "CACHE_TTL_S",
    "SCHEMA_VERSION",
    "STATE_TEXT",
    "SUMMARY_TEXT",
    "UPTIME_WINDOWS",
    "SnapshotCache",
    "State",
    "Summary",
    "build_snapshot",
    "summarise",
    "visible_targets",
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
# a chart point's outcome: the worst in its slot
_DOWN, _DEGRADED, _UP = Outcome.DOWN.value, Outcome.DEGRADED.value, Outcome.UP.value


class State(enum.StrEnum):
    """What the page says about a target right now."""

    UP = "up"  # the last probe was good and within its latency budget
    DEGRADED = "degraded"  # the last probe was good but slow
    DOWN = "down"  # the last probe failed
    UNKNOWN = "unknown"  # no probe yet, or the last one is too old to vouch for now
    MAINTENANCE = "maintenance"  # in a maintenance window: nobody is paged, time not counted


class Summary(enum.StrEnum):
    """The header line: the whole, from the same states as the per-target sections."""

    OPERATIONAL = "operational"  # every target up
    DEGRADED = "degraded"  # none down, at least one degraded
    MAINTENANCE = "maintenance"  # none down or degraded, at least one in maintenance
    PARTIAL_OUTAGE = "partial_outage"  # some targets down, not all
    MAJOR_OUTAGE = "major_outage"  # every target down
    PARTIAL_DATA = "partial_data"  # none down or degraded, but some unknown
    NO_DATA = "no_data"  # nothing known about any target yet
    STALE = "stale"  # every target unknown, though probed before: the monitor is not probing


SUMMARY_TEXT: Mapping[Summary, str] = {
    Summary.OPERATIONAL: "All systems operational",
    Summary.DEGRADED: "Degraded performance",
    Summary.MAINTENANCE: "Under maintenance",
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
    State.MAINTENANCE: "Maintenance",
}


def summarise(states: Sequence[State]) -> Summary:
    """The header line for these target states (worst first: down, degraded, maintenance,
    unknown). A target in maintenance is not an outage: it is planned and said so."""
    if all(s is State.UNKNOWN for s in states):
        return Summary.NO_DATA
    if all(s is State.DOWN for s in states):
        return Summary.MAJOR_OUTAGE
    if State.DOWN in states:
        return Summary.PARTIAL_OUTAGE
    if State.DEGRADED in states:
        return Summary.DEGRADED
    if State.MAINTENANCE in states:
        return Summary.MAINTENANCE
    if State.UNKNOWN in states:
        return Summary.PARTIAL_DATA
    return Summary.OPERATIONAL


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
    Raises :class:`~monitor.store.base.StoreError` when the store cannot be read.
    """
    live = source.live_targets() if live is None else live
    settings = source.settings
    sink = "github" if settings.github.active else "journal"
    # every account below lies in the last 90 days: their maintenance windows, read once
    history = source.history.read_ahead(Span.ending(now, WINDOWS["90d"]))
    targets = [
        _target_snapshot(source, history, config, live.get(config.name), now, sink)
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
    history: History,
    config: TargetConfig,
    live: LiveTarget | None,
    now: datetime,
    sink: str,
) -> dict[str, Any]:
    settings = source.settings
    name = config.name
    incidents = source.store.incidents(name, since=now - timedelta(days=DAYS))
    window = _window_now(live, now)
    state, note = (State.MAINTENANCE, None) if window is not None else _state(live, now, settings)
    uptime = {
        window: history.account(name, Span.ending(now, WINDOWS[window]), now)
        for window in UPTIME_WINDOWS
    }
    result = live.last_result if live is not None else None
    return {
        "name": name,
        "state": state.value,
        "state_text": STATE_TEXT[state],
        "note": note,
        "phase": live.state.phase.value if live is not None else Phase.HEALTHY.value,
        **_since(live, state, now, window),
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
                "cert_expires_at": None if c.cert_expires_at is None else _iso(c.cert_expires_at),
            }
            for c in (result.checks if result is not None else ())
        ],
        "maintenance": _maintenance(window),
        "failing": _failing(live, state, settings),
        "open_incident": _open_incident(live, incidents, now, sink),
        "regions": _regions(live),
        "quorum": _quorum(live),
        "uptime": {
            window: {"ratio": _ratio(acct.uptime), "coverage": _ratio(acct.coverage)}
            for window, acct in uptime.items()
        },
        "days": _days(history, name, now, incidents),
        "response_time": _charts(source, config, now),
        "recent_incidents": [
            _incident_dict(i, now) for i in incidents if i.resolved_at is not None
        ][:RECENT_INCIDENTS],
        "slo": _slo(history, config, now),
    }


def _regions(live: LiveTarget | None) -> list[dict[str, Any]]:
    """Each region's latest view, when several regions probe: who sees what, since when."""
    if live is None:
        return []
    return [
        {
            "region": view.region,
            "state": view.outcome.value if view.fresh else State.UNKNOWN.value,
            "outcome": view.outcome.value,
            "since": _iso(view.since),
            "last_checked_at": _iso(view.at),
            "age_s": round(view.age_s, 1),
            "votes": view.fresh,
            "failing": [
                {"name": c.check, "reason": c.reason.value, "status": c.status_code}
                for c in view.result.failing
            ],
        }
        for view in live.regions
    ]


def _quorum(live: LiveTarget | None) -> dict[str, Any] | None:
    """What the regions say together; None for a lone instance."""
    if live is None or live.quorum is None:
        return None
    verdict = live.quorum
    return {
        "verdict": verdict.kind.value,
        "fresh": len(verdict.fresh),
        "failing": len(verdict.failing),
        "needed": verdict.needed,
    }


def _state(live: LiveTarget | None, now: datetime, settings: Settings) -> tuple[State, str | None]:
    """The state to show, and a note when it is unknown (why)."""
    if live is not None and live.quorum is not None and not live.quorum.decisive:
        verdict = live.quorum
        if verdict.kind.value == "unknown":
            return State.UNKNOWN, (
                f"Only {len(verdict.fresh)} region(s) reported recently;"
                f" {settings.monitor.min_regions} needed."
            )
        return State.UNKNOWN, (
            f"The regions disagree: {len(verdict.failing)} of {len(verdict.fresh)} see it down,"
            f" {verdict.needed} needed either way."
        )
    if live is None or live.last_result is None:
        return State.UNKNOWN, "Not probed yet."
    result = live.last_result
    # a result vouches for as long as the daemon's own samples hold: two cadences and a timeout
    hold_s = 2 * live.cadence_s + settings.monitor.timeout
    age_s = (now - result.at).total_seconds()
    if age_s > hold_s:
        return State.UNKNOWN, f"No probe result for {duration(age_s)}: the monitor is not probing."
    return State(result.outcome.value), None


def _window_now(live: LiveTarget | None, now: datetime) -> Window | None:
    """The maintenance window the target is in now, if any.

    Checked against ``now`` too: a live view the daemon has not refreshed since its
    window ended must not keep the target in maintenance.
    """
    if live is None or live.maintenance is None:
        return None
    return live.maintenance if live.maintenance.covers(live.name, now) else None


def _maintenance(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {
        "reason": window.reason,
        "starts_at": _iso(window.start),
        "ends_at": _iso(window.end),
        "source": window.source,
    }


def _since(
    live: LiveTarget | None, state: State, now: datetime, window: Window | None
) -> dict[str, Any]:
    """Since when the state holds: the incident's first failed probe when there is one,
    the window's start in maintenance."""
    since: datetime | None = None
    if window is not None:
        since = window.start
    elif live is not None and state is not State.UNKNOWN:
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
        **_people(row),
    }


def _people(row: IncidentRow | None) -> dict[str, Any]:
    """Who acknowledged the incident and who closed its issue while it still failed."""
    if row is None:  # not in the store yet: nobody can have touched its issue
        return dict.fromkeys(("acknowledged_at", "acknowledged_by", "closed_at", "closed_by"))
    return {
        "acknowledged_at": _iso(row.acknowledged_at) if row.acknowledged_at else None,
        "acknowledged_by": row.acknowledged_by,
        "closed_at": _iso(row.closed_at) if row.closed_at else None,
        "closed_by": row.closed_by,
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
        **_people(incident),
    }


def _day_state(acct: TimeAccount) -> State:
    """Downtime shows whatever else the day held; then a day mostly in maintenance."""
    if acct.down_s > 0:
        return State.DOWN
    if acct.maintenance_s * 2 > acct.total_s:
        return State.MAINTENANCE
    if acct.known_s <= 0:
        return State.UNKNOWN
    if acct.degraded_s > 0:
        return State.DEGRADED
    return State.UP


def _days(
    history: History, name: str, now: datetime, incidents: Sequence[IncidentRow]
) -> list[dict[str, Any]]:
    """The daily strip: rolled-up days from the daily rollups, the rest from ``History.account``."""
    today = floor_to(now, DAY_S)
    first = today - timedelta(days=DAYS - 1)
    accounts = _day_accounts(history, name, now, first)
    windows = history.maintenance_windows(Span(first, now))
    spans = [(i.started_at, i.resolved_at) for i in incidents]
    one_day = timedelta(days=1)
    days = []
    start = first
    for acct in accounts:
        next_day = start + one_day
        overlapping = sum(
            1 for began, ended in spans if began < next_day and (ended is None or ended > start)
        )
        days.append(
            {
                "date": start.date().isoformat(),
                "state": _day_state(acct).value,
                "uptime": _ratio(acct.uptime),
                "coverage": _ratio(acct.coverage),
                "down_s": round(acct.down_s, 1),
                "degraded_s": round(acct.degraded_s, 1),
                "maintenance_s": round(acct.maintenance_s, 1),
                # why, when the day had any: the windows of this target that overlap it
                "maintenance_reasons": _reasons(windows, name, Span(start, min(next_day, now)))
                if acct.maintenance_s > 0
                else [],
                "incidents": overlapping,
            }
        )
        start = next_day
    return days


def _day_accounts(history: History, name: str, now: datetime, first: datetime) -> list[TimeAccount]:
    """Each day's account, oldest first: from its daily rollup once rolled up."""
    store = history.store
    watermark = history.watermark()
    first_sample = history.first_sample_at(name)
    rows = {
        float(r["bucket"]): r
        for r in store.rollups("day", name, TARGET_LEVEL, first, first + timedelta(days=DAYS))
    }
    accounts = []
    for index in range(DAYS):
        start = first + timedelta(days=index)
        end = min(start + timedelta(days=1), now)
        if watermark is not None and end <= watermark:
            row = rows.get(ts(start))
            acct = _rolled_day(row) if row is not None else TimeAccount(0.0, 0.0, 0.0, DAY_S)
        elif first_sample is None or end <= first_sample:
            acct = TimeAccount(0.0, 0.0, 0.0, (end - start).total_seconds())
        else:  # not rolled up yet (today, and yesterday just after midnight): hours plus raw
            acct = history.account(name, Span(start, end), now)
        accounts.append(acct)
    return accounts


def _rolled_day(row: Mapping[str, Any]) -> TimeAccount:
    return TimeAccount(
        row["up_s"], row["degraded_s"], row["down_s"], row["unknown_s"], row["maintenance_s"]
    )


def _reasons(windows: Sequence[Window], name: str, span: Span) -> list[str]:
    """The distinct reasons of ``name``'s windows overlapping ``span``, by start."""
    found = [
        w.reason
        for w in windows
        if w.applies_to(name) and w.start < span.end and w.end > span.start
    ]
    return list(dict.fromkeys(found))


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
    from_ts = datetime.fromtimestamp
    charts = []
    for name in names:
        probes = failed = 0
        slowest_s: float | None = None
        points = []
        # one plain loop: 300 points a check, and the snapshot's largest part
        for at, slowest, n, down, degraded in slots.get(name, ()):
            probes += n
            failed += down
            if slowest_s is None or slowest > slowest_s:
                slowest_s = slowest
            points.append(
                {
                    "at": from_ts(at, UTC).isoformat()[:-6] + "Z",  # _iso, without detours
                    "ms": round(slowest * 1000, 1),
                    "outcome": _DOWN if down else _DEGRADED if degraded else _UP,
                }
            )
        median = source.store.median_duration(config.name, name, start, now, probes)
        charts.append(
            {
                "check": name,
                "start": _iso(start),
                "end": _iso(now),
                "probes": probes,
                "failed": failed,
                "median_ms": None if median is None else round(median * 1000, 1),
                "max_ms": None if slowest_s is None else round(slowest_s * 1000, 1),
                # with one probe per slot every probe is a point: nothing was sampled away
                "slot_s": slot_s if probes > len(points) else None,
                "max_gap_s": max_gap_s,
                "points": points,
            }
        )
    return charts


def _slo(history: History, config: TargetConfig, now: datetime) -> dict[str, Any]:
    window = Span.ending(now, history.settings.monitor.slo_window)
    figures = target_figures(history, config, window, now)
    budget = figures.budget
    return {
        "objective": figures.objective,
        "window_s": window.seconds,
        "uptime": _ratio(figures.account.uptime),
        "coverage": _ratio(figures.account.coverage),
        "met": figures.slo_met,
        "error_budget_remaining": _ratio(_finite(budget.remaining_ratio)) if budget else None,
        # to the millisecond: a fresh monitor's budget is well under 0.1 s, and it is not 0
        "allowed_down_s": round(budget.allowed_down_s, 3) if budget else None,
        "down_s": round(figures.account.down_s, 1),
        # left out of uptime, coverage and the budget, like unknown time
        "maintenance_s": round(figures.account.maintenance_s, 1),
        "incidents": figures.mttr.count,
        "mttr_mean_s": _finite(figures.mttr.mean_s),
        "mttr_objective_s": figures.mttr_objective_s,
        "acknowledged": figures.mtta.acknowledged,
        "mtta_mean_s": _finite(figures.mtta.mean_s),
    }


class SnapshotCache:
    """One snapshot (and its page) for ``ttl_s``: a burst of requests costs one build.

    Rebuilt sooner when the live view changed (a probe completed, a state, a window or a
    region's vote moved): a new result is on the page at the next request, not up to
    ``ttl_s`` later. The TTL bounds what the live view does not show (the clock, a
    person acknowledging an incident); the page says when it was built
    (``generated_at``, "Updated ..."). Thread-safe: requests build in worker threads,
    and a second request waits for the build in progress rather than starting its own.
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
        self._live: dict[str, LiveTarget] | None = None  # what the snapshot was built from
        self._snapshot: dict[str, Any] | None = None
        self._page: str | None = None
        self.builds = 0  # how many times the store was read (tests)

    def snapshot(self, live: Mapping[str, LiveTarget], now: datetime) -> dict[str, Any]:
        """The cached snapshot, rebuilt from ``live`` and the store when older than the TTL
        or when ``live`` differs from what it was built from."""
        current = dict(live)
        with self._lock:
            expired = self._monotonic() - self._built_at >= self._ttl_s
            if self._snapshot is None or expired or current != self._live:
                self._snapshot = build_snapshot(self._source, now, current)
                self._live = current
                self._page = None
                self._built_at = self._monotonic()
                self.builds += 1
            return self._snapshot

    def page(
        self,
        live: Mapping[str, LiveTarget],
        now: datetime,
        render: Callable[[Mapping[str, Any]], str],
    ) -> str:
        """The cached snapshot as rendered by ``render``, once per build.

        ``render`` is passed in (the routes pass ``render_page``) so that the
        snapshot never imports the page that imports it.
        """
        with self._lock:
            snapshot = self.snapshot(live, now)
            if self._page is None:
                self._page = render(snapshot)
            return self._page
