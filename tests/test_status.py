"""The status page, its JSON API and badges, rendered from hand-made state in a real store.

A :class:`World` is the page's ``source``: a real SQLite :class:`SqliteStore` in
``tmp_path``, probe results fed through the real incident tracker and written
with ``commit_cycle`` (as the daemon does), rollups made by ``History.rollup``,
and the live view the daemon would hold. Time is frozen at :data:`NOW`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from monitor.config import Settings
from monitor.figures.history import History
from monitor.figures.maintenance import Window, active
from monitor.figures.slo import Span
from monitor.incidents.tracker import Policy, TrackerState, step
from monitor.metrics import Metrics
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from monitor.store.base import PendingCycle
from monitor.store.sqlite import SqliteStore
from monitor.web.badges import badge_svg, text_width
from monitor.web.formats import duration, percent, when
from monitor.web.page import CSP, PALETTE, STYLESHEET, STYLESHEET_URL, render_page
from monitor.web.routes import status_routes
from monitor.web.server import create_app
from monitor.web.snapshot import (
    STATE_TEXT,
    SUMMARY_TEXT,
    SnapshotCache,
    State,
    Summary,
    build_snapshot,
    summarise,
)
from monitor.web.source import LiveTarget

NOW = datetime(2026, 11, 20, 12, 7, 30, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>\"onmouseover=alert(2) x='"
ISSUE_URL = "https://github.com/acme/web/issues/42"
PAGE_BUDGET_BYTES = 60 * 1024
SCHEMA = json.loads(
    resources.files("monitor.web").joinpath("status_schema.json").read_text("utf-8")
)


def make_settings(
    *,
    names: tuple[str, ...] = ("staging", "production"),
    github: bool = False,
    maintenance: list[dict[str, Any]] | None = None,
    **status_page: Any,
) -> Settings:
    """Two targets with two checks each, 15 min cadence, 1 min while failing."""
    return Settings(
        maintenance=maintenance or [],
        monitor={"interval": 900, "incident_interval": 60, "timeout": 10, "metrics_refresh": 60},
        github={"repository": "acme/web", "token": "ghp_" + "x" * 36} if github else {},
        status_page={"title": "HotDash status", **status_page},
        targets=[
            {
                "name": name,
                "url": f"https://{name}.example",
                "slo": 0.995,
                "checks": [
                    {"name": "health", "path": "/health"},
                    {"name": "monitoring", "path": "/api/monitoring/health"},
                ],
            }
            for name in names
        ],
    )


def cycle(
    target: str, at: datetime, outcome: Outcome, *, detail: str = "", slow_ms: float = 40.0
) -> TargetResult:
    """One probe cycle: ``health`` has the outcome, ``monitoring`` is up."""
    reason = {Outcome.UP: Reason.OK, Outcome.DEGRADED: Reason.SLOW, Outcome.DOWN: Reason.STATUS}
    status = 503 if outcome is Outcome.DOWN else 200
    health = CheckResult(
        target=target,
        check="health",
        url=f"https://{target}.example/health",
        started_at=at,
        duration_s=(2500.0 if outcome is Outcome.DEGRADED else slow_ms) / 1000,
        outcome=outcome,
        reason=reason[outcome],
        detail=detail or ("expected [200, 302], got 503" if outcome is Outcome.DOWN else "ok"),
        status_code=status,
    )
    monitoring = CheckResult(
        target=target,
        check="monitoring",
        url=f"https://{target}.example/api/monitoring/health",
        started_at=at,
        duration_s=0.08,
        outcome=Outcome.UP,
        reason=Reason.OK,
        detail="ok",
        status_code=200,
    )
    return TargetResult(target=target, at=at, checks=(health, monitoring))


class World:
    """A status source: a real store, the real tracker, the live view the daemon would hold."""

    def __init__(self, tmp_path: Path, settings: Settings, now: datetime = NOW) -> None:
        self.settings = settings
        self.store = SqliteStore(tmp_path / "monitor.db")
        self.history = History(self.store, settings)
        self.figures: dict[str, Any] = {}
        self.clock = now
        monitor = settings.monitor
        self.policy = Policy(open_after=monitor.open_after, close_after=monitor.close_after)
        self.live: dict[str, LiveTarget] = {
            t.name: LiveTarget(t.name, TrackerState(t.name), None, None, monitor.interval)
            for t in settings.targets
        }

    def live_targets(self) -> dict[str, LiveTarget]:
        """The live view, as the daemon hands it out."""
        return dict(self.live)

    def now(self) -> datetime:
        """The frozen clock."""
        return self.clock

    def record(self, result: TargetResult) -> None:
        """What ``Daemon.record`` does with a result: tracker step (nobody paged inside a
        stored window), one transaction, live view (with the window it is in)."""
        live = self.live[result.target]
        instant = Span(result.at, result.at + timedelta(microseconds=1))
        windows = self.history.maintenance_windows(instant)
        window = active(windows, result.target, result.at)
        state, transitions = step(
            live.state, result, result.at, self.policy, maintenance=window is not None
        )
        incident = state.incident if (transitions or state.in_incident) else None
        monitor = self.settings.monitor
        cadence = monitor.incident_interval if state.needs_fast_cadence else monitor.interval
        self.store.commit_cycle(
            PendingCycle(result, 2 * cadence + monitor.timeout, state, incident, [])
        )
        since = live.outcome_since
        if live.last_result is None or live.last_result.outcome is not result.outcome:
            since = result.at
        self.live[result.target] = LiveTarget(
            result.target, state, result, since, cadence, maintenance=window
        )

    def run(
        self,
        target: str,
        start: datetime,
        end: datetime,
        outcome: Callable[[datetime], Outcome],
        **kw: Any,
    ) -> None:
        """Probe ``target`` from ``start`` to ``end`` at the cadence the tracker asks for."""
        at = start
        while at < end:
            self.record(cycle(target, at, outcome(at), **kw))
            at += timedelta(seconds=self.live[target].cadence_s)

    def session(self, start: datetime) -> None:
        """The monitor ran from ``start`` and is still running now."""
        session = self.store.start_session(start)
        self.store.heartbeat(session, self.clock)

    def roll_up(self) -> None:
        """Roll up every complete hour, as housekeeping would."""
        while self.history.rollup(self.clock, [t.name for t in self.settings.targets]):
            pass

    def snapshot(self) -> dict[str, Any]:
        """The snapshot at the frozen now."""
        return build_snapshot(self, self.clock)

    def app(self, cache: SnapshotCache | None = None) -> Starlette:
        """The daemon's app with the status routes mounted."""
        ok: tuple[bool, dict[str, Any]] = (True, {})
        health = type("Health", (), {"health": lambda self: ok})()
        metrics = Metrics(CollectorRegistry())
        return create_app(metrics, health, extra_routes=status_routes(self, cache=cache))


