"""Maintenance windows: their config, the tracker in a window, the daemon, the API, the CLI.

The tracker tests are Uptime Kuma's complaints about its own maintenance mode, one
transcript each (#2846, #4004, #3066, #7148). The API is served by a real uvicorn
on 127.0.0.1; the CLI talks to a real ``monitor run`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.config import ConfigError, GithubSection, Settings, load_settings
from monitor.daemon.daemon import Daemon
from monitor.figures.maintenance import Window, configured_windows
from monitor.figures.slo import Span
from monitor.incidents.channels.base import Channel
from monitor.incidents.channels.github import GithubChannel
from monitor.incidents.channels.journal import JournalChannel
from monitor.incidents.tracker import (
    Phase,
    Policy,
    TrackerState,
    Transition,
    TransitionKind,
    step,
)
from monitor.metrics import Metrics
from monitor.probing.results import Reason, TargetResult
from monitor.store.base import OutboxAction
from monitor.store.sqlite import SqliteStore
from monitor.web.maintenance_api import MAX_REASON, maintenance_routes
from monitor.web.server import HttpServer, create_app
from tests.builders import T0, ManualClock, at, down, up
from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    wait_for,
    write_config,
)
from tests.ports import free_port
from tests.targets import TargetServer, refused_port, respond

PARIS = ZoneInfo("Europe/Paris")
TOKEN = "maint-api-token-5b1e7c93a0"
WRONG_TOKEN = "maint-wrong-token-0d4f2a61"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MONITOR_* or GITHUB_TOKEN from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("MONITOR_") or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)


# ---- 1. [[maintenance]] in the configuration --------------------------------------------

TARGETS_TOML = """
[[targets]]
name = "web"
url = "http://127.0.0.1:9"

[[targets.checks]]
name = "health"
"""


def load(tmp_path: Path, maintenance: str) -> Settings:
    """Settings from a config file with one target and ``maintenance`` appended."""
    path = tmp_path / "config.toml"
    path.write_text(TARGETS_TOML + maintenance, encoding="utf-8")
    return load_settings(path)


def windows(settings: Settings, start: datetime, end: datetime) -> list[Window]:
    """The configured windows overlapping ``[start, end)``."""
    return configured_windows(settings.maintenance, Span(start, end))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A UTC moment."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_one_off_window_in_a_time_zone(tmp_path: Path) -> None:
    """A one-off start is read in its time zone; targets and reason are kept."""
    settings = load(
        tmp_path,
        """
[[maintenance]]
targets = ["web"]
start = "2026-12-05T02:00"
duration = "2h"
timezone = "Europe/Paris"
reason = "database upgrade"
""",
    )
    found = windows(settings, utc(2026, 12, 1), utc(2026, 12, 10))
    assert found == [
        Window(utc(2026, 12, 5, 1), utc(2026, 12, 5, 3), frozenset({"web"}), "database upgrade")
    ]
    assert windows(settings, utc(2026, 12, 6), utc(2026, 12, 10)) == []


def test_weekday_windows_keep_their_local_time_across_daylight_saving(tmp_path: Path) -> None:
    """Saturdays at 02:00 Paris time stay at 02:00 local when the clocks go forward (03-29)."""
    settings = load(
        tmp_path,
        """
[[maintenance]]
every = "sat"
start = "02:00"
duration = "1h"
timezone = "Europe/Paris"
""",
    )
    found = windows(settings, utc(2026, 3, 20), utc(2026, 4, 6))
    assert [w.start for w in found] == [
        utc(2026, 3, 21, 1),  # CET, UTC+1
        utc(2026, 3, 28, 1),
        utc(2026, 4, 4, 0),  # CEST, UTC+2
    ]
    for window in found:
        local = window.start.astimezone(PARIS)
        assert (local.weekday(), local.hour, local.minute) == (5, 2, 0)
        assert window.end - window.start == timedelta(hours=1)
        assert window.targets is None  # no targets: every target


def test_daily_windows_across_the_spring_change(tmp_path: Path) -> None:
    """Daily at 02:00 Paris: 02:00 local each day; on 03-29, when 02:00 does not exist,
    the window opens at the first moment after the jump (03:00 CEST)."""
    settings = load(
        tmp_path,
        """
