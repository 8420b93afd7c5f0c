"""The KPIs in the daemon: the gauges, and the weekly report filed exactly once through
the outbox (two leaders, a lost reply, a restart)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.config import Settings
from monitor.daemon.kpis import KpiWatch
from monitor.figures.history import History
from monitor.incidents.channels.github import GithubChannel, GithubIssues
from monitor.incidents.channels.journal import JournalChannel
from monitor.incidents.outbox import OutboxWorker
from monitor.kpis.maths import KEYS
from monitor.kpis.report import REPORT_LABEL
from monitor.kpis.weeks import closed_weeks, iso_week
from monitor.metrics import Metrics
from monitor.store.sqlite import SqliteStore
from tests import fakegithub as fg
from tests import kpi_fixture as fx
from tests.builders import ManualClock
from tests.daemon_process import Daemons, clean_env, wait_for, write_config
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.outbox_kit import drain
from tests.ports import free_port
from tests.targets import TargetServer, respond
from tests.test_kpi_sync import write_settings

# Monday of ISO week 2026-W49, 09:00: week 48 (23-30 November) has closed
MONDAY = fx.END + timedelta(days=0, hours=9)
REPORT_KPIS = 'report_every = "7d"\ntest_workflows = ["ci.yml"]\nsecurity_workflows = ["security.yml"]\nrollback_workflows = ["rollback-production.yml"]\n'


def watch(store: SqliteStore, settings: Settings, clock: ManualClock) -> KpiWatch:
    """A KpiWatch on the store with its own metrics."""
    return KpiWatch(store, History(store, settings), settings, Metrics(), clock)


def github_worker(
    store: SqliteStore, settings: Settings, fake: FakeGitHub, clock: ManualClock
) -> OutboxWorker:
    """The GitHub channel's outbox worker, talking to the fake."""
    client = fake.client(timeout_s=2, per_page=100)
    channel = GithubChannel(settings.github, GithubIssues(settings.github, client=client))
    return OutboxWorker(store, channel, Metrics(), clock=clock)


def report_issues(fake: FakeGitHub) -> list[dict[str, object]]:
    """The issues labelled kpi-report."""
    return [
        issue
        for issue in fake.issues(DEFAULT_REPO)
        if REPORT_LABEL in [label["name"] for label in issue["labels"]]  # type: ignore[index,union-attr]
    ]


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's token, as the daemon reads it."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)


@pytest.mark.usefixtures("token")
def test_the_weekly_report_is_filed_once_by_two_leaders_despite_a_lost_reply(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Two leaders in turn queue week 48 once; GitHub creates the issue but the reply is
    lost; the retry finds it by its marker: one issue, with the table and the links."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    other = SqliteStore(tmp_path / "state.db")
    try:
        fx.load_store(store)
        watch(store, settings, clock).tick(acting=True)
        clock.advance(20 * 60)
        watch(other, settings, clock).tick(acting=True)  # a second leader, later
        [action] = store.pending_actions()
        assert (action.kind, action.target) == ("report", "kpi-report")
        fake_github.inject("POST", r"/repos/acme/web/issues", fg.cut_after_commit())
        drain(github_worker(store, settings, fake_github, clock), clock)
    finally:
        store.close()
        other.close()
    [issue] = report_issues(fake_github)
    assert issue["title"] == "KPI report 2026-W48"
    body = str(issue["body"])
    assert "<!-- monitor:kpi-report week=2026-W48 -->" in body
    # week 48: deployments 4 (rolled back) and 5; a weekly table, against week 47
    assert "| change failure rate | 50.0 % | < 5.0 % | NO | +0.00 pt |" in body
    assert "| deployment frequency | 2.0/week | >= 2.0/week | yes | +0.0/week |" in body
    assert "followed by [rollback run]" in body
    assert "- Incident I2: restored in 40m" in body


@pytest.mark.usefixtures("token")
def test_no_report_before_the_weeks_data_is_read(tmp_path: Path, fake_github: FakeGitHub) -> None:
    """GitHub down since before the week closed: the report waits rather than lie."""
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.status(502), count=None)
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    try:
        watch(store, settings, clock).tick(acting=True)
        assert store.pending_actions() == []
    finally:
        store.close()


def test_without_github_the_report_goes_to_the_journal(tmp_path: Path) -> None:
    """No token: the week's table is logged once, by the journal channel."""
    settings = write_settings(tmp_path, "https://api.github.com", REPORT_KPIS)
    assert not settings.github.active
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    try:
        watch(store, settings, clock).tick(acting=True)
        watch(store, settings, clock).tick(acting=True)
        worker = OutboxWorker(store, JournalChannel(), Metrics(), clock=clock)
        with capture_logs() as logs:
            drain(worker, clock)
    finally:
        store.close()
    [line] = [entry for entry in logs if entry["event"] == "KPI report"]
    assert line["title"] == "KPI report 2026-W48"
    assert "| staging health |" in line["text"]


