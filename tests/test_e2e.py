"""End to end: the real daemon as a subprocess against local targets and a fake GitHub.

Each test writes a TOML config to ``tmp_path`` (one target with a ``health``
check, 1 s cadence, 0.5 s while failing), starts ``python -m monitor run`` and
drives it through its target (flipping it between 200 and 503), the fake
GitHub's fault injection, signals and restarts. Waits poll against deadlines;
the daemon's logs are attached to every assertion that concerns it.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor.incidents.channels.github import CREATE_SETTLE_S
from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    image_python_flags,
    run_monitor,
    sample_value,
    wait_for,
    write_config,
)
from tests.fakegithub import (
    DEFAULT_REPO,
    DEFAULT_TOKEN,
    FakeGitHub,
    cut_after_commit,
    delay,
    secondary_rate_limit,
    status,
)
from tests.ports import free_port
from tests.targets import Connection, Request, TargetServer, respond

pytestmark = pytest.mark.e2e

TARGET = "web"
CHECK = "health"
LABELS = ("incident", "monitor", f"target:{TARGET}")
MARKER = f"<!-- monitor:incident target={TARGET} id="
INCIDENT_INTERVAL_S = 0.5


# -- a target whose health the test flips, recording when each probe arrived ------------


@dataclass
class Hit:
    """One probe as the target saw it."""

    at: float  # time.time() on arrival
    status: int
    request: Request


@dataclass
class Switch:
    """The ``/health`` handler: answers ``status``, remembers every hit with its time."""

    status: int = 200
    echo_header: str | None = None  # answer with this request header's value in the body
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, request: Request, conn: Connection) -> None:
        with self.lock:
            answer = self.status
            self.hits.append(Hit(time.time(), answer, request))
        body: dict[str, Any] = {"status": "ok" if answer == 200 else "error"}
        if self.echo_header is not None:
            body["echo"] = request.header(self.echo_header)
        payload = json.dumps(body).encode()
        await respond(answer, payload, {"Content-Type": "application/json"})(request, conn)

    def set(self, status: int) -> float:
        """Answer ``status`` from now on; returns the time of the flip."""
        with self.lock:
            self.status = status
            return time.time()

    def snapshot(self) -> list[Hit]:
        """The hits so far, oldest first."""
        with self.lock:
            return list(self.hits)

    def count_since(self, since: float) -> int:
        """Hits that arrived at or after ``since``."""
        return sum(1 for h in self.snapshot() if h.at >= since)

    def first(self, status: int, after: float = 0.0) -> Hit | None:
        """The first hit answered with ``status`` at or after ``after``."""
        return next((h for h in self.snapshot() if h.status == status and h.at >= after), None)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def health(target_server: TargetServer) -> Switch:
    """``target_server`` answering ``/health`` through a :class:`Switch` (200 at first)."""
    switch = Switch()
    target_server.route("/health", switch)
    return switch


@dataclass
class Setup:
    """What a test needs to start (and restart) the daemon on one config and state file."""

    tmp_path: Path
    daemons: Daemons
    target: TargetServer
    health: Switch
    github: FakeGitHub
    config: Path
    env: dict[str, str]

    def start(self) -> DaemonProcess:
        """Start a daemon and wait for ``/healthz`` 200."""
        daemon = self.daemons.start(self.config, self.env)
        daemon.wait_healthy()
        return daemon

    def issues(self) -> list[dict[str, Any]]:
        """Every issue in the fake repository."""
        return self.github.issues(DEFAULT_REPO)

    def comments(self, number: int) -> list[str]:
        """The bodies of an issue's comments, oldest first."""
        return [c["body"] for c in self.github.comments(DEFAULT_REPO, number)]

    def context(self) -> str:
        """Everything worth reading when an assertion fails."""
        issues = [
            {
                "number": i["number"],
                "state": i["state"],
                "state_reason": i["state_reason"],
                "title": i["title"],
                "comments": [c[:160] for c in self.comments(i["number"])],
            }
            for i in self.issues()
        ]
        requests = [f"{r.method} {r.path} -> {r.status}" for r in self.github.requests[-40:]]
        return (
            f"issues: {json.dumps(issues, indent=1, ensure_ascii=False)}\n"
            f"last GitHub requests: {requests}\n"
            f"target hits: {[(round(h.at, 2), h.status) for h in self.health.snapshot()[-30:]]}\n"
            f"{self.daemons.logs()}"
        )

    def wait(self, condition: Any, timeout_s: float, what: str) -> Any:
        """:func:`wait_for` with this setup's context on failure."""
        return wait_for(condition, timeout_s, what, self.context)

    def one_issue(self, **expected: Any) -> dict[str, Any] | None:
        """The only issue, if there is exactly one and it has the ``expected`` fields."""
        issues = self.issues()
        assert len(issues) <= 1, f"more than one issue:\n{self.context()}"
        if issues and all(issues[0].get(k) == v for k, v in expected.items()):
            return issues[0]
        return None


