"""The KPI sync against the fake GitHub: every figure of the fixture, the corner cases,
conditional requests, staleness and the request budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from monitor.config import Settings, load_settings
from monitor.figures.history import History
from monitor.figures.slo import Span
from monitor.kpis.records import CHANGES, DeploymentChanges, parse_time
from monitor.kpis.sync import KpiSync
from monitor.kpis.table import KpiTable, kpi_table
from monitor.store.sqlite import SqliteStore
from tests import fakegithub as fg
from tests import kpi_fixture as fx
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

SYNC_AT = fx.END + timedelta(hours=1)


def write_settings(tmp_path: Path, api_url: str, kpis: str = fx.WORKFLOWS) -> Settings:
    """Production and staging, hourly cadence, the fake as GitHub."""
    path = tmp_path / "config.toml"
    path.write_text(fx.config_text(tmp_path / "state.db", api_url, kpis), encoding="utf-8")
    return load_settings(path)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's token, as the daemon reads it."""
    monkeypatch.setenv("GITHUB_TOKEN", DEFAULT_TOKEN)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real SQLite store in tmp_path."""
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


def sync(store: SqliteStore, settings: Settings, now: datetime = SYNC_AT) -> KpiSync:
    """One sync pass at ``now``."""
    kpis = KpiSync(store, settings, lambda: now)
    state = kpis.sync(now)
    assert state.error is None, state.error
    return kpis


def table(store: SqliteStore, settings: Settings, now: datetime = SYNC_AT) -> KpiTable:
    """The fixture window's table."""
    return kpi_table(History(store, settings), settings, Span(fx.START, fx.END), now)


@pytest.mark.usefixtures("token")
def test_every_figure_from_github_matches_the_hand_computed_fixture(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Synced from the fake and the store, each KPI is the fixture docstring's figure."""
    ids = fx.load_github(fake_github)
    fx.load_store(store)
    settings = write_settings(tmp_path, fake_github.url)
    sync(store, settings)
    got = table(store, settings)
    for key, (value, met, samples) in fx.EXPECTED.items():
        kpi = got.kpi(key)
        assert kpi.value == pytest.approx(value), key
        assert (kpi.met, kpi.samples) == (met, samples), key
    cfr = got.kpi("change_failure_rate").detail["failures"]
    assert {f["id"]: f["cause"] for f in cfr} == {ids[2]: "incident", ids[4]: "rollback"}
    assert got.kpi("lead_time_median_s").detail["p90_s"] == pytest.approx(10080.0)
    assert got.kpi("test_pass_rate").detail["excluded"] == {"cancelled": 1, "skipped": 1}
    assert got.missed
    assert {k.key for k in got.missed} == {
        "change_failure_rate",
        "mttr_s",
        "test_pass_rate",
        "staging_health",
    }


@pytest.mark.usefixtures("token")
def test_a_second_sync_with_nothing_new_costs_no_rate_limit(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Unchanged first pages answer 304: the whole pass spends nothing of the limit."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url)
    kpis = sync(store, settings)
    before = fake_github.rate_remaining
    requests_before = len(fake_github.requests)
    state = kpis.sync(SYNC_AT + timedelta(minutes=15))
    made = len(fake_github.requests) - requests_before
    assert state.error is None
    # the deployments, and each configured workflow's runs
    assert made == state.requests == state.not_modified == 4
    assert fake_github.rate_remaining == before


@pytest.mark.usefixtures("token")
def test_a_new_deployment_is_read_incrementally(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Only the new deployment, its statuses, its compare and its status are read."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url)
    kpis = sync(store, settings)
    later = SYNC_AT + timedelta(hours=2)
    sha = fake_github.add_commit(DEFAULT_REPO, author_date=later - timedelta(hours=1))
    new = fake_github.add_deployment(DEFAULT_REPO, sha=sha, created_at=later)
    fake_github.add_deployment_status(DEFAULT_REPO, new, "success", created_at=later)
    start = len(fake_github.requests)
    state = kpis.sync(later + timedelta(minutes=5))
    paths = [r.path for r in fake_github.requests[start:]]
    assert state.error is None
    assert paths == [
        "/repos/acme/web/deployments",
        f"/repos/acme/web/deployments/{new}/statuses",
        f"/repos/acme/web/compare/{fx.DEPLOYS[-1].sha}...{sha}",
        f"/repos/acme/web/commits/{sha}/statuses",
        "/repos/acme/web/actions/workflows/ci.yml/runs",
        "/repos/acme/web/actions/workflows/rollback-production.yml/runs",
        "/repos/acme/web/actions/workflows/security.yml/runs",
    ]
    changes = store.github_record(CHANGES, str(new))
    assert changes is not None
    assert DeploymentChanges.from_record(changes).basis == "compare"


@pytest.mark.usefixtures("token")
def test_the_first_deployment_measures_from_the_lookbacks_first_commit(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """No earlier deployment: every commit since the lookback's start, and it says so."""
    old = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(1, 9) - timedelta(days=120))
    before = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(10, 9))  # lookback, not window
    first = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(20, 9))
    head = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(20, 11))
    deployment = fake_github.add_deployment(DEFAULT_REPO, sha=head, created_at=fx.t(20, 12))
    fake_github.add_deployment_status(DEFAULT_REPO, deployment, "success", created_at=fx.t(20, 12))
    settings = write_settings(tmp_path, fake_github.url)
    sync(store, settings)
    record = store.github_record(CHANGES, str(deployment))
    assert record is not None
    changes = DeploymentChanges.from_record(record)
    assert changes.basis == "lookback"
    assert {c.sha for c in changes.commits} == {before, first, head}
    assert old not in changes.note
    assert "no earlier successful deployment" in changes.note
    lead = table(store, settings).kpi("lead_time_median_s")
    assert lead.value == pytest.approx(2 * 3600)  # median of 3 h and 1 h: the window's commits
    assert lead.samples == 2
    assert lead.detail["basis"] == {"lookback": 1}
    assert "no earlier successful deployment" in lead.detail["notes"][0]["note"]