def fetch(app: Starlette, *paths: str) -> list[httpx.Response]:
    """GET each path in turn through the ASGI app (a real request cycle, no sockets)."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://status.test") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(go())


def always(outcome: Outcome) -> Callable[[datetime], Outcome]:
    """The same outcome at every probe."""
    return lambda _: outcome


def down_between(start: datetime, end: datetime) -> Callable[[datetime], Outcome]:
    """Down in ``[start, end)``, up otherwise."""
    return lambda at: Outcome.DOWN if start <= at < end else Outcome.UP


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Two healthy targets with three days of history, rolled up."""
    w = World(tmp_path, make_settings())
    start = NOW - timedelta(days=3)
    w.session(start)
    for name in ("staging", "production"):
        w.run(name, start, NOW, always(Outcome.UP))
    w.roll_up()
    yield w
    w.store.close()


def outage(w: World, *, minutes: float = 12, detail: str = "") -> datetime:
    """Production up for two hours, then failing from ``minutes`` ago; the first failure's time."""
    began = NOW - timedelta(minutes=minutes)
    w.run("production", NOW - timedelta(hours=2), began, always(Outcome.UP))
    w.run("production", began, NOW, always(Outcome.DOWN), detail=detail)
    incident = w.live["production"].state.incident
    assert incident is not None
    assert incident.started_at == began
    return began


# -- the header line --------------------------------------------------------------------------

U, G, D, N, M = State.UP, State.DEGRADED, State.DOWN, State.UNKNOWN, State.MAINTENANCE


@pytest.mark.parametrize(
    ("states", "expected", "text"),
    [
        pytest.param([U, U], Summary.OPERATIONAL, "All systems operational", id="all-up"),
        pytest.param([U, D], Summary.PARTIAL_OUTAGE, "Partial outage", id="one-of-two-down"),
        pytest.param([D, D], Summary.MAJOR_OUTAGE, "Major outage", id="all-down"),
        pytest.param([D], Summary.MAJOR_OUTAGE, "Major outage", id="only-target-down"),
        pytest.param([U, G], Summary.DEGRADED, "Degraded performance", id="one-degraded"),
        pytest.param([G, G], Summary.DEGRADED, "Degraded performance", id="all-degraded"),
        pytest.param([G, D], Summary.PARTIAL_OUTAGE, "Partial outage", id="down-beats-degraded"),
        pytest.param([N, N], Summary.NO_DATA, "No data yet", id="nothing-known"),
        pytest.param([], Summary.NO_DATA, "No data yet", id="no-targets"),
        pytest.param(
            [U, N], Summary.PARTIAL_DATA, "Some systems have no recent data", id="up-and-unknown"
        ),
        pytest.param([N, D], Summary.PARTIAL_OUTAGE, "Partial outage", id="down-and-unknown"),
        pytest.param([U, M], Summary.MAINTENANCE, "Under maintenance", id="up-and-maintenance"),
        pytest.param([M], Summary.MAINTENANCE, "Under maintenance", id="only-target-maintenance"),
        pytest.param(
            [M, N], Summary.MAINTENANCE, "Under maintenance", id="maintenance-beats-unknown"
        ),
        pytest.param(
            [M, G], Summary.DEGRADED, "Degraded performance", id="degraded-beats-maintenance"
        ),
        pytest.param(
            [M, D], Summary.PARTIAL_OUTAGE, "Partial outage", id="maintenance-is-no-outage"
        ),
    ],
)
def test_summary_logic(states: list[State], expected: Summary, text: str) -> None:
    """Pins the header line for each mix of target states."""
    assert summarise(states) is expected
    assert SUMMARY_TEXT[expected] == text


