"""The deployment files agree with the code: fly.toml, the Dockerfile, the lock, the
Grafana dashboard and the example workflows.

Docker has no engine on the development machine, so the image is checked statically:
its instructions are parsed and compared with what the daemon needs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import json
import os
import re
import shlex
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from monitor.cli import build_parser
from monitor.config import (
    MonitorSection,
    daemon_problems,
    load_settings,
    parse_duration,
    split_listen,
)
from monitor.incidents.outbox import OutboxWorker
from monitor.metrics import Metrics
from monitor.web.server import create_app
from tests.daemon_process import image_python_flags

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FLY_TOML = DEPLOY / "fly.toml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
LOCK = ROOT / "requirements.lock"
LOCK_GENERATOR = DEPLOY / "lock_requirements.py"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
WORKFLOWS = sorted((DEPLOY / "github-actions").glob("*.yml"))
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# Daemon._shutdown waits this long for uvicorn after the in-flight probes and the
# GitHub worker (a literal there, not a setting).
HTTP_STOP_S = 5.0
# Fly refuses a kill_timeout above five minutes.
FLY_MAX_KILL_TIMEOUT_S = 300.0


# -- helpers ---------------------------------------------------------------------------


def fly() -> dict[str, Any]:
    """deploy/fly.toml as data."""
    return tomllib.loads(FLY_TOML.read_text("utf-8"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued RUN
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def instruction_args(keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction, in order."""
    return [rest for key, rest in dockerfile() if key == keyword]


def dockerfile_env() -> dict[str, str]:
    """Every ENV of the image (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for rest in instruction_args("ENV"):
        for pair in shlex.split(rest):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def image_env() -> dict[str, str]:
    """What the daemon's process sees on Fly: the image's ENV, then fly.toml's [env]."""
    return {**dockerfile_env(), **fly()["env"]}


def listen_port() -> int:
    """The daemon's default port."""
    return split_listen(MonitorSection().listen)[1]


def app_routes() -> set[str]:
    """Paths the daemon's HTTP app serves."""

    class _Healthy:
        def health(self) -> tuple[bool, dict[str, Any]]:
            return True, {}

    app = create_app(Metrics(), _Healthy())
    return {route.path for route in app.routes if hasattr(route, "path")}


def lock_pins() -> dict[str, str]:
    """Canonical name -> pinned version, from requirements.lock."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"not one exact pin: {line!r}"
        assert specifiers[0].operator == "==", f"not an exact pin: {line!r}"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} pinned twice"
        pins[name] = specifiers[0].version
    return pins


def pyproject() -> dict[str, Any]:
    """pyproject.toml as data."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


# -- fly.toml ----------------------------------------------------------------------------


def test_fly_metrics_section_scrapes_the_daemons_metrics_route() -> None:
    """[metrics] names the port the daemon listens on by default and its /metrics route."""
    metrics = fly()["metrics"]
    assert metrics["port"] == listen_port()
    assert metrics["path"] == "/metrics"
    assert metrics["path"] in app_routes()


def test_fly_check_probes_healthz_on_the_listen_port() -> None:
    """The top-level machine check is an HTTP GET of /healthz on the listen port."""
    checks = fly()["checks"]
    assert len(checks) == 1
    check = next(iter(checks.values()))
    assert check["type"] == "http"
    assert check["port"] == listen_port()
    assert check["path"] == "/healthz"
    assert check["path"] in app_routes()
    assert check["method"].upper() == "GET"
    assert parse_duration(check["timeout"]) < parse_duration(check["interval"])


def test_fly_app_has_no_public_service() -> None:
    """A worker: nothing for Fly Proxy to route, so nothing reachable from the internet."""
    config = fly()
    assert "http_service" not in config
    assert "services" not in config


def test_fly_kill_timeout_covers_the_graceful_stop() -> None:
    """SIGTERM is the stop signal and Fly waits out the whole shutdown before SIGKILL."""
    config = fly()
    assert config["kill_signal"] == "SIGTERM"
    kill_timeout = parse_duration(config["kill_timeout"])
    outbox_stop = inspect.signature(OutboxWorker.stop).parameters["timeout_s"].default
    shutdown = MonitorSection().shutdown_grace + outbox_stop + HTTP_STOP_S
    assert shutdown < kill_timeout <= FLY_MAX_KILL_TIMEOUT_S