@pytest.mark.usefixtures("token")
def test_a_force_push_that_breaks_compare_falls_back_to_the_deployed_commit(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Compare 404s (the old base is gone): the deployed commit alone, and a note why."""
    base = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(17, 9))
    one = fake_github.add_deployment(DEFAULT_REPO, sha=base, created_at=fx.t(17, 10))
    fake_github.add_deployment_status(DEFAULT_REPO, one, "success", created_at=fx.t(17, 10))
    fake_github.forget_commit(DEFAULT_REPO, base)  # the branch was rewritten and collected
    root = fake_github.add_commit(DEFAULT_REPO, parents=[], author_date=fx.t(18, 8))
    head = fake_github.add_commit(DEFAULT_REPO, parents=[root], author_date=fx.t(18, 9))
    two = fake_github.add_deployment(DEFAULT_REPO, sha=head, created_at=fx.t(18, 10))
    fake_github.add_deployment_status(DEFAULT_REPO, two, "success", created_at=fx.t(18, 10))
    settings = write_settings(tmp_path, fake_github.url)
    sync(store, settings)
    record = store.github_record(CHANGES, str(two))
    assert record is not None
    changes = DeploymentChanges.from_record(record)
    assert (changes.basis, [c.sha for c in changes.commits]) == ("head", [head])
    assert "force-push" in changes.note


@pytest.mark.usefixtures("token")
def test_more_than_250_commits_between_deployments_are_all_counted(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Compare is paginated: 300 commits, not the 250 an unpaginated compare stops at."""
    base = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(16, 0))
    one = fake_github.add_deployment(DEFAULT_REPO, sha=base, created_at=fx.t(16, 1))
    fake_github.add_deployment_status(DEFAULT_REPO, one, "success", created_at=fx.t(16, 1))
    head = base
    for minute in range(300):
        head = fake_github.add_commit(
            DEFAULT_REPO, author_date=fx.t(17, 0) + timedelta(minutes=minute)
        )
    two = fake_github.add_deployment(DEFAULT_REPO, sha=head, created_at=fx.t(17, 6))
    fake_github.add_deployment_status(DEFAULT_REPO, two, "success", created_at=fx.t(17, 6))
    settings = write_settings(tmp_path, fake_github.url)
    sync(store, settings)
    record = store.github_record(CHANGES, str(two))
    assert record is not None
    assert len(DeploymentChanges.from_record(record).commits) == 300
    compares = fake_github.request_count("GET", "/repos/acme/web/compare/")
    assert compares == 3  # 100 a page


