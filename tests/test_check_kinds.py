"""The check kinds without a network: their configuration, their judges, and what an
unknown result does to metrics, the tracker and the gate.

The real services are in test_check_prometheus.py and test_check_alertmanager.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.config import CheckConfig, ConfigError, TargetConfig, daemon_problems, load_settings
from monitor.metrics import Metrics
from monitor.probing.judge import mask_headers
from monitor.probing.kinds import KINDS, Answer, failure_reasons, kind_of
from monitor.probing.kinds.prometheus import format_value
from monitor.probing.results import Outcome, Reason, TargetResult
from monitor.release.check import passed, verdict
from tests.builders import check as check_result
from tests.targets import TargetServer, json_body

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ERROR_RATE = (
    'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'
)
PROM = "http://prometheus.internal:9090"
AM = "http://alertmanager.internal:9093"


def prometheus(**keys: Any) -> CheckConfig:
    """A prometheus check on the error rate, ``max = 0.05`` unless told otherwise."""
    base: dict[str, Any] = {
        "name": "error-rate",
        "type": "prometheus",
        "url": PROM,
        "query": ERROR_RATE,
        "max": 0.05,
    }
    return CheckConfig(**{**base, **keys})


def alertmanager(**keys: Any) -> CheckConfig:
    """An alertmanager check for the app's paging alerts."""
    base: dict[str, Any] = {
        "name": "alerts",
        "type": "alertmanager",
        "url": AM,
        "matchers": ['app="hotdash"', 'severity=~"critical|page"'],
    }
    return CheckConfig(**{**base, **keys})


def answer(body: Any, status: int = 200) -> Answer:
    """A complete answer with ``body`` as JSON (bytes pass through)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(
        target="production",
        url=PROM + "/api/v1/query",
        started_at=T0,
        duration_s=0.02,
        status=status,
        body=raw,
    )


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    """Prometheus's answer to an instant query returning these samples."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1764676800.0, v]} for labels, v in samples],
        },
    }


# -- configuration ----------------------------------------------------------------------------


def load(tmp_path: Path, check: str) -> Any:
    """Settings from a file with one target whose one check is ``check`` (TOML lines)."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[[targets]]\nname = "production"\nurl = "https://hotdash.fly.dev"\n'
        f"[[targets.checks]]\n{check}\n",
        encoding="utf-8",
    )
    return load_settings(path)


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nmax = 1', "targets[0].checks[0].query: required for a prometheus check", id="no-query"),
        pytest.param('name = "x"\ntype = "prometheus"\nquery = "up"\nmax = 1', "targets[0].checks[0].url: required for a prometheus check", id="no-url"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"', "targets[0].checks[0].max: a prometheus check needs max, min", id="no-bound"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmax = 1\ndegraded_max = 2', "targets[0].checks[0].degraded_max: must be below max", id="degraded-above-max"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmin = 1\ndegraded_min = 0.5', "targets[0].checks[0].degraded_min: must be above min", id="degraded-below-min"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmin = 2\nmax = 1', "targets[0].checks[0].min: the lower bounds must be below the upper bounds", id="min-above-max"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmax = nan', "targets[0].checks[0].max:", id="nan-bound"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmax = 1\npath = "/x"', 'targets[0].checks[0].path: only for type = "http", not \'prometheus\'', id="http-key-on-prometheus"),
        pytest.param('name = "x"\nquery = "up"', 'targets[0].checks[0].query: only for type = "prometheus", not \'http\'', id="prometheus-key-on-http"),
        pytest.param('name = "x"\nurl = "http://elsewhere"', 'targets[0].checks[0].url: only for type = "prometheus" or "alertmanager"', id="url-on-http"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"\nmatchers = ["app=hotdash"]\nmax = 1', 'targets[0].checks[0].max: only for type = "prometheus", not \'alertmanager\'', id="bound-on-alertmanager"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"', "targets[0].checks[0].matchers: required", id="no-matchers"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"\nmatchers = ["app"]', "targets[0].checks[0].matchers[0]: expected an Alertmanager matcher", id="bad-matcher"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"\nmatchers = [\'app=~"("\']', "targets[0].checks[0].matchers[0]: not a regular expression", id="bad-regex"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"\nmatchers = [\'"app"="x"\']', "expected an Alertmanager matcher", id="quoted-label-name"),
        pytest.param('name = "x"\ntype = "alertmanager"\nurl = "http://a:9093"\nmatchers = [\'app=~"(?!x)"\']', "targets[0].checks[0].matchers[0]: Alertmanager's regular expressions have no lookaround", id="lookahead"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmax = 1\nmax_response_time = "2s"', 'targets[0].checks[0].max_response_time: only for type = "http"', id="budget-on-prometheus"),
        pytest.param('name = "x"\ntype = "graphite"', "targets[0].checks[0].type: Input should be 'http', 'prometheus' or 'alertmanager'", id="unknown-type"),
        pytest.param('name = "x"\nca_file = "/nonexistent/ca.pem"', "targets[0].checks[0].ca_file: no such file: /nonexistent/ca.pem", id="ca-file-missing"),
        pytest.param('name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmax = 1\ntoken = "s3cret"', "targets[0].checks[0].token: never in the file", id="token-in-file"),
    ],
)  # fmt: skip
def test_config_problems_name_the_key(tmp_path: Path, check: str, problem: str) -> None:
    """Each mistake is refused with a message naming its key (and never echoing a token)."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, check)

    text = "\n".join(caught.value.problems)
    assert problem in text
    assert "s3cret" not in text