def test_fly_volume_is_mounted_where_the_state_database_lives() -> None:
    """The volume's destination is the directory of MONITOR_MONITOR__STATE_PATH."""
    config = fly()
    state_path = PurePosixPath(config["env"]["MONITOR_MONITOR__STATE_PATH"])
    assert state_path.is_absolute()
    assert config["mounts"]["destination"] == str(state_path.parent)
    assert config["mounts"]["source"]


def test_fly_restarts_the_machine_on_any_exit() -> None:
    """Restart policy always: the stall exit (70) is what brings a stuck daemon back."""
    restart = fly()["restart"]
    assert [entry["policy"] for entry in restart] == ["always"]


def test_fly_vm_is_one_small_shared_cpu() -> None:
    """shared-cpu-1x with 256 MB, as the design sizes it."""
    (vm,) = fly()["vm"]
    assert vm["size"] == "shared-cpu-1x"
    assert vm["memory"] == "256mb"


def test_fly_build_files_exist_next_to_fly_toml() -> None:
    """[build] paths resolve relative to fly.toml, as flyctl resolves them."""
    build = fly()["build"]
    assert (FLY_TOML.parent / build["dockerfile"]).resolve() == DOCKERFILE
    assert (FLY_TOML.parent / build["ignorefile"]).resolve() == DOCKERIGNORE


def test_fly_env_agrees_with_the_image_env() -> None:
    """fly.toml's [env] repeats the image's settings rather than contradicting them."""
    image, machine = dockerfile_env(), fly()["env"]
    for name in ("MONITOR_CONFIG", "MONITOR_MONITOR__STATE_PATH"):
        assert machine[name] == image[name], name


# -- the configuration the image runs with -------------------------------------------


@pytest.fixture
def image_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment as the image's: no stray MONITOR_* or GITHUB_TOKEN."""
    for name in list(os.environ):
        if name.startswith("MONITOR_") or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)
    env = image_env()
    for name, value in env.items():
        if name.startswith("MONITOR_"):
            monkeypatch.setenv(name, value)
    return env


def image_config_path() -> Path:
    """The repository file the image copies to MONITOR_CONFIG."""
    target = image_env()["MONITOR_CONFIG"]
    for rest in instruction_args("COPY"):
        parts = rest.split()
        if parts[-1] == target:
            assert len(parts) == 2, f"COPY {rest}: one file expected"
            return ROOT / parts[0]
    raise AssertionError(f"the Dockerfile does not COPY anything to {target}")


def test_image_configuration_validates(image_environment: dict[str, str]) -> None:
    """config.toml as the image sees it (its env applied) loads, state on the volume."""
    settings = load_settings(image_config_path())
    assert settings.monitor.state_path == Path(image_environment["MONITOR_MONITOR__STATE_PATH"])
    assert split_listen(settings.monitor.listen)[1] == fly()["metrics"]["port"]
    assert {t.name for t in settings.targets} == {"staging", "production"}
    assert not settings.github.active  # no secret yet: the journal sink