def test_a_follower_exports_the_gauges_but_neither_syncs_nor_reports(
    tmp_path: Path, fake_github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every instance sets monitor_kpi_*; only the leader talks to GitHub or files."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    try:
        fx.load_store(store)
        follower = watch(store, settings, clock)
        follower.tick(acting=False)
        registry = follower._metrics.registry
    finally:
        store.close()
    assert fake_github.request_count() == 0
    value = registry.get_sample_value("monitor_kpi_value", {"kpi": "staging_health"})
    met = registry.get_sample_value("monitor_kpi_objective_met", {"kpi": "staging_health"})
    assert value is not None
    assert 0.99 < value < 1.0
    assert met == 0.0
    unknown = registry.get_sample_value("monitor_kpi_value", {"kpi": "lead_time_median_s"})
    assert unknown is not None
    assert math.isnan(unknown)
    for key in KEYS:
        assert registry.get_sample_value("monitor_kpi_objective", {"kpi": key}) is not None


@pytest.mark.e2e
def test_the_daemon_syncs_exports_and_reports_once_across_a_restart(
    tmp_path: Path, fake_github: FakeGitHub, target_server: TargetServer
) -> None:
    """`monitor run` against the fake: KPI gauges on /metrics, one report issue for the
    last closed week, still one after a restart, and the token in no log line."""
    fx.load_github(fake_github)
    target_server.route("/health", respond(200, b"ok"))
    week = iso_week(closed_weeks(datetime.now(UTC), 1)[0].start)
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "monitor.db",
        github_url=fake_github.url,
    )
    config.write_text(
        config.read_text("utf-8") + f'\n[kpis]\nsync_interval = "1s"\n{REPORT_KPIS}',
        encoding="utf-8",
    )
    env = clean_env(GITHUB_TOKEN=DEFAULT_TOKEN)
    with Daemons.session(tmp_path) as daemons:
        first = daemons.start(config, env)
        first.wait_healthy()

        def exported() -> float | None:
            value = first.value("monitor_kpi_value", kpi="deployment_frequency_per_week")
            return value if value is not None and not math.isnan(value) else None

        per_week = wait_for(exported, 20, "the KPI gauges", daemons.logs)
        assert per_week == pytest.approx(5 / (30 / 7))  # 5 successes in the last 30 days
        wait_for(lambda: report_issues(fake_github), 20, "the report issue", daemons.logs)
        first.terminate()
        assert first.wait(10) == 0
        second = daemons.start(config, env)
        second.wait_healthy()
        synced = fake_github.request_count("GET", "/repos/acme/web/deployments")

        def synced_twice() -> bool:
            return fake_github.request_count("GET", "/repos/acme/web/deployments") > synced + 1

        wait_for(synced_twice, 20, "two more syncs", daemons.logs)
        second.terminate()
        assert second.wait(10) == 0
        logs = daemons.logs()
    [issue] = report_issues(fake_github)
    assert issue["title"] == f"KPI report {week}"
    assert DEFAULT_TOKEN not in logs


@pytest.mark.usefixtures("token")
def test_weeks_missed_while_the_monitor_was_down_are_filed_in_order(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Week 46 was the last filed; at week 49 the leader files 47, then 48 (a fresh
    install files only the latest)."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    try:
        store.enqueue_once("kpi-report:2026-W46", [], MONDAY - timedelta(days=14))
        watch(store, settings, clock).tick(acting=True)
        weeks = [a.payload["week"] for a in store.pending_actions()]
    finally:
        store.close()
    assert weeks == ["2026-W47", "2026-W48"]


@pytest.mark.usefixtures("token")
def test_a_failing_sync_still_leaves_the_gauges_exported(
    tmp_path: Path, fake_github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one step is logged; the gauges (and the data's age the
    staleness alert reads) are still set, and the next tick runs."""
    from monitor.kpis.sync import KpiSync

    def broken(self: KpiSync, now: object = None) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(KpiSync, "sync", broken)
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    clock = ManualClock(MONDAY)
    store = SqliteStore(tmp_path / "state.db")
    try:
        fx.load_store(store)
        kpis = watch(store, settings, clock)
        with capture_logs() as logs:
            kpis.tick(acting=True)
            kpis.tick(acting=True)
        registry = kpis._metrics.registry
    finally:
        store.close()
    assert [e["step"] for e in logs if e["event"] == "KPI step failed"] == ["sync", "sync"]
    age = registry.get_sample_value("monitor_kpi_data_age_seconds")
    assert age is not None
    assert math.isnan(age)  # never synced: no age, and the table says so
    health = registry.get_sample_value("monitor_kpi_value", {"kpi": "staging_health"})
    assert health is not None
    assert 0.99 < health < 1.0


@pytest.mark.usefixtures("token")
def test_a_sync_that_never_worked_reads_as_infinitely_old(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """A refused token from day one: monitor_kpi_data_age_seconds is +Inf, so
    KpiDataStale fires, instead of NaN, which no alert sees."""
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.status(401), count=None)
    settings = write_settings(tmp_path, fake_github.url, REPORT_KPIS)
    store = SqliteStore(tmp_path / "state.db")
    try:
        kpis = watch(store, settings, ManualClock(MONDAY))
        kpis.tick(acting=True)
        age = kpis._metrics.registry.get_sample_value("monitor_kpi_data_age_seconds")
    finally:
        store.close()
    assert age == math.inf
