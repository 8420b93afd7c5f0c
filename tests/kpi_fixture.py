"""Two weeks of a team's delivery, worked out by hand: the KPI tests' common fixture.

The window is 2026-11-16 00:00 UTC to 2026-11-30 00:00 UTC (14 days, 2 weeks).

Deployments to production (id: created, first success, commits introduced):
- 10 (2026-11-10, before the window): the previous deployment, sha ``d0``.
- 1: success 11-16 10:10; commits at 08:10 (2 h) and 09:10 (1 h).
- 2: success 11-18 14:05; a commit at 13:35 (30 m). Incident I1 starts 14:30 (25 m
  later, inside the 1 h failure window): a failed change, by incident.
- 3: created 11-20 09:00, ended in ``failure``: not a successful deployment.
- 4: success 11-23 11:20; commits at 10:20 (1 h), 10:40 (40 m), 10:55 (25 m). The
  rollback workflow runs at 11:50 (30 m later): a failed change, by rollback.
- 5: success 11-27 16:10; a commit at 12:10 (4 h).

deployment_frequency_per_week = 4 successes / 2 weeks = 2.0 (objective >= 2: met).
lead_time_median_s: the 7 lead times sorted are 1500, 1800, 2400, 3600, 3600, 7200,
14400 s; the median is the 4th, 3600 s (< 7200: met). p90: rank 0.9 x 6 = 5.4, so
7200 + 0.4 x (14400 - 7200) = 10080 s.
change_failure_rate = 2 / 4 = 0.5 (< 0.05: missed), one by incident, one by rollback.
mttr_s: I1 14:30-14:50 (1200 s) and I2 11-25 03:00-03:40 (2400 s, after no deployment
within the hour): mean 1800 s, not below 1800 (missed, on the boundary); median 1800.
test_pass_rate (ci.yml, latest attempts): 7 success (one a re-run whose first attempt
failed), 1 failure, 1 cancelled, 1 skipped, 1 still running; counted 8, passed 7: 0.875
(missed), with 1 cancelled and 1 skipped left out. A ci.yml run before the window and a
docs.yml run are not counted.
security_scan_pass_rate (security.yml): 4 of 4 = 1.0 (met).
performance_score: deployments 1, 4 and 5 carry lighthouse statuses 80, 88 and 90;
deployment 2 has none: (80 + 88 + 90) / 3 = 86.0 (>= 85: met), lowest 80.
staging_health: staging probed hourly through the window (each result holds an hour),
two results down: 7200 s down of 1209600 known, 1202400 / 1209600 = 0.994047... (< 0.995:
missed), coverage 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.incidents.tracker import Incident, TrackerState
from monitor.kpis.records import SyncState
from monitor.probing.results import Outcome
from monitor.store.base import PendingCycle, Store
from tests.builders import result
from tests.fakegithub import DEFAULT_REPO, FakeGitHub

START = datetime(2026, 11, 16, tzinfo=UTC)
END = datetime(2026, 11, 30, tzinfo=UTC)


def t(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in November 2026, UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Deploy:
    """One deployment of the fixture."""

    id: int
    sha: str
    created_at: datetime
    final_state: str
    succeeded_at: datetime | None
    commits: tuple[datetime, ...]  # committer dates of the commits it introduced
    score: int | None = None


DEPLOYS = (
    Deploy(10, "d0" * 20, t(10, 9), "success", t(10, 9, 5), (t(10, 8),)),
    Deploy(1, "d1" * 20, t(16, 10), "success", t(16, 10, 10), (t(16, 8, 10), t(16, 9, 10)), 80),
    Deploy(2, "d2" * 20, t(18, 14), "success", t(18, 14, 5), (t(18, 13, 35),)),
    Deploy(3, "d3" * 20, t(20, 9), "failure", None, ()),
    Deploy(
        4,
        "d4" * 20,
        t(23, 11),
        "success",
        t(23, 11, 20),
        (t(23, 10, 20), t(23, 10, 40), t(23, 10, 55)),
        88,
    ),
    Deploy(5, "d5" * 20, t(27, 16), "success", t(27, 16, 10), (t(27, 12, 10),), 90),
)

# (workflow file, conclusion or None while running, created_at, attempts)
RUNS = (
    *(("ci.yml", "success", t(16 + i, 9), 1) for i in range(6)),
    ("ci.yml", "success", t(23, 9), 2),  # failed at first, passed when re-run
    ("ci.yml", "failure", t(24, 9), 1),
    ("ci.yml", "cancelled", t(25, 9), 1),
    ("ci.yml", "skipped", t(26, 9), 1),
    ("ci.yml", None, t(29, 23), 1),  # still running
    ("ci.yml", "failure", t(12, 9), 1),  # before the window
    ("docs.yml", "failure", t(20, 9), 1),  # not a configured workflow
    *(("security.yml", "success", t(17 + 3 * i, 6), 1) for i in range(4)),
    ("rollback-production.yml", "success", t(23, 11, 50), 1),
)

# (id, started_at, resolved_at) on production
INCIDENTS = (
    ("I1", t(18, 14, 30), t(18, 14, 50)),
    ("I2", t(25, 3), t(25, 3, 40)),
)

# staging: an hourly result through the window, these two down
STAGING_DOWN = (t(19, 4), t(26, 4))

EXPECTED = {
    "deployment_frequency_per_week": (2.0, True, 4),
    "lead_time_median_s": (3600.0, True, 7),
    "change_failure_rate": (0.5, False, 4),
    "mttr_s": (1800.0, False, 2),
    "test_pass_rate": (0.875, False, 8),
    "security_scan_pass_rate": (1.0, True, 4),
    "performance_score": (86.0, True, 3),
    "staging_health": (1202400 / 1209600, False, 336),
}
"""KPI key: (value, met, samples), as the module docstring works them out."""


def hourly(start: datetime, end: datetime) -> list[datetime]:
    """Every whole hour in [start, end)."""
    count = int((end - start).total_seconds() // 3600)
    return [start + timedelta(hours=h) for h in range(count)]


WORKFLOWS = """
test_workflows = ["ci.yml"]
security_workflows = ["security.yml"]
rollback_workflows = ["rollback-production.yml"]
"""


def config_text(
    state_path: Path, api_url: str | None, kpis: str = WORKFLOWS, objectives: str = ""
) -> str:
    """A config with staging and production at an hourly cadence (so hourly results
    cover the time between them) and GitHub on ``api_url`` when given."""
    github = (
        f'[github]\nrepository = "{DEFAULT_REPO}"\napi_url = "{api_url}"\ntimeout = 5\n'
        if api_url
        else ""
    )
    targets = "".join(
        f'\n[[targets]]\nname = "{name}"\nurl = "http://127.0.0.1:9/"\n'
        '  [[targets.checks]]\n  name = "health"\n  path = "/health"\n'
        for name in ("staging", "production")
    )
    return (
        f'[monitor]\ninterval = "1h"\nincident_interval = "1m"\nstate_path = "{state_path}"\n\n'
        f"{github}\n[kpis]\n{kpis}\n[kpis.objectives]\n{objectives}\n{targets}"
    )


# commit dates GitHub reports with the committer's own offset: the same instants
OFFSET_DATES = {
    t(16, 8, 10): "2026-11-16T09:10:00+01:00",
    t(27, 12, 10): "2026-11-27T07:10:00-05:00",
}


def load_github(fake: FakeGitHub, repo: str = DEFAULT_REPO) -> dict[int, int]:
    """The fixture's commits, deployments, statuses and runs, into the fake GitHub.

    Each deployment's sha is the last commit it introduced; ci.yml is renamed half-way
    (its runs still count: workflows are known by file); one run is re-run. Returns
    the fake's deployment id of each fixture deployment.
    """
    ids = {}
    for d in sorted(DEPLOYS, key=lambda d: d.created_at):
        for index, at in enumerate(d.commits):
            last = index == len(d.commits) - 1
            fake.add_commit(
                repo,
                author_date=OFFSET_DATES.get(at, at),
                committer_date=OFFSET_DATES.get(at, at),
                sha=d.sha if last else None,
                message=f"change for deployment {d.id}",
            )
        ids[d.id] = fake.add_deployment(
            repo, sha=d.sha, environment="production", created_at=d.created_at
        )
    for d in DEPLOYS:
        deployment_id = ids[d.id]
        fake.add_deployment_status(
            repo, deployment_id, "in_progress", created_at=d.created_at + timedelta(minutes=1)
        )
        if d.succeeded_at is not None:
            fake.add_deployment_status(
                repo,
                deployment_id,
                "success",
                created_at=d.succeeded_at,
                log_url=f"https://github.com/{repo}/actions/runs/{9000 + d.id}",
            )
        else:
            fake.add_deployment_status(
                repo, deployment_id, d.final_state, created_at=d.created_at + timedelta(minutes=9)
            )
        if d.score is not None and d.succeeded_at is not None:
            fake.add_commit_status(
                repo,
                sha=d.sha,
                state="success",
                context="ci/tests",
                description="all passed",
                created_at=d.succeeded_at - timedelta(hours=2),
            )
            fake.add_commit_status(
                repo,
                sha=d.sha,
                state="success" if d.score >= 85 else "failure",
                context="lighthouse",
                description=f"performance {d.score}",
                created_at=d.succeeded_at - timedelta(hours=1),
            )
    fake.add_workflow(repo, ".github/workflows/ci.yml", "CI")
    for workflow, conclusion, created, attempts in sorted(RUNS, key=lambda r: r[2]):
        if workflow == "ci.yml" and created >= t(22, 0):
            fake.rename_workflow(repo, ".github/workflows/ci.yml", "Tests")
        run = fake.add_workflow_run(
            repo,
            path=f".github/workflows/{workflow}",
            head_sha="0" * 40,
            conclusion="failure" if attempts > 1 else conclusion,
            status="completed" if conclusion else "in_progress",
            created_at=created,
            updated_at=created + timedelta(minutes=5),
        )
        if attempts > 1:
            fake.rerun_workflow_run(
                repo, run, conclusion=conclusion, at=created + timedelta(hours=1)
            )
    return ids


def load_store(store: Store) -> None:
    """Production's incidents and staging's hourly results (two down), with a session
    that covers the window so none of it is the monitor's own downtime."""
    session = store.start_session(START - timedelta(hours=1))
    for at in hourly(START, END):
        outcome = Outcome.DOWN if at in STAGING_DOWN else Outcome.UP
        staging = TrackerState(target="staging")
        store.commit_cycle(
            PendingCycle(result(outcome, at, target="staging"), 3600.0, staging, None, ())
        )
    store.heartbeat(session, END + timedelta(minutes=1))
    for incident_id, started, resolved in INCIDENTS:
        incident = Incident(incident_id, "production", started, resolved)
        state = TrackerState(target="production")
        store.commit_cycle(PendingCycle(result(Outcome.UP, resolved), 3600.0, state, incident, ()))