def make_setup(
    tmp_path: Path,
    daemons: Daemons,
    target: TargetServer,
    health: Switch,
    github: FakeGitHub,
    *,
    token: str = DEFAULT_TOKEN,
    labels_exist: bool = True,
    **config: Any,
) -> Setup:
    """Config in ``tmp_path`` for ``target`` and ``github``; the token goes in by env."""
    if labels_exist:  # a repository used before: spares three throttled label POSTs (3 s)
        for name in LABELS:
            github.add_label(DEFAULT_REPO, name)
    path = write_config(
        tmp_path / "config.toml",
        target_url=target.url,
        listen_port=free_port(),
        state_path=tmp_path / "state" / "monitor.db",
        github_url=github.url,
        **config,
    )
    env = clean_env(GITHUB_TOKEN=token)
    return Setup(tmp_path, daemons, target, health, github, path, env)


@pytest.fixture
def setup(
    tmp_path: Path,
    daemons: Daemons,
    target_server: TargetServer,
    health: Switch,
    fake_github: FakeGitHub,
) -> Setup:
    """The default setup: reminders off (1 h), labels in place, the token DEFAULT_TOKEN."""
    return make_setup(tmp_path, daemons, target_server, health, fake_github)


# -- 1. the core -------------------------------------------------------------------------------


def _rate(health: Switch, seconds: float) -> tuple[float, list[float]]:
    """Probes per second at the target over the next ``seconds``, and the gaps between them."""
    start = time.time()
    time.sleep(seconds)  # a measurement window, not a wait for a condition
    hits = [h.at for h in health.snapshot() if h.at >= start]
    gaps = [b - a for a, b in itertools.pairwise(hits)]
    return len(hits) / seconds, gaps


def test_core_metrics_cadence_and_sigterm(setup: Setup) -> None:
    """Pins /healthz, the metric names, zeroed series at start, the fast cadence and SIGTERM."""
    daemon = setup.start()
    ctx = setup.context
    code, body = daemon.healthz()
    assert code == 200, ctx()
    assert body["status"] == "ok", body
    assert body["targets"][TARGET]["cadence_s"] == 1.0, body

    # zeroed series exist before anything went wrong
    samples = daemon.samples()
    labels = {"target": TARGET, "check": CHECK}
    assert sample_value(samples, "monitor_probe_failures_total", reason="timeout", **labels) == 0
    assert sample_value(samples, "monitor_probe_failures_total", reason="status", **labels) == 0
    assert sample_value(samples, "monitor_incident_open", target=TARGET) == 0
    assert sample_value(samples, "monitor_build_info") == 1

    setup.wait(lambda: daemon.value("monitor_probe_success", **labels) == 1, 5, "success=1")
    samples = daemon.samples()
    families = daemon.families()
    assert families["monitor_probe_duration_seconds"] == "histogram"
    assert families["monitor_probes"] == "counter"
    assert (sample_value(samples, "monitor_probes_total", **labels) or 0) >= 1
    assert (sample_value(samples, "monitor_probe_duration_seconds_count", **labels) or 0) >= 1
    assert sample_value(samples, "monitor_probe_duration_seconds_bucket", le="+Inf", **labels)
    assert sample_value(samples, "monitor_target_up", target=TARGET) == 1

    healthy_rate, healthy_gaps = _rate(setup.health, 2.5)
    assert 0.6 <= healthy_rate <= 1.4, (healthy_rate, healthy_gaps, ctx())

    setup.health.set(503)
    setup.wait(lambda: daemon.value("monitor_probe_success", **labels) == 0, 5, "success=0")
    failures = daemon.value("monitor_probe_failures_total", reason="status", **labels)
    assert failures is not None
    assert failures >= 1, ctx()
    assert daemon.value("monitor_target_up", target=TARGET) == 0
    setup.wait(
        lambda: daemon.healthz()[1]["targets"][TARGET]["cadence_s"] == INCIDENT_INTERVAL_S,
        5,
        "cadence 0.5 s in /healthz",
    )
    failing_rate, failing_gaps = _rate(setup.health, 2.5)
    assert 1.5 <= failing_rate <= 2.7, (failing_rate, failing_gaps, ctx())
    assert statistics.median(failing_gaps) < 0.75 * statistics.median(healthy_gaps), ctx()
    setup.wait(
        lambda: (
            (daemon.value("monitor_probe_failures_total", reason="status", **labels) or 0)
            > failures
        ),
        3,
        "failure counter rises",
    )

    daemon.terminate()
    started = time.monotonic()
    code = daemon.wait(8)
    took = time.monotonic() - started
    assert code == 0, daemon.logs()
    assert took < 6, f"SIGTERM took {took:.1f} s\n{daemon.logs()}"
    records = daemon.log_records()  # raises if a line is not JSON
    assert any(r.get("event") == "stopped" for r in records), daemon.logs()
    assert daemon.stderr().strip() == "", daemon.logs()


