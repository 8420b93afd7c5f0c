"""The KPI maths against the hand-computed fixture (tests/kpi_fixture.py), and its edges."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitor.figures.slo import Deployment, IncidentRecord, Span, TimeAccount
from monitor.kpis import maths
from monitor.kpis.maths import Kpi
from monitor.kpis.records import (
    Commit,
    DeploymentChanges,
    GhDeployment,
    PerformanceScore,
    WorkflowRun,
)
from tests import kpi_fixture as fx

WINDOW = Span(fx.START, fx.END)


def deployments() -> list[GhDeployment]:
    """The fixture's deployments as the sync stores them."""
    return [
        GhDeployment(d.id, d.sha, "main", "production", d.created_at, d.final_state, d.succeeded_at)
        for d in fx.DEPLOYS
    ]


def changes() -> dict[int, DeploymentChanges]:
    """Each successful deployment's commits."""
    found = {}
    for d in fx.DEPLOYS:
        if d.succeeded_at is not None:
            commits = tuple(Commit(f"{d.id}-{i}", at) for i, at in enumerate(d.commits))
            found[d.id] = DeploymentChanges(d.id, d.sha, d.succeeded_at, commits, "compare")
    return found


def runs() -> list[WorkflowRun]:
    """The fixture's runs at their latest attempts."""
    return [
        WorkflowRun(
            i,
            workflow,
            workflow.removesuffix(".yml"),
            attempts,
            "completed" if conclusion else "in_progress",
            conclusion,
            "0" * 40,
            created,
            created + timedelta(minutes=5),
            f"https://github.com/acme/web/actions/runs/{i}",
        )
        for i, (workflow, conclusion, created, attempts) in enumerate(fx.RUNS, start=1)
    ]


def incidents() -> list[IncidentRecord]:
    """The production incidents."""
    return [IncidentRecord("production", i, start, end) for i, start, end in fx.INCIDENTS]


def table() -> dict[str, Kpi]:
    """Every KPI of the fixture, computed by the maths alone."""
    deps, all_runs = deployments(), runs()
    scores = {
        d.sha: PerformanceScore(d.sha, d.score, d.succeeded_at)
        for d in fx.DEPLOYS
        if d.score is not None and d.succeeded_at is not None
    }
    down_s = 3600.0 * len(fx.STAGING_DOWN)
    account = TimeAccount(WINDOW.seconds - down_s, 0.0, down_s, 0.0)
    rows = [
        maths.deployment_frequency(deps, [], WINDOW, 2.0, 910.0, covered=WINDOW),
        maths.lead_time(changes(), deps, WINDOW, 7200.0),
        maths.change_failure_rate(
            deps,
            incidents(),
            [r for r in all_runs if r.workflow == "rollback-production.yml"],
            WINDOW,
            3600.0,
            0.05,
        ),
        maths.time_to_restore(incidents(), WINDOW, fx.END, 1800.0),
        maths.pass_rate("test_pass_rate", all_runs, ["ci.yml"], WINDOW, 1.0),
        maths.pass_rate("security_scan_pass_rate", all_runs, ["security.yml"], WINDOW, 1.0),
        maths.performance_score(deps, scores, WINDOW, 85.0),
        maths.staging_health(account, "staging", 0.995),
    ]
    return {k.key: k for k in rows}


@pytest.mark.parametrize("key", list(fx.EXPECTED), ids=list(fx.EXPECTED))
def test_each_figure_matches_the_hand_computed_fixture(key: str) -> None:
    """Value, verdict and samples of each KPI are the docstring's."""
    value, met, samples = fx.EXPECTED[key]
    kpi = table()[key]
    assert kpi.value == pytest.approx(value)
    assert (kpi.met, kpi.samples) == (met, samples)


def test_the_details_say_what_the_figures_stand_on() -> None:
    """p90, the cause of each failed change, the runs left out, the lowest score."""
    kpis = table()
    assert kpis["lead_time_median_s"].detail["p90_s"] == pytest.approx(10080.0)
    cfr = kpis["change_failure_rate"].detail
    assert (cfr["by_incident"], cfr["by_rollback"]) == (1, 1)
    assert {f["id"]: f["cause"] for f in cfr["failures"]} == {2: "incident", 4: "rollback"}
    tests = kpis["test_pass_rate"].detail
    assert tests["excluded"] == {"cancelled": 1, "skipped": 1}
    assert (tests["not_completed"], tests["failed"]) == (1, 1)
    assert kpis["mttr_s"].detail["median_s"] == 1800.0
    assert kpis["performance_score"].detail["min"] == 80


def test_every_kpi_without_data_is_null_and_neither_met_nor_missed() -> None:
    """An empty window: value null, met null, samples 0 - never a made-up zero."""
    empty = Span(fx.END, fx.END + timedelta(days=7))
    rows = [
        maths.deployment_frequency([], [], empty, 2.0, 910.0, covered=empty),
        maths.lead_time({}, [], empty, 7200.0),
        maths.change_failure_rate([], [], [], empty, 3600.0, 0.05),
        maths.time_to_restore([], empty, empty.end, 1800.0),
        maths.pass_rate("test_pass_rate", [], ["ci.yml"], empty, 1.0),
        maths.performance_score([], {}, empty, 85.0),
        maths.staging_health(None, None, 0.995),
    ]
    zero_per_week = rows.pop(0)
    assert (zero_per_week.value, zero_per_week.met) == (0.0, False)  # GitHub read: 0/week
    unread = maths.deployment_frequency([], [], empty, 2.0, 910.0, covered=None)
    for kpi in [unread, *rows]:
        assert (kpi.value, kpi.met, kpi.samples) == (None, None, 0), kpi.key


