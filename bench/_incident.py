"""The incident path harness: a switchable target, a timed fake GitHub, the daemon, lifecycles.

Shared by ``latency.py`` and ``github_economy.py``. The target (``tests.targets``) and the
fake GitHub (``tests.fakegithub``) run in the bench process on 127.0.0.1; the daemon runs
either as ``monitor run`` in a subprocess (the real thing) or in process (so that a
PyGithub client without its throttle can be injected for comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c

from tests.daemon_process import DaemonProcess, clean_env, write_config
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.targets import Connection, Request, TargetServer, respond

ISSUES_PATH = f"/repos/{DEFAULT_REPO}/issues"
WAIT_S = 60.0  # no single wait of a lifecycle may take longer


@dataclass(frozen=True)
class GitHubCall:
    """One request at the fake, with its arrival and reply times (wall clock)."""

    start: float
    end: float
    method: str
    path: str
    status: int
    body: bytes

    @property
    def closes(self) -> bool:
        """A PATCH that closes an issue."""
        if self.method != "PATCH" or not self.body:
            return False
        with contextlib.suppress(ValueError):
            return json.loads(self.body).get("state") == "closed"
        return False


class TimedFakeGitHub(FakeGitHub):
    """``FakeGitHub`` that also keeps when each request arrived and was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[GitHubCall] = []

    def _serve(self, method: str, target: str, headers: Any, body: bytes) -> Any:
        start = time.time()
        reply = super()._serve(method, target, headers, body)
        path = urllib.parse.urlsplit(target).path
        status = 0 if reply is None else reply.status
        self.calls.append(GitHubCall(start, time.time(), method, path, status, body))
        return reply

    def calls_between(self, start: float, end: float) -> list[GitHubCall]:
        """Requests that arrived in [start, end)."""
        return [call for call in list(self.calls) if start <= call.start < end]


@dataclass
class Switch:
    """The target's ``/health``: answers the current status, and logs (time, status) per hit."""

    status: int = 200
    hits: list[tuple[float, int]] = field(default_factory=list)

    async def __call__(self, request: Request, conn: Connection) -> None:
        status = self.status
        self.hits.append((time.time(), status))
        await respond(status, b"ok\n" if status == 200 else b"down\n")(request, conn)

    def after(self, since: float, status: int) -> list[float]:
        """Arrival times of hits answered ``status`` since ``since``."""
        return [at for at, s in list(self.hits) if at >= since and s == status]


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll every 5 ms until ``condition`` returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


@dataclass
class Bench:
    """A running target + fake GitHub + daemon."""

    switch: Switch
    github: TimedFakeGitHub
    config: Path
    settings_overrides: dict[str, Any]


def config_for(tmp: Path, target_url: str, github_url: str, state: Path, **monitor: object) -> Path:
    """The daemon's config: one target with one ``health`` check, local GitHub."""
    settings: dict[str, object] = {
        "interval": 1,
        "incident_interval": 1,
        "timeout": 2,
        "open_after": 3,
        "close_after": 2,
        "reopen_window": 1,  # each repetition is a new incident, not a reopen
        "reminder_interval": "1h",
        "stall_after": 30,
        "metrics_refresh": 60,
    }
    settings.update(monitor)
    return write_config(
        tmp / "config.toml",
        target_url=target_url,
        listen_port=c.free_port(),
        state_path=state,
        github_url=github_url,
        **settings,
    )


@contextlib.contextmanager
def servers(labels_exist: bool = False) -> Iterator[tuple[Switch, TimedFakeGitHub, TargetServer]]:
    """The switchable target and the timed fake GitHub, both on 127.0.0.1.

    ``labels_exist``: the repository already has the daemon's labels (a repository used
    before), so the first incident does not create them.
    """
    switch = Switch()
    # connection_limit_s: TargetServer aborts a connection after that long (10 s by
    # default), which would fail the daemon's probe on a reused keep-alive connection.
    with TargetServer(connection_limit_s=900.0) as target, TimedFakeGitHub() as github:
        target.route("/health", switch)
        if labels_exist:
            from monitor.incidents.text import target_label

            for name in ("incident", "monitor", target_label("web")):
                github.add_label(DEFAULT_REPO, name)
        yield switch, github, target


@contextlib.contextmanager
def subprocess_daemon(config: Path, workdir: Path) -> Iterator[DaemonProcess]:
    """``monitor run`` in a subprocess, the token from the environment."""
    daemon = DaemonProcess(config, workdir, clean_env(GITHUB_TOKEN=DEFAULT_TOKEN), name="daemon")
    daemon.start()
    try:
        daemon.wait_healthy(timeout_s=30)
        yield daemon
    finally:
        if daemon.running:
            daemon.terminate()
            try:
                daemon.wait(15)
            except AssertionError:
                daemon.close()
        daemon.close()