[[maintenance]]
every = "daily"
start = "02:00"
duration = "30m"
timezone = "Europe/Paris"
""",
    )
    found = windows(settings, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert [w.start for w in found] == [
        utc(2026, 3, 28, 1),
        utc(2026, 3, 29, 1),  # 03:00 CEST: 02:00 was skipped
        utc(2026, 3, 30, 0),
        utc(2026, 3, 31, 0),
    ]
    assert [w.start.astimezone(PARIS).hour for w in found] == [2, 3, 2, 2]


def test_a_daily_window_opens_once_on_the_autumn_change(tmp_path: Path) -> None:
    """Daily at 02:30 Paris opens once on 10-25, when 02:30 happens twice (CEST, then CET)."""
    settings = load(
        tmp_path,
        """
[[maintenance]]
every = "daily"
start = "02:30"
duration = "1h"
timezone = "Europe/Paris"
""",
    )
    found = windows(settings, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert [w.start for w in found] == [utc(2026, 10, 25, 0, 30)]  # the first 02:30


@pytest.mark.parametrize(
    ("every", "weekdays"),
    [
        pytest.param("0 3 * * 2", {1}, id="2-is-tuesday"),
        pytest.param("0 3 * * 0", {6}, id="0-is-sunday"),
        pytest.param("0 3 * * 7", {6}, id="7-is-sunday-too"),
        pytest.param("0 3 * * 1-5", {0, 1, 2, 3, 4}, id="1-5-is-monday-to-friday"),
        pytest.param("0 3 * * tue", {1}, id="a-name-in-cron"),
    ],
)
def test_cron_day_of_week_is_standard_cron(tmp_path: Path, every: str, weekdays: set[int]) -> None:
    """A cron ``every`` counts days of the week as cron does (0 and 7 Sunday)."""
    settings = load(tmp_path, f'[[maintenance]]\nevery = "{every}"\nduration = "1h"\n')
    found = windows(settings, utc(2026, 11, 1), utc(2026, 11, 15))
    assert found
    assert {w.start.weekday() for w in found} == weekdays
    assert all((w.start.hour, w.start.minute) == (3, 0) for w in found)


def test_cron_in_a_time_zone_with_a_first_start(tmp_path: Path) -> None:
    """A cron window in Paris time starts no earlier than ``start``."""
    settings = load(
        tmp_path,
        """
[[maintenance]]
every = "0 3 * * 2"
start = "2026-11-05"
duration = "1h"
timezone = "Europe/Paris"
""",
    )
    found = windows(settings, utc(2026, 11, 1), utc(2026, 11, 20))
    assert [w.start for w in found] == [utc(2026, 11, 10, 2), utc(2026, 11, 17, 2)]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        pytest.param('every = "0 3 * * 9"\nduration = "1h"', "every", id="bad-day-of-week"),
        pytest.param('every = "0 3 * * 2 1"\nduration = "1h"', "every", id="six-fields"),
        pytest.param('every = "fortnightly"\nduration = "1h"', "every", id="not-cron"),
        pytest.param('start = "tomorrow"\nduration = "1h"', "start", id="bad-start"),
        pytest.param('duration = "1h"', "start", id="one-off-without-start"),
        pytest.param(
            'every = "sat"\nstart = "25:00"\nduration = "1h"', "start", id="bad-time-of-day"
        ),
        pytest.param(
            'start = "2026-12-05T02:00"\nduration = "1h"\ntimezone = "Mars/Olympus"',
            "timezone",
            id="unknown-time-zone",
        ),
        pytest.param(
            'start = "2026-12-05T02:00"\nduration = "1h"\ntargets = ["web", "nope"]',
            "targets[1]",
            id="unknown-target",
        ),
        pytest.param('start = "2026-12-05T02:00"\nduration = "0"', "duration", id="zero-length"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    """Each fault in a [[maintenance]] table is one problem line naming the key."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[[maintenance]]\n{table}\n")
    [line] = caught.value.problems
    # the key is named either as a path (maintenance[0].timezone) or first in the message
    assert line.startswith(f"maintenance[0].{key}:"), line


def test_unknown_target_names_the_target(tmp_path: Path) -> None:
    """The unknown-target problem says which name is unknown."""
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path,
            '[[maintenance]]\nstart = "2026-12-05T02:00"\nduration = "1h"\ntargets = ["nope"]\n',
        )
    assert caught.value.problems == ["maintenance[0].targets[0]: no target named 'nope'"]