def test_ca_file_must_be_a_pem_bundle(tmp_path: Path) -> None:
    """A file that is not PEM is refused at load, naming the file."""
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f'name = "x"\nca_file = "{junk}"')

    assert f"targets[0].checks[0].ca_file: not a PEM bundle of CA certificates: {junk}" in str(
        caught.value.problems
    )


def test_token_comes_from_its_variable_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token_env is read at load; the value is masked in the redacted config and joins the
    secrets the logs redact; a missing variable is a daemon problem, naming it."""
    from monitor.config import redacted, secret_values

    check = 'name = "x"\ntype = "prometheus"\nurl = "http://p:9090"\nquery = "up"\nmin = 1\ntoken_env = "PROM_TOKEN"'
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    assert daemon_problems(load(tmp_path, check)) == [
        "targets[0].checks[0].token_env: the environment variable PROM_TOKEN is not set"
    ]
    monkeypatch.setenv("PROM_TOKEN", "fly-token-0123456789")

    settings = load(tmp_path, check)

    token = settings.targets[0].checks[0].token
    assert token is not None
    assert token.get_secret_value() == "fly-token-0123456789"
    assert "fly-token-0123456789" in secret_values(settings)
    shown = redacted(settings)["targets"][0]["checks"][0]
    assert "fly-token-0123456789" not in json.dumps(shown)
    assert shown["token"] == "***"
    assert "path" not in shown  # another type's keys are left out of `monitor config`
    assert daemon_problems(settings) == []


def test_http_checks_are_unchanged() -> None:
    """A check with no type is today's http check: same defaults, same request."""
    check = CheckConfig(name="health", path="/health")
    target = TargetConfig(name="t", url="https://t.example", checks=[check])

    request = kind_of(check).request(target, check, 10.0)

    assert check.type == "http"
    assert (request.method, request.url, request.params) == ("GET", "https://t.example/health", ())
    assert request.reads_certificate is True


def test_requests_of_the_query_kinds() -> None:
    """Prometheus gets the query and our time-out; Alertmanager one filter per matcher and
    only active, unsilenced, uninhibited alerts; both get the bearer token."""
    target = TargetConfig(name="t", url="https://t.example", checks=[prometheus()])
    query = kind_of(prometheus()).request(target, prometheus(token=SecretStr("tok")), 7.0)
    alerts = kind_of(alertmanager()).request(target, alertmanager(), 7.0)

    assert query.url == PROM + "/api/v1/query"
    assert list(query.params) == [("query", ERROR_RATE), ("timeout", "7000ms")]
    assert query.headers["Authorization"] == "Bearer tok"
    assert query.reads_certificate is False
    assert alerts.url == AM + "/api/v2/alerts"
    assert list(alerts.params) == [
        ("active", "true"),
        ("silenced", "false"),
        ("inhibited", "false"),
        ("unprocessed", "false"),
        ("filter", 'app="hotdash"'),
        ("filter", 'severity=~"critical|page"'),
    ]