@pytest.mark.usefixtures("token")
def test_a_rerun_counts_its_latest_attempt_only(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A failed run re-run green is one passing run, read again even off the first page."""
    settings = write_settings(tmp_path, fake_github.url)
    old = fake_github.add_workflow_run(
        DEFAULT_REPO, head_sha="0" * 40, conclusion="failure", created_at=fx.t(17, 9)
    )
    for hour in range(120):  # push the failed run off the first page
        fake_github.add_workflow_run(
            DEFAULT_REPO, head_sha="0" * 40, created_at=fx.t(18, 0) + timedelta(hours=hour)
        )
    kpis = sync(store, settings)
    assert table(store, settings).kpi("test_pass_rate").detail["failed"] == 1
    fake_github.rerun_workflow_run(DEFAULT_REPO, old, conclusion="success", at=fx.t(29, 9))
    kpis.sync(SYNC_AT + timedelta(minutes=15))
    assert table(store, settings).kpi("test_pass_rate").detail["failed"] == 1  # not yet seen
    kpis.sync(SYNC_AT + timedelta(days=1, minutes=1))  # the daily deep read finds it
    rate = table(store, settings).kpi("test_pass_rate")
    assert (rate.value, rate.samples) == (1.0, 121)


@pytest.mark.usefixtures("token")
def test_github_down_keeps_the_figures_and_says_how_old_they_are(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A 502 mid-sync stores nothing but the error; the table reports its data's age."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url)
    kpis = sync(store, settings)
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.status(502), count=None)
    later = SYNC_AT + timedelta(hours=3)
    state = kpis.sync(later)
    assert state.error is not None
    assert "502" in state.error
    assert state.succeeded_at == SYNC_AT
    got = table(store, settings, now=later)
    assert got.data_age_s == 3 * 3600
    assert got.kpi("deployment_frequency_per_week").value == pytest.approx(2.0)
    assert got.as_dict()["github"]["error"] == state.error


@pytest.mark.usefixtures("token")
def test_a_rate_limit_holds_the_next_sync_until_its_reset(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A 403 with no requests left: the sync waits for GitHub's reset, not its interval."""
    settings = write_settings(tmp_path, fake_github.url)
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.primary_rate_limit(reset_in=3600))
    kpis = KpiSync(store, settings, lambda: SYNC_AT)
    state = kpis.sync(SYNC_AT)
    assert state.error is not None
    assert state.retry_at is not None
    assert not kpis.due(SYNC_AT + timedelta(minutes=20))