# -- 2. the incident lifecycle on GitHub ------------------------------------------------------

RESOLVED_SECONDS = re.compile(r"\*\*Resolved\.\*\* .* \((\d+) s\)")


def _resolved(comments: list[str]) -> list[str]:
    return [c for c in comments if "Resolved" in c]


def test_lifecycle_open_remind_resolve_reopen(
    tmp_path: Path,
    daemons: Daemons,
    target_server: TargetServer,
    health: Switch,
    fake_github: FakeGitHub,
) -> None:
    """Pins one issue per incident: labels, marker, reminder, measured duration, reopen."""
    setup = make_setup(
        tmp_path,
        daemons,
        target_server,
        health,
        fake_github,
        labels_exist=False,  # the first open creates the labels
        reminder_interval="2s",
    )
    setup.start()
    setup.wait(lambda: health.first(200), 5, "a first good probe")

    flipped = health.set(503)
    issue = setup.wait(lambda: setup.one_issue(state="open"), 15, "one open issue")
    number = issue["number"]
    ctx = setup.context
    assert {label["name"] for label in issue["labels"]} >= set(LABELS), ctx()
    body = issue["body"]
    assert MARKER in body, body
    assert f"{target_server.url}/health" in body, body
    assert "503" in body, body

    setup.wait(
        lambda: any("Still open" in c for c in setup.comments(number)), 15, "a reminder comment"
    )
    recovered = health.set(200)
    setup.wait(lambda: setup.one_issue(state="closed"), 20, "the issue closed")
    closed = setup.one_issue(state="closed")
    assert closed is not None
    assert closed["state_reason"] == "completed", ctx()
    resolved = _resolved(setup.comments(number))
    assert len(resolved) == 1, ctx()
    match = RESOLVED_SECONDS.search(resolved[0])
    assert match, resolved[0]
    first_bad = health.first(503, after=flipped)
    first_good = health.first(200, after=recovered)
    assert first_bad is not None, ctx()
    assert first_good is not None, ctx()
    measured = first_good.at - first_bad.at
    stated = int(match.group(1))
    assert abs(stated - measured) <= INCIDENT_INTERVAL_S + 1, (stated, measured, ctx())

    # a flap inside reopen_window reopens the same issue
    health.set(503)
    setup.wait(lambda: setup.one_issue(state="open"), 15, "the same issue reopened")
    assert [i["number"] for i in setup.issues()] == [number], ctx()
    health.set(200)
    setup.wait(lambda: setup.one_issue(state="closed"), 25, "the issue closed again")
    closed = setup.one_issue(state="closed")
    assert closed is not None
    assert closed["state_reason"] == "completed", ctx()
    comments = setup.comments(number)
    assert any("Failing again" in c for c in comments), ctx()
    assert len(_resolved(comments)) == 2, ctx()