@pytest.mark.parametrize(
    ("staging", "production", "text"),
    [
        pytest.param(Outcome.UP, Outcome.UP, "All systems operational", id="operational"),
        pytest.param(Outcome.UP, Outcome.DOWN, "Partial outage", id="partial"),
        pytest.param(Outcome.DOWN, Outcome.DOWN, "Major outage", id="major"),
        pytest.param(Outcome.DEGRADED, Outcome.UP, "Degraded performance", id="degraded"),
    ],
)
def test_header_line_comes_from_the_same_state_as_the_sections(
    tmp_path: Path, staging: Outcome, production: Outcome, text: str
) -> None:
    """Pins that the page's header and the API's summary follow the targets' last probes."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(hours=1))
    w.record(cycle("staging", NOW - timedelta(seconds=30), staging))
    w.record(cycle("production", NOW - timedelta(seconds=20), production))
    snapshot = w.snapshot()
    assert snapshot["summary"]["text"] == text
    states = [t["state"] for t in snapshot["targets"]]
    assert states == [staging.value, production.value]
    page = render_page(snapshot)
    header = page[page.index("<header>") : page.index("</header>")]
    assert text in header
    assert f"<title>{text} · HotDash status</title>" in page


# -- scenarios ---------------------------------------------------------------------------------


def test_healthy(world: World) -> None:
    """Pins a healthy page: states, uptime with coverage, 90 bars, charts, SLO, no incidents."""
    snapshot = world.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    production = snapshot["targets"][1]
    assert production["state"] == "up"
    assert production["uptime"]["24h"] == {"ratio": 1.0, "coverage": 1.0}
    # three days of history in a 7-day window: coverage says so, uptime does not pretend
    assert production["uptime"]["7d"]["ratio"] == 1.0
    assert production["uptime"]["7d"]["coverage"] == pytest.approx(3 / 7, abs=1e-4)
    days = production["days"]
    assert len(days) == 90
    assert days[-1]["date"] == "2026-11-20"
    assert [d["state"] for d in days[-4:]] == ["up", "up", "up", "up"]
    assert {d["state"] for d in days[:-4]} == {"unknown"}
    assert days[-4]["coverage"] == pytest.approx(0.5 - 7.5 / 1440, abs=1e-3)  # began 12:07:30
    assert production["open_incident"] is None
    assert production["slo"]["objective"] == 0.995
    assert production["slo"]["error_budget_remaining"] == 1.0
    chart = production["response_time"][0]
    assert chart["check"] == "health"
    assert chart["probes"] == 96
    assert chart["median_ms"] == 40.0
    page = render_page(snapshot)
    assert "All systems operational" in page
    assert page.count('tabindex="0"') == 180
    assert "Coverage" in page
    assert "<h2" in page
    assert "None resolved in the last 90 days." in page
    assert 'role="img"' in page


def test_degraded(world: World) -> None:
    """Pins a slow target: degraded state and header, but no incident and uptime still counts it."""
    world.run("staging", NOW - timedelta(minutes=45), NOW, always(Outcome.DEGRADED))
    snapshot = world.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    staging = snapshot["targets"][0]
    assert staging["state"] == "degraded"
    assert staging["since"] == "2026-11-20T11:22:30Z"
    assert staging["open_incident"] is None
    assert staging["days"][-1]["state"] == "degraded"
    assert staging["uptime"]["24h"]["ratio"] == 1.0
    page = render_page(snapshot)
    assert "Degraded performance" in page
    assert "is <strong>degraded</strong> (slow) since" in page


def test_outage_in_progress_names_what_since_when_and_the_issue_on_the_first_screen(
    tmp_path: Path,
) -> None:
    """Pins the outage page: the header names the target, its start, duration and issue link."""
    w = World(tmp_path, make_settings(github=True))
    w.session(NOW - timedelta(days=1))
    w.run("staging", NOW - timedelta(hours=2), NOW, always(Outcome.UP))
    started = outage(w)
    incident = w.live["production"].state.incident
    assert incident is not None
    w.store.set_issue(incident.id, 42, ISSUE_URL)
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    production = snapshot["targets"][1]
    assert production["state"] == "down"
    assert production["since"] == started.isoformat().replace("+00:00", "Z")
    assert production["for_s"] == 720.0
    open_incident = production["open_incident"]
    assert open_incident["issue_url"] == ISSUE_URL
    assert open_incident["issue_number"] == 42
    assert open_incident["issue_note"] is None
    assert snapshot["summary"]["state"] == "partial_outage"

    page = render_page(snapshot)
    first_screen = page[: page.index("<main>")]
    assert "Partial outage" in first_screen
    assert 'href="#t-production">production</a> is <strong>down</strong> since' in first_screen
    assert "11:55 UTC" in first_screen
    assert "(for 12 min)" in first_screen
    assert f'Tracked in <a href="{ISSUE_URL}">GitHub issue #42</a>.' in first_screen
    section = page[page.index('id="t-production"') :]
    assert "Open incident" in section
    assert "ongoing for <strong>12 min</strong>" in section
    assert "expected [200, 302], got 503" in section


def test_outage_with_the_journal_sink_says_there_is_no_issue(tmp_path: Path) -> None:
    """Pins the journal sink's note in place of an issue link."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(days=1))
    outage(w)
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    incident = snapshot["targets"][1]["open_incident"]
    assert incident["issue_url"] is None
    assert "journal sink" in incident["issue_note"]
    assert snapshot["incident_sink"] == "journal"
    assert "No GitHub issue: this monitor records incidents in its log" in render_page(snapshot)


def test_issue_being_filed(tmp_path: Path) -> None:
    """Pins the note while the GitHub worker has not recorded the issue yet."""
    w = World(tmp_path, make_settings(github=True))
    w.session(NOW - timedelta(days=1))
    outage(w)
    incident = w.snapshot()["targets"][1]["open_incident"]
    assert incident["issue_url"] is None
    assert incident["issue_note"] == "The GitHub issue is being filed."


def test_unconfirmed_failures_and_recovery(tmp_path: Path) -> None:
    """Pins the failing phase (before open_after) and the recovering phase wording."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(days=1))
    w.run("production", NOW - timedelta(minutes=30), NOW - timedelta(minutes=2), always(Outcome.UP))
    w.record(cycle("production", NOW - timedelta(minutes=1), Outcome.DOWN))
    failing = w.snapshot()["targets"][1]
    assert failing["state"] == "down"
    assert failing["failing"] == {"failed_probes": 1, "open_after": 3}
    assert failing["open_incident"] is None
    assert "an incident opens after 3" in render_page(w.snapshot())

    w2 = World(tmp_path / "two", make_settings())
    w2.session(NOW - timedelta(days=1))
    w2.run(
        "production", NOW - timedelta(minutes=30), NOW - timedelta(minutes=10), always(Outcome.UP)
    )
    w2.run(
        "production", NOW - timedelta(minutes=10), NOW - timedelta(minutes=1), always(Outcome.DOWN)
    )
    w2.record(cycle("production", NOW - timedelta(seconds=10), Outcome.UP))
    recovering = w2.snapshot()
    jsonschema.validate(recovering, SCHEMA)
    target = recovering["targets"][1]
    assert target["state"] == "up"
    assert target["open_incident"]["phase"] == "recovering"
    page = render_page(recovering)
    assert "is up again (recovering)" in page
    assert "It is recovering" in page


def test_just_started_no_history(tmp_path: Path) -> None:
    """Pins a monitor that has probed nothing yet: no crash, "No data yet", unknown bars."""
    w = World(tmp_path, make_settings())
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    assert snapshot["summary"]["state"] == "no_data"
    for target in snapshot["targets"]:
        assert target["state"] == "unknown"
        assert target["note"] == "Not probed yet."
        assert {d["state"] for d in target["days"]} == {"unknown"}
        assert all(v == {"ratio": None, "coverage": 0.0} for v in target["uptime"].values())
        assert [c["points"] for c in target["response_time"]] == [[], []]
    page = render_page(snapshot)
    assert "No data yet" in page
    assert page.count('class="n" tabindex="0"') == 180
    assert "no probes in the last 24 hours" in page


def test_a_stale_result_is_unknown_not_up(world: World) -> None:
    """Pins that a last result older than its hold does not vouch for now (loop stalled)."""
    world.clock = NOW + timedelta(hours=1)
    snapshot = world.snapshot()
    assert [t["state"] for t in snapshot["targets"]] == ["unknown", "unknown"]
    assert "the monitor is not probing" in snapshot["targets"][0]["note"]
    assert snapshot["summary"]["state"] == "stale"


def test_stale_during_failures_and_incident(tmp_path: Path) -> None:
    """Pins a monitor that stopped probing mid-failure: unknown, but the open incident stays."""
    w = World(tmp_path, make_settings(github=True))
    w.session(NOW - timedelta(days=1))
    w.record(cycle("staging", NOW - timedelta(minutes=1), Outcome.DOWN))
    outage(w)
    incident = w.live["production"].state.incident
    assert incident is not None
    w.store.set_issue(incident.id, 42, ISSUE_URL)
    w.clock = NOW + timedelta(hours=1)
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    staging, production = snapshot["targets"]
    assert (staging["state"], staging["failing"], staging["since"]) == ("unknown", None, None)
    assert production["state"] == "unknown"
    assert production["open_incident"]["issue_url"] == ISSUE_URL
    page = render_page(snapshot)
    banner = page[: page.index("<main>")]
    assert snapshot["summary"] == {
        "state": "stale",
        "text": "No recent data",
        "up": 0,
        "degraded": 0,
        "down": 0,
        "unknown": 2,
        "maintenance": 0,
    }
    assert "No recent data" in banner
    assert f'production</a>: no recent data. Tracked in <a href="{ISSUE_URL}">' in banner


def test_daily_bars_and_recent_incidents_from_rollups(tmp_path: Path) -> None:
    """Pins a past outage in its day's bar (from daily rollups) and in the recent incidents."""
    w = World(tmp_path, make_settings(github=True))
    start = NOW - timedelta(days=4)
    w.session(start)
    bad = (NOW - timedelta(days=2)).replace(hour=3, minute=0, second=0)
    w.run("production", start, NOW, down_between(bad, bad + timedelta(minutes=20)))
    w.roll_up()
    rows = w.store.incidents("production")
    assert len(rows) == 1
    w.store.set_issue(rows[0].id, 7, "https://github.com/acme/web/issues/7")
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    days = {d["date"]: d for d in snapshot["targets"][1]["days"]}
    bad_day = days["2026-11-18"]
    assert bad_day["state"] == "down"
    assert bad_day["incidents"] == 1
    # the first probe after 03:00 failed (03:07:30), the first good one came at 03:20:30
    assert bad_day["down_s"] == 780.0
    assert bad_day["uptime"] == pytest.approx(1 - 780 / 86400, abs=1e-6)
    assert days["2026-11-19"]["state"] == "up"
    (recent,) = snapshot["targets"][1]["recent_incidents"]
    assert recent["issue_url"] == "https://github.com/acme/web/issues/7"
    assert recent["duration_s"] == 780.0
    page = render_page(snapshot)
    assert 'aria-label="18 Nov 2026: 99.09% up, coverage 100%, down 13 min, 1 incident"' in page
    assert '<a href="https://github.com/acme/web/issues/7">#7</a>' in page