@pytest.mark.usefixtures("token")
def test_a_malformed_reply_is_a_classified_failure_not_a_crash(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Broken JSON or a list of the wrong shape ends the pass with an error recorded."""
    settings = write_settings(tmp_path, fake_github.url)
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.malformed_json())
    state = KpiSync(store, settings, lambda: SYNC_AT).sync(SYNC_AT)
    assert state.error is not None
    assert "malformed" in state.error
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.status(200, {"not": "a list"}))
    state = KpiSync(store, settings, lambda: SYNC_AT).sync(SYNC_AT)
    assert state.error is not None
    assert "dict" in state.error
    year_one = [{"id": 1, "sha": "a" * 40, "created_at": "0001-01-01T00:00:00+01:00"}]
    fake_github.inject("GET", r"/repos/acme/web/deployments", fg.status(200, year_one))
    state = KpiSync(store, settings, lambda: SYNC_AT).sync(SYNC_AT)
    assert state.error is not None
    assert "unreadable" in state.error


@pytest.mark.usefixtures("token")
def test_steady_state_stays_under_60_requests_an_hour(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A day of 10 deployments (with runs and statuses), synced every 15 minutes."""
    settings = write_settings(tmp_path, fake_github.url)
    day = fx.END + timedelta(days=1)
    kpis = sync(store, settings, day)  # the first, full read is not steady state
    spent = fx.steady_day(fake_github, kpis.sync, day)
    assert (spent.syncs, spent.deployments) == (96, 10)
    assert spent.requests / 24 < 60, spent
    assert spent.not_modified > spent.requests / 2  # most answers cost no rate limit
    got = kpi_table(
        History(store, settings),
        settings,
        Span(day, day + timedelta(days=1)),
        day + timedelta(days=1),
    )
    assert got.kpi("deployment_frequency_per_week").samples == 10
    assert got.kpi("performance_score").value == 91


@pytest.mark.usefixtures("token")
def test_a_renamed_workflow_still_counts_by_its_file(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Runs before and after `name: CI` became `name: Tests` all count for ci.yml."""
    settings = write_settings(tmp_path, fake_github.url)
    fake_github.add_workflow(DEFAULT_REPO, ".github/workflows/ci.yml", "CI")
    fake_github.add_workflow_run(DEFAULT_REPO, head_sha="0" * 40, created_at=fx.t(17, 9))
    fake_github.rename_workflow(DEFAULT_REPO, ".github/workflows/ci.yml", "Tests")
    fake_github.add_workflow_run(
        DEFAULT_REPO, head_sha="0" * 40, conclusion="failure", created_at=fx.t(18, 9)
    )
    sync(store, settings)
    rate = table(store, settings).kpi("test_pass_rate")
    assert (rate.value, rate.samples) == (0.5, 2)
    names = {run["name"] for run in fake_github_runs(fake_github)}
    assert names == {"CI", "Tests"}


def fake_github_runs(fake: FakeGitHub) -> list[dict[str, object]]:
    """The runs as GitHub lists them (to show the display names differ)."""
    client = fake.client()
    status, _headers, body = client.requester.requestJson(
        "GET", "/repos/acme/web/actions/runs", parameters={"per_page": 100}
    )
    assert status == 200
    return list(json.loads(body)["workflow_runs"])


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-16T09:10:00+01:00", fx.t(16, 8, 10)),
        ("2026-11-27T07:10:00-05:00", fx.t(27, 12, 10)),
        ("2026-11-16T08:10:00Z", fx.t(16, 8, 10)),
        ("2026-11-16T13:40:00+05:30", fx.t(16, 8, 10)),
    ],
    ids=["plus-one", "minus-five", "zulu", "half-hour-offset"],
)
def test_commit_dates_in_any_offset_are_the_same_instant(text: str, utc: datetime) -> None:
    """A committer's offset moves the clock face, not the instant lead time starts at."""
    assert parse_time(text) == utc
    assert parse_time(text).utcoffset() == timedelta(0)


@pytest.mark.usefixtures("token")
def test_a_deployment_approved_days_later_is_still_counted(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Waiting for reviewers past the day of polling: its new status moves the list's
    updated_at, and that alone sends the sync back to its statuses."""
    settings = write_settings(tmp_path, fake_github.url)
    sha = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(20, 9))
    waiting = fake_github.add_deployment(DEFAULT_REPO, sha=sha, created_at=fx.t(20, 10))
    fake_github.add_deployment_status(DEFAULT_REPO, waiting, "queued", created_at=fx.t(20, 10))
    kpis = sync(store, settings, fx.t(20, 11))
    kpis.sync(fx.t(22, 11))  # two days on: no longer polled
    fake_github.add_deployment_status(DEFAULT_REPO, waiting, "success", created_at=fx.t(22, 12))
    assert kpis.sync(fx.t(22, 13)).error is None
    got = table(store, settings, fx.t(22, 13))
    assert [d["id"] for d in got.kpi("deployment_frequency_per_week").detail["deployments"]] == [
        waiting
    ]


@pytest.mark.usefixtures("token")
def test_a_compare_github_cannot_render_skips_one_deployment_not_the_sync(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A compare answering 502 every time: the rest is stored, the sync says what it
    skipped and retries it; after a day the deployment is measured by no commit."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url)
    fake_github.inject("GET", r"/repos/acme/web/compare/.*", fg.status(502), count=None)
    kpis = KpiSync(store, settings, lambda: SYNC_AT)
    state = kpis.sync(fx.t(27, 17))
    assert state.error is None
    assert state.warning is not None
    assert "commits of deployment" in state.warning
    got = table(store, settings, fx.t(27, 17))
    assert got.kpi("deployment_frequency_per_week").samples == 4
    assert got.kpi("lead_time_median_s").value is None  # nothing measured yet
    assert got.as_dict()["github"]["skipped"] == state.warning
    later = kpis.sync(SYNC_AT + timedelta(days=2))
    assert later.error is None
    lead = table(store, settings, SYNC_AT + timedelta(days=2)).kpi("lead_time_median_s")
    assert lead.detail["deployments_measured"] == 4
    assert any("failed to list its commits" in n["note"] for n in lead.detail["notes"])


@pytest.mark.usefixtures("token")
def test_stale_github_data_measures_frequency_over_what_it_covers(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A sync ten days old: a 7-day window past it has no frequency (not "0 a week,
    missed"); one that half overlaps counts per week of what was read."""
    fx.load_github(fake_github)
    settings = write_settings(tmp_path, fake_github.url)
    sync(store, settings)  # at SYNC_AT, an hour after the fixture's end
    history = History(store, settings)
    now = SYNC_AT + timedelta(days=10)
    beyond = kpi_table(history, settings, Span(now - timedelta(days=7), now), now)
    frequency = beyond.kpi("deployment_frequency_per_week")
    assert (frequency.value, frequency.met) == (None, None)
    straddling = Span(fx.END - timedelta(days=7), fx.END + timedelta(days=7))
    covered = kpi_table(history, settings, straddling, now).kpi("deployment_frequency_per_week")
    assert covered.samples == 2  # deployments 4 and 5
    assert covered.value == pytest.approx(2 / ((7 * 24 + 1) / (7 * 24)))  # per week read
    assert covered.detail["covered"]["end"] == SYNC_AT.isoformat()


@pytest.mark.usefixtures("token")
def test_a_stopping_monitor_sends_no_further_request(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """Shutdown sets the event: the pass ends at its next request, classified."""
    import threading

    settings = write_settings(tmp_path, fake_github.url)
    stopping = threading.Event()
    stopping.set()
    state = KpiSync(store, settings, lambda: SYNC_AT, stopping=stopping).sync(SYNC_AT)
    assert state.error == "the monitor is stopping"
    assert fake_github.request_count() == 0


@pytest.mark.usefixtures("token")
def test_a_workflow_github_does_not_know_is_named_and_asked_about_daily(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """A configured file with no workflow behind it: the sync succeeds, says so, and
    does not spend a request on it every pass."""
    settings = write_settings(tmp_path, fake_github.url, 'test_workflows = ["nope.yml"]')
    kpis = sync(store, settings)
    state = kpis.sync(SYNC_AT + timedelta(minutes=15))
    assert state.error is None
    assert state.warning == "no workflow nope.yml in acme/web"
    asked = fake_github.request_count("GET", "/repos/acme/web/actions/workflows/nope.yml/runs")
    assert asked == 1  # the first pass only; the next deep read asks again
    kpis.sync(SYNC_AT + timedelta(days=1, minutes=1))
    assert fake_github.request_count("GET", "/repos/acme/web/actions/workflows/nope.yml") == 2


@pytest.mark.usefixtures("token")
def test_a_status_read_that_failed_once_is_read_again_not_answered_304(
    tmp_path: Path, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    """The approval lands on a deployment past its day of polling, and reading its
    statuses fails once: the list's new ETag is not kept, so the next pass sees the
    change again and counts the deployment."""
    settings = write_settings(tmp_path, fake_github.url, "")  # no workflows to read
    sha = fake_github.add_commit(DEFAULT_REPO, author_date=fx.t(20, 9))
    waiting = fake_github.add_deployment(DEFAULT_REPO, sha=sha, created_at=fx.t(20, 10))
    fake_github.add_deployment_status(DEFAULT_REPO, waiting, "queued", created_at=fx.t(20, 10))
    kpis = sync(store, settings, fx.t(20, 11))
    fake_github.add_deployment_status(DEFAULT_REPO, waiting, "success", created_at=fx.t(22, 12))
    fake_github.inject("GET", rf"/repos/acme/web/deployments/{waiting}/statuses", fg.status(502))
    first = kpis.sync(fx.t(22, 13))
    assert first.warning is not None
    assert f"statuses of deployment {waiting}" in first.warning
    assert kpis.sync(fx.t(22, 14)).warning is None
    got = table(store, settings, fx.t(22, 14))
    assert got.kpi("deployment_frequency_per_week").samples == 1