def run_in_process(config: Path, throttle: bool, work: Callable[[], Any]) -> Any:
    """Run the daemon in this process (main thread) while ``work`` runs in a thread.

    ``throttle=False`` gives the GitHub sink a PyGithub client without its built-in
    pauses (0.25 s between requests, 1 s between writes), otherwise identical.
    """
    from github import Auth, Github

    from monitor.config import load_settings
    from monitor.daemon.daemon import Daemon
    from monitor.incidents.channels.github import GithubChannel, GithubIssues

    os.environ["GITHUB_TOKEN"] = DEFAULT_TOKEN
    try:
        settings = load_settings(config)
    finally:
        del os.environ["GITHUB_TOKEN"]
    channels = None
    if not throttle:
        gh = settings.github
        assert gh.token is not None
        assert gh.repository is not None
        client = Github(
            auth=Auth.Token(gh.token.get_secret_value()),
            base_url=gh.api_url,
            timeout=max(1, int(gh.timeout)),
            retry=None,
            user_agent="fly-monitor",
            lazy=True,
            per_page=100,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        channels = [GithubChannel(gh, GithubIssues(gh, client=client))]
    outcome: dict[str, Any] = {}

    async def main() -> None:
        daemon = Daemon(settings, channels=channels)
        loop = asyncio.get_running_loop()

        def worker() -> None:
            try:
                outcome["value"] = work()
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                loop.call_soon_threadsafe(daemon.request_stop)

        thread = threading.Thread(target=worker, name="bench-controller", daemon=True)
        thread.start()
        await daemon.run()
        thread.join(timeout=10)

    asyncio.run(main())
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@dataclass
class Lifecycle:
    """The measured times of one incident, wall clock."""

    first_fail: float
    confirm_fail: float  # the open_after-th failed probe
    opened: float  # POST /issues answered 201
    first_good: float
    confirm_good: float  # the close_after-th good probe
    closed: float  # PATCH state=closed answered
    number: int
    calls_open: list[GitHubCall]
    calls_hold: list[GitHubCall]
    calls_resolve: list[GitHubCall]

    def as_dict(self) -> dict[str, Any]:
        """The derived latencies."""
        return {
            "detect_s": self.opened - self.first_fail,
            "detect_github_s": self.opened - self.confirm_fail,
            "recover_s": self.closed - self.first_good,
            "recover_github_s": self.closed - self.confirm_good,
            "requests_open": len(self.calls_open),
            "requests_hold": len(self.calls_hold),
            "requests_resolve": len(self.calls_resolve),
        }


def quiet(github: TimedFakeGitHub, quiet_s: float, timeout_s: float = WAIT_S) -> float:
    """Wait until no request has arrived for ``quiet_s``; the time of the last one's reply."""

    def settled() -> float | None:
        calls = list(github.calls)
        last = calls[-1].end if calls else 0.0
        return last or time.time() if time.time() - last >= quiet_s else None

    return float(wait_for(settled, "GitHub to go quiet", timeout_s))


def lifecycle(
    switch: Switch,
    github: TimedFakeGitHub,
    open_after: int,
    close_after: int,
    reminders: int = 0,
    quiet_s: float = 1.3,  # longer than PyGithub's 1 s between writes
) -> Lifecycle:
    """Fail the target until its issue is filed (and ``reminders`` reminders posted), then heal
    it until the issue is closed. Request windows end when GitHub has been quiet ``quiet_s``."""
    flip = time.time()
    switch.status = 503
    fails = wait_for(lambda: (f := switch.after(flip, 503)) and len(f) >= open_after and f, "fails")
    created = wait_for(
        lambda: next(
            (
                call
                for call in github.calls_between(flip, float("inf"))
                if call.method == "POST" and call.path == ISSUES_PATH and call.status == 201
            ),
            None,
        ),
        "the issue",
    )
    number = int(github.issues()[-1]["number"])
    comments = f"{ISSUES_PATH}/{number}/comments"
    open_end = quiet(github, quiet_s) + 1e-6
    if reminders:
        wait_for(
            lambda: (
                sum(
                    1
                    for call in github.calls_between(open_end, float("inf"))
                    if call.method == "POST" and call.path == comments
                )
                >= reminders
            ),
            "the reminder",
        )
        quiet(github, quiet_s)
    heal = time.time()
    switch.status = 200
    goods = wait_for(
        lambda: (g := switch.after(heal, 200)) and len(g) >= close_after and g, "goods"
    )
    closed = wait_for(
        lambda: next(
            (
                call
                for call in github.calls_between(heal, float("inf"))
                if call.closes and call.path == f"{ISSUES_PATH}/{number}" and call.status == 200
            ),
            None,
        ),
        "the close",
    )
    end = quiet(github, quiet_s) + 1e-6  # trailing requests, if any, are counted
    return Lifecycle(
        first_fail=fails[0],
        confirm_fail=fails[open_after - 1],
        opened=created.end,
        first_good=goods[0],
        confirm_good=goods[close_after - 1],
        closed=closed.end,
        number=number,
        calls_open=github.calls_between(flip, open_end),
        calls_hold=github.calls_between(open_end, heal),
        calls_resolve=github.calls_between(heal, end),
    )


def describe(calls: list[GitHubCall], origin: float) -> list[str]:
    """``+0.123s GET /repos/.../labels/incident -> 200`` lines, relative to ``origin``."""
    return [
        f"+{call.start - origin:.3f}s {call.method} {call.path} -> {call.status}" for call in calls
    ]


def gaps_s(calls: list[GitHubCall]) -> float:
    """Time between consecutive requests (end of one to start of the next): waiting, mostly."""
    return sum(max(0.0, b.start - a.end) for a, b in itertools.pairwise(calls))