def test_an_overspent_error_budget_reads_in_seconds_after_a_short_first_outage(
    tmp_path: Path,
) -> None:
    """Pins the SLO line of a fresh monitor after one 10 s outage: seconds, not a clamped -999%."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(seconds=40))
    for seconds_ago, outcome in ((40, Outcome.UP), (20, Outcome.DOWN), (10, Outcome.UP)):
        w.record(cycle("production", NOW - timedelta(seconds=seconds_ago), outcome))
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    slo = snapshot["targets"][1]["slo"]
    assert (slo["down_s"], slo["allowed_down_s"]) == (10.0, 0.2)  # 0.5 % of 40 known seconds
    assert slo["error_budget_remaining"] == -49.0
    page = render_page(snapshot)
    assert "<dt>Error budget left</dt><dd>overspent: 10 s down of 0.2 s allowed</dd>" in page
    assert "%" not in page[page.rindex("<dt>Error budget left</dt>") :].split("</dd>")[0]


@pytest.mark.parametrize(
    ("remaining", "allowed_s", "down_s", "text"),
    [
        pytest.param(1.0, 36.0, 0.0, "100% (0 s down of 36 s allowed)", id="untouched"),
        pytest.param(0.5, 20.0, 10.0, "50% (10 s down of 20 s allowed)", id="half-spent"),
        pytest.param(0.0, 10.0, 10.0, "0% (10 s down of 10 s allowed)", id="spent-exactly"),
        pytest.param(-49.0, 0.2, 10.0, "overspent: 10 s down of 0.2 s allowed", id="overspent"),
        pytest.param(
            -249.0, 0.04, 10.0, "overspent: 10 s down of <0.1 s allowed", id="tiny-budget"
        ),
        pytest.param(None, 0.0, 10.0, "overspent: 10 s down of 0 s allowed", id="no-budget"),
        pytest.param(1.0, 0.0, 0.0, "100%", id="no-known-time"),
    ],
)
def test_error_budget_wording(
    world: World, remaining: float | None, allowed_s: float, down_s: float, text: str
) -> None:
    """Pins the error-budget line: a percentage while some is left, the seconds once overspent."""
    snapshot = world.snapshot()
    snapshot["targets"][0]["slo"].update(
        error_budget_remaining=remaining, allowed_down_s=allowed_s, down_s=down_s
    )
    page = render_page(snapshot)
    assert f"<dt>Error budget left</dt><dd>{text}</dd>" in page.replace("&lt;", "<")


# -- maintenance and people -------------------------------------------------------------------

UPGRADE = "database upgrade <v16>"  # markup in a reason is text


def in_maintenance(tmp_path: Path) -> World:
    """A day of 15-minute probes; production failing for the last 30 minutes, all of them
    inside a window opened from the API 30 minutes ago for two hours."""
    w = World(tmp_path, make_settings())
    start = NOW - timedelta(days=1)
    w.session(start)
    began = NOW - timedelta(minutes=30)
    window = Window(began, began + timedelta(hours=2), frozenset({"production"}), UPGRADE, "api")
    w.store.add_maintenance(window, began)
    w.run("staging", start, NOW, always(Outcome.UP))
    w.run("production", start, NOW, down_between(began, NOW))
    return w


def test_a_target_in_a_window_reads_maintenance_with_its_reason_and_end(tmp_path: Path) -> None:
    """Pins a failing target inside a window: state maintenance (not down), the window in the
    API, no incident, the header says so, and its failures count neither as up nor as down."""
    w = in_maintenance(tmp_path)
    assert not w.live["production"].state.in_incident  # nobody paged: no incident opened
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    production = snapshot["targets"][1]
    assert (production["state"], production["state_text"]) == ("maintenance", "Maintenance")
    assert production["maintenance"] == {
        "reason": UPGRADE,
        "starts_at": "2026-11-20T11:37:30Z",
        "ends_at": "2026-11-20T13:37:30Z",
        "source": "api",
    }
    assert (production["since"], production["for_s"]) == ("2026-11-20T11:37:30Z", 1800.0)
    assert (production["failing"], production["open_incident"]) == (None, None)
    assert production["checks"][0]["state"] == "down"  # the probe itself is not hidden
    assert snapshot["targets"][0]["maintenance"] is None
    assert snapshot["summary"]["state"] == "maintenance"
    assert snapshot["summary"]["maintenance"] == 1
    assert production["uptime"]["24h"] == {"ratio": 1.0, "coverage": 1.0}
    slo = production["slo"]
    assert (slo["down_s"], slo["maintenance_s"], slo["error_budget_remaining"]) == (
        0.0,
        1800.0,
        1.0,
    )
    today = production["days"][-1]
    assert (today["state"], today["down_s"], today["maintenance_s"]) == ("up", 0.0, 1800.0)
    assert today["maintenance_reasons"] == [UPGRADE]

    page = render_page(snapshot)
    header = page[: page.index("<main>")]
    assert "<title>Under maintenance · HotDash status</title>" in page
    assert 'class="banner c-maintenance"' in header
    assert (
        'href="#t-production">production</a> is in <strong>maintenance</strong> until'
        ' <time datetime="2026-11-20T13:37:30Z">13:37 UTC</time>:'
        " database upgrade &lt;v16&gt;." in header
    )
    section = page[page.index('id="t-production"') :]
    assert '<span class="pill c-maintenance"><svg class="icon"' in section
    assert '<use href="#i-maintenance"/>' in section
    assert "In maintenance since <time" in section
    assert "13:37 UTC</time>: database upgrade &lt;v16&gt;. Nobody is paged" in section
    assert (
        "<dt>Maintenance</dt><dd>30 min excluded from uptime and the error budget</dd>" in section
    )
    assert "maintenance 30 min (database upgrade &lt;v16&gt;), 1 incident" not in section
    assert "Today so far: 100% up, coverage 100%, maintenance 30 min (database upgrade" in section
    assert "Mostly maintenance" not in section  # no bar shows it: the legend does not name it


def test_a_window_the_live_view_still_holds_after_its_end_no_longer_counts(
    tmp_path: Path,
) -> None:
    """Pins that a live view not yet refreshed past its window's end shows the last probe."""
    w = in_maintenance(tmp_path)
    live = w.live["production"]
    ended = Window(NOW - timedelta(hours=2), NOW - timedelta(minutes=1), None, "over", "api")
    w.live["production"] = replace(live, maintenance=ended)
    production = w.snapshot()["targets"][1]
    assert (production["state"], production["maintenance"]) == ("down", None)


