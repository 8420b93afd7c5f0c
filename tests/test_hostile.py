"""Hostile and broken input: targets, environment overrides and GitHub replies.

Invariant 4: bad input anywhere ends in a classified result or a clear error naming
what was wrong, never a crash loop. Targets are real local servers sending bytes no
framework would (``tests/targets.py``); every case must come back from
``Prober.probe_check`` as a :class:`CheckResult` with a reason and a readable detail,
within the check's timeout. The daemon process is run against a target that rotates
through the worst of them, and its resident memory must stay flat. Environment
overrides are fuzzed through the CLI; GitHub's odd replies go through the real daemon.

``python -m tests.test_hostile`` prints the case table of ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from monitor.config import CheckConfig, MonitorSection, TargetConfig
from monitor.probing.prober import Prober
from monitor.probing.results import CheckResult, Outcome, Reason
from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    sample_value,
    wait_for,
    write_config,
)
from tests.fakegithub import (
    DEFAULT_TOKEN,
    FakeGitHub,
    Fault,
    malformed_json,
    redirect,
    status,
)
from tests.ports import free_port
from tests.targets import (
    Connection,
    Handler,
    Request,
    TargetServer,
    huge_body,
    raw,
    redirect_loop,
    reset_mid_body,
    respond,
    slow_body,
    tls_identity,
    truncated_chunked,
    wrong_content_length,
)

MiB = 1024 * 1024
CAP = MiB  # monitor.max_body_bytes, the default
PATH = "/health"
CONDITION = "status == 'ok'"


# ---- probes against hostile targets ----------------------------------------------------------


def _headers(count: int, size: int) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (i, b"a" * size) for i in range(count))


def _json_of_size(size: int) -> bytes:
    """A JSON object with ``status: ok`` of exactly ``size`` bytes."""
    head, tail = b'{"status": "ok", "pad": "', b'"}'
    return head + b"p" * (size - len(head) - len(tail)) + tail


def _nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


_GZIP_BOMB = gzip.compress(b"\0" * (20 * MiB))


@dataclass(frozen=True)
class Case:
    """A hostile answer, what it is, and the result it must come back as."""

    what: str  # for the table in docs/reliability.md
    handler: Handler | None  # None: a TLS case, served by ``tls``
    outcome: Outcome
    reason: Reason
    check: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 2.0
    tls: dict[str, Any] | None = None  # tls_identity() arguments; the client trusts its CA
    detail: str = ""  # a fragment the detail must contain


CASES = [
    Case(
        "chunked body without its last chunk, then FIN",
        truncated_chunked(),
        Outcome.DOWN,
        Reason.ERROR,
        detail="transfer length",
    ),
    Case(
        "Content-Length 100, 3 bytes sent, then FIN",
        wrong_content_length(100, b"abc"),
        Outcome.DOWN,
        Reason.ERROR,
        detail="received 3 of 100 bytes",
    ),
    Case(
        # httpcore read the declared 2 bytes and ignored the rest (up); aiohttp's parser
        # reads the surplus as the start of a next response and refuses the whole answer
        "Content-Length 2, 5 bytes sent (surplus bytes: aiohttp refuses the answer)",
        wrong_content_length(2, b"okxyz"),
        Outcome.DOWN,
        Reason.ERROR,
        detail="Bad status line",
    ),
    Case(
        "1 MB of headers (1,000 lines of 1 KB)",
        raw(b"HTTP/1.1 200 OK\r\n" + _headers(1000, 1000) + b"Content-Length: 0\r\n\r\n"),
        Outcome.DOWN,
        Reason.ERROR,
        detail="over 262,144",
    ),
    Case(
        "one 1 MB header line",
        raw(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MiB + b"\r\nContent-Length: 0\r\n\r\n"),
        Outcome.DOWN,
        Reason.ERROR,
        detail="Got more than 16384 bytes",
    ),
    Case(
        "10,000 tiny headers (a 110 KB head: under the 256 KiB limit, so served)",
        raw(b"HTTP/1.1 200 OK\r\n" + _headers(10_000, 1) + b"Content-Length: 2\r\n\r\nok"),
        Outcome.UP,
        Reason.OK,
    ),
    Case(
        "invalid UTF-8 body, no condition",
        respond(200, b"\xff\xfe\xc3\x28 ok \xe2\x82"),
        Outcome.UP,
        Reason.OK,
    ),
    Case(
        "invalid UTF-8 body with a JSON condition",
        respond(200, b'{"status": "\xff\xfe"}'),
        Outcome.DOWN,
        Reason.INVALID_JSON,
        check={"conditions": [CONDITION]},
    ),
    Case(
        "invalid UTF-8 in a header value",
        raw(b"HTTP/1.1 200 OK\r\nX-Odd: \xff\xfe\xc3\r\nContent-Length: 2\r\n\r\nok"),
        Outcome.UP,
        Reason.OK,
    ),
    Case(
        "NUL byte in a header value",
        raw(b"HTTP/1.1 200 OK\r\nX-Odd: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
        Outcome.DOWN,
        Reason.ERROR,
    ),
    Case(
        "JSON nested 100,000 deep (balanced)",
        respond(200, b"[" * 100_000 + b"]" * 100_000),
        Outcome.DOWN,
        Reason.INVALID_JSON,
        check={"conditions": [CONDITION]},
        detail="not JSON",
    ),
    Case(
        "JSON objects nested 50,000 deep",
        respond(200, _nested(50_000)),
        Outcome.DOWN,
        Reason.INVALID_JSON,
        check={"conditions": [CONDITION]},
    ),
    Case(
        "JSON nested 100,000 deep, no condition (the payload is not needed)",
        respond(200, b"[" * 100_000 + b"]" * 100_000),
        Outcome.UP,
        Reason.OK,
    ),
    Case(
        "JSON of exactly the cap (1 MiB), condition true",
        respond(200, _json_of_size(CAP), {"Content-Type": "application/json"}),
        Outcome.UP,
        Reason.OK,
        check={"conditions": [CONDITION]},
    ),
    Case(
        "JSON one byte over the cap, Content-Length",
        respond(200, _json_of_size(CAP + 1), {"Content-Type": "application/json"}),
        Outcome.DOWN,
        Reason.TOO_LARGE,
        check={"conditions": [CONDITION]},
    ),
    Case(
        "5 MiB chunked, no length announced",
        huge_body(5 * MiB, chunked=True),
        Outcome.DOWN,
        Reason.TOO_LARGE,
    ),
    Case(
        "gzip bomb (20 MiB of zeros in 20 KB)",
        respond(200, _GZIP_BOMB, {"Content-Encoding": "gzip"}),
        Outcome.DOWN,
        Reason.TOO_LARGE,
    ),
    Case(
        "redirect loop, redirects followed",
        redirect_loop(),
        Outcome.DOWN,
        Reason.ERROR,
        check={"follow_redirects": True},
        detail="too many redirects",
    ),
    Case(
        "redirect loop, redirects not followed",
        redirect_loop(),
        Outcome.DOWN,
        Reason.STATUS,
        detail="got 302",
    ),
    Case(
        "body trickling one byte a second (timeout 2 s)",
        slow_body(100, chunk=1, every_s=1.0),
        Outcome.DOWN,
        Reason.TIMEOUT,
        detail="within 2s",
    ),
    Case(
        "connection reset (RST) mid-body",
        reset_mid_body(),
        Outcome.DOWN,
        Reason.ERROR,
        detail="reset by peer",
    ),
    Case(
        "TLS certificate expired",
        None,
        Outcome.DOWN,
        Reason.TLS,
        tls={"expired": True},
        detail="certificate has expired",
    ),
    Case(
        "TLS certificate for another host name",
        None,
        Outcome.DOWN,
        Reason.TLS,
        tls={"hostname": "other.example"},
        detail="mismatch",
    ),
    Case(
        "100 Continue, then FIN",
        raw(b"HTTP/1.1 100 Continue\r\n\r\n"),
        Outcome.DOWN,
        Reason.ERROR,
    ),
    Case(
        "HTTP/1.0, no length, body until FIN",
        raw(b"HTTP/1.0 200 OK\r\n\r\nhello"),
        Outcome.UP,
        Reason.OK,
    ),
    Case(
        "status line with markup and a mention",
        raw(b"HTTP/1.1 2x0 <script>@everyone\r\n\r\n"),
        Outcome.DOWN,
        Reason.ERROR,
        detail="Bad status line",
    ),
]


def _target(url: str, **check: Any) -> TargetConfig:
    return TargetConfig(name="t", url=url, checks=[CheckConfig(name="health", path=PATH, **check)])


async def probe_case(case: Case, server: TargetServer | None = None) -> tuple[CheckResult, float]:
    """Serve ``case`` (on ``server``, or its own TLS server) and probe it once."""
    with _TlsServer(case) as tls_server:
        serving = tls_server or server
        assert serving is not None
        if case.handler is not None:
            serving.route(PATH, case.handler)
        else:
            serving.route(PATH, respond(200, b"ok"))
        verify: Any = True
        if serving.tls is not None:
            verify = serving.tls.client_context()
        target = _target(serving.url, **case.check)
        async with Prober(MonitorSection(timeout=case.timeout_s), verify=verify) as prober:
            started = time.monotonic()
            result = await prober.probe_check(target, target.checks[0])
            return result, time.monotonic() - started


class _TlsServer:
    """A TLS target server for TLS cases, nothing for the others."""

    def __init__(self, case: Case) -> None:
        self.server = TargetServer(tls=tls_identity(**case.tls)) if case.tls is not None else None

    def __enter__(self) -> TargetServer | None:
        return self.server.start() if self.server is not None else None

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()


def assert_classified(result: CheckResult, timeout_s: float, elapsed_s: float) -> None:
    """A result with a known outcome and reason, a one-line detail, in bounded time."""
    assert isinstance(result, CheckResult)
    assert result.outcome in Outcome
    assert result.reason in Reason
    assert result.detail, result
    assert result.detail.isprintable(), result.detail
    assert len(result.detail) <= 250, result.detail
    assert len(result.body_excerpt) <= 300
    assert elapsed_s < timeout_s + 1.0, f"took {elapsed_s:.2f} s with a {timeout_s} s timeout"


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
async def test_hostile_target_is_classified(target_server: TargetServer, case: Case) -> None:
    """Every hostile answer comes back as the expected classified result, never an exception."""
    result, elapsed = await probe_case(case, target_server)

    assert (result.outcome, result.reason) == (case.outcome, case.reason), result
    assert case.detail in result.detail
    assert_classified(result, case.timeout_s, elapsed)
    assert target_server.errors == []


@pytest.fixture(scope="module")
def raw_server() -> Iterator[TargetServer]:
    """One target server for every hypothesis example (each example re-routes it)."""
    with TargetServer(connection_limit_s=3) as server:
        yield server


_HEAD = b"HTTP/1.1 200 OK\r\n"
_wire = st.one_of(
    st.binary(max_size=4096),  # anything at all
    st.binary(max_size=4096).map(lambda b: _HEAD + b),  # a valid status line, then anything
    st.binary(max_size=4096).map(  # a valid head, then any body for the JSON condition
        lambda b: _HEAD + b"Content-Length: %d\r\n\r\n" % len(b) + b
    ),
)


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_wire, conditions=st.booleans())
def test_arbitrary_bytes_are_classified(
    raw_server: TargetServer, data: bytes, conditions: bool
) -> None:
    """Whatever bytes a target sends, the probe returns a classified result in bounded time."""
    raw_server.route(PATH, raw(data))
    check: dict[str, Any] = {"conditions": [CONDITION]} if conditions else {}
    target = _target(raw_server.url, **check)

    async def once() -> tuple[CheckResult, float]:
        async with Prober(MonitorSection(timeout=1)) as prober:
            started = time.monotonic()
            return await prober.probe_check(target, target.checks[0]), time.monotonic() - started

    result, elapsed = asyncio.run(once())

    assert_classified(result, 1.0, elapsed)
    if result.outcome is Outcome.UP:
        assert result.status_code == 200
    assert raw_server.errors == []


# ---- the daemon's memory under hostile targets ----------------------------------------------------


class Rotating:
    """A handler that answers each hit with the next hostile handler, round-robin."""

    def __init__(self, handlers: list[Handler]) -> None:
        self._next = itertools.cycle(handlers)
        self.hits = 0

    async def __call__(self, request: Request, conn: Connection) -> None:
        self.hits += 1
        await next(self._next)(request, conn)


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_daemon_memory_stays_flat_under_hostile_targets(
    tmp_path: Path, daemons: Daemons, target_server: TargetServer
) -> None:
    """The daemon's RSS stays under 150 MB and flat while targets send its worst inputs."""
    hostile = Rotating(
        [
            huge_body(5 * MiB, chunked=True),
            respond(200, _GZIP_BOMB, {"Content-Encoding": "gzip"}),
            raw(b"HTTP/1.1 200 OK\r\n" + _headers(1000, 1000) + b"Content-Length: 0\r\n\r\n"),
            respond(200, b"[" * 100_000 + b"]" * 100_000),
            respond(200, _json_of_size(CAP - 10)),
            respond(503, b"\xff\xfe" * 50_000),
            truncated_chunked(),
            reset_mid_body(),
        ]
    )
    target_server.route(PATH, hostile)
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
        interval=0.2,
        incident_interval=0.1,
        timeout=1,
        metrics_refresh=2,
    )
    daemon = daemons.start(config, clean_env())
    daemon.wait_healthy()
    assert daemon.proc is not None
    pid = daemon.proc.pid

    def after(hits: int) -> int | None:
        wait_for(lambda: hostile.hits >= hits, 30, f"{hits} hostile answers", daemon.logs)
        return rss_kb(pid)

    warm = after(40)  # every handler served five times: pools, caches and buffers exist
    later = after(200)  # then 160 more hostile answers, about 200 MB of them
    peak = max(warm or 0, later or 0)
    assert daemon.running, daemon.logs()
    assert peak < 150 * 1024, f"RSS {peak / 1024:.0f} MB"
    assert later is not None
    assert warm is not None
    assert later - warm < 6 * 1024, f"RSS grew {warm / 1024:.1f} -> {later / 1024:.1f} MB"
    assert target_server.errors == []
    print(f"RSS after 40 hostile answers {warm / 1024:.1f} MB, after 200 {later / 1024:.1f} MB")