def test_each_kind_declares_its_failure_reasons() -> None:
    """The metrics declare per kind: an http check has no ``threshold`` series, a
    prometheus check no ``condition`` series."""
    assert set(KINDS) == {"http", "prometheus", "alertmanager"}
    assert Reason.THRESHOLD not in failure_reasons(CheckConfig(name="h"))
    assert Reason.CONDITION not in failure_reasons(prometheus())
    assert {Reason.QUERY, Reason.EMPTY, Reason.THRESHOLD} <= set(failure_reasons(prometheus()))
    assert Reason.ALERTS in failure_reasons(alertmanager())


# -- the prometheus judge ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "body", "status", "outcome", "reason", "detail"),
    [
        pytest.param({}, vector(({}, "0.01")), 200, Outcome.UP, Reason.OK, "0.01 (max 0.05)", id="within"),
        pytest.param({"unit": "ratio"}, vector(({}, "0.072")), 200, Outcome.DOWN, Reason.THRESHOLD, "7.2 %, above max 5 %; query: sum(rate(", id="above-max"),
        pytest.param({"unit": "ratio", "degraded_max": 0.02}, vector(({}, "0.03")), 200, Outcome.DEGRADED, Reason.THRESHOLD, "3 %, above degraded_max 2 %", id="degraded"),
        pytest.param({"max": None, "min": 1}, vector(({}, "0")), 200, Outcome.DOWN, Reason.THRESHOLD, "0, below min 1", id="below-min"),
        pytest.param({"unit": "seconds", "max": 0.5}, vector(({}, "0.731")), 200, Outcome.DOWN, Reason.THRESHOLD, "731 ms, above max 500 ms", id="p95-seconds"),
        pytest.param({}, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.2"]}}, 200, Outcome.DOWN, Reason.THRESHOLD, "0.2, above max 0.05", id="scalar"),
        pytest.param({}, vector(({}, "+Inf")), 200, Outcome.DOWN, Reason.THRESHOLD, "+Inf, above max", id="inf"),
        pytest.param({}, vector(({"instance": "fra"}, "0.01"), ({"instance": "ams"}, "0.09"), ({"instance": "ord"}, "0.02")), 200, Outcome.DOWN, Reason.THRESHOLD, '0.09, above max 0.05 (worst of 3 series: {instance="ams"})', id="vector-worst"),
        pytest.param({}, vector(), 200, Outcome.UNKNOWN, Reason.EMPTY, "no sample, on_empty = unknown", id="empty-unknown"),
        pytest.param({"on_empty": "down"}, vector(), 200, Outcome.DOWN, Reason.EMPTY, "no sample, on_empty = down", id="empty-down"),
        pytest.param({"on_empty": "up"}, vector(), 200, Outcome.UP, Reason.OK, "no sample, on_empty = up", id="empty-up"),
        pytest.param({}, vector(({}, "NaN")), 200, Outcome.UNKNOWN, Reason.EMPTY, "no value (NaN)", id="nan-is-no-value"),
        pytest.param({}, vector(({"a": "1"}, "NaN"), ({"a": "2"}, "0.5")), 200, Outcome.DOWN, Reason.THRESHOLD, "0.5, above max", id="nan-ignored"),
        pytest.param({}, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected end of input"}, 400, Outcome.UNKNOWN, Reason.QUERY, "Prometheus refused the query (400): bad_data: 1:5: parse error", id="bad-promql"),
        pytest.param({"on_error": "down"}, {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400, Outcome.DOWN, Reason.QUERY, "refused the query (400)", id="bad-promql-down"),
        pytest.param({}, {"status": "error", "errorType": "execution", "error": "many-to-many matching"}, 422, Outcome.UNKNOWN, Reason.QUERY, "(422): execution: many-to-many", id="execution"),
        pytest.param({}, b"unauthorized\n", 401, Outcome.UNKNOWN, Reason.QUERY, "refused the query (401): unauthorized", id="token-refused"),
        pytest.param({}, {"status": "error", "errorType": "timeout", "error": "query timed out"}, 503, Outcome.UNKNOWN, Reason.STATUS, "Prometheus answered 503: timeout: query timed out", id="prometheus-5xx"),
        pytest.param({}, {"status": "success", "data": {"resultType": "matrix", "result": []}}, 200, Outcome.UNKNOWN, Reason.QUERY, "returns a matrix: it must return an instant vector or a scalar", id="range-vector"),
        pytest.param({}, b"<html>proxy</html>", 200, Outcome.UNKNOWN, Reason.INVALID_JSON, "not a Prometheus answer", id="not-json"),
        pytest.param({}, {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, 5]}]}}, 200, Outcome.UNKNOWN, Reason.INVALID_JSON, "a malformed value", id="number-not-string"),
    ],
)  # fmt: skip
def test_prometheus_judge(
    keys: dict[str, Any],
    body: Any,
    status: int,
    outcome: Outcome,
    reason: Reason,
    detail: str,
) -> None:
    """Every answer Prometheus can give ends in an outcome and a reason a person reads."""
    check = prometheus(**keys)

    result = kind_of(check).judge(check, answer(body, status))

    assert (result.outcome, result.reason) == (outcome, reason), result.detail
    assert detail in result.detail
    assert result.fields["query"] == ERROR_RATE