def test_a_deployment_is_cross_checked_against_the_versions_the_monitor_saw() -> None:
    """Matched by sha prefix or by time; the rest is listed on its side."""
    deps = deployments()
    observed = [
        Deployment("production", "old", "d1d1d1d", fx.t(16, 10, 20)),  # sha prefix of 1
        Deployment("production", "d1d1d1d", "v2.0", fx.t(18, 14, 10)),  # in time for 2
        Deployment("production", "v2.0", "hotfix", fx.t(21, 12)),  # no deployment
    ]
    kpi = maths.deployment_frequency(deps, observed, WINDOW, 2.0, 910.0, covered=WINDOW)
    assert [d["id"] for d in kpi.detail["only_in_github"]] == [4, 5]
    assert [o["to"] for o in kpi.detail["only_observed"]] == ["hotfix"]


@pytest.mark.parametrize(
    ("key", "value", "objective", "met"),
    [
        ("deployment_frequency_per_week", 2.0, 2.0, True),
        ("staging_health", 0.995, 0.995, True),
        ("lead_time_median_s", 7200.0, 7200.0, False),
        ("change_failure_rate", 0.05, 0.05, False),
        ("mttr_s", 1799.0, 1800.0, True),
    ],
    ids=["at-least-on-the-bar", "health-on-the-bar", "below-on-the-bar", "cfr-on-the-bar", "under"],
)
def test_objectives_have_the_seeds_directions(
    key: str, value: float, objective: float, met: bool
) -> None:
    """ ">= 2 per week" is met at 2; "< 2 hours" and "< 5 %" are missed at the bar."""
    assert Kpi(key, value, objective, 1).met is met


def test_a_rollback_deployment_is_no_change_and_fails_the_one_it_undid() -> None:
    """deploy-production.yml's own rollback job deploys again in the same run: that
    deployment is not counted, and the one before it failed (by rollback)."""
    run = "https://github.com/acme/web/actions/runs/77"
    shipped = GhDeployment(
        1, "a" * 40, "main", "production", fx.t(20, 10), "inactive", fx.t(20, 10, 5), run
    )
    undone = GhDeployment(
        2, "a" * 40, "main", "production", fx.t(20, 10, 20), "success", fx.t(20, 10, 25), run
    )
    deps = [shipped, undone]
    assert maths.rollbacks_among(deps, []) == {2: shipped}
    cfr = maths.change_failure_rate(deps, [], [], WINDOW, 3600.0, 0.05)
    assert (cfr.value, cfr.samples, cfr.detail["by_rollback"]) == (1.0, 1, 1)
    rollbacks = maths.rollbacks_among(deps, [])
    frequency = maths.deployment_frequency(
        deps, [], WINDOW, 2.0, 910.0, covered=WINDOW, rollbacks=rollbacks
    )
    assert (frequency.samples, frequency.detail["rollbacks"]) == (1, 1)


def test_a_rollback_workflows_deployment_is_no_change_and_a_cancelled_run_no_failure() -> None:
    """The rollback workflow's own deployment is not counted; a rollback run that was
    cancelled (an approval refused) fails nothing."""
    deployed = GhDeployment(
        1, "a" * 40, "main", "production", fx.t(20, 10), "success", fx.t(20, 10, 5)
    )
    rollback_run = WorkflowRun(
        50,
        "rollback-production.yml",
        "Rollback",
        1,
        "completed",
        "success",
        "a" * 40,
        fx.t(20, 10, 30),
        fx.t(20, 10, 40),
        "https://github.com/acme/web/actions/runs/50",
    )
    redeployed = GhDeployment(
        2,
        "0" * 40,
        "main",
        "production",
        fx.t(20, 10, 31),
        "success",
        fx.t(20, 10, 35),
        "https://github.com/acme/web/actions/runs/50",
    )
    deps = [deployed, redeployed]
    cfr = maths.change_failure_rate(deps, [], [rollback_run], WINDOW, 3600.0, 0.05)
    assert (cfr.value, cfr.samples) == (1.0, 1)
    refused = WorkflowRun(**{**vars_of(rollback_run), "conclusion": "cancelled", "id": 51})
    cfr = maths.change_failure_rate([deployed], [], [refused], WINDOW, 3600.0, 0.05)
    assert (cfr.value, cfr.samples) == (0.0, 1)


def vars_of(run: WorkflowRun) -> dict[str, object]:
    """A run's fields by name (it has slots, not a __dict__)."""
    return {name: getattr(run, name) for name in run.__slots__}


def test_a_first_deployment_counts_only_the_windows_commits() -> None:
    """Basis lookback: commits before the window are the lookback's, not this figure's."""
    deployed = GhDeployment(
        1, "a" * 40, "main", "production", fx.t(20, 10), "success", fx.t(20, 12)
    )
    commits = (Commit("old", fx.t(10, 9)), Commit("new", fx.t(20, 9)))
    change = DeploymentChanges(1, "a" * 40, fx.t(20, 12), commits, "lookback", "first")
    kpi = maths.lead_time({1: change}, [deployed], WINDOW, 7200.0)
    assert (kpi.value, kpi.samples) == (3 * 3600.0, 1)
