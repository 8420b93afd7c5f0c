"""Secrets and injection: sentinel secrets through every command and endpoint.

Invariant 3: a secret appears in no log line, issue, metric or page. Two sentinels
are in play: the GitHub token (the only one the fake GitHub accepts) and a check's
``Authorization`` header value. One incident runs from open to close through the real
daemon while GitHub errors, a stdlib logger speaks and the HTTP surface is probed
with hostile requests; then every one-shot command runs on the same config and state.
Each sentinel must reach exactly where it belongs (GitHub's Authorization header, the
target's) and nowhere else: not stdout, stderr, pages, badges, metrics, issue text.

The same run carries hostile text from the target (mentions, fences, markup, issue
references, forged log lines): the issue must show it inert, the status page escaped,
and the log must stay one JSON object per line.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.incidents.text import body, changed_comment, reopened_comment
from monitor.incidents.tracker import Incident
from monitor.probing.results import Outcome, Reason, TargetResult
from tests.builders import T0, check
from tests.daemon_process import (
    DaemonProcess,
    Daemons,
    clean_env,
    http_get,
    wait_for,
    write_config,
)
from tests.fakegithub import DEFAULT_REPO, FakeGitHub, status
from tests.ports import free_port
from tests.targets import Connection, Request, TargetServer, raw, respond

TOKEN = "sentinel-gh-token-3c9a71e0d5"
HEADER = "sentinel-check-header-8f2b46d1"
SENTINELS = (TOKEN, HEADER)
LABELS = ("incident", "monitor", "target:web")
ISSUES = r"/repos/acme/web/issues"

HOSTILE_TEXT = "@everyone <script>alert(1)</script> #1 GH-2 ``` ~~~ <img src=x onerror=alert(2)>"
FORGED = '"}\n{"event":"forged","level":"critical"}'
# a header line that is not one: the HTTP parser quotes it in the probe's detail, our words then
BROKEN_HEAD = (
    b"HTTP/1.1 200 OK\r\n<script>@everyone #1 ``` "
    + FORGED.replace("\n", " ").encode()
    + b"\r\nContent-Length: 0\r\n\r\n"
)


class HostileTarget:
    """``/health`` answering by ``mode``, with hostile text in every failing answer.

    ``condition``: a 200 whose JSON makes the condition false (its fields go into the
    issue's health table, its body into the excerpt); ``broken``: a head aiohttp rejects
    (its bytes go into the probe's detail, hence the table and a changed-failure
    comment); ``status``: a 503 with the same JSON. The healthy answer carries a
    version with a forged log line in it; changing it is a deployment, which is logged.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.version = "1.0"
        self.authorizations: list[str | None] = []

    async def __call__(self, request: Request, conn: Connection) -> None:
        self.authorizations.append(request.header("authorization"))
        mode = self.mode
        if mode == "broken":
            await raw(BROKEN_HEAD)(request, conn)
            return
        payload: dict[str, Any] = {"status": "ok", "version": self.version + FORGED}
        if mode != "ok":
            payload = {
                "status": HOSTILE_TEXT,
                "version": f"9.9{FORGED}",
                "errorRate": FORGED,
                "activeAlerts": [HOSTILE_TEXT, "```\n</details><script>x</script>"],
                "text": "```\n" + HOSTILE_TEXT + "\n```\n" + "`" * 12 + "\n" + FORGED,
            }
        await respond(
            503 if mode == "status" else 200,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )(request, conn)


Runs = dict[str, tuple[list[str], dict[str, str]]]


def _monitor(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _finish(_start({"one": (list(args), env)}, cwd))["one"]


def _start(runs: Runs, cwd: Path) -> dict[str, subprocess.Popen[str]]:
    """``python -m monitor ARGS`` for every run at once (they are independent)."""
    return {
        name: subprocess.Popen(
            [sys.executable, "-m", "monitor", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(**env),
            cwd=cwd,
        )
        for name, (args, env) in runs.items()
    }


def _finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Wait for every run (bounded); whatever still runs on the way out is killed."""
    done = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    return done


def _collect(
    done: dict[str, subprocess.CompletedProcess[str]], expected: int | None
) -> dict[str, str]:
    found = {}
    for name, run in done.items():
        if expected is not None:
            assert run.returncode == expected, (name, run.stdout[-2000:], run.stderr[-2000:])
        found[f"{name} stdout"], found[f"{name} stderr"] = run.stdout, run.stderr
    return found


def _raw_request(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse before reading it all
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


# ---- what must hold of issue text ------------------------------------------------------------

_FENCE = re.compile(r"^(`{3,}|~{3,})")
_OUR_TAGS = re.compile(r"<(?!/?(?:details|summary|sub)>|!-- monitor:(?:incident|action) )")
_LIVE_REF = re.compile(r"(?<![\w&/])(?:#\d|GH-\d)")


def split_fences(markdown: str) -> tuple[str, list[str]]:
    """(text outside code fences, the fenced blocks), by CommonMark's fence rules."""
    outside, blocks, current = [], [], None
    opener = ""
    for line in markdown.split("\n"):
        if current is None:
            found = _FENCE.match(line)
            if found:
                opener, current = found[1], []
            else:
                outside.append(line)
            continue
        stripped = line.strip()
        closes = (
            stripped
            and set(stripped) == {opener[0]}
            and len(stripped) >= len(opener)
            and line.startswith(opener[0])
        )
        if closes:
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    assert current is None, f"a code fence never closes:\n{markdown}"
    return "\n".join(outside), blocks


def assert_inert(markdown: str) -> None:
    """No live mention, issue reference or foreign HTML outside code fences; fences close."""
    outside, blocks = split_fences(markdown)
    assert "@everyone" not in outside, outside
    assert not _OUR_TAGS.search(outside), _OUR_TAGS.search(outside)
    assert not _LIVE_REF.search(outside), _LIVE_REF.search(outside)
    assert markdown.count("<!-- monitor:incident ") <= 1
    # a fence the target closed early would leave the rest of its text outside, live
    assert len(blocks) == markdown.count("<summary>Response excerpt"), blocks


# ---- one incident, every command, every page ----------------------------------------------------


@pytest.mark.e2e
def test_secrets_stay_out_and_hostile_text_stays_inert(
    tmp_path: Path, daemons: Daemons, target_server: TargetServer
) -> None:
    """Pins both sentinels out of every output, and hostile target text inert everywhere."""
    target = HostileTarget()
    target_server.route("/health", target)
    with FakeGitHub(valid_tokens=[TOKEN]) as github:
        for label in LABELS:
            github.add_label(DEFAULT_REPO, label)
        github.inject("POST", ISSUES, status(500))  # a GitHub error is logged on the way
        config = write_config(
            tmp_path / "config.toml",
            target_url=target_server.url,
            listen_port=free_port(),
            state_path=tmp_path / "state.db",
            github_url=github.url,
            headers={"Authorization": f"Bearer {HEADER}"},
        )
        text = config.read_text("utf-8").replace(
            'path = "/health"',
            'path = "/health"\nversion = "version"\nconditions = ["status == \'ok\'"]',
        )
        config.write_text(text, encoding="utf-8")
        daemon = daemons.start(config, clean_env(GITHUB_TOKEN=TOKEN))
        daemon.wait_healthy()
        early = _start(_early_commands(tmp_path, config), tmp_path)  # beside the daemon
        outputs: dict[str, str] = {}
        context = functools.partial(_context, github, daemons)

        # a stdlib logger line (uvicorn's) about a request that carries a sentinel
        outputs["bad request"] = _raw_request(
            daemon.port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization Bearer "
            + HEADER.encode()
            + b"\r\n\r\n",
        ).decode("latin-1")
        outputs.update(_http_surface(daemon))
        done = _finish(early)
        outputs.update(_collect(done, None))
        assert done["config"].returncode == 0, done["config"]
        assert done["run token without repository"].returncode == 2, done
        assert done["run unopenable state"].returncode != 0, done
        assert "Traceback" not in done["run unopenable state"].stderr, done

        target.mode = "condition"
        wait_for(lambda: _open(github) == 1, 20, "the issue open", context)
        target.mode = "broken"
        wait_for(
            lambda: any("failure changed" in c for c in _comments(github)),
            20,
            "a changed-failure comment",
            context,
        )
        outputs.update(_pages(daemon, "during"))
        target.mode = "ok"
        target.version = "2.0"
        wait_for(lambda: _closed(github), 30, "the issue closed", context)
        outputs.update(_pages(daemon, "after"))
        daemon.terminate()
        assert daemon.wait(10) == 0, daemon.logs()
        outputs["run stdout"] = daemon.stdout()
        outputs["run stderr"] = daemon.stderr()

        target.mode = "status"
        done = _finish(_start(_late_commands(config), tmp_path))
        outputs.update(_collect(done, None))
        for name, run in done.items():
            assert run.returncode == (0 if name.startswith("report") else 1), (name, run)
        assert _open(github) == 1, "verify --file-incident filed its issue"
        issue_texts = {
            f"issue #{i['number']} {part}": i[part] or ""
            for i in github.issues()
            for part in ("title", "body")
        }
        issue_texts.update(
            {
                f"issue #{i['number']} comment {n}": c["body"]
                for i in github.issues()
                for n, c in enumerate(github.comments(DEFAULT_REPO, i["number"]))
            }
        )
        outputs.update(issue_texts)

        # both secrets were really in use, where they belong
        assert TOKEN in github.tokens_seen
        assert f"Bearer {HEADER}" in target.authorizations
        for secret in SENTINELS:
            leaked = [name for name, out in outputs.items() if secret in out]
            assert leaked == [], f"{secret} found in: {leaked}"
            assert github.leaks(secret) == [], github.leaks(secret)
        assert github.errors == []

    # the hostile text: inert in the issue, escaped on the page, no forged log line
    for name, markdown in issue_texts.items():
        if "title" in name:
            assert "@everyone" not in markdown
            assert "<" not in markdown
        else:
            assert_inert(markdown)
    assert "<script>alert(1)" not in outputs["page during"]
    assert "<img src=x" not in outputs["page during"]
    issue_text = "\n".join(issue_texts.values())
    assert "@\u200beveryone" in issue_text, "the hostile text never reached the issue"
    assert "Invalid header token" in issue_text, "the hostile detail never reached the issue"
    assert any("@everyone" in b for t in issue_texts.values() for b in split_fences(t)[1])
    records = daemon.log_records()  # AssertionError on any line that is not one JSON object
    assert not [r for r in records if r.get("event") == "forged"], "a forged log record"
    assert any(r.get("event") == "Invalid HTTP request received." for r in records)
    assert any(r.get("event") == "outbox action failed; will retry" for r in records)
    deployed = [r for r in records if r.get("event") == "deployment seen"]
    assert deployed, "no deployment logged"
    assert '"event":"forged"' in deployed[0]["to_version"]  # kept as data, inside one line


def _context(github: FakeGitHub, daemons: Daemons) -> str:
    issues = [(i["number"], i["state"]) for i in github.issues()]
    requests = [f"{r.method} {r.path} -> {r.status}" for r in github.requests[-30:]]
    return f"issues: {issues}\nrequests: {requests}\n{daemons.logs()}"


def _open(github: FakeGitHub) -> int:
    return sum(1 for i in github.issues() if i["state"] == "open")


def _closed(github: FakeGitHub) -> bool:
    issues = github.issues()
    return bool(issues) and all(i["state"] == "closed" for i in issues)


def _comments(github: FakeGitHub) -> list[str]:
    return [c["body"] for i in github.issues() for c in github.comments(DEFAULT_REPO, i["number"])]


def _pages(daemon: DaemonProcess, when: str) -> dict[str, str]:
    """Every page the daemon serves, as text."""
    paths = {
        "metrics": "/metrics",
        "healthz": "/healthz",
        "api": "/api/status",
        "page": "/status",
        "badge": "/badge/web.svg",
        "uptime badge": "/badge/web/uptime.svg?window=24h",
    }
    found = {}
    for name, path in paths.items():
        code, text = http_get(daemon.base_url + path)
        assert code in (200, 503), (path, code, text[:300])
        found[f"{name} {when}"] = text
    return found


def _http_surface(daemon: DaemonProcess) -> dict[str, str]:
    """Unknown paths, traversal, big bodies and headers: refused, in JSON, and no harm done."""
    found = {}
    for path in (
        "/badge/..%2F..%2Fetc%2Fpasswd.svg",
        "/badge/%2e%2e%2f%2e%2e%2fetc%2fpasswd.svg",
        "/badge/../../etc/passwd.svg",
        "/badge/web/..%2F..%2Fmetrics/uptime.svg",
        "/status/../../etc/passwd",
        "/nope",
    ):
        code, text = http_get(daemon.base_url + path)
        assert code == 404, (path, code, text)
        assert "error" in json.loads(text), (path, text)
        assert "root:" not in text
        found[f"404 {path}"] = text
    too_big = _raw_request(
        daemon.port,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000,
    )
    assert too_big.startswith(b"HTTP/1.1 413"), too_big[:200]
    huge_head = _raw_request(
        daemon.port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n",
    )
    assert not huge_head.startswith(b"HTTP/1.1 200"), huge_head[:200]
    many_headers = _raw_request(
        daemon.port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(20_000))
        + b"\r\n",
    )
    assert not many_headers.startswith(b"HTTP/1.1 200"), many_headers[:200]
    code, _ = http_get(daemon.base_url + "/healthz")
    assert code == 200, "the daemon is unwell after hostile requests"
    found["413"] = too_big.decode("latin-1")
    return found


def _early_commands(tmp_path: Path, config: Path) -> Runs:
    """Commands that need nothing from the target or the state: run beside the daemon."""
    # a forced traceback (if `run` ever let one out): a state file it cannot open
    broken = tmp_path / "broken.toml"
    broken.write_text(
        config.read_text("utf-8").replace(str(tmp_path / "state.db"), "/proc/no-such-dir/x.db"),
        encoding="utf-8",
    )
    # a configuration error that involves the token
    no_repo = tmp_path / "no-repo.toml"
    no_repo.write_text(
        "\n".join(
            line for line in config.read_text("utf-8").splitlines() if "repository" not in line
        ),
        encoding="utf-8",
    )
    token = {"GITHUB_TOKEN": TOKEN}
    return {
        "config": (["config", "--config", str(config)], token),
        "run unopenable state": (["run", "--config", str(broken)], token),
        "run token without repository": (["run", "--config", str(no_repo)], token),
    }


def _late_commands(config: Path) -> Runs:
    """Commands run on the daemon's state with the target failing (each exits 1 but report)."""
    cfg = str(config)
    token = {"GITHUB_TOKEN": TOKEN}
    verify = [
        "verify",
        "--config",
        cfg,
        "--target",
        "web",
        "--interval",
        "200ms",
        "--duration",
        "5s",
    ]
    return {
        "check down": (["check", "--config", cfg], {"MONITOR_GITHUB__TOKEN": TOKEN}),
        "check down --json": (["check", "--config", cfg, "--json"], token),
        "verify down --json --file-incident": ([*verify, "--json", "--file-incident"], token),
        "report --json": (["report", "--config", cfg, "--json"], token),
    }


# ---- a target that reflects the check's secret --------------------------------------------------


async def _echo_in_a_broken_header(request: Request, conn: Connection) -> None:
    """Reflects the request's Authorization into a header line aiohttp quotes in its error."""
    echoed = (request.header("authorization") or "").encode()
    await raw(b"HTTP/1.1 200 OK\r\nX-Echo " + echoed + b"\r\nContent-Length: 0\r\n\r\n")(
        request, conn
    )


def test_check_output_masks_a_secret_the_target_reflects(
    tmp_path: Path, target_server: TargetServer
) -> None:
    """Pins the check header out of `monitor check --json` when the target echoes it back."""
    target_server.route("/health", _echo_in_a_broken_header)
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
        headers={"Authorization": f"Bearer {HEADER}"},
    )
    done = _monitor("check", "--config", str(config), "--json", cwd=tmp_path)
    assert done.returncode == 1, done
    assert target_server.requests("/health")[0].header("authorization") == f"Bearer {HEADER}"
    assert HEADER not in done.stdout + done.stderr, done.stdout


def test_issue_text_masks_a_secret_quoted_in_a_probe_detail() -> None:
    """Pins a reflected 'Bearer <secret>' in a probe's detail out of the issue and comments.

    The detail path (checks table, timeline, changed-failure comment), beside the
    excerpt path that test_e2e pins through the daemon.
    """
    detail = f"broken response: Invalid header token: b'X-Echo Bearer {HEADER}' ^"
    failing = check(Outcome.DOWN, Reason.ERROR, target="web", status=None, detail=detail)
    result = TargetResult(target="web", at=T0, checks=(failing,))
    incident = Incident(
        id="web-20261101T120000Z",
        target="web",
        started_at=T0,
        probes_total=3,
        probes_failed=3,
        signature=("health:error",),
    )
    texts = [
        body(incident, result, T0 + timedelta(minutes=1)),
        changed_comment(incident, result, "was health:status; now health:error", "k"),
    ]
    assert all(HEADER not in t for t in texts), texts


def test_reopen_comment_has_no_live_issue_reference() -> None:
    """Pins our own comment text free of accidental #N issue references."""
    failing = check(Outcome.DOWN, Reason.STATUS, target="web", status=503)
    result = TargetResult(target="web", at=T0, checks=(failing,))
    incident = Incident(id="web-20261101T120000Z", target="web", started_at=T0, reopened=1)
    assert_inert(reopened_comment(incident, result, "k"))


def test_split_fences_finds_what_a_fence_hides() -> None:
    """The fence parser used above: a longer fence holds shorter runs; a stray one never closes."""
    outside, blocks = split_fences("a\n````text\n```\n@x\n````\nb")
    assert (outside, blocks) == ("a\nb", ["```\n@x"])
    with pytest.raises(AssertionError, match="never closes"):
        split_fences("```text\nno end")


def test_assert_inert_catches_live_text() -> None:
    """The inertness check itself: it fails on a live mention, tag or reference."""
    for live in ("hi @everyone", "<script>x</script>", "see #12", "GH-3 again"):
        with pytest.raises(AssertionError):
            assert_inert(live)
    assert_inert(
        "ok @\u200beveryone &lt;script&gt; #\u200b12\n"
        "<details><summary>Response excerpt: x</summary>\n```text\n@everyone #1\n```\n</details>"
    )