def test_prometheus_fields_carry_value_threshold_and_query() -> None:
    """The incident issue's payload table gets the value, the bounds and the whole query."""
    check = prometheus(unit="ratio", degraded_max=0.01)

    result = kind_of(check).judge(check, answer(vector(({"app": "hotdash"}, "0.072"))))

    assert result.fields == {
        "value": 0.072,
        "threshold": "max 5 %, degraded_max 1 %",
        "query": ERROR_RATE,
        "labels": '{app="hotdash"}',
    }


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [(0.072, "ratio", "7.2 %"), (0.05, "ratio", "5 %"), (0.35, "seconds", "350 ms"),
     (1.25, "seconds", "1.25 s"), (3600.0, "seconds", "1h"), (1234567.0, "", "1.23457e+06"),
     (float("-inf"), "", "-Inf")],
)  # fmt: skip
def test_format_value(value: float, unit: str, text: str) -> None:
    """Values read as a person writes them."""
    assert format_value(value, unit) == text


# -- the alertmanager judge ----------------------------------------------------------------


def alert(name: str, *, state: str = "active", summary: str = "", **status: Any) -> dict[str, Any]:
    """An alert as ``GET /api/v2/alerts`` lists it."""
    return {
        "labels": {"alertname": name, "app": "hotdash", "severity": "critical"},
        "annotations": {"summary": summary} if summary else {},
        "startsAt": "2026-12-02T11:58:00Z",
        "status": {"state": state, "silencedBy": [], "inhibitedBy": [], **status},
    }


@pytest.mark.parametrize(
    ("body", "status", "outcome", "reason", "detail"),
    [
        pytest.param([], 200, Outcome.UP, Reason.OK, 'no alert fires for app="hotdash", severity=~"critical|page"', id="quiet"),
        pytest.param([alert("HighErrorRate", summary="Error rate above 5 %")], 200, Outcome.DOWN, Reason.ALERTS, "1 alert firing: HighErrorRate (Error rate above 5 %)", id="one"),
        pytest.param([alert("A"), alert("B", summary="b")], 200, Outcome.DOWN, Reason.ALERTS, "2 alerts firing: A; B (b)", id="two"),
        pytest.param([alert("A", state="suppressed", silencedBy=["s1"])], 200, Outcome.UP, Reason.OK, "no alert fires", id="silenced"),
        pytest.param([alert("A", state="suppressed", inhibitedBy=["f1"])], 200, Outcome.UP, Reason.OK, "no alert fires", id="inhibited"),
        pytest.param([alert("A", state="unprocessed")], 200, Outcome.UP, Reason.OK, "no alert fires", id="unprocessed"),
        pytest.param('bad matcher format: app', 400, Outcome.UNKNOWN, Reason.QUERY, "Alertmanager refused the request (400): bad matcher format: app", id="bad-matcher"),
        pytest.param({"code": 601, "message": "upstream"}, 502, Outcome.UNKNOWN, Reason.STATUS, "Alertmanager answered 502: upstream", id="5xx"),
        pytest.param({"alerts": []}, 200, Outcome.UNKNOWN, Reason.INVALID_JSON, "expected a list of alerts", id="not-a-list"),
    ],
)  # fmt: skip
def test_alertmanager_judge(
    body: Any, status: int, outcome: Outcome, reason: Reason, detail: str
) -> None:
    """Firing alerts are down with their names and summaries; muted ones do not count;
    Alertmanager's own faults are unknown."""
    check = alertmanager()

    result = kind_of(check).judge(check, answer(body, status))

    assert (result.outcome, result.reason) == (outcome, reason), result.detail
    assert detail in result.detail