def test_a_day_mostly_in_a_configured_window_has_its_own_bar_and_reason(tmp_path: Path) -> None:
    """Pins a configured window of 20 hours on one target: its rolled-up day is a maintenance
    bar whose label gives the reason, the legend names it, the other target is untouched."""
    window = {
        "targets": ["production"],
        "start": "2026-11-18T02:00",
        "duration": "20h",
        "reason": "datacentre move",
    }
    w = World(tmp_path, make_settings(maintenance=[window]))
    start = NOW - timedelta(days=4)
    w.session(start)
    for name in ("staging", "production"):
        w.run(name, start, NOW, always(Outcome.UP))
    w.roll_up()
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    staging, production = ({d["date"]: d for d in t["days"]} for t in snapshot["targets"])
    moved = production["2026-11-18"]
    assert (moved["state"], moved["maintenance_s"], moved["maintenance_reasons"]) == (
        "maintenance",
        72000.0,
        ["datacentre move"],
    )
    assert (moved["uptime"], moved["coverage"]) == (1.0, 1.0)  # 4 h watched, all up
    assert (staging["2026-11-18"]["state"], staging["2026-11-18"]["maintenance_s"]) == ("up", 0.0)
    assert production["2026-11-19"]["maintenance_s"] == 0.0
    page = render_page(snapshot)
    section = page[page.index('id="t-production"') :]
    label = "18 Nov 2026: maintenance 20 h (datacentre move), 100% up, coverage 100%, 0 incidents"
    assert f'<li class="m" tabindex="0" aria-label="{label}"></li>' in section
    assert '<li><span class="k-m"></span>Mostly maintenance</li>' in section
    assert "1 day mostly in maintenance" in section
    assert (
        "Mostly maintenance"
        not in page[page.index('id="t-staging"') : page.index('id="t-production"')]
    )


@pytest.mark.parametrize(
    ("day", "label"),
    [
        pytest.param(
            {"state": "maintenance", "uptime": None, "coverage": None, "maintenance_s": 86400.0},
            "18 Nov 2026: maintenance 1 d (move; cabling), 0 incidents",
            id="whole-day",
        ),
        pytest.param(
            {
                "state": "down",
                "uptime": 0.5,
                "coverage": 1.0,
                "down_s": 3600.0,
                "maintenance_s": 79200.0,
            },
            "18 Nov 2026: 50.00% up, coverage 100%, down 1 h, maintenance 22 h (move; cabling), 0 incidents",
            id="downtime-shows-first",
        ),
        pytest.param(
            {"state": "unknown", "uptime": None, "coverage": 0.0, "maintenance_s": 3600.0},
            "18 Nov 2026: no data, maintenance 1 h (move; cabling), 0 incidents",
            id="unwatched-day-with-a-window",
        ),
        pytest.param(
            {
                "state": "maintenance",
                "uptime": 1.0,
                "coverage": 1.0,
                "maintenance_s": 46800.0,
                "maintenance_reasons": [],
            },
            "18 Nov 2026: maintenance 13 h, 100% up, coverage 100%, 0 incidents",
            id="window-no-longer-configured",
        ),
    ],
)
def test_day_labels_with_maintenance(world: World, day: dict[str, Any], label: str) -> None:
    """Pins the bar's label (its tooltip) for days with maintenance: how long and why."""
    snapshot = world.snapshot()
    entry = snapshot["targets"][0]["days"][-3]
    assert entry["date"] == "2026-11-18"
    entry.update({"down_s": 0.0, "degraded_s": 0.0, "maintenance_reasons": ["move", "cabling"]})
    entry.update(day)
    assert f'aria-label="{label}"' in render_page(snapshot)