# ---- 2. the tracker in a window ---------------------------------------------------------

POLICY = Policy(open_after=3, close_after=2, reopen_window_s=1800, reminder_interval_s=3600)


def result_for(letter: str, minute: float) -> TargetResult:
    """F down (503), T down another way (timeout), U up."""
    when = at(minute)
    if letter == "U":
        return up(when)
    return down(when, reason=Reason.TIMEOUT if letter == "T" else Reason.STATUS)


def run_window(
    script: str, window: tuple[float, float], policy: Policy = POLICY
) -> tuple[TrackerState, list[tuple[int, Transition]]]:
    """Feed one probe a minute (F, T, U), in maintenance for minutes in ``[start, end)``;
    the final state and every transition with its minute."""
    state = TrackerState(target="production")
    log = []
    for minute, letter in enumerate(script):
        in_window = window[0] <= minute < window[1]
        state, transitions = step(
            state, result_for(letter, minute), at(minute), policy, maintenance=in_window
        )
        log += [(minute, t) for t in transitions]
    return state, log


def kinds(log: Sequence[tuple[int, Transition]]) -> list[tuple[int, str]]:
    """(minute, kind) of each transition."""
    return [(minute, str(t.kind)) for minute, t in log]


def test_2846_a_target_failing_when_the_window_ends_opens_on_the_normal_rule() -> None:
    """uptime-kuma#2846: failing through the end of a window opens no incident at once;
    it opens after open_after failures counted from the end, and starts there."""
    state, log = run_window("F" * 12, window=(0, 5))
    assert kinds(log) == [(7, "opened")]  # 5, 6, 7: three fresh failures
    assert state.incident is not None
    assert state.incident.started_at == at(5)


def test_4004_failures_before_the_window_do_not_count_after_it() -> None:
    """uptime-kuma#4004: two failures just before the window and one after it are not
    three in a row; the streak starts again at the window's end."""
    state, log = run_window("UFF" + "F" * 5 + "FFF", window=(3, 8))
    assert kinds(log) == [(10, "opened")]
    assert state.incident is not None
    assert state.incident.started_at == at(8)


def test_a_blip_straddling_the_end_of_a_window_is_not_an_incident() -> None:
    """Failing in the window, then two failures and a success after it: nothing at all."""
    state, log = run_window("FFFFFFFU", window=(0, 5))
    assert kinds(log) == [(7, "cancelled")]
    assert state.phase is Phase.HEALTHY
    assert state.incident is None


def test_3066_nothing_is_announced_in_a_window_failing_throughout() -> None:
    """uptime-kuma#3066: a target failing for the whole of a long window is never announced,
    not even by a reminder, and has no incident when the window ends."""
    state, log = run_window("F" * 150, window=(0, 150))
    assert log == []
    assert state.phase is Phase.HEALTHY
    assert state.incident is None


def test_7148_an_incident_open_before_the_window_is_not_announced_again() -> None:
    """uptime-kuma#7148: an incident open before a window stays open through it, is not
    opened again when the window ends while still failing, and its duration counts from
    the first failure."""
    state, log = run_window("F" * 20, window=(5, 15))
    assert kinds(log) == [(2, "opened")]
    assert state.phase is Phase.OPEN
    assert state.incident is not None
    opened = log[0][1].incident
    assert opened is not None
    assert state.incident.id == opened.id
    assert state.incident.started_at == at(0)
    assert (state.incident.probes_total, state.incident.probes_failed) == (20, 20)
    # and when it recovers after the window, the duration is the whole outage
    state, log = run_window("F" * 20 + "UU", window=(5, 15))
    assert kinds(log) == [(2, "opened"), (21, "resolved")]
    resolved = log[-1][1].incident
    assert resolved is not None
    assert resolved.id == opened.id
    assert resolved.duration_s == 20 * 60


def test_a_window_that_starts_mid_incident_silences_changes_and_reminders() -> None:
    """A window starting while an incident is open: no CHANGED and no REMINDER in it,
    though the failure changes character and the reminder interval passes."""
    script = "F" * 10 + "T" * 90  # the reminder is due at 62; the character changes at 10
    state, log = run_window(script, window=(5, 200))
    assert kinds(log) == [(2, "opened")]
    assert state.incident is not None
    assert state.incident.last_notice_at == at(2)  # no reminder was counted either


