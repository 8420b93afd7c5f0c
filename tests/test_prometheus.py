"""The Prometheus side: the shipped scrape config and alert rules pass promtool, the rule
unit tests pass, a real Prometheus scraping the real daemon sees an outage fire
TargetDown and clear it, and a real Prometheus scraping three instances (a leader and two
followers) sees every dashboard figure and alert once, not once per instance.

promtool and prometheus come from Debian's ``prometheus`` package. Without them these
tests skip locally, and fail in CI (``CI=true``), where the binaries are installed.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
import yaml

from monitor.config import TargetConfig
from monitor.metrics import UPTIME_WINDOWS, Metrics
from monitor.probing.results import Outcome
from tests.builders import result
from tests.daemon_process import clean_env, http_get, write_config
from tests.ports import free_port
from tests.targets import RegionalHealth, TargetServer, respond
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
    "TlsCertificateExpiring": "warning",
    "CheckUnknown": "warning",
    "ErrorBudgetFastBurn": "critical",
    "ErrorBudgetSlowBurn": "warning",
    "ErrorBudgetExhausted": "warning",
    "MonitorStale": "critical",
    "MonitorAbsent": "critical",
    "GitHubSinkBacklog": "warning",
    "GitHubSinkAuthErrors": "warning",
    "MonitorNoLeader": "critical",
    "MonitorTwoLeaders": "warning",
    "MonitorChannelStopped": "critical",
    "KpiObjectiveMissed": "warning",
    "KpiDataStale": "warning",
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

    def rule(self, name: str) -> dict[str, Any]:
        """The rules API's entry for the rule called ``name`` (health, lastEvaluation, alerts)."""
        rules = [r for g in self.api("rules")["groups"] for r in g["rules"] if r["name"] == name]
        assert len(rules) == 1, f"{len(rules)} rules named {name}"
        return rules[0]


def grafana(expr: str, time_range: str = "1h") -> str:
    """A dashboard query with Grafana's variables replaced, ready for the query API."""
    for variable, value in {
        "$target": ".*",
        "$__rate_interval": "1m",
        "$__interval": "1m",
        "$__range": time_range,
    }.items():
        expr = expr.replace(variable, value)
    return expr


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
    for where, expr in dashboard_expressions():
        api.api("query", query=grafana(expr))  # asserts success
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
    # aggregated by target: one alert per target, whichever instances report it
    assert alert["labels"] == {"alertname": "TargetDown", "severity": "critical", "target": "web"}
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


# -- three instances, one Prometheus: every figure once, not once per instance ---------

CLUSTER = {"a": "ams", "b": "ord", "c": "sin"}  # instance: region, as Fly labels them
LEADER = "a"
WEB = TargetConfig.model_validate(
    {
        "name": "web",
        "url": "https://web.example",
        "slo": 0.99,
        "checks": [{"name": "health", "path": "/health"}],
    }
)
INCIDENT_S = 864.0  # the one incident: 1 % of a day
# after it: the figures every instance reads from the shared store
UPTIME = {"1h": 0.76, "24h": 0.99, "7d": 0.9986, "30d": 0.9997, "90d": 0.9999}
BURN = {"1h": 24.0, "6h": 4.0}
BUDGET_LEFT = 0.97
DEPLOYMENTS = 2
CHANGE_FAILURE = {"30d": 0.5}
# dashboard panels that show one line per instance (its region's probes) by design
PER_INSTANCE_PANELS = {
    "Target state",
    "Last probe",
    "Probe latency percentiles",
    "Failed probes by reason",
    "HTTP status of the last probe",
    "Leader",
}


