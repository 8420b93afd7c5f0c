"""The Prometheus side: the shipped scrape config and alert rules pass promtool, the rule
unit tests pass, and a real Prometheus scraping the real daemon sees an outage fire
TargetDown and clear it.

promtool and prometheus come from Debian's ``prometheus`` package. Without them these
tests skip locally, and fail in CI (``CI=true``), where the binaries are installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
import yaml

from tests.daemon_process import free_port, http_get
from tests.targets import TargetServer, respond
from tests.test_deploy import dashboard_expressions, exported_sample_names, promql_metric_names

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
PROMETHEUS_DOC = ROOT / "docs" / "prometheus.md"
HOST = "127.0.0.1"
JOB = "fly-monitor"  # the job name alerts.yml (MonitorAbsent) expects
POLL_S = 0.1
TAIL_CHARS = 4000


def binary(name: str) -> str:
    """Path of a Prometheus binary; skip without it, except in CI where it must exist."""
    debian = Path("/usr/bin") / name  # where the package puts it, if PATH is narrowed
    path = shutil.which(name) or (str(debian) if debian.is_file() else None)
    if path is None:
        reason = f"{name} is not installed (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool, bounded, output captured."""
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    data = yaml.safe_load(ALERTS.read_text("utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


# -- promtool -------------------------------------------------------------------------


def test_scrape_config_is_valid(tmp_path: Path) -> None:
    """promtool check config passes, rule files included (with a stand-in Fly token)."""
    for path in PROMETHEUS_DIR.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "fly-token").write_text("stand-in\n", encoding="utf-8")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # the file as shipped, without the token it needs at run time
    result = promtool("check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_loads_the_shipped_rules() -> None:
    """prometheus.yml names alerts.yml, and its job is the one MonitorAbsent watches."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text("utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    assert [job["job_name"] for job in config["scrape_configs"]] == [JOB]


def test_alert_rules_are_valid() -> None:
    """promtool check rules passes on alerts.yml."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    """promtool test rules: every alert firing and not firing, annotations rendered."""
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the rules themselves (no binary needed) -------------------------------------------

EXPECTED_ALERTS = {
    "TargetDown": "critical",
    "TargetProbeFailing": "warning",
    "LatencyBudget": "warning",
    "ErrorBudgetFastBurn": "critical",
    "ErrorBudgetSlowBurn": "warning",
    "ErrorBudgetExhausted": "warning",
    "MonitorStale": "critical",
    "MonitorAbsent": "critical",
    "GitHubSinkBacklog": "warning",
    "GitHubSinkAuthErrors": "warning",
}


def test_alerts_are_the_documented_set_with_severity_and_for() -> None:
    """The alert list and severities; each waits `for` a while and carries its annotations."""
    rules = alert_rules()
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_alert_runbook_points_at_its_section(rule: dict[str, Any]) -> None:
    """runbook_url ends in an anchor of docs/prometheus.md titled with the alert's name."""
    anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
    assert anchor == rule["alert"].lower()
    headings = re.findall(r"^#+\s+(.+)$", PROMETHEUS_DOC.read_text("utf-8"), re.MULTILINE)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    assert anchor in anchors, f"docs/prometheus.md has no heading for #{anchor}"


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_alert_reads_exported_metrics(rule: dict[str, Any]) -> None:
    """Each expression selects metrics the daemon exports (and Prometheus's own `up`)."""
    names, _ = exported_sample_names()
    used = promql_metric_names(rule["expr"])
    assert used, rule["expr"]
    assert used <= names | {"up"}, sorted(used - names - {"up"})


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """alerts_test.yml has, per alert, a case where it fires and one where it does not."""
    tests = yaml.safe_load(ALERT_TESTS.read_text("utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == set(EXPECTED_ALERTS), set(EXPECTED_ALERTS) - firing
    assert quiet == set(EXPECTED_ALERTS), set(EXPECTED_ALERTS) - quiet


# -- end to end: the daemon, a target, a real Prometheus -------------------------------


def wait_for(
    condition: Callable[[], T | None], timeout_s: float, what: str, context: Callable[[], str]
) -> T:
    """Poll until ``condition`` returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{context()}")
        time.sleep(POLL_S)


class Process:
    """A child process with its output in files, killed for sure at teardown."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
        )

    def running(self) -> bool:
        """True until the process exits."""
        return self.proc.poll() is None

    def tail(self) -> str:
        """The end of its output, for assertion messages."""
        text = self.log_path.read_text("utf-8", errors="replace")[-TAIL_CHARS:]
        state = "running" if self.running() else f"exited {self.proc.returncode}"
        return f"--- {self.name} ({state}) ---\n{text}"

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


class Prometheus:
    """Queries against a running Prometheus's HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{HOST}:{port}"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer; AssertionError otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.base}/api/v1/{path}{query}")
        answer = json.loads(body)
        assert status == 200, f"{path} {params}: {body}"
        assert answer["status"] == "success", f"{path} {params}: {body}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the vector's samples."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def value(self, expr: str) -> float | None:
        """The value of a one-sample instant query; None when empty."""
        samples = self.query(expr)
        return float(samples[0]["value"][1]) if samples else None

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts called ``name``."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


def daemon_config(path: Path, *, target_url: str, port: int, state: Path) -> Path:
    """One target with one check, second-scale cadence, an incident after 2 failures."""
    path.write_text(
        "\n".join(
            [
                "[monitor]",
                "interval = 1",
                "incident_interval = 0.5",
                "timeout = 1",
                "open_after = 2",
                "close_after = 2",
                "jitter = 0",
                "metrics_refresh = 1",
                "shutdown_grace = 2",
                f'listen = "{HOST}:{port}"',
                f"state_path = {json.dumps(str(state))}",
                "",
                "[[targets]]",
                'name = "web"',
                f'url = "{target_url}"',
                "slo = 0.99",
                "",
                "  [[targets.checks]]",
                '  name = "health"',
                '  path = "/health"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def test_rules_copy_only_shortens_target_down(tmp_path: Path) -> None:
    """The e2e rules differ from the shipped ones in TargetDown's `for` and nothing else."""
    shipped = yaml.safe_load(ALERTS.read_text("utf-8"))
    copy = yaml.safe_load(fast_rules(tmp_path).read_text("utf-8"))
    for group_shipped, group_copy in zip(shipped["groups"], copy["groups"], strict=True):
        for rule_shipped, rule_copy in zip(
            group_shipped["rules"], group_copy["rules"], strict=True
        ):
            assert rule_copy["expr"] == rule_shipped["expr"]
            if rule_copy["alert"] != "TargetDown":
                assert rule_copy == rule_shipped


def fast_rules(workdir: Path) -> Path:
    """alerts.yml with TargetDown's `for` cut to 2 s (long enough to observe pending)."""
    rules = yaml.safe_load(ALERTS.read_text("utf-8"))
    (target_down,) = [
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "TargetDown"
    ]
    target_down["for"] = "2s"
    path = workdir / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def prometheus_config(workdir: Path, daemon_port: int) -> Path:
    """Scrape the daemon every second, evaluate the rules every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(fast_rules(workdir))],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"{HOST}:{daemon_port}"]}],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes started by the test; every one is stopped at teardown."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        with contextlib.suppress(Exception):
            process.stop()


@pytest.mark.e2e
def test_prometheus_scrapes_the_daemon_and_target_down_fires_and_clears(
    tmp_path: Path, target_server: TargetServer, processes: list[Process]
) -> None:
    """Real daemon, real Prometheus: labelled series arrive; an outage pends then fires
    TargetDown; recovery clears it; every dashboard query runs."""
    prometheus_bin = binary("prometheus")
    started_at = time.monotonic()
    target_server.route("/health", respond(200, b"ok"))
    daemon_port, prometheus_port = free_port(), free_port()
    config = daemon_config(
        tmp_path / "monitor.toml",
        target_url=target_server.url,
        port=daemon_port,
        state=tmp_path / "monitor.db",
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MONITOR_") and k != "GITHUB_TOKEN"
    }
    env["PYTHONUNBUFFERED"] = "1"
    daemon = Process(
        "daemon", [sys.executable, "-m", "monitor", "run", "--config", str(config)], tmp_path, env
    )
    processes.append(daemon)
    prometheus = Process(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={prometheus_config(tmp_path, daemon_port)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={HOST}:{prometheus_port}",
            "--log.level=warn",
        ],
        tmp_path,
        env,
    )
    processes.append(prometheus)
    api = Prometheus(prometheus_port)

    def logs() -> str:
        return "\n".join(p.tail() for p in processes)

    def ready(process: Process, url: str) -> bool:
        assert process.running(), f"{process.name} exited during start-up\n{logs()}"
        try:
            return http_get(url)[0] == 200
        except OSError:
            return False

    wait_for(lambda: ready(daemon, f"http://{HOST}:{daemon_port}/healthz"), 15, "daemon", logs)
    wait_for(lambda: ready(prometheus, f"{api.base}/-/ready"), 15, "prometheus ready", logs)

    # -- the series arrive, labelled
    success = f'monitor_probe_success{{job="{JOB}", target="web", check="health"}}'
    wait_for(lambda: api.value(success) == 1, 15, f"{success} == 1", logs)
    (sample,) = api.query(success)
    assert sample["metric"] == {
        "__name__": "monitor_probe_success",
        "job": JOB,
        "instance": f"{HOST}:{daemon_port}",
        "target": "web",
        "check": "health",
    }
    assert api.value(f'up{{job="{JOB}"}}') == 1
    assert api.value('monitor_target_up{target="web"}') == 1
    assert api.value('monitor_incident_open{target="web"}') == 0
    assert api.query("monitor_build_info")[0]["metric"]["version"]
    assert api.alerts("TargetDown") == []

    # -- every rule loaded and evaluates
    def rules_healthy() -> list[dict[str, Any]] | None:
        rules = [r for g in api.api("rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = wait_for(rules_healthy, 10, "every rule evaluated ok", logs)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}

    # -- every dashboard query is valid PromQL against the real series
    substitutions = {"$target": ".*", "$__rate_interval": "1m", "$__interval": "1m"}
    for where, expr in dashboard_expressions():
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        api.api("query", query=expr.replace("$__range", "1h"))  # asserts success
        assert where

    # -- outage: the incident opens, TargetDown pends, then fires
    target_server.set("/health", respond(503, b"down"))
    states: list[str] = []

    def target_down_state(wanted: str) -> bool:
        alerts = api.alerts("TargetDown")
        if alerts and (not states or states[-1] != alerts[0]["state"]):
            states.append(alerts[0]["state"])
        return bool(alerts) and alerts[0]["state"] == wanted

    wait_for(lambda: target_down_state("firing"), 20, "TargetDown firing", logs)
    assert states[0] == "pending", f"TargetDown went {states}, never pending first"
    (alert,) = api.alerts("TargetDown")
    assert alert["labels"] == {
        "alertname": "TargetDown",
        "severity": "critical",
        "job": JOB,
        "instance": f"{HOST}:{daemon_port}",
        "target": "web",
    }
    assert alert["annotations"]["summary"] == "web is down: the monitor has an incident open"
    assert api.value('monitor_target_up{target="web"}') == 0
    assert api.alerts("MonitorAbsent") == []

    # -- recovery: the incident resolves and the alert clears
    target_server.set("/health", respond(200, b"ok"))
    wait_for(lambda: not api.alerts("TargetDown"), 20, "TargetDown cleared", logs)
    assert api.value('monitor_incident_open{target="web"}') == 0
    assert api.value('monitor_target_up{target="web"}') == 1
    assert api.value('monitor_incidents_total{target="web"}') == 1

    assert daemon.stop() == 0, logs()
    assert time.monotonic() - started_at < 60