def test_the_image_command_runs_an_incident_through(setup: Setup) -> None:
    """Pins that the daemon works as the image starts it (deploy/Dockerfile's CMD: -OO,
    so no docstrings and no asserts): it probes, opens the issue through PyGithub,
    closes it with the duration, logs JSON only and stops cleanly."""
    daemon = setup.daemons.start(setup.config, setup.env, image_python_flags())
    daemon.wait_healthy()
    ctx = setup.context
    setup.wait(lambda: setup.health.first(200), 5, "a first good probe")
    setup.health.set(503)
    issue = setup.wait(lambda: setup.one_issue(state="open"), 15, "one open issue")
    assert MARKER in issue["body"], ctx()
    setup.health.set(200)
    setup.wait(lambda: setup.one_issue(state="closed"), 20, "the issue closed")
    resolved = _resolved(setup.comments(issue["number"]))
    assert len(resolved) == 1, ctx()
    assert RESOLVED_SECONDS.search(resolved[0]), resolved[0]
    assert daemon.value("monitor_build_info") == 1
    daemon.terminate()
    assert daemon.wait(8) == 0, daemon.logs()
    assert any(r.get("event") == "stopped" for r in daemon.log_records()), daemon.logs()
    assert daemon.stderr().strip() == "", daemon.logs()


# -- 3. GitHub failing while opening and closing ------------------------------------------------

ISSUES_PATH = r"/repos/acme/web/issues"
ISSUE_PATH = r"/repos/acme/web/issues/\d+"


def test_github_failures_during_open_and_close(setup: Setup) -> None:
    """Pins exactly one closed issue despite a rate limit, a committed 502 and a failed close."""
    github = setup.github
    github.inject("POST", ISSUES_PATH, secondary_rate_limit(retry_after=1))
    github.inject("POST", ISSUES_PATH, status(502, commit=True))  # created, then a 502
    daemon = setup.start()
    setup.wait(lambda: setup.health.first(200), 5, "a first good probe")

    setup.health.set(503)
    setup.wait(
        lambda: daemon.events("adopting existing issue instead of creating one"),
        20,
        "the committed 502 adopted",
    )
    ctx = setup.context
    assert _creates(github) == [403, 502], ctx()
    issue = setup.one_issue(state="open")
    assert issue is not None, ctx()

    # the resolve is a comment, then one PATCH that closes with the final body; the
    # outage changed nothing meanwhile, so the first PATCH from now on is that close
    github.inject("PATCH", ISSUE_PATH, status(500))
    setup.health.set(200)
    setup.wait(lambda: setup.one_issue(state="closed"), 15, "the issue closed after a 500")
    assert "RESOLVED" in (setup.issues()[0]["body"] or ""), ctx()
    patches = [r.status for r in github.requests if r.method == "PATCH"]
    assert 500 in patches, ctx()
    assert patches[-1] == 200, ctx()
    assert len(_resolved(setup.comments(issue["number"]))) == 1, ctx()
    assert github.pending_faults == 0, ctx()


# -- 4. kill -9 at each step, restart on the same state file -----------------------------------


def _creates(github: FakeGitHub) -> list[int]:
    """The statuses of every create-issue request, in order."""
    return [r.status for r in github.requests if r.method == "POST" and r.path == ISSUES_PATH]


def _recorded(daemon: DaemonProcess) -> bool:
    """The daemon has performed (and recorded) every GitHub action it decided."""
    try:
        return daemon.value("monitor_outbox_pending") == 0
    except OSError:
        return False


def _kill_before_create(setup: Setup, first: DaemonProcess) -> None:
    setup.github.inject("POST", ISSUES_PATH, delay(600))  # the create hangs: never performed
    setup.health.set(503)
    setup.wait(lambda: len(_creates(setup.github)) == 1, 15, "the create in flight")
    first.kill()
    assert setup.issues() == [], setup.context()


def _kill_after_commit(setup: Setup, first: DaemonProcess) -> None:
    setup.github.inject("POST", ISSUES_PATH, cut_after_commit())
    setup.health.set(503)
    setup.wait(lambda: setup.one_issue(state="open"), 15, "the issue created at GitHub")
    first.kill()


def _kill_while_open(setup: Setup, first: DaemonProcess) -> None:
    setup.health.set(503)
    setup.wait(lambda: setup.one_issue(state="open"), 15, "the issue open")
    setup.wait(lambda: _recorded(first), 10, "the open recorded")
    first.kill()


def _kill_before_close(setup: Setup, first: DaemonProcess) -> None:
    setup.health.set(503)
    setup.wait(lambda: setup.one_issue(state="open"), 15, "the issue open")
    setup.wait(lambda: _recorded(first), 10, "the open recorded")
    setup.github.inject("PATCH", ISSUE_PATH, status(500))  # the resolve's close fails once
    setup.health.set(200)
    setup.wait(
        lambda: any(r.method == "PATCH" and r.status == 500 for r in setup.github.requests),
        15,
        "the resolve stuck on a failing PATCH",
    )
    first.kill()  # within the retry's backoff: the close has not happened
    issue = setup.one_issue(state="open")
    assert issue is not None, setup.context()


