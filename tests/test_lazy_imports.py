"""What each command and the daemon's start-up import, in a fresh interpreter each.

Import cost is start-up time and resident memory (docs/benchmarks.md, section 3): a
command loads what it uses, and the daemon loads PyGithub and the status page's
templates when they are first needed, not before its first probe. A stray top-level
import would undo that without failing anything else; these tests say which one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.store.sqlite import SqliteStore
from tests.daemon_process import clean_env
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

# What no one-shot command below needs: the daemon and its server, the status page,
# PostgreSQL, the paging channels' libraries, and PyGithub with what it drags in.
NEVER_FOR_A_COMMAND = (
    "monitor.daemon",
    "monitor.web",
    "monitor.incidents.channels",
    "uvicorn",
    "starlette",
    "jinja2",
    "apscheduler",
    "psycopg",
    "standardwebhooks",
    "github",
    "requests",
    "cryptography",
    "nacl",
)
# PyGithub and the templates: loaded by the daemon on first use, after its first probe
NOT_BEFORE_FIRST_USE = ("github", "requests", "cryptography", "nacl", "jinja2")

COMMAND = """
import contextlib, gc, io, json, sys
from monitor.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
answer = {"code": code, "modules": sorted(sys.modules), "frozen": gc.get_freeze_count()}
print(json.dumps(answer))
"""


def run_child(code: str, *args: str, cwd: Path, **env: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; its last stdout line is its JSON answer."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return answer


def loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages included) are in ``modules``."""
    assert isinstance(modules, list)
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """One target nobody answers for (a probe is refused at once) and a state file with
    its schema, so ``report`` has something to read."""
    state = tmp_path / "state.db"
    SqliteStore(state).close()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[monitor]\nstate_path = "{state}"\ntimeout = "2s"\n\n'
        '[[targets]]\nname = "web"\nurl = "http://127.0.0.1:9"\n'
        '  [[targets.checks]]\n  name = "health"\n  path = "/health"\n',
        "utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("command", "code", "also_absent"),
    [
        # prometheus-client: the history reads the bucket bounds of monitor.metrics only
        pytest.param(
            ["report", "--json"], 0, ("prometheus_client", "httpx", "aiohttp"), id="report"
        ),
        pytest.param(
            ["config"], 0, ("prometheus_client", "httpx", "aiohttp", "croniter"), id="config"
        ),
        # the gate probes (httpx over aiohttp) but asks GitHub nothing without --no-open-incident
        pytest.param(["check", "--json"], 1, ("prometheus_client", "croniter"), id="check"),
    ],
)
def test_a_command_imports_only_what_it_uses(
    config: Path, tmp_path: Path, command: list[str], code: int, also_absent: tuple[str, ...]
) -> None:
    """Pins each command's imports: none of the daemon's, the page's or PyGithub's. The
    command that probes has frozen its start-up objects (monitor.heap), the others not."""
    answer = run_child(COMMAND, *command, "--config", str(config), cwd=tmp_path)
    assert answer["code"] == code
    assert loaded(answer["modules"], NEVER_FOR_A_COMMAND + also_absent) == []
    frozen = answer["frozen"]
    assert isinstance(frozen, int)
    assert (frozen > 10_000) is (command[0] == "check"), frozen


RUN_FROZEN = """
import contextlib, gc, io, json, sys
from monitor.cli import main
from monitor.daemon.daemon import Daemon

async def counted(self):  # stands in for the daemon's loop: what was frozen by then
    return 10 if gc.get_freeze_count() > 10_000 else 0

Daemon.run = counted
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code}))
"""


def test_monitor_run_freezes_its_start_up_objects_before_it_runs(
    config: Path, tmp_path: Path
) -> None:
    """``monitor run`` builds the daemon, then freezes what start-up made, then runs."""
    answer = run_child(RUN_FROZEN, "run", "--config", str(config), cwd=tmp_path)
    assert answer["code"] == 10


DAEMON = """
import asyncio, json, logging, sys
from pathlib import Path
from monitor.config import load_settings
from monitor.daemon.daemon import Daemon
from monitor.web.maintenance_api import maintenance_routes
from monitor.web.routes import status_routes
from monitor.web.server import create_app

async def main():
    daemon = Daemon(load_settings(Path(sys.argv[1])))
    routes = [*status_routes(daemon), *maintenance_routes(daemon)]
    create_app(daemon.metrics, daemon, extra_routes=routes)
    started = sorted(sys.modules)
    if sys.argv[2] == "reconcile":  # what the start-up reconcile does first, in its thread
        await asyncio.to_thread(daemon.dispatch.channels[0].open_marked_issues)
    else:  # the first housekeeping pass: the leader's KPI sync
        await asyncio.to_thread(daemon.kpis.tick, True)
    daemon.store.close()
    return {
        "sink": daemon.dispatch.channels[0].name,
        "started": started,
        "used": sorted(sys.modules),
        "github_handlers": len(logging.getLogger("github").handlers),
    }

print(json.dumps(asyncio.run(main())))
"""


