"""End to end with three real daemons in three regions, one PostgreSQL, one fake GitHub.

The daemons run as ``ams``, ``ord`` and ``sin`` (``FLY_REGION``) against one
target whose ``/health`` fails only for the regions the test names (it reads
``X-Monitor-Region``). They share a throwaway PostgreSQL database
(``DATABASE_URL``); one leads. The test walks the issue's story: one region
failing opens nothing, two open exactly one issue, ``kill -9`` of the leader
while it is open hands the incident to a new leader, the recovery closes that
one issue with one resolve comment, and the old leader comes back as a follower.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    http_get,
    wait_for,
    write_config,
)
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.pgserver import PostgresServer
from tests.ports import free_port
from tests.targets import RegionalHealth, TargetServer

pytestmark = pytest.mark.e2e

REGIONS = ("ams", "ord", "sin")
TARGET = "web"
TAKEOVER_S = 30  # the issue's bar for a new leader after kill -9


@dataclass
class Cluster:
    """Three daemon configs on one database; start, find the leader, read the issues."""

    daemons: Daemons
    github: FakeGitHub
    health: RegionalHealth
    configs: dict[str, Path]
    envs: dict[str, dict[str, str]]
    running: dict[str, DaemonProcess] = field(default_factory=dict)

    def start(self, region: str) -> DaemonProcess:
        """Start (or restart) the daemon of ``region``."""
        daemon = self.daemons.start(self.configs[region], self.envs[region])
        daemon.wait_healthy(20)
        self.running[region] = daemon
        return daemon

    def roles(self) -> dict[str, str]:
        """Each running daemon's role from ``/healthz``."""
        roles = {}
        for region, daemon in self.running.items():
            if daemon.proc is not None and daemon.proc.poll() is None:
                roles[region] = daemon.healthz()[1].get("role", "?")
        return roles

    def leader(self) -> str | None:
        """The only leading region, if exactly one leads."""
        leaders = [r for r, role in self.roles().items() if role == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def issues(self) -> list[dict[str, Any]]:
        """Every issue filed."""
        return self.github.issues(DEFAULT_REPO)

    def comments(self, number: int) -> list[str]:
        """An issue's comment bodies."""
        return [c["body"] for c in self.github.comments(DEFAULT_REPO, number)]

    def context(self) -> str:
        """What to read when an assertion fails."""
        issues = [
            (i["number"], i["state"], [c[:100] for c in self.comments(i["number"])])
            for i in self.issues()
        ]
        return f"roles: {self.roles()}\nissues: {issues}\nseen: {self.health.seen}\n" + (
            self.daemons.logs()
        )

    def wait(self, condition: Any, timeout_s: float, what: str) -> Any:
        """Poll ``condition`` with this cluster's context on failure."""
        return wait_for(condition, timeout_s, what, self.context)


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, target_server: TargetServer, fake_github: FakeGitHub
) -> Iterator[Cluster]:
    """Three regions' configs on one fresh database; every daemon killed at teardown."""
    health = RegionalHealth()
    target_server.route("/health", health)
    for label in ("incident", "monitor", f"target:{TARGET}"):
        fake_github.add_label(DEFAULT_REPO, label)
    configs, envs = {}, {}
    for region in REGIONS:
        configs[region] = write_config(
            tmp_path / f"{region}.toml",
            target_url=target_server.url,
            listen_port=free_port(),
            state_path=tmp_path / f"{region}.db",  # unused: DATABASE_URL wins
            github_url=fake_github.url,
            target=TARGET,
            leader_check=0.3,
        )
        envs[region] = clean_env(
            GITHUB_TOKEN=DEFAULT_TOKEN,
            DATABASE_URL=postgres_url,
            FLY_REGION=region,
            FLY_MACHINE_ID=f"machine-{region}",
        )
    with Daemons.session(tmp_path) as daemons:
        yield Cluster(daemons, fake_github, health, configs, envs)


def _regions_seen(daemon: DaemonProcess) -> set[str]:
    return set(daemon.healthz()[1].get("regions", {}))