def test_acknowledged_and_closed_by_people(tmp_path: Path) -> None:
    """Pins who acknowledged the open incident and who closed its issue while it still
    failed, in the API, the incident box, the resolved list, and time to acknowledge."""
    w = World(tmp_path, make_settings(github=True))
    w.session(NOW - timedelta(days=1))
    earlier = NOW - timedelta(hours=5)
    w.run(
        "staging",
        NOW - timedelta(hours=6),
        NOW,
        down_between(earlier, earlier + timedelta(minutes=20)),
    )
    started = outage(w)
    incident = w.live["production"].state.incident
    assert incident is not None
    w.store.set_issue(incident.id, 42, ISSUE_URL)
    w.store.record_acknowledged(incident.id, "alice", started + timedelta(minutes=4))
    w.store.record_closed(incident.id, "bob", NOW - timedelta(minutes=2))
    (resolved,) = w.store.incidents("staging")
    w.store.record_closed(resolved.id, None, earlier + timedelta(minutes=10))

    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    staging, production = snapshot["targets"]
    open_incident = production["open_incident"]
    assert {k: open_incident[k] for k in ("acknowledged_by", "closed_by")} == {
        "acknowledged_by": "alice",
        "closed_by": "bob",
    }
    assert open_incident["acknowledged_at"] == "2026-11-20T11:59:30Z"
    assert open_incident["closed_at"] == "2026-11-20T12:05:30Z"
    assert (production["slo"]["acknowledged"], production["slo"]["mtta_mean_s"]) == (1, 240.0)
    (past,) = staging["recent_incidents"]
    assert (past["closed_by"], past["acknowledged_at"]) == (None, None)
    assert past["closed_at"] is not None
    assert staging["slo"]["mtta_mean_s"] is None

    page = render_page(snapshot)
    box = page[page.index('<h3 id="t-production-i">') :]
    box = box[: box.index("</div>")]
    assert (
        'Acknowledged by @alice at <time datetime="2026-11-20T11:59:30Z">11:59 UTC</time>.' in box
    )
    assert (
        'Issue closed by @bob at <time datetime="2026-11-20T12:05:30Z">12:05 UTC</time>'
        " (still failing)." in box
    )
    production_section = page[page.index('id="t-production"') :]
    assert (
        "<dt>Mean time to acknowledge</dt><dd>4 min (1 incident acknowledged in 30 d)</dd>"
        in production_section
    )
    staging_section = page[page.index('id="t-staging"') : page.index('id="t-production"')]
    assert '<span class="mute">closed while failing</span>' in staging_section
    assert "Mean time to acknowledge" not in staging_section


def test_the_snapshot_reads_the_windows_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins one read of the stored windows per snapshot, however many accounts it makes
    (about fifteen per target): a query each would be a round trip each on PostgreSQL."""
    reads: list[tuple[datetime, datetime]] = []
    stored = world.store.maintenance_windows

    def counted(start: datetime, end: datetime) -> list[Window]:
        reads.append((start, end))
        return stored(start, end)

    monkeypatch.setattr(world.store, "maintenance_windows", counted)
    world.snapshot()
    assert reads == [(NOW - timedelta(days=90), NOW)]


def test_schema_names_every_state_the_snapshot_can_say() -> None:
    """Pins the schema's enums to the code's: a new state cannot ship without its schema."""
    defs = SCHEMA["$defs"]
    assert defs["state"]["enum"] == [state.value for state in State]
    assert defs["target"]["properties"]["state_text"]["enum"] == list(STATE_TEXT.values())
    summary = SCHEMA["properties"]["summary"]
    assert set(summary["properties"]["state"]["enum"]) == {s.value for s in Summary}
    assert {state.value for state in State} <= set(summary["required"])


# -- escaping ------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def test_hostile_title_and_response_detail_are_escaped(tmp_path: Path) -> None:
    """Pins escaping of config and probed text: no script, no event handler, no javascript: link."""
    w = World(tmp_path, make_settings(title=HOSTILE, github=True))
    w.session(NOW - timedelta(days=1))
    outage(w, detail=HOSTILE)
    incident = w.live["production"].state.incident
    assert incident is not None
    w.store.set_issue(incident.id, 9, "javascript:alert(3)")
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    page = render_page(snapshot)
    assert "<script>alert" not in page
    assert '"onmouseover=' not in page
    assert "javascript:" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;onmouseover=alert(2) x=&#39;" in page
    parser = _Tags()
    parser.feed(page)
    assert [tag for tag, _ in parser.tags].count("script") == 1
    handlers = [(t, a) for t, attrs in parser.tags for a, _ in attrs if a.startswith("on")]
    assert handlers == []
    assert snapshot["targets"][1]["open_incident"]["issue_url"] is None


def test_secrets_in_a_response_detail_are_masked(tmp_path: Path) -> None:
    """Pins invariant 3 on the page: a token-shaped string in a probe's detail is redacted."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(days=1))
    token = "ghp_" + "A" * 36
    outage(w, detail=f"upstream said: token {token}")
    snapshot = w.snapshot()
    assert token not in json.dumps(snapshot)
    assert token not in render_page(snapshot)


# -- the HTTP side -------------------------------------------------------------------------------


def test_page_and_api_over_http(world: World) -> None:
    """Pins /status and /api/status: content types, CSP, caching, one snapshot for both."""
    page, api = fetch(world.app(), "/status", "/api/status")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert api.status_code == 200
    assert api.headers["content-type"] == "application/json"
    data = api.json()
    jsonschema.validate(data, SCHEMA)
    assert page.text == render_page(data)


def _directives(policy: str) -> dict[str, str]:
    return dict(d.strip().split(" ", 1) for d in policy.split(";"))