class ExpositionServer:
    """One instance's ``/metrics`` on loopback: the body a test sets, in the daemon's format."""

    def __init__(self) -> None:
        self.body = b""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: Prometheus scrapes every second."""

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Instance:
    """One daemon instance's metrics as the leader or a follower would set them."""

    def __init__(self, name: str, server: ExpositionServer) -> None:
        self.name = name
        self.region = CLUSTER[name]
        self.leader = name == LEADER
        self.server = server
        self.metrics = Metrics()
        m = self.metrics
        m.declare([WEB])
        m.leader.set(1 if self.leader else 0)
        m.probe_interval.labels("web").set(900)
        m.regions_fresh.labels("web").set(len(CLUSTER))
        m.regions_failing.labels("web").set(0)
        m.outbox_pending.set(0)
        m.outbox_oldest_age.set(0)
        m.deployments.labels("web").set(DEPLOYMENTS)
        m.budget_remaining.labels("web").set(1.0)
        for window in UPTIME_WINDOWS:
            m.uptime.labels("web", window).set(1.0)
            m.coverage.labels("web", window).set(1.0)
        for window in BURN:
            m.burn_rate.labels("web", window).set(0.0)
        self.probe(Outcome.UP)

    def probe(self, outcome: Outcome) -> None:
        """This region's own probe of web (each instance probes from its region)."""
        now = datetime.now(UTC)
        self.metrics.observe(result(outcome, now, target="web"), now.timestamp())

    def open_incident(self, started: float) -> None:
        """Every region sees web down; the leader opens the incident, followers read it."""
        m = self.metrics
        self.probe(Outcome.DOWN)
        m.probe_interval.labels("web").set(60)
        m.regions_failing.labels("web").set(len(CLUSTER))
        m.incident_open.labels("web").set(1)
        m.incident_started.labels("web").set(started)
        if self.leader:
            m.incidents.labels("web").inc()
            m.github_requests.labels("open").inc()

    def resolve_incident(self) -> None:
        """Web is back; the leader resolves and measures; every instance reads the figures."""
        m = self.metrics
        self.probe(Outcome.UP)
        m.probe_interval.labels("web").set(900)
        m.regions_failing.labels("web").set(0)
        m.incident_open.labels("web").set(0)
        m.incident_started.labels("web").set(0)
        if self.leader:
            m.incident_duration.labels("web").observe(INCIDENT_S)
            m.github_requests.labels("close").inc()
        for window, ratio in UPTIME.items():
            m.uptime.labels("web", window).set(ratio)
            m.mttr.labels("web", window).set(INCIDENT_S)
        for window, rate in BURN.items():
            m.burn_rate.labels("web", window).set(rate)
        for window, ratio in CHANGE_FAILURE.items():
            m.change_failure.labels("web", window).set(ratio)
        m.budget_remaining.labels("web").set(BUDGET_LEFT)

    def publish(self) -> None:
        """Serve the current registry, as ``/metrics`` would."""
        self.server.body = self.metrics.exposition()[0]


@pytest.fixture
def exposition_servers() -> Iterator[list[ExpositionServer]]:
    """One loopback server per instance, closed at teardown."""
    servers = [ExpositionServer() for _ in CLUSTER]
    yield servers
    for server in servers:
        server.close()


