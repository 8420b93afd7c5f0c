"""``type = "prometheus"`` checks against a real Prometheus scraping a real (small) app.

One Prometheus for the module scrapes :class:`tests.promapp.PromApp` every second; the
tests switch the app's share of 503s and probe with the real :class:`Prober` until the
check's verdict follows: thresholds (down, degraded, back up), a vector whose worst
series decides, Prometheus refusing the query (bad PromQL, a range vector) or
unreachable (unknown by default, down with ``on_error = "down"``), an empty answer under
each ``on_empty``, and a bearer token through an authenticating proxy (:class:`tests.promapp.AuthProxy`, Fly's managed Prometheus in
miniature). The last test runs the real daemon: the 5xx share rises, an incident issue
opens on a fake GitHub with the measured value and the query, the share falls, the
issue closes, and the token is nowhere it should not be. Two more pin defects found on
the way: a fractional time-out, and a token cut to length before it was masked.

prometheus comes from Debian's ``prometheus`` package: without it these tests skip
locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import MASK, CheckConfig, MonitorSection, TargetConfig
from monitor.probing.prober import Prober
from monitor.probing.results import CheckResult, Outcome, Reason
from tests.daemon_process import (
    Daemons,
    clean_env,
    http_get,
    toml_value,
    wait_for,
)
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.ports import free_port
from tests.promapp import APP, METRIC, AuthProxy, PromApp
from tests.test_prometheus import Process, Prometheus, binary

HOST = "127.0.0.1"
JOB = "hotdash"
ERROR_RATIO = (
    f'sum(rate({METRIC}{{app="{APP}",status=~"5.."}}[5s])) / sum(rate({METRIC}{{app="{APP}"}}[5s]))'
)
PER_STATUS = f'rate({METRIC}{{app="{APP}"}}[5s])'  # one series per status, no sum
QUERY_PATH = "/api/v1/query"
TOKEN = "fly-prom-7c1e9a4b2d8f4a36b5e0c9d7"  # what the proxy accepts
WRONG_TOKEN = "fly-prom-0000wrong1111token2222"
TOKEN_ENV = "HOTDASH_PROMETHEUS_TOKEN"
SETTLE_S = 20.0  # a 5 s rate window, 1 s scrapes: a switch shows within seconds
PERCENT = re.compile(r"\b\d+(?:\.\d+)? %, above max 5 %")
# when Prometheus itself fails: unknown by default, down when the check says so
ON_ERROR = [
    pytest.param({}, Outcome.UNKNOWN, id="default-unknown"),
    pytest.param({"on_error": "down"}, Outcome.DOWN, id="on_error-down"),
]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Iterator[PromApp]:
    """The scraped app, serving 500 requests per second, none of them 5xx at first."""
    with PromApp() as started:
        yield started


@pytest.fixture(scope="module")
def prometheus(app: PromApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One Prometheus scraping ``app`` every second, once both series have samples."""
    prometheus_bin = binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    scrape = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [app.address]}]}],
    }
    config.write_text(yaml.safe_dump(scrape, sort_keys=False), encoding="utf-8")
    port = free_port()
    process = Process(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
        workdir,
        clean_env(),
    )
    api = Prometheus(port)
    try:

        def ready() -> bool:
            assert process.running(), f"prometheus exited during start-up\n{process.tail()}"
            try:
                return http_get(f"{api.base}/-/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, 15, "prometheus ready", process.tail)
        wait_for(
            lambda: len(api.query(f'{METRIC}{{app="{APP}"}}')) == len(app.counts()),
            15,
            f"{METRIC} scraped, both series",
            process.tail,
        )
        yield api
    finally:
        process.stop()


# -- probing ---------------------------------------------------------------------------


def check(url: str, query: str = ERROR_RATIO, **keys: Any) -> CheckConfig:
    """A prometheus check called ``errors`` against ``url`` (``max = 0.05`` unless bounded)."""
    bounds = {"max", "min", "degraded_max", "degraded_min"}
    if not bounds & set(keys):
        keys["max"] = 0.05
    return CheckConfig.model_validate(
        {"name": "errors", "type": "prometheus", "url": url, "query": query, **keys}
    )


def probe(one: CheckConfig, app: PromApp) -> CheckResult:
    """One probe of ``one`` by the real prober, as the daemon makes it."""
    target = TargetConfig(name=JOB, url=app.url, checks=[one])

    async def run() -> CheckResult:
        async with Prober(MonitorSection(timeout=5)) as prober:
            return (await prober.probe_target(target)).checks[0]

    return asyncio.run(run())


def show(result: CheckResult | None) -> str:
    """A result as an assertion message reads it."""
    if result is None:
        return "no probe yet"
    return (
        f"{result.outcome} / {result.reason} / {result.status_code}: {result.detail!r}"
        f" fields={dict(result.fields)} excerpt={result.body_excerpt[:200]!r}"
    )


def probe_until(
    one: CheckConfig,
    app: PromApp,
    accept: Callable[[CheckResult], bool],
    what: str,
    timeout_s: float = SETTLE_S,
) -> CheckResult:
    """Probe until a result passes ``accept`` (returned); AssertionError with the last one."""
    seen: list[CheckResult] = []

    def attempt() -> CheckResult | None:
        seen.append(probe(one, app))
        return seen[-1] if accept(seen[-1]) else None

    return wait_for(attempt, timeout_s, what, lambda: show(seen[-1] if seen else None))


def steady(share: float, tolerance: float = 1e-6) -> Callable[[CheckResult], bool]:
    """Accepts a result whose value is the 5xx share the app serves now."""

    def accept(result: CheckResult) -> bool:
        value = result.fields.get("value")
        return isinstance(value, float) and abs(value - share) <= tolerance

    return accept


# -- thresholds --------------------------------------------------------------------------


def test_error_rate_goes_down_above_max_and_up_below(app: PromApp, prometheus: Prometheus) -> None:
    """Pins max on a ratio: up at 0 % 5xx, down (threshold, "20 %, above max 5 %") at 20 %,
    the fields value/threshold/query, and up again when the share falls."""
    errors = check(prometheus.base, unit="ratio")
    app.error_share = 0.0
    up = probe_until(errors, app, steady(0.0), "0 % errors, up")
    assert up.outcome is Outcome.UP, show(up)
    assert up.reason is Reason.OK, show(up)
    assert up.detail == f"0 % (max 5 %); query: {ERROR_RATIO}", show(up)
    assert up.status_code == 200
    assert up.url == prometheus.base + QUERY_PATH  # no PromQL in the URL a result shows

    app.error_share = 0.2
    down = probe_until(errors, app, lambda r: r.outcome is Outcome.DOWN, "down on 5xx")
    assert down.reason is Reason.THRESHOLD, show(down)
    assert PERCENT.match(down.detail), show(down)
    assert set(down.fields) == {"value", "threshold", "query"}, show(down)
    assert 0.05 < down.fields["value"] <= 0.2 + 1e-6, show(down)
    assert down.fields["threshold"] == "max 5 %"
    assert down.fields["query"] == ERROR_RATIO
    # once the 5 s window holds only the new traffic, the value is the share exactly
    settled = probe_until(errors, app, steady(0.2), "the value settles on 20 %")
    assert settled.outcome is Outcome.DOWN, show(settled)
    assert settled.detail == f"20 %, above max 5 %; query: {ERROR_RATIO}", show(settled)

    app.error_share = 0.0
    again = probe_until(errors, app, lambda r: r.outcome is Outcome.UP, "up again")
    assert again.reason is Reason.OK, show(again)
    assert again.detail.endswith(f"(max 5 %); query: {ERROR_RATIO}"), show(again)
    assert again.fields["value"] <= 0.05, show(again)


def test_degraded_between_degraded_max_and_max(app: PromApp, prometheus: Prometheus) -> None:
    """Pins degraded_max: a value above it and below max is degraded, reason threshold."""
    errors = check(prometheus.base, max=0.5, degraded_max=0.05, unit="ratio")
    app.error_share = 0.2
    degraded = probe_until(errors, app, steady(0.2), "the value settles on 20 %")
    assert degraded.outcome is Outcome.DEGRADED, show(degraded)
    assert degraded.reason is Reason.THRESHOLD, show(degraded)
    assert degraded.ok  # degraded is serving: it opens no incident
    assert degraded.detail == f"20 %, above degraded_max 5 %; query: {ERROR_RATIO}"
    assert degraded.fields["threshold"] == "max 50 %, degraded_max 5 %", show(degraded)
    assert degraded.fields["query"] == ERROR_RATIO
    app.error_share = 0.0


def test_vector_worst_series_decides_and_is_named(app: PromApp, prometheus: Prometheus) -> None:
    """Pins a per-status vector without sum: the worst sample decides (a series down
    beats one degraded; below min, the low series) and the detail and fields name it."""
    app.error_share = 0.2  # 200s at 400/s, 503s at 100/s: both past a bound below
    errors_rate = f'sum(rate({METRIC}{{app="{APP}",status="503"}}[5s]))'

    def settled() -> bool:
        value = prometheus.value(errors_rate)
        return value is not None and 90 <= value <= 110

    wait_for(settled, SETTLE_S, "the 503 series at 100/s")
    labels = f'app="{APP}", instance="{app.address}", job="{JOB}"'
    upper = check(prometheus.base, PER_STATUS, max=250, degraded_max=50)
    down = probe(upper, app)  # the 503 series is degraded (100 > 50): down still wins
    worst = f'{{{labels}, status="200"}}'
    assert down.outcome is Outcome.DOWN, show(down)
    assert down.reason is Reason.THRESHOLD, show(down)
    assert f"above max 250 (worst of 2 series: {worst}); query: {PER_STATUS}" in down.detail
    assert down.fields["labels"] == worst, show(down)
    assert 250 < down.fields["value"] < 600, show(down)
    assert down.fields["threshold"] == "max 250, degraded_max 50"

    # the other end: the 503 series is the one below min
    lower = check(prometheus.base, PER_STATUS, min=200)
    low = probe(lower, app)
    assert low.outcome is Outcome.DOWN, show(low)
    assert low.reason is Reason.THRESHOLD, show(low)
    assert f'below min 200 (worst of 2 series: {{{labels}, status="503"}})' in low.detail
    assert low.fields["labels"] == f'{{{labels}, status="503"}}'
    app.error_share = 0.0


# -- Prometheus refuses, or has nothing -------------------------------------------------


@pytest.mark.parametrize(("mode", "outcome"), ON_ERROR)
def test_bad_promql_is_refused_with_the_parse_error(
    app: PromApp, prometheus: Prometheus, mode: dict[str, str], outcome: Outcome
) -> None:
    """Pins bad PromQL: Prometheus's 400 is reason query with its parse error quoted,
    unknown by default and down with on_error = "down"."""
    result = probe(check(prometheus.base, "sum(rate(", **mode), app)
    assert result.outcome is outcome, show(result)
    assert result.reason is Reason.QUERY, show(result)
    assert result.status_code == 400
    assert result.detail.startswith("Prometheus refused the query (400): bad_data: "), show(result)
    assert "parse error" in result.detail, show(result)
    assert result.detail.endswith("; query: sum(rate("), show(result)
    assert result.fields == {"query": "sum(rate("}
    assert "parse error" in result.body_excerpt, show(result)


@pytest.mark.parametrize(("mode", "outcome"), ON_ERROR)
def test_range_vector_is_a_query_error(
    app: PromApp, prometheus: Prometheus, mode: dict[str, str], outcome: Outcome
) -> None:
    """Pins a range-vector query (a matrix answer, 200): reason query, unknown by
    default and down with on_error = "down"."""
    query = f"{METRIC}[1m]"
    result = probe(check(prometheus.base, query, **mode), app)
    assert result.outcome is outcome, show(result)
    assert result.reason is Reason.QUERY, show(result)
    assert result.status_code == 200
    assert "returns a matrix" in result.detail, show(result)
    assert result.detail.endswith(f"; query: {query}"), show(result)
    assert result.fields == {"query": query}


@pytest.mark.parametrize(
    ("on_empty", "outcome", "reason"),
    [
        ("up", Outcome.UP, Reason.OK),
        ("down", Outcome.DOWN, Reason.EMPTY),
        ("unknown", Outcome.UNKNOWN, Reason.EMPTY),
    ],
)
def test_empty_result_follows_on_empty(
    app: PromApp, prometheus: Prometheus, on_empty: str, outcome: Outcome, reason: Reason
) -> None:
    """Pins an empty answer under each on_empty: up (ok), down (empty), unknown (empty)."""
    query = f'{METRIC}{{app="nope"}}'
    result = probe(check(prometheus.base, query, on_empty=on_empty), app)
    assert result.outcome is outcome, show(result)
    assert result.reason is reason, show(result)
    assert result.detail == f"no sample, on_empty = {on_empty}; query: {query}", show(result)
    assert result.fields == {"query": query}


def test_nan_is_no_value(app: PromApp, prometheus: Prometheus) -> None:
    """Pins a NaN sample (0/0: an error rate without traffic) as empty, not as a value."""
    query = f'sum(rate({METRIC}{{app="{APP}",status="503"}}[5s])) / 0'
    app.error_share = 0.0
    result = probe_until(
        check(prometheus.base, query, on_empty="down"), app,
        lambda r: "NaN" in r.detail, "0/0 read as no value",
    )  # fmt: skip
    assert result.outcome is Outcome.DOWN, show(result)
    assert result.reason is Reason.EMPTY, show(result)
    assert result.detail == f"no value (NaN), on_empty = down; query: {query}", show(result)
    assert result.fields == {"query": query}


@pytest.mark.parametrize(("mode", "outcome"), ON_ERROR)
def test_prometheus_down_is_a_connect_failure(
    app: PromApp, mode: dict[str, str], outcome: Outcome
) -> None:
    """Pins an unreachable Prometheus (a refused port): reason connect, unknown by
    default (its outage is not the target's) and down with on_error = "down"."""
    url = f"http://{HOST}:{free_port()}"
    result = probe(check(url, **mode), app)
    assert result.outcome is outcome, show(result)
    assert result.reason is Reason.CONNECT, show(result)
    assert result.status_code is None
    assert result.url == url + QUERY_PATH


# -- a bearer token ------------------------------------------------------------------------


def secret_free(result: CheckResult, secret: str) -> bool:
    """True when ``secret`` is in none of what a result repeats."""
    said = [result.detail, result.body_excerpt, result.url, json.dumps(dict(result.fields))]
    return not any(secret in text for text in said)


def test_bearer_token_through_an_authenticating_proxy(app: PromApp, prometheus: Prometheus) -> None:
    """Pins token: sent as a bearer, the query works; a wrong one is refused, reason query
    (401), down with on_error = "down"; no token shows in the detail, fields or excerpt,
    even when the refusal quotes it."""
    query = f'sum({METRIC}{{app="{APP}"}})'
    with AuthProxy(prometheus.base, TOKEN) as proxy:
        good = probe(check(proxy.url, query, min=1, token=TOKEN), app)
        assert good.outcome is Outcome.UP, show(good)
        assert good.reason is Reason.OK, show(good)
        assert proxy.authorizations() == [f"Bearer {TOKEN}"]
        assert secret_free(good, TOKEN), show(good)

        refused = probe(check(proxy.url, query, min=1, token=WRONG_TOKEN, on_error="down"), app)
        assert refused.outcome is Outcome.DOWN, show(refused)
        assert refused.reason is Reason.QUERY, show(refused)
        assert refused.status_code == 401
        assert "(401)" in refused.detail, show(refused)
        assert "unauthorized: bad token" in refused.detail, show(refused)
        assert proxy.authorizations()[-1] == f"Bearer {WRONG_TOKEN}"

        missing = probe(check(proxy.url, query, min=1), app)
        assert missing.outcome is Outcome.UNKNOWN, show(missing)  # on_error's default
        assert missing.reason is Reason.QUERY, show(missing)
        assert proxy.authorizations()[-1] is None

        proxy.echo = True  # the refusal now quotes the header it got
        echoed = probe(check(proxy.url, query, min=1, token=WRONG_TOKEN), app)
        assert echoed.reason is Reason.QUERY, show(echoed)
        assert MASK in echoed.detail, show(echoed)
        assert MASK in echoed.body_excerpt, show(echoed)
        for result in (good, refused, missing, echoed):
            assert secret_free(result, TOKEN), show(result)
            assert secret_free(result, WRONG_TOKEN), show(result)


# -- found on the way: a fractional time-out, a token cut before it was masked -----------


def test_a_fractional_timeout_is_accepted_by_prometheus(
    app: PromApp, prometheus: Prometheus
) -> None:
    """Pins that a check timeout of 1.5 s (or "500ms") still queries: Prometheus's
    duration syntax has no fractions, so the timeout parameter must be whole units."""
    result = probe(check(prometheus.base, "vector(1)", max=2, timeout=1.5), app)
    assert result.outcome is Outcome.UP, show(result)


def test_an_echoed_token_is_masked_wherever_the_text_is_cut(
    app: PromApp, prometheus: Prometheus
) -> None:
    """Pins that a refusal quoting the token leaves none of it in the detail or excerpt,
    wherever the quote falls: the cut to length must not leave a prefix to leak."""
    secret = "s3cr3t-9f8e7d6c5b4a39281706f5e4d3c2"
    query = f'sum({METRIC}{{app="{APP}"}})'
    leaks: list[str] = []
    with AuthProxy(prometheus.base, TOKEN, echo=True) as proxy:
        for padding in range(0, 280, 3):
            proxy.padding = padding
            result = probe(check(proxy.url, query, min=1, token=secret), app)
            for name, text in (("detail", result.detail), ("excerpt", result.body_excerpt)):
                if any(secret[:k] in text for k in range(8, len(secret) + 1)):
                    leaks.append(f"padding {padding}, {name}: {text[-60:]!r}")
    assert leaks == [], "\n".join(leaks[:6])


# -- end to end: the daemon, the proxy, a fake GitHub ------------------------------------


def daemon_config(path: Path, *, app: PromApp, proxy: AuthProxy, github: FakeGitHub) -> Path:
    """One target with one prometheus check (its token from TOKEN_ENV), 1 s cadence,
    0.5 s while failing, an incident after 2 failures and closed after 2 successes."""
    monitor = {
        "interval": 1,
        "incident_interval": 0.5,
        "timeout": 2,
        "open_after": 2,
        "close_after": 2,
        "reopen_window": "30s",
        "reminder_interval": "1h",
        "jitter": 0,
        "listen": f"{HOST}:{free_port()}",
        "state_path": path.parent / "state" / "monitor.db",
        "metrics_refresh": 1,
        "shutdown_grace": 2,
    }
    errors = {
        "name": "errors",
        "type": "prometheus",
        "url": proxy.url,
        "token_env": TOKEN_ENV,
        "query": ERROR_RATIO,
        "max": 0.05,
        "unit": "ratio",
    }
    lines = ["[monitor]", *(f"{k} = {toml_value(v)}" for k, v in monitor.items())]
    lines += [
        "",
        "[github]",
        f"repository = {toml_value(DEFAULT_REPO)}",
        f"api_url = {toml_value(github.url)}",
        "timeout = 5",
        "",
        "[[targets]]",
        f"name = {toml_value(JOB)}",
        f"url = {toml_value(app.url)}",
        "",
        "[[targets.checks]]",
        *(f"{k} = {toml_value(v)}" for k, v in errors.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.e2e
def test_daemon_opens_and_closes_an_incident_from_the_error_rate(
    tmp_path: Path, app: PromApp, prometheus: Prometheus, fake_github: FakeGitHub
) -> None:
    """Pins the daemon on a prometheus check through the token proxy: a 5xx share above
    max opens an issue stating the value and the query, its fall closes the issue, and the
    token is in no log, issue, comment or page."""
    for label in ("incident", "monitor", f"target:{JOB}"):
        fake_github.add_label(DEFAULT_REPO, label)  # spares three throttled label POSTs
    app.error_share = 0.0

    def healthy() -> bool:
        ratio = prometheus.value(ERROR_RATIO)
        return ratio is not None and ratio <= 0.05

    wait_for(healthy, SETTLE_S, "a healthy start")
    with AuthProxy(prometheus.base, TOKEN) as proxy, Daemons.session(tmp_path) as daemons:
        config = daemon_config(tmp_path / "config.toml", app=app, proxy=proxy, github=fake_github)
        env = clean_env(GITHUB_TOKEN=DEFAULT_TOKEN, **{TOKEN_ENV: TOKEN})
        daemon = daemons.start(config, env)
        daemon.wait_healthy()

        def issues() -> list[dict[str, Any]]:
            return fake_github.issues(DEFAULT_REPO)

        def context() -> str:
            said = [(i["number"], i["state"], i["title"]) for i in issues()]
            return (
                f"issues: {said}\nauthorizations: {proxy.authorizations()[-5:]}\n{daemons.logs()}"
            )

        def one_issue(state: str) -> dict[str, Any] | None:
            found = issues()
            assert len(found) <= 1, context()
            return found[0] if found and found[0]["state"] == state else None

        labels = {"target": JOB, "check": "errors"}
        wait_for(
            lambda: daemon.value("monitor_probe_success", **labels) == 1,
            10,
            "a good probe",
            context,
        )
        assert issues() == [], context()

        app.error_share = 0.2
        issue = wait_for(lambda: one_issue("open"), 30, "an open issue", context)
        body = issue["body"]
        assert PERCENT.search(body), body  # the measured value, in percent
        assert ERROR_RATIO in body, body  # the query, verbatim in the checks table
        assert '| threshold | "max 5 %" |' in body, body  # the Health payload table
        assert issue["title"].startswith(f"{JOB} is down"), issue["title"]
        pages = [daemon.metrics_text(), json.dumps(daemon.healthz()[1])]

        app.error_share = 0.0
        closed = wait_for(lambda: one_issue("closed"), 30, "the issue closed", context)
        assert closed["state_reason"] == "completed", context()
        pages += [daemon.metrics_text(), json.dumps(daemon.healthz()[1])]
        daemon.terminate()
        assert daemon.wait(10) == 0, daemon.logs()

    seen = proxy.authorizations()
    assert seen, "the daemon never asked the proxy"
    assert set(seen) == {f"Bearer {TOKEN}"}, seen  # the token was in use, on every probe
    assert TOKEN not in daemon.stdout(), daemon.logs()
    assert TOKEN not in daemon.stderr(), daemon.logs()
    for page in pages:
        assert TOKEN not in page, page[:2000]
    for found in issues_with_comments(fake_github):
        assert TOKEN not in found, found[:2000]
    assert fake_github.leaks(TOKEN) == [], fake_github.leaks(TOKEN)


def issues_with_comments(github: FakeGitHub) -> list[str]:
    """The title, body and every comment of every issue in the fake repository."""
    texts: list[str] = []
    for issue in github.issues(DEFAULT_REPO):
        texts += [issue["title"], issue["body"] or ""]
        texts += [c["body"] for c in github.comments(DEFAULT_REPO, issue["number"])]
    return texts