def test_csp_allows_exactly_the_inline_script_and_the_stylesheet(world: World) -> None:
    """Pins the CSP: the page's only script by its hash, its one stylesheet as 'self', no inline style."""
    (page,) = fetch(world.app(), "/status")
    html = page.text
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    directives = _directives(page.headers["content-security-policy"])
    assert directives == {
        "default-src": "'none'",
        "style-src": "'self'",
        "script-src": f"'sha256-{digest}'",
        "img-src": "data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert "unsafe" not in CSP
    parser = _Tags()
    parser.feed(html)
    assert "style" not in [tag for tag, _ in parser.tags]  # no inline <style> block
    assert [a for _, attrs in parser.tags for a, _ in attrs if a == "style"] == []
    sheets = [dict(attrs) for tag, attrs in parser.tags if ("rel", "stylesheet") in attrs]
    assert sheets == [{"rel": "stylesheet", "href": STYLESHEET_URL}]
    # same origin (root-relative), named by the content's hash
    match = re.fullmatch(r"/static/status\.([0-9a-f]{16})\.css", STYLESHEET_URL)
    assert match is not None
    (css,) = fetch(world.app(), STYLESHEET_URL)
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert css.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(css.content).hexdigest().startswith(match.group(1))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/static/status.0123456789abcdef.css", id="stale-hash"),
        pytest.param("/static/status.css", id="no-hash"),
        pytest.param("/static/status..%2F..%2Fpage.py.css", id="encoded-traversal"),
    ],
)
def test_stylesheet_route_answers_only_its_current_hash(world: World, path: str) -> None:
    """Pins the static route: the current hash is the file, cached a year; any other is a 404."""
    current, other = fetch(world.app(), STYLESHEET_URL, path)
    assert current.status_code == 200
    assert current.content == STYLESHEET
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    # a page of another version asked: no stylesheet rather than the wrong one, and not cached
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/json"
    assert "error" in other.json()
    assert "immutable" not in other.headers.get("cache-control", "")


def test_snapshot_is_cached_for_a_few_seconds(world: World) -> None:
    """Pins one build for a burst of requests, and a rebuild once the TTL has passed."""
    ticks = [100.0]
    cache = SnapshotCache(world, ttl_s=5.0, monotonic=lambda: ticks[0])
    app = world.app(cache)
    burst = fetch(app, "/status", "/api/status", "/badge/staging.svg", "/status")
    assert [r.status_code for r in burst] == [200] * 4
    assert cache.builds == 1
    ticks[0] += 5.0
    (later,) = fetch(app, "/api/status")
    assert later.status_code == 200
    assert cache.builds == 2


def test_a_new_result_is_on_the_page_at_once_not_after_the_cache_lifetime(world: World) -> None:
    """Pins the cache's invalidation: a probe completed since the last build (the live view
    changed) is served at the next request, inside the TTL; an unchanged view is not rebuilt."""
    ticks = [100.0]
    cache = SnapshotCache(world, ttl_s=5.0, monotonic=lambda: ticks[0])
    app = world.app(cache)
    before, again = fetch(app, "/api/status", "/api/status")
    assert cache.builds == 1
    world.record(cycle("production", NOW, Outcome.DOWN))
    (after,) = fetch(app, "/api/status")
    assert cache.builds == 2
    states = [{t["name"]: t["state"] for t in r.json()["targets"]} for r in (before, again, after)]
    assert states[0] == states[1] == {"staging": "up", "production": "up"}
    assert states[2] == {"staging": "up", "production": "down"}


def test_store_failure_is_503_never_500(world: World) -> None:
    """Pins a clear 503 (JSON for the API and badges) when the state database cannot be read."""
    world.store.close()
    api, page, badge = fetch(world.app(), "/api/status", "/status", "/badge/staging.svg")
    assert api.status_code == 503
    assert api.json()["error"] == "cannot read the state database"
    assert page.status_code == 503
    assert "cannot read its state database" in page.text
    assert badge.status_code == 503


def test_disabled_mounts_nothing(tmp_path: Path) -> None:
    """Pins ``status_page.enabled = false``: no routes, every status path is a 404."""
    w = World(tmp_path, make_settings(enabled=False))
    assert status_routes(w) == []
    responses = fetch(w.app(), "/status", "/api/status", "/badge/staging.svg", STYLESHEET_URL)
    assert [r.status_code for r in responses] == [404] * 4


def test_only_listed_targets_are_shown_in_their_order(tmp_path: Path) -> None:
    """Pins ``status_page.targets``: their order, and a hidden target absent everywhere."""
    settings = make_settings(
        names=("staging", "production", "internal"), targets=["production", "staging"]
    )
    w = World(tmp_path, settings)
    w.session(NOW - timedelta(hours=1))
    for name in ("staging", "production", "internal"):
        w.record(cycle(name, NOW - timedelta(seconds=30), Outcome.UP))
    api_response, page_response, hidden, hidden_uptime = fetch(
        w.app(),
        "/api/status",
        "/status",
        "/badge/internal.svg",
        "/badge/internal/uptime.svg?window=24h",
    )
    api, page = api_response.json(), page_response.text
    assert [t["name"] for t in api["targets"]] == ["production", "staging"]
    assert page.index('id="t-production"') < page.index('id="t-staging"')
    assert "internal" not in page
    assert "internal" not in json.dumps(api)
    assert hidden.status_code == 404
    assert hidden_uptime.status_code == 404


# -- badges --------------------------------------------------------------------------------------