def test_three_regions_one_truth(cluster: Cluster) -> None:
    """One region failing opens nothing; two open one issue; the leader's kill -9
    hands the incident over; recovery closes that issue once; the old leader follows."""
    for region in REGIONS:
        cluster.start(region)
    first_leader = cluster.wait(cluster.leader, 15, "exactly one leader")
    for daemon in cluster.running.values():
        cluster.wait(lambda d=daemon: _regions_seen(d) == set(REGIONS), 15, "all regions seen")
    healthz = cluster.running[first_leader].healthz()[1]
    assert healthz["region"] == first_leader
    assert healthz["leader"]["region"] == first_leader, healthz
    follower = next(r for r in REGIONS if r != first_leader)
    assert cluster.running[follower].healthz()[1]["leader"]["region"] == first_leader
    assert set(cluster.health.seen) == set(REGIONS), cluster.health.seen
    assert all(f"region {r}" in " ".join(cluster.health.agents) for r in REGIONS)

    # one region sees the target down: a problem of that region, not an outage
    lone = REGIONS[0]
    cluster.health.fail(lone)
    leader_daemon = cluster.running[first_leader]
    cluster.wait(
        lambda: leader_daemon.value("monitor_regions_failing", target=TARGET) == 1,
        10,
        "the leader counts one failing region",
    )
    probes = cluster.health.seen.get(lone, 0)
    cluster.wait(lambda: cluster.health.seen.get(lone, 0) >= probes + 8, 10, "8 more probes")
    assert cluster.issues() == [], cluster.context()

    # a second region agrees: exactly one issue
    cluster.health.fail(REGIONS[0], REGIONS[1])
    cluster.wait(lambda: len(cluster.issues()) >= 1, 20, "an issue opens")
    [issue] = cluster.issues()
    assert "2 of 3 fresh regions see it down" in issue["body"], issue["body"]
    for region in REGIONS:
        assert f"| {region} |" in issue["body"]
    timeline = issue["body"].split("### Timeline (UTC)")[1].split("###")[0]
    assert "| Time | Region | Check |" in timeline
    assert {"ams", "ord"} <= {line.split("|")[2].strip() for line in timeline.splitlines()[4:-1]}

    # every instance serves the same view of it
    def views() -> list[tuple[str, str | None, list[tuple[str, str]]]]:
        seen = []
        for daemon in cluster.running.values():
            status = json.loads(http_get(daemon.base_url + "/api/status")[1])
            [target] = [t for t in status["targets"] if t["name"] == TARGET]
            quorum = target["quorum"]["verdict"] if target["quorum"] else None
            seen.append(
                (target["state"], quorum, [(r["region"], r["state"]) for r in target["regions"]])
            )
        return seen

    expected = ("down", "down", [("ams", "down"), ("ord", "down"), ("sin", "up")])
    cluster.wait(lambda: all(v == expected for v in views()), 10, "the same page everywhere")
    page = http_get(cluster.running[follower].base_url + "/status")[1]
    assert "2 of 3 reporting regions see it down" in page

    # the leader dies while the incident is open
    leader = cluster.wait(cluster.leader, 5, "a leader")
    cluster.running[leader].kill()
    del cluster.running[leader]
    successor = cluster.wait(
        lambda: cluster.leader() if cluster.leader() != leader else None,
        TAKEOVER_S,
        "a new leader",
    )
    assert successor != leader

    # recovery closes that one issue, once
    cluster.health.fail()
    cluster.wait(
        lambda: cluster.issues()[0]["state"] == "closed", 30, "the issue closes after recovery"
    )
    assert len(cluster.issues()) == 1, cluster.context()
    resolved = [c for c in cluster.comments(issue["number"]) if c.count("**Resolved.**")]
    assert len(resolved) == 1, cluster.context()

    # the old leader comes back and follows
    cluster.start(leader)
    cluster.wait(lambda: cluster.roles().get(leader) == "follower", 10, "old leader follows")
    assert cluster.leader() == successor, cluster.context()
    assert len(cluster.issues()) == 1


def test_database_outage_keeps_probing_and_catches_up(
    cluster: Cluster, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """PostgreSQL down: the daemon keeps probing, says so in /healthz, keeps the results in
    memory, and writes every one of them once the database is back."""
    daemon = cluster.start("ams")
    cluster.wait(lambda: cluster.roles().get("ams") == "leader", 10, "ams leads")
    cluster.wait(lambda: cluster.health.seen.get("ams", 0) >= 2, 10, "probes")
    postgres_server.stop()
    try:
        cluster.wait(
            lambda: any("state database" in p for p in daemon.healthz()[1]["problems"]),
            10,
            "/healthz reports the database",
        )
        during = cluster.health.seen["ams"]
        cluster.wait(lambda: cluster.health.seen["ams"] >= during + 4, 10, "probing goes on")
        assert daemon.healthz()[1]["role"] == "follower"  # its lock went with the database
    finally:
        postgres_server.start()
    cluster.wait(lambda: daemon.healthz()[1]["problems"] == [], 20, "the backlog is written")
    cluster.wait(lambda: cluster.roles().get("ams") == "leader", 20, "ams leads again")
    daemon.terminate()
    assert daemon.wait(10) == 0, daemon.logs()
    with psycopg.connect(postgres_url) as db:
        row = db.execute("SELECT COUNT(*) FROM check_results WHERE region = 'ams'").fetchone()
    assert row is not None
    assert row[0] == cluster.health.seen["ams"], cluster.context()