def test_alertmanager_error_down_when_configured() -> None:
    """``on_error = "down"``: an Alertmanager that refuses is a failure of the check."""
    check = alertmanager(on_error="down")

    result = kind_of(check).judge(check, answer("bad matcher", 400))

    assert (result.outcome, result.reason) == (Outcome.DOWN, Reason.QUERY)


def test_token_masked_in_nested_fields() -> None:
    """A service quoting the token back, even inside the alert list, shows the mask."""
    check = alertmanager(token=SecretStr("tok-0123456789"))
    body = [alert("Leak", summary="header was Bearer tok-0123456789")]

    result = mask_headers(kind_of(check).judge(check, answer(body)), check)

    assert "tok-0123456789" not in json.dumps(result.fields) + result.detail
    assert "Bearer ***" in result.fields["alerts"][0]["summary"]


# -- what an unknown result does ---------------------------------------------------------------


def unknown_cycle(at: datetime = T0) -> TargetResult:
    """A target whose health is up and whose error-rate query came back empty."""
    return TargetResult(
        "production",
        at,
        (
            check_result(Outcome.UP, when=at),
            check_result(Outcome.UNKNOWN, name="error-rate", when=at, detail="no sample"),
        ),
    )


def test_unknown_target_metrics() -> None:
    """Unknown is neither 0 nor 1: probe_success and target_up are absent, probe_unknown
    is 1, and no failure is counted."""
    metrics = Metrics(CollectorRegistry())
    settings = load_settings(None)
    metrics.declare(settings.targets)
    metrics.observe(
        TargetResult("production", T0, (check_result(Outcome.DOWN, name="health"),)), 1.0
    )
    labels = {"target": "production", "check": "error-rate"}

    metrics.observe(unknown_cycle(), 2.0)

    sample = metrics.registry.get_sample_value
    assert sample("monitor_target_up", {"target": "production"}) is None
    assert sample("monitor_probe_success", labels) is None
    assert sample("monitor_probe_unknown", labels) == 1
    assert sample("monitor_probe_failures_total", {**labels, "reason": "empty"}) is None
    metrics.observe(TargetResult("production", T0, (check_result(Outcome.UP),)), 3.0)
    assert sample("monitor_target_up", {"target": "production"}) == 1


def test_gate_fails_when_a_check_cannot_tell() -> None:
    """The gate does not approve what nobody could check, and says which check."""
    results = [unknown_cycle()]

    assert not passed(results)
    assert verdict(results) == "FAIL: cannot tell: production/error-rate: no sample"


def transcript(timeline: list[TargetResult]) -> tuple[list[str], Any]:
    """The tracker's transitions over ``timeline`` (default policy), and its last state."""
    from monitor.incidents.tracker import Policy, TrackerState, step

    state = TrackerState("production")
    kinds: list[str] = []
    for probe in timeline:
        state, transitions = step(state, probe, probe.at, Policy(open_after=3, close_after=2))
        kinds += [t.kind.value for t in transitions]
    return kinds, state