def _svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # noqa: S314 - our own badge output, not untrusted input
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_state_and_uptime_badges(world: World) -> None:
    """Pins both badges: well-formed SVG, label and message, colour, caching header."""
    outage(world)
    state, uptime, default = fetch(
        world.app(),
        "/badge/production.svg",
        "/badge/staging/uptime.svg?window=7d",
        "/badge/staging/uptime.svg",
    )
    for response in (state, uptime, default):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/svg+xml; charset=utf-8"
        assert response.headers["cache-control"] == "max-age=60"
    root = _svg(state.text)
    assert _texts(root)[:2] == ["production", "production"]
    assert _texts(root)[2:] == ["down", "down"]
    assert "#e05d44" in state.text
    assert root.attrib["aria-label"] == "production: down"
    assert _texts(_svg(uptime.text))[2] == "100%"
    assert _texts(_svg(uptime.text))[0] == "staging 7d"
    assert _texts(_svg(default.text))[0] == "staging 30d"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/badge/nope.svg", 404, id="unknown-target"),
        pytest.param("/badge/nope/uptime.svg?window=30d", 404, id="unknown-target-uptime"),
        pytest.param("/badge/staging/uptime.svg?window=5d", 400, id="bad-window"),
        pytest.param("/badge/staging/uptime.svg?window=", 400, id="empty-window"),
        pytest.param("/badge/..%2F..%2Fetc%2Fpasswd.svg", 404, id="encoded-traversal"),
        pytest.param("/badge/../status.svg", 404, id="dot-dot"),
        pytest.param("/badge/%3Cscript%3E.svg", 404, id="markup-name"),
    ],
)
def test_bad_badge_requests_are_json_errors(world: World, path: str, status: int) -> None:
    """Pins 404/400 with a JSON error body for names and windows that are not configured."""
    (response,) = fetch(world.app(), path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


def test_badge_svg_escapes_and_sizes_by_text() -> None:
    """Pins XML escaping in badges and a width that grows with the text."""
    root = _svg(badge_svg('<a&"b>', "up", "brightgreen"))
    assert _texts(root)[0] == '<a&"b>'
    short = _svg(badge_svg("a", "up", "#123456"))
    long = _svg(badge_svg("a much longer label", "up", "green"))
    assert int(long.attrib["width"]) > int(short.attrib["width"])
    assert text_width("mmm") > text_width("iii")
    with pytest.raises(ValueError, match="badge colour"):
        badge_svg("a", "b", "url(#x)")


# -- accessibility and weight -------------------------------------------------------------------


def _contrast(foreground: str, background: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(
    ("foreground", "background", "minimum"),
    [
        pytest.param("ink", "page", 4.5, id="text"),
        pytest.param("mute", "card", 4.5, id="muted-text"),
        pytest.param("mute", "page", 4.5, id="muted-on-page"),
        pytest.param("link", "card", 4.5, id="links"),
        pytest.param("link", "page", 4.5, id="links-on-page"),
        pytest.param("link", "incident", 4.5, id="issue-link-in-incident-box"),
        pytest.param("ink", "incident", 4.5, id="text-in-incident-box"),
        *(
            pytest.param("#ffffff", s, 4.5, id=f"white-on-{s}")
            for s in ("up", "degraded", "down", "unknown", "maintenance")
        ),
        pytest.param("nodata", "card", 3.0, id="no-data-bar"),
        pytest.param("up", "card", 3.0, id="up-bar"),
        pytest.param("maintenance", "card", 3.0, id="maintenance-bar"),
    ],
)
def test_colours_meet_wcag_aa(foreground: str, background: str, minimum: float) -> None:
    """Pins the palette's contrast: 4.5:1 for text, 3:1 for bars (WCAG AA)."""
    colour = PALETTE.get(foreground, foreground)
    assert _contrast(colour, PALETTE[background]) >= minimum


def test_semantic_structure(world: World) -> None:
    """Pins the landmarks, headings, labelled sections and table headers the page relies on."""
    page = render_page(world.snapshot())
    assert page.startswith('<!doctype html><html lang="en">')
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in page
    for landmark in ("<header>", "<main>", "<footer>"):
        assert page.count(landmark) == 1
    assert page.count("<h1>") == 1
    assert page.count('<section class="target"') == 2
    for section_id in re.findall(r'<section [^>]*aria-labelledby="([^"]+)"', page):
        assert f'id="{section_id}"' in page
    assert '<th scope="col">Coverage</th>' in page
    assert '<th scope="row">24 h</th>' in page
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_page_weight_under_budget_with_busy_history(tmp_path: Path) -> None:
    """Pins the size budget for two targets with a day of minute-by-minute probes and incidents."""
    w = World(tmp_path, make_settings(github=True))
    w.session(NOW - timedelta(days=2))
    failing = down_between(NOW - timedelta(hours=6), NOW - timedelta(minutes=30))
    for name in ("staging", "production"):
        w.run(name, NOW - timedelta(days=1, hours=1), NOW - timedelta(minutes=20), failing)
    w.roll_up()
    snapshot = w.snapshot()
    jsonschema.validate(snapshot, SCHEMA)
    chart = snapshot["targets"][0]["response_time"][0]
    assert chart["probes"] > 300
    assert len(chart["points"]) <= 300
    assert chart["slot_s"] == 288.0
    page = render_page(snapshot).encode()
    assert len(page) < PAGE_BUDGET_BYTES, f"{len(page)} bytes"


def test_downsampling_keeps_the_spike(tmp_path: Path) -> None:
    """Pins that the slowest probe survives downsampling to at most 300 points."""
    w = World(tmp_path, make_settings())
    w.session(NOW - timedelta(days=2))
    spike = NOW - timedelta(hours=3)
    w.run("production", NOW - timedelta(hours=23), NOW - timedelta(hours=4), always(Outcome.DOWN))
    w.record(cycle("production", spike, Outcome.UP, slow_ms=4321.0))
    chart = w.snapshot()["targets"][1]["response_time"][0]
    assert len(chart["points"]) <= 300
    assert chart["max_ms"] == 4321.0
    assert max(p["ms"] for p in chart["points"]) == 4321.0


# -- formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0 s", id="zero"),
        pytest.param(0.5, "0.5 s", id="sub-second-cadence"),
        pytest.param(0.1, "0.1 s", id="a-tenth"),
        pytest.param(0.04, "<0.1 s", id="under-a-tenth-is-not-zero"),
        pytest.param(45, "45 s", id="seconds"),
        pytest.param(720, "12 min", id="minutes"),
        pytest.param(7500, "2 h 5 min", id="hours-minutes"),
        pytest.param(7200, "2 h", id="whole-hours"),
        pytest.param(3 * 86400 + 4 * 3600 + 59, "3 d 4 h", id="days"),
    ],
)
def test_durations_read_plainly(seconds: float, text: str) -> None:
    """Pins the duration wording used for "for 12 min" and incident lengths."""
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        pytest.param(None, "no data", id="none"),
        pytest.param(1.0, "100%", id="whole"),
        pytest.param(0.99999, "99.99%", id="never-rounds-up-to-100"),
        pytest.param(0.00001, "<0.01%", id="tiny-but-not-zero"),
        pytest.param(0.0, "0.00%", id="zero"),
    ],
)
def test_percentages_never_round_up_to_perfect(ratio: float | None, text: str) -> None:
    """Pins percentage wording: 99.999 % is not shown as 100 %."""
    assert percent(ratio) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(NOW - timedelta(minutes=12), "11:55 UTC", id="today"),
        pytest.param(NOW - timedelta(days=2), "18 Nov, 12:07 UTC", id="this-year"),
        pytest.param(NOW - timedelta(days=400), "16 Oct 2025, 12:07 UTC", id="last-year"),
    ],
)
def test_times_carry_the_date_when_not_today(moment: datetime, text: str) -> None:
    """Pins "since" wording: a time today, a date otherwise, always UTC."""
    assert when(moment, NOW) == text


def test_state_badge_of_a_target_in_maintenance(tmp_path: Path) -> None:
    """Pins the state badge during a window: "maintenance", in blue, not a 500."""
    (badge,) = fetch(in_maintenance(tmp_path).app(), "/badge/production.svg")
    assert badge.status_code == 200
    assert _texts(_svg(badge.text))[2:] == ["maintenance", "maintenance"]
    assert "#007ec6" in badge.text