def test_a_recovery_in_the_window_still_resolves_with_the_true_duration() -> None:
    """An incident that recovers inside a window resolves there, with its whole duration."""
    state, log = run_window("F" * 80 + "UU", window=(5, 200))
    assert kinds(log) == [(2, "opened"), (81, "resolved")]
    incident = log[-1][1].incident
    assert incident is not None
    assert incident.started_at == at(0)
    assert incident.resolved_at == at(80)
    assert incident.duration_s == 80 * 60
    assert state.phase is Phase.HEALTHY


def test_reminders_resume_after_the_window() -> None:
    """An incident that outlives its window is reminded of again once the window ends."""
    _, log = run_window("F" * 100, window=(5, 90))
    assert kinds(log) == [(2, "opened"), (90, "reminder")]


def test_a_resolve_just_before_a_window_is_still_found_for_a_reopen() -> None:
    """A failure after a window, within reopen_window of the last resolve, reopens it."""
    state, log = run_window("FFFUU" + "F" * 5 + "FFF", window=(5, 10))
    assert kinds(log) == [(2, "opened"), (4, "resolved"), (12, "reopened")]
    assert state.incident is not None
    assert state.incident.reopened == 1


@settings(max_examples=300, deadline=None)
@given(
    script=st.text(alphabet="FTU", min_size=1, max_size=80),
    start=st.integers(min_value=0, max_value=80),
    length=st.integers(min_value=1, max_value=80),
)
def test_nobody_is_paged_in_a_window_whatever_the_probes(
    script: str, start: int, length: int
) -> None:
    """Only a resolve comes out of a window; after it, an incident needs open_after failures
    all after the window's end."""
    end = start + length
    _, log = run_window(script, window=(start, end))
    for minute, transition in log:
        if start <= minute < end:
            assert transition.kind is TransitionKind.RESOLVED, (minute, transition.kind)
        if transition.kind in (TransitionKind.OPENED, TransitionKind.REOPENED):
            assert minute < start or minute - (POLICY.open_after - 1) >= end, minute
        if transition.kind is TransitionKind.OPENED and minute >= end:
            assert transition.incident is not None
            assert transition.incident.started_at >= at(end)


# ---- 3. the daemon ------------------------------------------------------------------------

DaemonFactory = Callable[..., Daemon]


def planning_github() -> GithubChannel:
    """A GitHub channel whose steps are only planned here, never sent."""
    return GithubChannel(GithubSection(repository="acme/web", token="ghp_" + "x" * 36))


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Daemons on a hand-moved clock and a real SQLite file: production and staging."""
    stores: list[SqliteStore] = []

    def build(
        *,
        maintenance: Sequence[dict[str, Any]] = (),
        api_token: str | None = None,
        channels: Sequence[Channel] | None = None,
    ) -> Daemon:
        extra = {} if api_token is None else {"api_token": api_token}
        settings = load_settings(
            None,
            monitor={
                "state_path": str(tmp_path / "state.db"),
                "reopen_window": "30m",
                "reminder_interval": "1h",
            },
            github={"enabled": False},
            targets=[
                {"name": name, "url": "http://127.0.0.1:9", "checks": [{"name": "health"}]}
                for name in ("production", "staging")
            ],
            maintenance=list(maintenance),
            **extra,
        )
        store = SqliteStore(settings.monitor.state_path)
        stores.append(store)
        return Daemon(
            settings,
            metrics=Metrics(),
            clock=ManualClock(),
            store=store,
            channels=list(channels or [planning_github(), JournalChannel()]),
        )

    yield build
    for store in stores:
        store.close()


def clock_of(daemon: Daemon) -> ManualClock:
    """The daemon's hand-moved clock."""
    clock = daemon._clock
    assert isinstance(clock, ManualClock)
    return clock


def feed(daemon: Daemon, script: str, start_min: float = 0) -> list[Transition]:
    """F = down, U = up, one production probe a minute from ``start_min``; the transitions."""
    clock = clock_of(daemon)
    transitions = []
    for index, letter in enumerate(script):
        clock.now = at(start_min + index)
        result = down(clock.now) if letter == "F" else up(clock.now)
        transitions += daemon.record(result)
    return transitions


def in_maintenance(daemon: Daemon, target: str = "production") -> float | None:
    """``monitor_maintenance{target}``."""
    return daemon.metrics.registry.get_sample_value("monitor_maintenance", {"target": target})