def cycle(minute: int, health: Outcome, error_rate: Outcome) -> TargetResult:
    """One cycle of a health check and an error-rate query, ``minute`` after T0."""
    at = T0 + timedelta(minutes=minute)
    reasons = {Outcome.DOWN: Reason.THRESHOLD, Outcome.UNKNOWN: Reason.CONNECT}
    return TargetResult(
        "production",
        at,
        (
            check_result(health, when=at),
            check_result(error_rate, reasons.get(error_rate), name="error-rate", when=at),
        ),
    )


U, D, X = Outcome.UP, Outcome.DOWN, Outcome.UNKNOWN


def test_an_unknown_check_holds_the_incident_it_caused() -> None:
    """error-rate down x3 (opened), error-rate unknown x5 (held: it may still be bad),
    up x2 (resolved): the duration ends at the first good probe, not at the unknown."""
    timeline = [cycle(m, U, D) for m in range(3)]
    timeline += [cycle(m, U, X) for m in range(3, 8)]
    timeline += [cycle(m, U, U) for m in range(8, 10)]

    kinds, state = transcript(timeline)

    assert kinds == ["opened", "resolved"]
    assert state.incident.duration_s == 8 * 60
    assert state.incident.probes_total == 5


def test_an_unknown_check_does_not_hold_what_recovered() -> None:
    """health down x3 (opened, error-rate fine), then health up while Prometheus is away
    (error-rate unknown) x2: what failed is good again, so it resolves on time."""
    timeline = [cycle(m, D, U) for m in range(3)]
    timeline += [cycle(m, U, X) for m in range(3, 5)]

    kinds, state = transcript(timeline)

    assert kinds == ["opened", "resolved"]
    assert state.incident.duration_s == 3 * 60


def test_unknown_opens_nothing() -> None:
    """Unknown x5 on a healthy target: no streak, no incident."""
    kinds, state = transcript([cycle(m, U, X) for m in range(5)])

    assert kinds == []
    assert state.fail_streak == 0


def test_issue_title_says_the_value() -> None:
    """A query's title names the check and its finding, not Prometheus's API path."""
    from monitor.incidents import text

    check = prometheus(unit="ratio")
    found = kind_of(check).judge(check, answer(vector(({}, "0.072"))))

    title = text.title(TargetResult("production", T0, (found,)))

    assert title == "production is down: error-rate 7.2 %, above max 5 %"


def test_issue_body_carries_each_query_value() -> None:
    """Two prometheus checks: the issue's payload table shows both values and queries,
    the second under its check's name, and the detail with the value and the bound."""
    from dataclasses import replace

    from monitor.incidents import text
    from monitor.incidents.tracker import Incident

    error_rate = prometheus(unit="ratio")
    latency = prometheus(name="p95", query="histogram_quantile(0.95, x)", max=1.0, unit="seconds")
    results = (
        kind_of(error_rate).judge(error_rate, answer(vector(({}, "0.072")))),
        replace(kind_of(latency).judge(latency, answer(vector(({}, "0.4")))), check="p95"),
    )
    incident = Incident(id="production-x", target="production", started_at=T0)

    body = text.body(incident, TargetResult("production", T0, results), T0)

    assert "threshold: 7.2 %, above max 5 %; query: sum(rate(" in body
    assert "| value | 0.072 |" in body
    assert "| p95.value | 0.4 |" in body
    assert '| p95.query | "histogram_quantile(0.95, x)" |' in body


def test_token_env_works_for_targets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check given in MONITOR_TARGETS reads its token_env like one in the file."""
    monkeypatch.setenv("PTOK", "env-token-0123456789")
    monkeypatch.setenv(
        "MONITOR_TARGETS",
        json.dumps(
            [
                {
                    "name": "production",
                    "url": "https://hotdash.fly.dev",
                    "checks": [
                        {"name": "q", "type": "prometheus", "url": PROM, "query": "up",
                         "min": 1, "token_env": "PTOK"}
                    ],
                }
            ]
        ),
    )  # fmt: skip

    settings = load_settings(None)

    token = settings.targets[0].checks[0].token
    assert token is not None
    assert token.get_secret_value() == "env-token-0123456789"
    assert daemon_problems(settings) == []


def test_basic_auth_password_in_a_check_url_is_a_secret() -> None:
    """https://user:pass@host for a hosted Prometheus: the password joins the secrets."""
    from monitor.config import secret_values

    settings = load_settings(
        None,
        targets=[
            {
                "name": "production",
                "url": "https://hotdash.fly.dev",
                "checks": [
                    {"name": "q", "type": "prometheus", "query": "up", "min": 1,
                     "url": "https://team:p%40ss-0123456789@prom.example"}
                ],
            }
        ],
    )  # fmt: skip

    assert {"p%40ss-0123456789", "p@ss-0123456789"} <= set(secret_values(settings))