@pytest.mark.parametrize(
    ("kill", "creates"),
    [
        pytest.param(_kill_before_create, 2, id="before-create"),
        pytest.param(_kill_after_commit, 1, id="created-not-recorded"),
        pytest.param(_kill_while_open, 1, id="while-open"),
        pytest.param(_kill_before_close, 1, id="recovered-not-closed"),
    ],
)
def test_kill_9_and_restart(setup: Setup, kill: Any, creates: int) -> None:
    """Pins exactly one issue per incident across kill -9 at each step and a restart."""
    first = setup.start()
    setup.wait(lambda: setup.health.first(200), 5, "a first good probe")
    kill(setup, first)

    second = setup.start()
    setup.wait(lambda: second.events("reconciled"), 10, "the restart reconciled")
    if setup.health.status == 200:  # recovered before the kill: the restart closes the issue
        setup.wait(lambda: setup.one_issue(state="closed"), 15, "the issue closed")
        issue = setup.one_issue(state="closed")
        assert issue is not None
        assert issue["state_reason"] == "completed", setup.context()
        assert len(_resolved(setup.comments(issue["number"]))) == 1, setup.context()
    else:  # the outage goes on: one open issue, recorded, and it stays the only one
        setup.wait(lambda: setup.one_issue(state="open"), 15, "one open issue after restart")
        # a create killed mid-request holds its lease until it has surely settled at GitHub
        # (if the first daemon died before it saw the cut): the restart waits that out
        settle = CREATE_SETTLE_S if kill is _kill_after_commit else 0
        setup.wait(lambda: _recorded(second), 10 + settle, "the issue recorded after restart")
        probes = len(setup.health.snapshot())
        setup.wait(lambda: len(setup.health.snapshot()) >= probes + 2, 5, "two more probes")
        assert setup.one_issue(state="open"), setup.context()
    assert len(_creates(setup.github)) == creates, setup.context()
    if kill is _kill_after_commit:
        adopted = second.events("adopting existing issue instead of creating one")
        assert adopted, setup.context()


# -- 5. secrets ----------------------------------------------------------------------------------

TOKEN_SENTINEL = "e2e-sentinel-github-token-58213"
HEADER_SENTINEL = "e2e-sentinel-check-header-90417"


@pytest.fixture
def sentinel_github() -> Iterator[FakeGitHub]:
    """A fake GitHub that accepts only the sentinel token."""
    with FakeGitHub(valid_tokens=[TOKEN_SENTINEL]) as server:
        yield server
        assert server.errors == [], server.errors


def _secrets_setup(
    tmp_path: Path,
    daemons: Daemons,
    target_server: TargetServer,
    health: Switch,
    github: FakeGitHub,
) -> Setup:
    return make_setup(
        tmp_path,
        daemons,
        target_server,
        health,
        github,
        token=TOKEN_SENTINEL,
        headers={"Authorization": f"Bearer {HEADER_SENTINEL}"},
    )


def _assert_no_secret_anywhere(setup: Setup, daemon: DaemonProcess, pages: list[str]) -> None:
    issues = setup.issues()
    assert issues, setup.context()
    for secret in (TOKEN_SENTINEL, HEADER_SENTINEL):
        assert secret not in daemon.stdout(), f"{secret} in stdout\n{daemon.logs()}"
        assert secret not in daemon.stderr(), f"{secret} in stderr\n{daemon.logs()}"
        for page in pages:
            assert secret not in page, f"{secret} in a page: {page[:2000]}"
        for issue in issues:
            texts = [issue["title"], issue["body"] or "", *setup.comments(issue["number"])]
            assert not any(secret in t for t in texts), f"{secret} in issue #{issue['number']}"
        assert setup.github.leaks(secret) == [], setup.github.leaks(secret)