def steps(daemon: Daemon, channel: str | None = None) -> list[OutboxAction]:
    """Every outbox step (nothing is delivered in these tests)."""
    return daemon.store.pending_actions(channel)


CONFIG_WINDOW = {
    "targets": ["production"],
    "start": "2026-11-01T12:00:00+00:00",  # T0
    "duration": "10m",
    "reason": "database upgrade",
}


def test_a_configured_window_pages_nobody(make_daemon: DaemonFactory) -> None:
    """In a configured window a failing target opens no incident and plans no step; after
    it, the incident opens on open_after fresh failures."""
    daemon = make_daemon(maintenance=[CONFIG_WINDOW])
    assert feed(daemon, "F" * 10) == []
    assert steps(daemon) == []
    assert daemon.store.incidents() == []
    assert in_maintenance(daemon) == 1
    assert in_maintenance(daemon, "staging") == 0  # the window names production only
    assert feed(daemon, "FF", start_min=10) == []
    assert in_maintenance(daemon) == 0
    [opened] = feed(daemon, "F", start_min=12)
    assert opened.kind is TransitionKind.OPENED
    assert opened.incident is not None
    assert opened.incident.started_at == at(10)
    assert sorted((s.channel, s.kind) for s in steps(daemon)) == [
        ("github", "open"),
        ("journal", "opened"),
    ]


def test_a_window_from_the_api_pages_nobody(make_daemon: DaemonFactory) -> None:
    """A window opened through the daemon's control behaves as a configured one, and is
    gone when it ends."""
    daemon = make_daemon()
    window = daemon.start_maintenance(["production"], 600, "deploy abc123")
    assert (window.start, window.end, window.source) == (T0, at(10), "api")
    assert window.id is not None
    assert feed(daemon, "F" * 10) == []
    assert steps(daemon) == []
    assert in_maintenance(daemon) == 1
    assert feed(daemon, "FF", start_min=10) == []
    assert in_maintenance(daemon) == 0
    assert [t.kind for t in feed(daemon, "F", start_min=12)] == [TransitionKind.OPENED]


def test_ending_a_window_early_pages_again_on_the_normal_rule(make_daemon: DaemonFactory) -> None:
    """A window ended early stops at once; the incident then opens on fresh failures."""
    daemon = make_daemon()
    daemon.start_maintenance(["production"], 3600, "deploy abc123")
    assert feed(daemon, "F" * 5) == []
    clock_of(daemon).now = at(4.5)
    assert daemon.end_maintenance("production") == 1
    assert daemon.maintenance_windows() == []
    assert feed(daemon, "FF", start_min=5) == []
    assert in_maintenance(daemon) == 0
    [opened] = feed(daemon, "F", start_min=7)
    assert opened.incident is not None
    assert opened.incident.started_at == at(5)


def test_a_window_beginning_mid_incident_is_noted_once_and_silences_reminders(
    make_daemon: DaemonFactory,
) -> None:
    """A window that begins while an incident is open: one GitHub comment notes it, and no
    reminder is planned in it though the reminder interval passes."""
    daemon = make_daemon()
    feed(daemon, "FFF")
    clock_of(daemon).now = at(3)
    daemon.start_maintenance(["production"], 2 * 3600, "deploy abc123")
    assert feed(daemon, "F" * 100, start_min=3) == []  # a reminder was due at 62
    github = steps(daemon, "github")
    assert [s.kind for s in github] == ["open", "comment"]
    note = github[1].payload
    assert note["event"] == "maintenance"
    assert "Maintenance window" in note["body"]
    assert "deploy abc123" in note["body"]
    assert [s.kind for s in steps(daemon, "journal")] == ["opened", "maintenance"]
    assert in_maintenance(daemon) == 1
    state = daemon.targets["production"].state
    assert state.in_incident
    assert state.incident is not None
    assert state.incident.started_at == at(0)


def test_a_restart_inside_a_window_does_not_note_it_again(make_daemon: DaemonFactory) -> None:
    """A daemon restarted while a window is open goes on without a second note on the issue."""
    before = make_daemon()
    feed(before, "FFF")
    clock_of(before).now = at(3)
    before.start_maintenance(["production"], 3600, "deploy abc123")
    feed(before, "FFF", start_min=3)
    after = make_daemon()  # the same state file: a restart
    feed(after, "FFF", start_min=6)
    assert [s.kind for s in steps(after, "github")] == ["open", "comment"]