@dataclass
class SteadyDay:
    """What :func:`steady_day` made and spent."""

    requests: int = 0  # every request the syncs sent
    not_modified: int = 0  # of those, answered 304 (no rate limit spent)
    syncs: int = 0
    deployments: int = 0


def steady_day(
    fake: FakeGitHub,
    sync: Callable[[datetime], SyncState],
    day: datetime,
    *,
    deployments: int = 10,
    sync_every: timedelta = timedelta(minutes=15),
    repo: str = DEFAULT_REPO,
) -> SteadyDay:
    """A day of a team's delivery on the fake, synced every ``sync_every``.

    Each deployment: a commit, a ci.yml and a security.yml run on it, a lighthouse
    status, the deployment ``in_progress`` at once and ``success`` 20 minutes later.
    """
    spent = SteadyDay()
    start = len(fake.requests)
    deploy_every = timedelta(hours=24) / deployments
    next_deploy = day + timedelta(minutes=7)
    pending: list[tuple[int, datetime]] = []
    now = day
    while now < day + timedelta(hours=24):
        now += sync_every
        while next_deploy <= now and spent.deployments < deployments:
            sha = fake.add_commit(repo, author_date=next_deploy)
            for path in ("ci.yml", "security.yml"):
                fake.add_workflow_run(
                    repo, path=f".github/workflows/{path}", head_sha=sha, created_at=next_deploy
                )
            fake.add_commit_status(
                repo,
                sha=sha,
                state="success",
                context="lighthouse",
                description="performance 91",
                created_at=next_deploy,
            )
            deployment = fake.add_deployment(repo, sha=sha, created_at=next_deploy)
            fake.add_deployment_status(repo, deployment, "in_progress", created_at=next_deploy)
            pending.append((deployment, next_deploy + timedelta(minutes=20)))
            spent.deployments += 1
            next_deploy += deploy_every
        for deployment, done_at in [p for p in pending if p[1] <= now]:
            fake.add_deployment_status(repo, deployment, "success", created_at=done_at)
            pending.remove((deployment, done_at))
        state = sync(now)
        if state.error:
            raise AssertionError(f"sync failed at {now}: {state.error}")
        spent.syncs += 1
        spent.not_modified += state.not_modified
    spent.requests = len(fake.requests) - start
    return spent