def cluster_prometheus_config(workdir: Path, instances: list[Instance]) -> Path:
    """Scrape every instance each second, labelled as Fly labels them; the shipped rules."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"{HOST}:{i.server.port}"],
                        "labels": {"instance": i.name, "region": i.region},
                    }
                    for i in instances
                ],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def alert_expr(name: str) -> str:
    """The shipped expression of the alert called ``name``."""
    (expr,) = [r["expr"] for r in alert_rules() if r["alert"] == name]
    return str(expr)


def keyed(samples: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    """{label values: value}; AssertionError when two samples share the labels (a duplicate)."""
    found: dict[tuple[str, ...], float] = {}
    for sample in samples:
        key = tuple(sample["metric"].get(label, "") for label in labels)
        assert key not in found, f"two series for {key}: {samples}"
        found[key] = float(sample["value"][1])
    return found


def assert_once_per_target(api: Prometheus) -> None:
    """Every alert expression and every dashboard query but the per-region panels answers
    without an instance or region label, each label set once."""
    checked = [(r["alert"], r["expr"]) for r in alert_rules()]
    checked += [(w, grafana(e, "5m")) for w, e in dashboard_expressions()]
    for where, expr in checked:
        if where.startswith("variable ") or where.rsplit(" ", 1)[0] in PER_INSTANCE_PANELS:
            continue
        samples = api.query(expr)
        labelsets = [tuple(sorted(s["metric"].items())) for s in samples]
        assert len(labelsets) == len(set(labelsets)), f"{where}: duplicates {samples}"
        for sample in samples:
            assert not {"instance", "region"} & set(sample["metric"]), f"{where}: {sample}"


@pytest.mark.e2e
def test_three_instances_count_each_incident_and_figure_once(
    tmp_path: Path, exposition_servers: list[ExpositionServer], processes: list[Process]
) -> None:
    """A leader and two followers, scraped by a real Prometheus with the shipped rules: the
    dashboard's and the rules' figures equal one instance's (1 incident, not 3; uptime 0.99,
    not 2.97), TargetDown goes off once, the probe panels keep one line per region."""
    prometheus_bin = binary("prometheus")
    started_at = time.monotonic()
    instances = [Instance(name, s) for name, s in zip(CLUSTER, exposition_servers, strict=True)]
    for instance in instances:
        instance.publish()
    prometheus_port = free_port()
    prometheus = Process(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={cluster_prometheus_config(tmp_path, instances)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={HOST}:{prometheus_port}",
            "--log.level=warn",
        ],
        tmp_path,
        {k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"},
    )
    processes.append(prometheus)
    api = Prometheus(prometheus_port)
    panels = dict(dashboard_expressions())

    def logs() -> str:
        return prometheus.tail()

    def ready() -> bool:
        assert prometheus.running(), f"prometheus exited during start-up\n{logs()}"
        try:
            return http_get(f"{api.base}/-/ready")[0] == 200
        except OSError:
            return False

    def panel(where: str) -> list[dict[str, Any]]:
        return api.query(grafana(panels[where], "5m"))

    def scraped(expr: str) -> bool:
        """Every instance's latest scrape satisfies ``expr`` (a per-instance filter)."""
        return api.value(f"count({expr})") == len(CLUSTER)

    wait_for(ready, 15, "prometheus ready", logs)
    # two scrapes of each instance before the incident: increase() sees the counters at 0
    wait_for(
        lambda: scraped('count_over_time(monitor_incidents_total{target="web"}[1m]) >= 2'),
        15,
        "two scrapes of every instance",
        logs,
    )
    assert keyed(api.query('up{job="fly-monitor"}'), "instance", "region") == {
        ("a", "ams"): 1,
        ("b", "ord"): 1,
        ("c", "sin"): 1,
    }
    assert api.value("sum(monitor_leader)") == 1
    rules = [r for g in api.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    assert_once_per_target(api)

    # -- the incident opens: the leader counts it, every instance reports it open
    opened_at = time.time()
    for instance in instances:
        instance.open_incident(started=opened_at - 120)
        instance.publish()
    wait_for(lambda: scraped('monitor_incident_open{target="web"} == 1'), 10, "open", logs)
    all_scraped = time.time()
    assert api.value('sum(monitor_incident_open{target="web"})') == 3  # what a sum would say
    assert keyed(panel("Incident A"), "target") == {("web",): 1}
    (age,) = keyed(panel("Open incident age A"), "target").values()
    assert 100 < age < 300
    assert keyed(panel("Regions voting B"), "target") == {("web",): 3}
    assert keyed(api.query(alert_expr("TargetDown")), "target") == {("web",): 1}

    def evaluated_since(name: str, moment: float) -> dict[str, Any] | None:
        rule = api.rule(name)
        evaluated = datetime.fromisoformat(rule["lastEvaluation"]).timestamp()
        return rule if evaluated > moment else None

    target_down = wait_for(
        lambda: evaluated_since("TargetDown", all_scraped), 10, "TargetDown evaluated", logs
    )
    assert target_down["health"] == "ok", target_down
    (alert,) = target_down["alerts"]  # one, not one per instance
    assert alert["labels"] == {"alertname": "TargetDown", "severity": "critical", "target": "web"}
    assert alert["state"] == "pending"  # for: 1m
    for quiet in ("TargetProbeFailing", "MonitorNoLeader", "MonitorTwoLeaders"):
        rule = wait_for(lambda q=quiet: evaluated_since(q, all_scraped), 10, quiet, logs)
        assert rule["alerts"] == [], rule
    assert_once_per_target(api)

    # -- resolved: the leader measures it; the store's figures are the same everywhere
    for instance in instances:
        instance.resolve_incident()
        instance.publish()
    wait_for(lambda: scraped('monitor_incident_open{target="web"} == 0'), 10, "resolved", logs)
    wait_for(lambda: not api.alerts("TargetDown"), 10, "TargetDown cleared", logs)

    # increase() extrapolates to the window's end by up to one scrape interval: over a
    # few seconds of samples that alone reaches +27 %, so let a dozen scrapes accumulate
    wait_for(
        lambda: scraped('count_over_time(monitor_incidents_total{target="web"}[1m]) >= 12'),
        20,
        "a dozen scrapes of every instance's counter",
        logs,
    )
    (incidents,) = keyed(panel("Incidents opened A"), "target").values()
    assert incidents == pytest.approx(1, abs=0.25)  # not 3: only the leader counts
    assert api.value('count(monitor_incidents_total{target="web"})') == 3
    assert keyed(panel("Resolved incident durations A"), "target") == {
        ("web",): pytest.approx(INCIDENT_S)
    }
    assert keyed(panel("Incident A"), "target") == {("web",): 0}
    assert panel("Open incident age A") == []
    assert api.value('sum(monitor_uptime_ratio{target="web", window="24h"})') == (
        pytest.approx(2.97)  # what a sum would say
    )
    assert keyed(panel("Uptime per window A"), "target", "window") == {
        ("web", window): pytest.approx(ratio) for window, ratio in UPTIME.items()
    }
    assert keyed(panel("Coverage per window A"), "target", "window") == {
        ("web", window): 1 for window in UPTIME_WINDOWS
    }
    assert keyed(panel("MTTR per window A"), "target", "window") == {
        ("web", window): INCIDENT_S for window in UPTIME
    }
    assert keyed(panel("Error budget burn rate A"), "target", "window") == {
        ("web", window): rate for window, rate in BURN.items()
    }
    assert keyed(panel("Error budget remaining A"), "target") == {
        ("web",): pytest.approx(BUDGET_LEFT)
    }
    assert keyed(panel("Objective A"), "target") == {("web",): pytest.approx(0.99)}
    assert keyed(panel("Deployments seen A"), "target") == {("web",): DEPLOYMENTS}
    assert keyed(panel("Change failure ratio A"), "target", "window") == {
        ("web", window): ratio for window, ratio in CHANGE_FAILURE.items()
    }
    assert keyed(panel("Outbox pending A"), "job") == {("",): 0}
    assert keyed(panel("Oldest pending action A"), "job") == {("",): 0}
    requests = keyed(panel("GitHub requests and errors A"), "operation")
    assert requests == {
        ("open",): pytest.approx(1, abs=0.25),
        ("close",): pytest.approx(1, abs=0.25),
    }
    assert panel("GitHub requests and errors B") == []
    assert keyed(panel("Regions voting A"), "target") == {("web",): 3}
    assert keyed(panel("Regions voting B"), "target") == {("web",): 0}
    (version_count,) = keyed(panel("Monitor version A"), "version").values()
    assert version_count == len(CLUSTER)
    # -- the per-region panels keep one line per instance; the leader is one of them
    assert keyed(panel("Target state A"), "target", "region") == {
        ("web", region): 1 for region in CLUSTER.values()
    }
    assert keyed(panel("Last probe A"), "target", "region").keys() == {
        ("web", region) for region in CLUSTER.values()
    }
    assert keyed(panel("Failed probes by reason A"), "region", "reason").keys() == {
        (region, "status") for region in CLUSTER.values()
    }
    assert keyed(panel("Leader A"), "instance", "region") == {(LEADER, CLUSTER[LEADER]): 1}
    # -- the rules read the same: one leader, nothing open, each figure once
    assert api.query(alert_expr("TargetDown")) == []
    assert_once_per_target(api)
    assert time.monotonic() - started_at < 60


@pytest.mark.e2e
def test_three_real_daemons_count_one_incident_once(
    tmp_path: Path,
    postgres_url: str,
    target_server: TargetServer,
    processes: list[Process],
) -> None:
    """Three real daemons (ams, ord, sin) on one PostgreSQL, scraped by a real Prometheus
    with the shipped rules: followers export the leader's decisions, so an incident two
    regions see is open on every instance, TargetDown goes off once, and it is counted
    once (only the leader increments the counter)."""
    prometheus_bin = binary("prometheus")
    health = RegionalHealth()
    target_server.route("/health", health)
    daemons, ports = [], {}
    for region in ("ams", "ord", "sin"):
        ports[region] = free_port()
        config = write_config(
            tmp_path / f"{region}.toml",
            target_url=target_server.url,
            listen_port=ports[region],
            state_path=tmp_path / f"{region}.db",
            leader_check=0.3,
            open_after=2,
        )
        env = clean_env(DATABASE_URL=postgres_url, FLY_REGION=region, FLY_MACHINE_ID=region)
        argv = [sys.executable, "-m", "monitor", "run", "--config", str(config)]
        daemons.append(Process(f"daemon-{region}", argv, tmp_path, env))
    processes.extend(daemons)
    scrape = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(fast_rules(tmp_path))],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [
                    {"targets": [f"{HOST}:{port}"], "labels": {"region": region}}
                    for region, port in ports.items()
                ],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(scrape, sort_keys=False), encoding="utf-8")
    prometheus_port = free_port()
    processes.append(
        Process(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={HOST}:{prometheus_port}",
                "--log.level=warn",
            ],
            tmp_path,
            {k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"},
        )
    )
    api = Prometheus(prometheus_port)

    def logs() -> str:
        return "\n".join(p.tail() for p in processes)

    def value(expr: str) -> float | None:
        try:
            return api.value(expr)
        except (OSError, ValueError, AssertionError):  # not ready yet: not JSON, or an error
            return None

    wait_for(lambda: value('count(up{job="fly-monitor"} == 1)') == 3, 30, "3 scraped", logs)
    wait_for(lambda: value("sum(monitor_leader)") == 1, 15, "one leader", logs)

    health.fail("ams", "ord")
    wait_for(
        lambda: value('count(monitor_incident_open{target="web"} == 1)') == 3,
        30,
        "the incident open on every instance",
        logs,
    )
    wait_for(lambda: len(api.alerts("TargetDown")) == 1, 15, "TargetDown, once", logs)
    assert_once_per_target(api)

    health.fail()
    wait_for(lambda: value('max(monitor_incident_open{target="web"})') == 0, 30, "resolved", logs)
    assert value('sum(monitor_incidents_total{target="web"})') == 1, logs()
    assert value('count(monitor_incidents_total{target="web"} == 1)') == 1  # the leader's
    wait_for(lambda: not api.alerts("TargetDown"), 15, "TargetDown cleared", logs)
    assert_once_per_target(api)