# ---- 4. the HTTP API on a real server -------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(daemon: Daemon) -> AsyncIterator[str]:
    """The daemon's app with the maintenance routes on 127.0.0.1; its base URL."""
    app = create_app(daemon.metrics, daemon, extra_routes=maintenance_routes(daemon))
    server = HttpServer(app, "127.0.0.1:0")
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{server.bound_port}"
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def api(make_daemon: DaemonFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Daemon]]:
    """A client on the API of a daemon whose API token is TOKEN."""
    daemon = make_daemon(api_token=TOKEN, channels=[JournalChannel()])
    async with serving(daemon) as url, httpx.AsyncClient(base_url=url) as client:
        yield client, daemon


def bearer(token: str) -> dict[str, str]:
    """The Authorization header."""
    return {"Authorization": f"Bearer {token}"}


START = {"targets": ["production"], "duration": "15m", "reason": "deploy abc123"}


def stored(daemon: Daemon) -> list[Window]:
    """Every stored window of the week around T0."""
    return daemon.store.maintenance_windows(T0 - timedelta(days=7), T0 + timedelta(days=8))


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param(bearer(WRONG_TOKEN), id="wrong-token"),
        pytest.param({"Authorization": TOKEN}, id="no-bearer-scheme"),
        pytest.param(bearer(TOKEN + "x"), id="token-prefix-only"),
    ],
)
async def test_a_write_without_the_token_is_refused(
    api: tuple[httpx.AsyncClient, Daemon], headers: dict[str, str]
) -> None:
    """POST without the right bearer token: 401 with WWW-Authenticate, nothing stored."""
    client, daemon = api
    response = await client.post("/api/maintenance", json=START, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["error"]
    assert stored(daemon) == []
    assert (await client.get("/api/maintenance")).json() == {"windows": []}


async def test_a_delete_with_a_wrong_token_changes_nothing(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """DELETE with a wrong token: 401, and the window stays open."""
    client, daemon = api
    assert (await client.post("/api/maintenance", json=START, headers=bearer(TOKEN))).is_success
    response = await client.delete(
        "/api/maintenance", params={"target": "production"}, headers=bearer(WRONG_TOKEN)
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert len((await client.get("/api/maintenance")).json()["windows"]) == 1
    assert daemon.maintenance.active("production", T0) is not None


async def test_a_window_opened_is_listed_and_ended(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """POST opens a window (201), GET lists it, DELETE ends it and GET no longer does."""
    client, daemon = api
    response = await client.post("/api/maintenance", json=START, headers=bearer(TOKEN))
    assert response.status_code == 201
    opened = response.json()
    assert isinstance(opened.pop("id"), int)
    assert opened == {
        "targets": ["production"],
        "starts_at": T0.isoformat(),
        "ends_at": (T0 + timedelta(minutes=15)).isoformat(),
        "reason": "deploy abc123",
        "source": "api",
    }
    listed = (await client.get("/api/maintenance")).json()["windows"]
    assert [w["reason"] for w in listed] == ["deploy abc123"]
    assert daemon.maintenance.active("production", T0) is not None
    assert daemon.maintenance.active("staging", T0) is None
    response = await client.delete(
        "/api/maintenance", params={"target": "production"}, headers=bearer(TOKEN)
    )
    assert response.status_code == 200
    assert response.json() == {"target": "production", "ended": 1}
    assert (await client.get("/api/maintenance")).json() == {"windows": []}
    assert daemon.maintenance.active("production", T0) is None


async def test_without_an_api_token_writes_do_not_exist(make_daemon: DaemonFactory) -> None:
    """No MONITOR_API_TOKEN: POST and DELETE are 405 whatever is sent; GET still lists."""
    daemon = make_daemon(maintenance=[CONFIG_WINDOW], channels=[JournalChannel()])
    assert daemon.settings.api_token is None
    async with serving(daemon) as url, httpx.AsyncClient(base_url=url) as client:
        post = await client.post("/api/maintenance", json=START, headers=bearer(TOKEN))
        delete = await client.delete("/api/maintenance", params={"target": "production"})
        listing = await client.get("/api/maintenance")
    assert (post.status_code, delete.status_code) == (405, 405)
    assert stored(daemon) == []
    assert listing.status_code == 200
    [window] = listing.json()["windows"]
    assert (window["reason"], window["source"]) == ("database upgrade", "config")


async def test_a_blank_api_token_means_no_api(make_daemon: DaemonFactory) -> None:
    """MONITOR_API_TOKEN set to blanks (a CI secret that expanded to spaces) is no token:
    405, never a token everyone knows."""
    daemon = make_daemon(api_token="   ", channels=[JournalChannel()])
    async with serving(daemon) as url, httpx.AsyncClient(base_url=url) as client:
        post = await client.post("/api/maintenance", json=START, headers=bearer("x"))
    assert post.status_code == 405


LONG_REASON = "x" * (MAX_REASON + 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**START, "targets": ["nope"]}, "targets", id="unknown-target"),
        pytest.param({**START, "targets": []}, "targets", id="no-target"),
        pytest.param({**START, "targets": "production"}, "targets", id="targets-not-a-list"),
        pytest.param({"duration": "15m"}, "targets", id="targets-missing"),
        pytest.param({**START, "duration": "0"}, "duration", id="duration-zero"),
        pytest.param({**START, "duration": 0}, "duration", id="duration-zero-number"),
        pytest.param({**START, "duration": 7 * 86400 + 1}, "duration", id="over-seven-days"),
        pytest.param({**START, "duration": "8d"}, "duration", id="eight-days"),
        pytest.param({**START, "duration": "soon"}, "duration", id="duration-unreadable"),
        pytest.param({**START, "duration": True}, "duration", id="duration-boolean"),
        pytest.param({"targets": ["production"]}, "duration", id="duration-missing"),
        pytest.param({**START, "reason": LONG_REASON}, "reason", id="reason-too-long"),
        pytest.param({**START, "reason": "  "}, "reason", id="reason-blank"),
        pytest.param({**START, "reason": 42}, "reason", id="reason-not-text"),
        pytest.param(b"not json", "body", id="not-json"),
        pytest.param(b"\xff\xfe", "body", id="not-utf8"),
        pytest.param([START], "body", id="not-an-object"),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(
    api: tuple[httpx.AsyncClient, Daemon], body: object, field: str
) -> None:
    """A body the API cannot use: 400 whose error starts with the field, nothing stored."""
    client, daemon = api
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        "/api/maintenance",
        content=content,
        headers={**bearer(TOKEN), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:")
    assert stored(daemon) == []


async def test_a_seven_day_window_is_the_longest_accepted(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """Exactly seven days is accepted (the limit is inclusive)."""
    client, _ = api
    response = await client.post(
        "/api/maintenance", json={**START, "duration": "7d"}, headers=bearer(TOKEN)
    )
    assert response.status_code == 201
    assert response.json()["ends_at"] == (T0 + timedelta(days=7)).isoformat()


async def test_delete_of_an_unknown_target_is_refused(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """DELETE names a target the daemon knows, or gets 400 naming ``target``."""
    client, _ = api
    for params in ({"target": "nope"}, {}):
        response = await client.delete("/api/maintenance", params=params, headers=bearer(TOKEN))
        assert response.status_code == 400
        assert response.json()["error"].startswith("target:")


async def test_the_token_never_reaches_the_logs(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Neither the API token nor a wrong one is handed to the logger; a refusal is logged."""
    client, _ = api
    with capture_logs() as logs:
        await client.post("/api/maintenance", json=START, headers=bearer(WRONG_TOKEN))
        await client.post("/api/maintenance", json=START, headers=bearer(TOKEN))
        await client.delete(
            "/api/maintenance", params={"target": "production"}, headers=bearer(TOKEN)
        )
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "maintenance API: refused",
        "maintenance window opened",
        "maintenance window ended",
    ]
    for entry in logs:
        assert TOKEN not in repr(entry)
        assert WRONG_TOKEN not in repr(entry)


# ---- 5. the CLI against a real daemon -----------------------------------------------------


def daemon_config(tmp_path: Path, target_server: TargetServer) -> Path:
    """The e2e config: target ``web`` answering 200 on ``/health``."""
    target_server.route("/health", respond(200, b"ok"))
    return write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
    )


def cli(config: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """``python -m monitor maintenance ARGS --config CONFIG`` with MONITOR_API_TOKEN=token."""
    env = clean_env() if token is None else clean_env(MONITOR_API_TOKEN=token)
    return subprocess.run(
        [sys.executable, "-m", "monitor", "maintenance", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=config.parent,
    )


def listed(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's GET /api/maintenance."""
    response = httpx.get(f"{daemon.base_url}/api/maintenance", timeout=5)
    assert response.status_code == 200
    windows: list[dict[str, Any]] = response.json()["windows"]
    return windows


@pytest.mark.e2e
def test_cli_opens_and_ends_a_window_on_a_running_daemon(
    tmp_path: Path, daemons: Daemons, target_server: TargetServer
) -> None:
    """``monitor maintenance start`` and ``end`` against ``monitor run``: exit 0, the window is
    listed and exported while open; bad tokens, bad URLs and a missing --for fail plainly;
    no token reaches the daemon's logs."""
    config = daemon_config(tmp_path, target_server)
    daemon = daemons.start(config, clean_env(MONITOR_API_TOKEN=TOKEN))
    daemon.wait_healthy()
    url = ("--monitor-url", daemon.base_url)

    started = cli(
        config, "start", "--target", "web", "--for", "15m", "--reason", "deploy abc123", *url
    )
    assert started.returncode == 0, started.stderr + daemon.logs()
    assert started.stdout.startswith("maintenance window for web until ")
    assert started.stdout.rstrip().endswith(": deploy abc123")
    [window] = listed(daemon)
    assert (window["targets"], window["reason"], window["source"]) == (
        ["web"],
        "deploy abc123",
        "api",
    )
    ends = datetime.fromisoformat(window["ends_at"]) - datetime.fromisoformat(window["starts_at"])
    assert ends == timedelta(minutes=15)
    assert window["ends_at"] in started.stdout
    wait_for(
        lambda: daemon.value("monitor_maintenance", target="web") == 1,
        10,
        "monitor_maintenance{web} = 1",
        daemon.logs,
    )

    refused = cli(config, "start", "--target", "web", "--for", "15m", *url, token=WRONG_TOKEN)
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert "a valid bearer token is required" in refused.stderr
    assert len(listed(daemon)) == 1

    ended = cli(config, "end", "--target", "web", *url)
    assert ended.returncode == 0, ended.stderr + daemon.logs()
    assert ended.stdout == "maintenance ended for web (1 window(s))\n"
    assert listed(daemon) == []
    wait_for(
        lambda: daemon.value("monitor_maintenance", target="web") == 0,
        10,
        "monitor_maintenance{web} = 0",
        daemon.logs,
    )

    unreachable = cli(
        config,
        "start",
        "--target",
        "web",
        "--for",
        "15m",
        "--monitor-url",
        f"http://127.0.0.1:{refused_port()}",
    )
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr

    no_length = cli(config, "start", "--target", "web", *url)
    assert no_length.returncode == 2
    assert "--for is required" in no_length.stderr

    no_token = cli(config, "start", "--target", "web", "--for", "15m", *url, token=None)
    assert no_token.returncode == 2
    assert "MONITOR_API_TOKEN" in no_token.stderr

    unknown = cli(config, "start", "--target", "nope", "--for", "15m", *url)
    assert unknown.returncode == 2
    assert listed(daemon) == []

    assert daemon.events("maintenance API: refused"), daemon.logs()
    assert [e["targets"] for e in daemon.events("maintenance window opened")] == [["web"]]
    for text in (daemon.stdout(), daemon.stderr()):
        assert TOKEN not in text
        assert WRONG_TOKEN not in text
    for result in (started, refused, ended):
        assert TOKEN not in result.stdout + result.stderr
        assert WRONG_TOKEN not in result.stdout + result.stderr


@pytest.mark.e2e
def test_cli_says_when_the_daemon_has_no_api_token(
    tmp_path: Path, daemons: Daemons, target_server: TargetServer
) -> None:
    """A daemon started without MONITOR_API_TOKEN answers 405: the CLI exits 1 and says why."""
    config = daemon_config(tmp_path, target_server)
    daemon = daemons.start(config, clean_env())
    daemon.wait_healthy()
    result = cli(
        config, "start", "--target", "web", "--for", "15m", "--monitor-url", daemon.base_url
    )
    assert result.returncode == 1
    assert "no API token configured (405)" in result.stderr
    assert listed(daemon) == []