def test_a_header_value_in_the_body_still_parses() -> None:
    """Secrets are masked in what a result shows, never in what is judged: a header
    value that also appears in a healthy body does not break JSON or a condition."""
    check = CheckConfig(
        name="health",
        path="/health",
        headers={"X-Env": SecretStr("ok")},
        conditions=["status == 'ok'"],
    )
    body = Answer(
        target="production",
        url="https://t.example/health",
        started_at=T0,
        duration_s=0.01,
        status=200,
        body=b'{"status": "ok", "errorRate": 0.02}',
        secrets=("ok",),
    )

    result = kind_of(check).judge(check, body)

    assert (result.outcome, result.reason) == (Outcome.UP, Reason.OK)
    assert result.body_excerpt == '{"status": "***", "errorRate": 0.02}'


def test_alertmanager_list_of_non_alerts_is_not_up() -> None:
    """A 200 with a list that holds no alert objects is not an Alertmanager's answer."""
    check = alertmanager()

    for body in ([1, 2], [{"labels": {}}], ["x"]):
        result = kind_of(check).judge(check, answer(body))
        assert (result.outcome, result.reason) == (Outcome.UNKNOWN, Reason.INVALID_JSON), body


def test_verify_counts_what_could_not_tell() -> None:
    """The post-deploy verification says how many probes could not tell."""
    from monitor.release.verify import Verification

    record = Verification("production", 60, 10, 3, probes=[unknown_cycle(), unknown_cycle()])

    assert record.as_dict()["unknown_probes"] == 2
    assert record.as_dict()["failed_probes"] == 0


def test_the_shipped_config_examples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented prometheus and alertmanager checks in config.toml, uncommented, are a
    valid configuration (the example a user copies works)."""
    shipped = (Path(__file__).parent.parent / "config.toml").read_text("utf-8")
    start = shipped.index("  # [[targets.checks]]")
    end = shipped.index("\n\n# Paging", start)
    block = "\n".join(
        line.removeprefix("  #").removeprefix(" ") for line in shipped[start:end].splitlines()
    )
    monkeypatch.setenv("PROMETHEUS_TOKEN", "example-0123456789")
    path = tmp_path / "config.toml"
    path.write_text(shipped[:start] + block + shipped[end:], encoding="utf-8")

    settings = load_settings(path)

    kinds = {c.name: c.type for c in settings.target("production").checks}
    assert kinds == {
        "health": "http",
        "monitoring": "http",
        "error-rate": "prometheus",
        "alerts": "alertmanager",
    }


async def test_basic_auth_in_a_url_is_sent_never_shown(target_server: TargetServer) -> None:
    """``https://user:pass@host``: httpx sends it as basic auth; the result's URL, which
    issues and the page show, has no userinfo, and the password is nowhere in it."""
    from monitor.config import MonitorSection
    from monitor.probing.prober import Prober

    target_server.route("/api/v1/query", json_body(vector(({}, "0.01"))))
    url = target_server.url.replace("http://", "http://team:p4ss-0123456789@")
    check = prometheus(url=url)
    target = TargetConfig(name="production", url="http://127.0.0.1:1", checks=[check])

    async with Prober(MonitorSection(timeout=2)) as prober:
        result = await prober.probe_check(target, check)

    [request] = target_server.requests("/api/v1/query")
    assert request.header("authorization") == "Basic dGVhbTpwNHNzLTAxMjM0NTY3ODk="
    assert result.outcome is Outcome.UP, result.detail
    assert result.url == target_server.url + "/api/v1/query"
    assert "p4ss" not in repr(result)