# ---- environment overrides through the CLI --------------------------------------------------------

BASE_CONFIG = """
[monitor]
state_path = "state.db"

[github]
repository = "acme/web"

[[targets]]
name = "web"
url = "http://127.0.0.1:9"

[[targets.checks]]
name = "health"
path = "/health"
"""

_ENV_NAMES = [
    "MONITOR_MONITOR__INTERVAL",
    "MONITOR_MONITOR__INCIDENT_INTERVAL",
    "MONITOR_MONITOR__OPEN_AFTER",
    "MONITOR_MONITOR__LISTEN",
    "MONITOR_MONITOR__MAX_BODY_BYTES",
    "MONITOR_MONITOR__JITTER",
    "MONITOR_MONITOR__STATE_PATH",
    "MONITOR_MONITOR",
    "MONITOR_GITHUB",
    "MONITOR_GITHUB__LABELS",
    "MONITOR_GITHUB__ENABLED",
    "MONITOR_GITHUB__API_URL",
    "MONITOR_GITHUB__REPOSITORY",
    "MONITOR_TARGETS",
    "MONITOR_STATUS_PAGE",
    "MONITOR_STATUS_PAGE__TARGETS",
    "MONITOR_STATUS_PAGE__PUBLIC_URL",
]
_env_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
_env_values = st.one_of(
    _env_text,
    st.sampled_from(
        ["", " ", "0", "-1", "1e999", "inf", "nan", "true", "[", "{", "[]", "{}", "null"]
    ),
    st.lists(_env_text, max_size=3).map(json.dumps),
    st.dictionaries(st.sampled_from(["interval", "name", "url", "x"]), _env_text).map(json.dumps),
)
_env_names = st.one_of(
    st.sampled_from(_ENV_NAMES),
    st.from_regex(r"MONITOR_[A-Za-z0-9_]{1,24}", fullmatch=True),
)
TOKEN_SENTINEL = "env-fuzz-token-sentinel-0b7e"


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid config that the fuzzed environment overrides."""
    path = tmp_path_factory.mktemp("envfuzz") / "config.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    return path


@hypothesis.settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides=st.dictionaries(_env_names, _env_values, min_size=1, max_size=3))
def test_environment_overrides_fail_cleanly(base_config: Path, overrides: dict[str, str]) -> None:
    """Any MONITOR_* override either works or exits 2 with a message: no traceback, no token."""
    env = clean_env(GITHUB_TOKEN=TOKEN_SENTINEL, **overrides)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "--config", str(base_config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=base_config.parent,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert TOKEN_SENTINEL not in output, output
    if done.returncode == 0:
        assert json.loads(done.stdout)["targets"], done.stdout
        return
    assert done.returncode == 2, (done.returncode, output)
    assert done.stdout == "", done.stdout
    assert done.stderr.startswith("monitor: invalid configuration\n"), done.stderr
    problems = done.stderr.splitlines()[1:]
    assert problems, done.stderr
    assert all(line.startswith("  ") and line.strip() for line in problems), done.stderr


# ---- odd GitHub replies through the real daemon -----------------------------------------------


@dataclass(frozen=True)
class ReplyCase:
    """A reply GitHub should never give to a create, and the error reason it must show as."""

    name: str
    fault: Callable[[str], Fault]  # from the issues path
    reason: str
    created_by_fault: bool  # GitHub acted before the odd reply: the retry must adopt


REPLY_CASES = [
    ReplyCase("malformed-json", lambda _: malformed_json(), "malformed", True),
    ReplyCase("missing-fields", lambda _: status(201, {"id": 1}, commit=True), "redirect", True),
    ReplyCase("teapot-418", lambda _: status(418), "http_error", False),
    ReplyCase("legal-451", lambda _: status(451), "http_error", False),
    ReplyCase("server-500", lambda _: status(500), "server_error", False),
    ReplyCase("redirect-301-self", lambda path: redirect(path, 301), "redirect", False),
    ReplyCase("redirect-307", lambda path: redirect(path, 307), "redirect", False),
]


@dataclass
class ReplyRun:
    """One daemon filing into its own repository through one odd reply."""

    case: ReplyCase
    repo: str
    daemon: DaemonProcess

    @property
    def issues_path(self) -> str:
        return f"/repos/{self.repo}/issues"


@pytest.mark.e2e
def test_odd_github_replies_are_retried_and_file_exactly_once(
    tmp_path: Path, daemons: Daemons, target_server: TargetServer
) -> None:
    """Each odd reply to a create: queued, retried, visible in /metrics and /healthz, one issue."""
    repos = [f"acme/{case.name}" for case in REPLY_CASES]
    with FakeGitHub(repos=repos) as github:
        runs = []
        for case, repo in zip(REPLY_CASES, repos, strict=True):
            for label in ("incident", "monitor", "target:web"):
                github.add_label(repo, label)
            path = f"/repos/{repo}/issues"
            github.inject("POST", path, case.fault(path))
            target_server.route(f"/{case.name}{PATH}", respond(503, b"down"))
            workdir = tmp_path / case.name
            workdir.mkdir()
            config = write_config(
                workdir / "config.toml",
                target_url=f"{target_server.url}/{case.name}",
                listen_port=free_port(),
                state_path=workdir / "state.db",
                github_url=github.url,
            )
            text = config.read_text("utf-8").replace('"acme/web"', json.dumps(repo))
            config.write_text(text, encoding="utf-8")
            daemon = daemons.start(config, clean_env(GITHUB_TOKEN=DEFAULT_TOKEN))
            runs.append(ReplyRun(case, repo, daemon))

        def context() -> str:
            issues = {
                r.repo: [(i["number"], i["state"]) for i in github.issues(r.repo)] for r in runs
            }
            requests = [f"{q.method} {q.path} -> {q.status}" for q in github.requests[-60:]]
            return f"issues: {issues}\nrequests: {requests}\n{daemons.logs()}"

        def settled(run: ReplyRun) -> bool:
            try:
                pending = run.daemon.value("monitor_outbox_pending")
            except OSError:
                return False
            return pending == 0 and len(github.issues(run.repo)) == 1

        wait_for(lambda: all(settled(r) for r in runs), 40, "every issue filed", context)

        for run in runs:
            name, reason = run.case.name, run.case.reason
            issues = github.issues(run.repo)
            assert [i["state"] for i in issues] == ["open"], (name, context())
            creates = [
                q.status
                for q in github.requests
                if q.method == "POST" and q.path == run.issues_path
            ]
            # one odd reply, then one good create unless the odd one had already created it
            assert len(creates) == (1 if run.case.created_by_fault else 2), (name, creates)
            samples = run.daemon.samples()
            errors = sample_value(
                samples, "monitor_github_errors_total", operation="open", reason=reason
            )
            assert errors is not None, (name, reason, context())
            assert errors >= 1, (name, reason)
            _, health = run.daemon.healthz()
            assert health["sink"]["last_error_reason"] == reason, (name, health)
            assert health["sink"]["last_error"], (name, health)
            assert health["sink"]["last_success_at"], (name, health)
            if run.case.created_by_fault:
                adopted = run.daemon.events("adopting existing issue instead of creating one")
                assert adopted, (name, run.daemon.logs())
            assert all("Traceback" not in line for line in run.daemon.stdout().splitlines())
        assert github.pending_faults == 0
        assert github.errors == []


# ---- the table for docs/reliability.md ----------------------------------------------------------


async def _table() -> str:
    rows = ["| Hostile answer | Outcome | Reason | Detail (as logs and issues show it) | Took |"]
    rows.append("|---|---|---|---|---|")
    with TargetServer() as server:
        for case in CASES:
            result, elapsed = await probe_case(case, server)
            detail = result.detail.replace("|", "\\|")
            rows.append(
                f"| {case.what} | {result.outcome.value} | {result.reason.value}"
                f" | {detail} | {elapsed:.2f} s |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    print(asyncio.run(_table()))