@pytest.mark.parametrize("first_use", ["reconcile", "kpi-sync"])
def test_the_daemon_loads_pygithub_on_first_use_without_its_stderr_handler(
    config: Path, tmp_path: Path, first_use: str
) -> None:
    """Pins that a daemon with the GitHub sink is built, server and routes included,
    without PyGithub or Jinja2; that whichever first needs GitHub (the reconcile or
    the KPI sync) loads it; and that PyGithub's own stderr handler is detached then."""
    with FakeGitHub() as github:
        answer = run_child(
            DAEMON,
            str(config),
            first_use,
            cwd=tmp_path,
            GITHUB_TOKEN=DEFAULT_TOKEN,
            MONITOR_GITHUB__REPOSITORY=DEFAULT_REPO,
            MONITOR_GITHUB__API_URL=github.url,
        )
    assert answer["sink"] == "github"
    assert loaded(answer["started"], NOT_BEFORE_FIRST_USE) == []
    assert "github" in loaded(answer["used"], NOT_BEFORE_FIRST_USE)
    assert answer["github_handlers"] == 0


DEFERRED = """
import json, sys, threading
from monitor.heap import defer_import

defer_import("jwt")
defer_import("a_module_nobody_installed")
import github  # imports PyJWT, for GitHub App authentication

before = {
    "stand_in": type(sys.modules["jwt"]).__name__,
    "cryptography": "cryptography" in sys.modules,
    "jwt.algorithms": "jwt.algorithms" in sys.modules,
}
try:
    import a_module_nobody_installed
except ModuleNotFoundError as exc:
    before["missing"] = exc.name

import jwt

tokens = []
threads = [
    threading.Thread(target=lambda: tokens.append(jwt.encode({"n": 1}, "k" * 32, "HS256")))
    for _ in range(8)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
from jwt import decode  # a from-import of the stand-in

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
app_jwt = github.Auth.AppAuth(123, pem).token  # PyGithub's own use of PyJWT
claims = decode(app_jwt, key.public_key(), algorithms=["RS256"])
print(json.dumps({
    "before": before,
    "decoded": [decode(t, "k" * 32, algorithms=["HS256"]) for t in tokens],
    "app_issuer": claims["iss"],
    "after": type(sys.modules["jwt"]).__name__,
    # one run of each module: the classes the package uses are the submodule's own
    "loaded_once": jwt.api_jws.Algorithm is sys.modules["jwt.algorithms"].Algorithm,
}))
"""


def test_a_deferred_module_runs_when_first_used(tmp_path: Path) -> None:
    """Pins ``defer_import``: ``import jwt`` (PyGithub's) runs nothing, so cryptography
    stays out; the first attribute read runs the real module once, whichever of eight
    threads gets there first; a from-import and PyGithub's App JWT work through the
    stand-in; a module that is not installed still fails its import."""
    answer = run_child(DEFERRED, cwd=tmp_path)
    assert answer["before"] == {
        "stand_in": "_DeferredModule",
        "cryptography": False,
        "jwt.algorithms": False,
        "missing": "a_module_nobody_installed",
    }
    assert answer["decoded"] == [{"n": 1}] * 8
    assert answer["app_issuer"] == "123"
    assert answer["after"] == "module"
    assert answer["loaded_once"] is True


SUBMODULE_FIRST = """
import json, sys
from monitor.heap import defer_import

defer_import("jwt")
import jwt.algorithms  # a submodule before anything of the package is read

package_ran = type(sys.modules["jwt"]).__name__ != "_DeferredModule"
from jwt.api_jws import PyJWS

PyJWS().register_algorithm("HS999", jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256))
print(json.dumps({
    "package_ran_on_submodule_import": package_ran,
    "loaded_once": sys.modules["jwt.api_jws"].Algorithm is sys.modules["jwt.algorithms"].Algorithm,
}))
"""


def test_a_deferred_package_runs_its_submodules_once(tmp_path: Path) -> None:
    """Importing a submodule of a deferred package first runs the submodule alone; the
    package, run later, reuses it: one class ``Algorithm``, so registering one works."""
    answer = run_child(SUBMODULE_FIRST, cwd=tmp_path)
    assert answer == {"package_ran_on_submodule_import": False, "loaded_once": True}


RUN_GITHUB = """
import asyncio, contextlib, io, json, sys
from monitor.cli import main
from monitor.daemon.daemon import Daemon

used = {}

async def first_uses(self):  # stands in for the daemon's loop: the reconcile, the KPI sync
    await asyncio.to_thread(self.dispatch.channels[0].open_marked_issues)
    await asyncio.to_thread(self.kpis.tick, True)
    used["modules"] = sorted(sys.modules)
    self.store.close()
    return 0

Daemon.run = first_uses
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, **used}))
"""


def test_monitor_run_talks_to_github_without_loading_cryptography(
    config: Path, tmp_path: Path
) -> None:
    """``monitor run`` defers PyJWT: the reconcile and the KPI sync use PyGithub with a
    token, and neither PyJWT's algorithms nor cryptography (~9 MB) load."""
    with FakeGitHub() as github:
        answer = run_child(
            RUN_GITHUB,
            "run",
            "--config",
            str(config),
            cwd=tmp_path,
            GITHUB_TOKEN=DEFAULT_TOKEN,
            MONITOR_GITHUB__REPOSITORY=DEFAULT_REPO,
            MONITOR_GITHUB__API_URL=github.url,
        )
        assert github.requests, "the child never asked GitHub anything"
    assert answer["code"] == 0
    assert "github" in loaded(answer["modules"], ("github",))
    assert loaded(answer["modules"], ("cryptography", "jwt.algorithms", "croniter")) == []