def _run_incident_and_stop(setup: Setup) -> tuple[DaemonProcess, list[str]]:
    """An incident from open to close; the pages seen on the way; then SIGTERM."""
    daemon = setup.start()
    setup.wait(lambda: setup.health.first(200), 5, "a first good probe")
    setup.health.set(503)
    setup.wait(lambda: setup.one_issue(state="open"), 15, "an open issue")
    pages = [daemon.metrics_text(), json.dumps(daemon.healthz()[1])]
    setup.health.set(200)
    setup.wait(lambda: setup.one_issue(state="closed"), 15, "the issue closed")
    pages += [daemon.metrics_text(), json.dumps(daemon.healthz()[1])]
    daemon.terminate()
    assert daemon.wait(10) == 0, daemon.logs()
    return daemon, pages


def test_secrets_never_leave(
    tmp_path: Path,
    daemons: Daemons,
    target_server: TargetServer,
    health: Switch,
    sentinel_github: FakeGitHub,
) -> None:
    """Pins that the token and a check header appear in no log, page, metric or issue."""
    setup = _secrets_setup(tmp_path, daemons, target_server, health, sentinel_github)
    daemon, pages = _run_incident_and_stop(setup)
    # both secrets were really in use
    assert TOKEN_SENTINEL in sentinel_github.tokens_seen
    assert health.hits[-1].request.header("authorization") == f"Bearer {HEADER_SENTINEL}"
    _assert_no_secret_anywhere(setup, daemon, pages)


def test_secret_echoed_by_target_stays_out_of_issue(
    tmp_path: Path,
    daemons: Daemons,
    target_server: TargetServer,
    health: Switch,
    sentinel_github: FakeGitHub,
) -> None:
    """Pins that a target reflecting the check's Authorization header does not leak it."""
    health.echo_header = "authorization"  # an error page that dumps request headers
    setup = _secrets_setup(tmp_path, daemons, target_server, health, sentinel_github)
    daemon = setup.start()
    setup.wait(lambda: health.first(200), 5, "a first good probe")
    health.set(503)
    issue = setup.wait(lambda: setup.one_issue(state="open"), 15, "an open issue")
    assert HEADER_SENTINEL in json.dumps(health.snapshot()[-1].request.headers)
    assert HEADER_SENTINEL not in issue["body"], "the echoed header is in the issue body"
    assert setup.github.leaks(HEADER_SENTINEL) == [], setup.github.leaks(HEADER_SENTINEL)
    assert HEADER_SENTINEL not in daemon.stdout(), daemon.logs()


# -- 6. monitor check --------------------------------------------------------------------------


def _check_config(path: Path, url: str, **monitor: str) -> Path:
    extra = "".join(f"{key} = {value}\n" for key, value in monitor.items())
    text = f"""
[monitor]
timeout = 1
{extra}
[[targets]]
name = "web"
url = "{url}"

[[targets.checks]]
name = "health"
path = "/health"

[[targets]]
name = "shop"
url = "{url}/shop"

[[targets.checks]]
name = "ready"
path = "/ready"
"""
    path.write_text(text, encoding="utf-8")
    return path


def _monitor_check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_monitor("check", "--config", str(config), *args)


def test_monitor_check_exit_codes(
    tmp_path: Path, target_server: TargetServer, health: Switch
) -> None:
    """Pins `monitor check`: 0 with PASS, 1 with a FAIL naming the target, --json, 2 on bad config."""
    shop = Switch()
    target_server.route("/shop/ready", shop)
    config = _check_config(tmp_path / "check.toml", target_server.url)

    up = _monitor_check(config)
    assert up.returncode == 0, up
    assert up.stdout.strip().splitlines()[-1].startswith("PASS"), up.stdout

    shop.set(503)
    down = _monitor_check(config)
    assert down.returncode == 1, down
    verdict = down.stdout.strip().splitlines()[-1]
    assert verdict.startswith("FAIL"), down.stdout
    assert "shop" in verdict, verdict
    assert "web" not in verdict, verdict
    row = next(line for line in down.stdout.splitlines() if line.startswith("shop"))
    assert "ready" in row, row
    assert "DOWN" in row, row
    assert "503" in row, row

    as_json = _monitor_check(config, "--json")
    assert as_json.returncode == 1, as_json
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    outcomes = {t["target"]: t["outcome"] for t in report["targets"]}
    assert outcomes == {"web": "up", "shop": "down"}, report

    bad = _check_config(
        tmp_path / "bad.toml", target_server.url, interval="1", incident_interval="5"
    )
    wrong = _monitor_check(bad)
    assert wrong.returncode == 2, wrong
    assert "monitor.incident_interval" in wrong.stderr, wrong.stderr
    assert wrong.stdout == "", wrong.stdout
