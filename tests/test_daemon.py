"""The daemon's wiring, fed results by hand: cadence, metrics, deployments in issue bodies."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import GithubSection, Settings, load_settings
from monitor.daemon.daemon import Daemon
from monitor.incidents.channels.github import GithubChannel
from monitor.incidents.channels.journal import JournalChannel
from monitor.metrics import Metrics
from monitor.probing.prober import Prober
from monitor.probing.results import TargetResult
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, ManualClock, down, stored_results, up
from tests.ports import free_port


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One target; 15-minute and 1-minute cadences as shipped."""
    return load_settings(
        None,
        monitor={"state_path": str(tmp_path / "state.db"), "reopen_window": "30m"},
        github={"enabled": False},
        targets=[
            {"name": "production", "url": "http://127.0.0.1:9", "checks": [{"name": "health"}]}
        ],
    )


@pytest.fixture
def daemon(settings: Settings) -> Iterator[Daemon]:
    """A daemon with a hand-moved clock, its real store and the journal sink."""
    store = SqliteStore(settings.monitor.state_path)
    yield Daemon(
        settings, metrics=Metrics(), clock=ManualClock(), store=store, channels=[JournalChannel()]
    )
    store.close()


def feed(daemon: Daemon, script: str, start_min: float = 0) -> None:
    """F = down, U = up, one probe a minute."""
    clock = daemon._clock
    assert isinstance(clock, ManualClock)
    for index, letter in enumerate(script):
        clock.now = T0 + timedelta(minutes=start_min + index)
        daemon.record(down(clock.now) if letter == "F" else up(clock.now))


def value(daemon: Daemon, metric: str, **labels: str) -> float:
    """A sample's value from the daemon's registry."""
    found = daemon.metrics.registry.get_sample_value(metric, labels)
    assert found is not None, metric
    return found


def test_cadence_follows_the_first_failure_and_the_resolve(
    daemon: Daemon, settings: Settings
) -> None:
    """Fast cadence from the first failed probe until resolved, then back to the interval."""
    runtime = daemon.targets["production"]
    assert runtime.cadence_s == settings.monitor.interval
    feed(daemon, "F")
    assert runtime.cadence_s == settings.monitor.incident_interval
    feed(daemon, "FFUU", start_min=1)
    assert runtime.cadence_s == settings.monitor.interval


def test_reopened_incident_counts_once(daemon: Daemon) -> None:
    """A flap that reopens the incident is one incident in every counter."""
    feed(daemon, "FFFUU" + "FFFUU")
    assert value(daemon, "monitor_incidents_total", target="production") == 1
    assert value(daemon, "monitor_incident_duration_seconds_count", target="production") == 1
    assert value(daemon, "monitor_incident_open", target="production") == 0


def test_incident_metrics_while_open(daemon: Daemon) -> None:
    """While open: incident_open is 1 and the start is the first failed probe."""
    feed(daemon, "UFFF")
    assert value(daemon, "monitor_incident_open", target="production") == 1
    started = value(daemon, "monitor_incident_started_timestamp_seconds", target="production")
    assert started == (T0 + timedelta(minutes=1)).timestamp()


def with_version(result: TargetResult, version: str) -> TargetResult:
    """The same result, its check reporting a deployed version."""
    return replace(result, checks=tuple(replace(c, version=version) for c in result.checks))


def test_issue_body_names_the_deployment_before_the_failure(settings: Settings) -> None:
    """A version change shortly before the first failure is named in the new issue's body."""
    # the GitHub channel renders the body when the event is decided; nothing is sent here
    github = GithubSection(repository="acme/web", token="ghp_" + "x" * 36)
    store = SqliteStore(settings.monitor.state_path)
    daemon = Daemon(
        settings,
        metrics=Metrics(),
        clock=ManualClock(),
        store=store,
        channels=[GithubChannel(github)],
    )
    clock = daemon._clock
    assert isinstance(clock, ManualClock)
    for minute, version, healthy in [(0, "1.4.2", True), (10, "1.4.3", True)] + [
        (16 + i, "1.4.3", False) for i in range(3)
    ]:
        clock.now = T0 + timedelta(minutes=minute)
        result = up(clock.now) if healthy else down(clock.now)
        daemon.record(with_version(result, version))
    with sqlite3.connect(settings.monitor.state_path) as db:
        [(payload,)] = db.execute("SELECT payload FROM outbox WHERE kind = 'open'").fetchall()
        deployments = db.execute("SELECT from_version, to_version FROM deployments").fetchall()
        [(followed,)] = db.execute("SELECT deployment FROM incidents").fetchall()
    assert deployments == [("1.4.2", "1.4.3")]
    assert json.loads(followed)["to_version"] == "1.4.3"  # what change failure rate blames
    assert (
        "version 1.4.2 -> 1.4.3 was first seen 6m before the first failure"
        in json.loads(payload)["body"]
    )
    store.close()


async def test_run_commits_per_turn_and_lands_the_last_turn_at_the_stop(tmp_path: Path) -> None:
    """Under run(), a recorded cycle waits for the end of its turn of the loop (where the
    cycles of that turn are committed together); a stop lands it before the store closes."""
    settings = load_settings(
        None,
        monitor={"state_path": str(tmp_path / "s.db"), "listen": f"127.0.0.1:{free_port()}"},
        github={"enabled": False},
        targets=[{"name": "production", "url": "http://127.0.0.1:9", "checks": [{"name": "h"}]}],
    )
    path = settings.monitor.state_path
    daemon = Daemon(settings, metrics=Metrics(), channels=[JournalChannel()])
    running = asyncio.create_task(daemon.run())
    for _ in range(200):  # the first probe (refused) lands
        await asyncio.sleep(0.05)
        if stored_results(path):
            break
    assert stored_results(path) == 1

    daemon.record(up(datetime.now(UTC)))
    assert daemon.writer.backlog == 1  # not before the turn ends
    daemon.request_stop()
    assert await asyncio.wait_for(running, timeout=30) == 0
    assert stored_results(path) == 2


async def test_the_reconcile_reads_a_store_that_has_the_turns_cycles(
    settings: Settings, tmp_path: Path
) -> None:
    """The start-up reconcile compares the tracker states with the store's incidents and
    steps: the states it is given come with their cycles committed, even mid-turn."""
    store = SqliteStore(settings.monitor.state_path)
    prober = Prober(settings.monitor)
    daemon = Daemon(
        settings, metrics=Metrics(), store=store, channels=[JournalChannel()], prober=prober
    )
    daemon.commit_per_turn()
    seen: list[int] = []

    def reconcile(states: Callable[[], object], unprobed: set[str]) -> None:
        if not unprobed:  # as Dispatch does: the states are read when it starts
            states()
            seen.append(stored_results(settings.monitor.state_path))

    daemon.dispatch.maybe_reconcile = reconcile  # type: ignore[method-assign]
    try:
        await daemon.probe("production")  # refused: a down result, recorded
    finally:
        await prober.aclose()
    assert seen == [1]
    store.close()