def test_image_configuration_with_the_github_secret(
    image_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fly secrets set GITHUB_TOKEN` plus the repository in [env] activates the sink."""
    monkeypatch.setenv("GITHUB_TOKEN", "github_pat_" + "x" * 40)
    monkeypatch.setenv("MONITOR_GITHUB__REPOSITORY", "acme/hotdash")
    settings = load_settings(image_config_path())
    assert settings.github.active


def test_image_configuration_on_fly_postgres_in_a_region(
    image_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multi-region set-up: `fly postgres attach` sets DATABASE_URL (postgres://, as Fly
    writes it), Fly sets FLY_REGION and FLY_MACHINE_ID; the image selects PostgreSQL."""
    url = "postgres://hotdash_monitor:pw@hotdash-monitor-db.flycast:5432/hotdash_monitor"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FLY_REGION", "ams")
    monkeypatch.setenv("FLY_MACHINE_ID", "3d8d9e1bc41289")
    settings = load_settings(image_config_path())
    assert settings.monitor.database_url is not None
    assert settings.monitor.database_url.get_secret_value() == url
    assert settings.monitor.region == "ams"
    assert settings.monitor.instance_id == "3d8d9e1bc41289"
    assert settings.monitor.quorum == "majority"
    assert daemon_problems(settings) == []


def test_image_configuration_refuses_a_token_without_repository(
    image_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why docs/deploy.md sets the repository before the token: `monitor run` would refuse."""
    monkeypatch.setenv("GITHUB_TOKEN", "github_pat_" + "x" * 40)
    settings = load_settings(image_config_path())
    problems = daemon_problems(settings)
    assert any(p.startswith("github.repository:") for p in problems), problems


# -- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_base_is_slim_python_311() -> None:
    """One stage on python:3.11-slim, the Python the lock was resolved on."""
    (base,) = instruction_args("FROM")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    assert pyproject()["project"]["requires-python"] == ">=3.11"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The last USER is the numeric uid the image creates, never root."""
    users = instruction_args("USER")
    assert users, "no USER: the daemon would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0, users[-1]
    created = " ".join(instruction_args("RUN"))
    assert f"--uid {uid}" in created, "USER names a uid the image does not create"
    assert f"chown {uid}" in created or re.search(r"chown \w+:\w+ /data", created)


def test_dockerfile_installs_dependencies_from_the_lock_then_the_package() -> None:
    """Pinned dependencies with --no-deps, `pip check`, then the package with --no-deps."""
    runs = instruction_args("RUN")
    lock_installs = [r for r in runs if "pip install" in r and "requirements.lock" in r]
    assert len(lock_installs) == 1
    assert "--no-deps" in lock_installs[0]
    assert "pip check" in lock_installs[0]
    package_installs = [r for r in runs if "pip install" in r and r not in lock_installs]
    assert len(package_installs) == 1
    assert "--no-deps" in package_installs[0]
    assert runs.index(lock_installs[0]) < runs.index(package_installs[0])
    copied = [rest.split()[0] for rest in instruction_args("COPY")]
    assert "requirements.lock" in copied
    assert copied.index("requirements.lock") < copied.index("monitor")


def test_dockerfile_runs_the_daemon_and_stops_it_with_sigterm() -> None:
    """CMD is `monitor run` in exec form, under -OO (the flags tests/test_e2e.py runs an
    incident with), SIGTERM stops it, the listen port is exposed."""
    (cmd,) = instruction_args("CMD")
    assert json.loads(cmd) == ["python", "-OO", "-m", "monitor", "run"]
    assert image_python_flags() == ("-OO",)
    assert instruction_args("STOPSIGNAL") == ["SIGTERM"]
    assert instruction_args("EXPOSE") == [str(listen_port())]
    assert "ENTRYPOINT" not in {key for key, _ in dockerfile()}


def _monitor_syntax_trees() -> list[tuple[Path, ast.Module]]:
    package = ROOT / "monitor"
    return [(p, ast.parse(p.read_text("utf-8"))) for p in sorted(package.rglob("*.py"))]


def _plain_reference(node: ast.expr) -> bool:
    """A name or a chain of attributes (``state.incident``): reading it calls nothing."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _narrows_a_type(test: ast.expr) -> bool:
    """``x is not None`` or ``isinstance(x, T)`` on a plain reference: what mypy reads,
    nothing the code needs (a call inside could have an effect -OO would drop)."""
    if isinstance(test, ast.Compare):
        return (
            _plain_reference(test.left)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.IsNot)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None
        )
    return (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Name)
        and test.func.id == "isinstance"
        and len(test.args) == 2
        and _plain_reference(test.args[0])
    )


def _reads_a_docstring(node: ast.AST) -> bool:
    """``x.__doc__``, ``__doc__``, ``getattr(x, "__doc__")`` or ``inspect.getdoc``."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("__doc__", "getdoc")
    if isinstance(node, ast.Name):
        return node.id in ("__doc__", "getdoc")
    return isinstance(node, ast.Constant) and node.value == "__doc__"


def test_the_package_runs_the_same_under_the_images_oo() -> None:
    """The image runs the daemon under -OO, which drops docstrings and asserts: no module
    of the package reads a ``__doc__``, and every assert only narrows a type."""
    docstring_reads, asserts = [], []
    for path, tree in _monitor_syntax_trees():
        for node in ast.walk(tree):
            if _reads_a_docstring(node):
                docstring_reads.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
            if isinstance(node, ast.Assert) and not _narrows_a_type(node.test):
                asserts.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert docstring_reads == []
    assert asserts == []


def test_dockerfile_compiles_the_bytecode_the_daemon_runs() -> None:
    """The base image has no .pyc for the standard library and PYTHONDONTWRITEBYTECODE
    keeps a start from writing any: the image compiles the standard library and the
    venv at the daemon's optimisation level and at the default one, after both installs."""
    assert dockerfile_env()["PYTHONDONTWRITEBYTECODE"] == "1"
    runs = instruction_args("RUN")
    (compile_run,) = [r for r in runs if "compileall" in r]
    assert 'for level in "" "-OO"' in compile_run
    assert "python $level -m compileall" in compile_run
    for tree in ("/usr/local/lib/python3.11", "/opt/venv/lib/python3.11/site-packages"):
        assert tree in compile_run, tree
    assert "|| exit 1" in compile_run  # a file that does not compile fails the build
    installs = [i for i, r in enumerate(runs) if "pip install" in r]
    assert runs.index(compile_run) > max(installs)


def test_dockerfile_state_and_config_paths() -> None:
    """State on /data (the volume), configuration at /app/config.toml."""
    env = dockerfile_env()
    assert env["MONITOR_MONITOR__STATE_PATH"] == "/data/monitor.db"
    assert env["MONITOR_CONFIG"] == "/app/config.toml"


def test_dockerignore_lets_every_copied_path_in() -> None:
    """The context allowlist includes each COPY source (and nothing is copied twice)."""
    allowed = {
        line[1:].strip().rstrip("/")
        for line in DOCKERIGNORE.read_text("utf-8").splitlines()
        if line.startswith("!")
    }
    sources = [rest.split()[0].rstrip("/") for rest in instruction_args("COPY")]
    assert len(sources) == len(set(sources))
    assert set(sources) <= allowed, set(sources) - allowed
    for source in sources:
        assert (ROOT / source).exists(), source


# -- requirements.lock ------------------------------------------------------------------


def test_lock_pins_every_runtime_dependency() -> None:
    """Each dependency of pyproject.toml is pinned exactly, inside its declared range."""
    pins = lock_pins()
    for spec in pyproject()["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"


def test_lock_holds_no_test_tools() -> None:
    """Nothing from the test extra ends up in the image."""
    pins = lock_pins()
    runtime = {
        canonicalize_name(Requirement(s).name) for s in pyproject()["project"]["dependencies"]
    }
    for spec in pyproject()["project"]["optional-dependencies"]["test"]:
        name = canonicalize_name(Requirement(spec).name)
        if name not in runtime:
            assert name not in pins, f"test tool {name} is in requirements.lock"


def test_lock_is_closed_under_its_requirements() -> None:
    """Every requirement of a pinned package (as installed here, same version) is pinned too.

    The image installs the lock with --no-deps and runs `pip check`; this finds a
    missing pin before a build does.
    """
    pins = lock_pins()
    checked = 0
    for name, version in pins.items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if dist.version != version:
            continue  # another version installed here: its requirements may differ
        checked += 1
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in pins, (
                f"{name}=={version} requires {spec}, which requirements.lock does not pin"
            )
    assert checked, "no pinned package is installed here at its pinned version"


def test_lock_is_what_its_generator_prints() -> None:
    """requirements.lock is deploy/lock_requirements.py's output for the pinned versions."""
    pins = lock_pins()
    installed = {}
    for name in pins:
        try:
            installed[name] = distribution(name).version
        except PackageNotFoundError:
            installed[name] = None
    if installed != pins:
        pytest.skip("this environment holds other versions than the lock: nothing to compare")
    spec = importlib.util.spec_from_file_location("lock_requirements", LOCK_GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.runtime_pins() == pins
    assert LOCK.read_text("utf-8").startswith(generator.HEADER)


# -- Grafana dashboard -------------------------------------------------------------------

PROMQL_WORDS = {
    # aggregations, keywords and modifiers: identifiers that are not metric names
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def exported_sample_names() -> tuple[set[str], set[str]]:
    """(sample names, label names) a scrape of a declared ``Metrics`` can carry.

    Families without a child yet (uptime, burn rate, GitHub errors ...) have no
    samples, so their names follow from their type: counters end in ``_total``,
    histograms export ``_bucket``, ``_sum`` and ``_count``.
    """
    settings = load_settings(ROOT / "config.toml")
    metrics = Metrics()
    metrics.declare(settings.targets)
    text = metrics.exposition()[0].decode("utf-8")
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        for sample in family.samples:
            labels |= set(sample.labels)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    # families without a child yet carry no sample to read labels from: ask the
    # collectors (prometheus-client keeps label names in a private attribute)
    for collector in vars(metrics).values():
        labels |= set(getattr(collector, "_labelnames", ()))
    return names, labels


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (with Grafana variables) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "1", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    # an identifier not glued to a digit (the unit of `offset 5m`, the e of 1e-09)
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function or aggregation
        if word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def promql_label_names(expr: str) -> set[str]:
    """Label names used in matchers and in by/on/without lists."""
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    return labels


def dashboard() -> dict[str, Any]:
    """deploy/grafana/dashboard.json as data."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])
    return panels


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, variable and annotation query."""
    found = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        query = variable["query"]["query"]
        inner = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        found.append((f"variable {variable['name']}", inner.group(1) if inner else query))
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']}", annotation["expr"]))
    return found


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    """Valid JSON, schema ~39, a DS_PROMETHEUS input used by every query, sane layout."""
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    (source,) = data["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    kinds = {panel["type"] for panel in dashboard_panels()}
    assert {"stat", "timeseries", "heatmap"} <= kinds


@pytest.mark.parametrize(
    ("where", "expr"), dashboard_expressions(), ids=[w for w, _ in dashboard_expressions()]
)
def test_dashboard_queries_read_exported_metrics(where: str, expr: str) -> None:
    """Each query selects only metrics, and labels, that the daemon really exports."""
    names, labels = exported_sample_names()
    used = promql_metric_names(expr)
    assert used, f"{where}: no metric in {expr!r}"
    assert used <= names, f"{where}: not exported: {sorted(used - names)}"
    assert promql_label_names(expr) <= labels | {"le"}, f"{where}: unknown label in {expr!r}"


def test_dashboard_covers_the_interface() -> None:
    """State, latency, SLO, incidents, outbox and GitHub errors all have a panel."""
    used = set().union(*(promql_metric_names(e) for _, e in dashboard_expressions()))
    for name in (
        "monitor_target_up",
        "monitor_probe_duration_seconds_bucket",
        "monitor_uptime_ratio",
        "monitor_coverage_ratio",
        "monitor_error_budget_remaining_ratio",
        "monitor_error_budget_burn_rate",
        "monitor_incident_open",
        "monitor_incidents_total",
        "monitor_mttr_seconds",
        "monitor_outbox_pending",
        "monitor_outbox_oldest_age_seconds",
        "monitor_github_errors_total",
    ):
        assert name in used, name


# -- example workflows -------------------------------------------------------------------

# A command line up to a shell operator or the end of a quoted string around it (as in
# `-C "... monitor report --json"`); a quoted argument after a space is part of it.
MONITOR_COMMAND = re.compile(
    r"(?<![\w$./-])monitor\s+(?:run|check|verify|report|kpis|config|demo|notify|maintenance)\b"
    r"(?:[^\n\"'|>;&)]|(?<=\s)\"[^\"\n]*\"|(?<=\s)'[^'\n]*')*"
)


def workflow(path: Path) -> dict[str, Any]:
    """A workflow file as data (PyYAML reads the `on` key as True)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return data


def run_scripts(path: Path) -> list[str]:
    """The `run:` scripts of every step."""
    return [
        step["run"]
        for job in workflow(path)["jobs"].values()
        for step in job.get("steps", [])
        if "run" in step
    ]


def monitor_commands() -> list[tuple[str, str]]:
    """(file, command line) for every `monitor ...` the workflows run."""
    found = []
    for path in WORKFLOWS:
        for script in run_scripts(path):
            script = script.replace("\\\n", " ")
            found += [(path.name, m.group(0).strip()) for m in MONITOR_COMMAND.finditer(script)]
    return found


def with_sample_values(argv: list[str]) -> list[str]:
    """``argv`` with each shell expansion (``"$severity"``) that an option restricts to
    choices replaced by its first choice: the script decides the value at run time."""
    parser = build_parser()
    out: list[str] = []
    for word in argv:
        # argparse keeps no public map of a parser's options and sub-commands
        actions = {o: a for a in parser._actions for o in a.option_strings}
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if commands and word in commands[0].choices:
            parser = commands[0].choices[word]
        elif word.startswith("$") and out and out[-1] in actions and actions[out[-1]].choices:
            word = str(next(iter(actions[out[-1]].choices)))
        out.append(word)
    return out


def test_workflows_are_valid_workflow_yaml() -> None:
    """Name, trigger and jobs; each job runs steps or calls a workflow; steps run or use."""
    assert {p.name for p in WORKFLOWS} == {
        "deployment-gate.yml",
        "deploy-production.yml",
        "rollback-production.yml",
        "slo-report.yml",
        "security.yml",
    }
    for path in WORKFLOWS:
        data = workflow(path)
        assert data["name"], path.name
        assert data.get(True) or data.get("on"), f"{path.name}: no trigger"
        for name, job in data["jobs"].items():
            if "uses" in job:
                continue
            assert job["runs-on"], f"{path.name}:{name}"
            assert job.get("timeout-minutes"), f"{path.name}:{name}: no timeout"
            for step in job["steps"]:
                assert ("run" in step) != ("uses" in step), f"{path.name}:{name}: {step}"
        for name, job in data["jobs"].items():
            needs = job.get("needs", [])
            for need in [needs] if isinstance(needs, str) else needs:
                assert need in data["jobs"], f"{path.name}:{name} needs unknown job {need}"


@pytest.mark.parametrize(
    ("name", "command"), monitor_commands(), ids=[f"{n}: {c}" for n, c in monitor_commands()]
)
def test_workflow_monitor_commands_parse(name: str, command: str) -> None:
    """Every `monitor` invocation in the workflows is accepted by the real CLI parser."""
    argv = with_sample_values(shlex.split(command)[1:])
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports the problem on stderr
        raise AssertionError(f"{name}: `{command}` does not parse") from exc


def test_workflows_run_the_release_gates() -> None:
    """The gate, the post-deploy verification and the SLO report call what the seed asks."""
    commands = {(n, c) for n, c in monitor_commands()}
    assert ("deployment-gate.yml", "monitor check --target staging --wait 5m") in commands
    assert (
        "deploy-production.yml",
        "monitor verify --target production --duration 5m --file-incident",
    ) in commands
    assert ("slo-report.yml", "monitor report --check-slo") in commands
    assert ("slo-report.yml", "monitor report --json") in commands
    deploy = workflow(DEPLOY / "github-actions" / "deploy-production.yml")
    assert "failure()" in deploy["jobs"]["rollback"]["if"]
    assert "--image" in " ".join(run_scripts(DEPLOY / "github-actions" / "deploy-production.yml"))


def test_workflows_take_the_github_token_from_secrets() -> None:
    """GITHUB_TOKEN is passed from secrets, never written into a file."""
    text = (DEPLOY / "github-actions" / "deploy-production.yml").read_text("utf-8")
    assert "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}" in text
    for path in WORKFLOWS:
        assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_", path.read_text("utf-8"))


# -- docs/deploy.md ----------------------------------------------------------------------


def test_deploy_doc_log_examples_are_real_json_lines() -> None:
    """The log lines quoted in docs/deploy.md parse and carry the daemon's fields."""
    lines = [
        line
        for line in DEPLOY_DOC.read_text("utf-8").splitlines()
        if line.startswith('{"') and line.endswith("}")
    ]
    assert len(lines) >= 2
    for line in lines:
        record = json.loads(line)
        assert {"event", "level", "logger", "ts"} <= set(record), line
