"""The ``type = "alertmanager"`` check against the real Alertmanager binary: down while
matching alerts fire, up when none do, and blind to alerts a person silenced or a rule
inhibited, as the pages are.

One Alertmanager serves the module (:mod:`tests.amserver`), with an inhibit rule
(``AppDown`` mutes ``HighErrorRate`` of the same ``app``); each test posts its alerts under
an ``app`` label of its own, so no test sees another's. Alertmanager applies silences and
inhibitions asynchronously: the tests poll its API until it shows the state, then probe.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from monitor.config import CheckConfig, MonitorSection, TargetConfig, load_settings
from monitor.probing.prober import Prober
from monitor.probing.results import CheckResult, Outcome, Reason
from tests.amserver import NULL_CONFIG, POLL_S, AlertmanagerProxy, AlertmanagerServer, Fault
from tests.ports import free_port

# AppDown of an app mutes that app's HighErrorRate: the error rate of a dead app says nothing
INHIBIT_CONFIG = (
    NULL_CONFIG
    + """\
inhibit_rules:
  - source_matchers: ['alertname="AppDown"']
    target_matchers: ['alertname="HighErrorRate"']
    equal: ['app']
"""
)
PAGES = 'severity=~"critical|page"'
ERROR_RATE = "Error rate above 5 %"
DEADLINE_S = 10.0
TOKEN = "am-token-sentinel-7c1e0b"


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    """One Alertmanager for the module, with the AppDown → HighErrorRate inhibit rule."""
    base = tmp_path_factory.mktemp("check-alertmanager") / "alertmanager"
    with AlertmanagerServer(base, INHIBIT_CONFIG) as server:
        yield server


@pytest.fixture
def app() -> str:
    """An ``app`` label value no other test uses."""
    return f"app-{uuid.uuid4().hex[:12]}"


# ---- helpers ---------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def alert(
    app: str,
    alertname: str = "HighErrorRate",
    summary: str = ERROR_RATE,
    *,
    severity: str = "critical",
    started: datetime | None = None,
) -> dict[str, Any]:
    """One alert as ``POST /api/v2/alerts`` takes it, firing for the next hour."""
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": alertname, "app": app, "severity": severity},
        "annotations": {"summary": summary},
        "startsAt": _iso(started or now - timedelta(minutes=1)),
        "endsAt": _iso(now + timedelta(hours=1)),
    }


def post_alerts(am: AlertmanagerServer, *alerts: Mapping[str, Any]) -> None:
    """``POST /api/v2/alerts``, as Prometheus does."""
    response = am.http.post("/api/v2/alerts", json=list(alerts))
    assert response.status_code == 200, response.text


def expire_silence(am: AlertmanagerServer, silence_id: str) -> None:
    """``DELETE /api/v2/silence/{id}``: the silence ends now."""
    response = am.http.delete(f"/api/v2/silence/{silence_id}")
    assert response.status_code == 200, response.text


def status_of(am: AlertmanagerServer, app: str, alertname: str) -> dict[str, Any] | None:
    """The status Alertmanager shows for that app's alert (silenced and inhibited included)."""
    found = am.alerts(f'app="{app}"', f'alertname="{alertname}"')
    if not found:
        return None
    status: dict[str, Any] = found[0]["status"]
    return status


def wait_for_status(
    am: AlertmanagerServer,
    app: str,
    alertname: str,
    condition: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """Poll Alertmanager until the alert's status meets ``condition``; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    status = status_of(am, app, alertname)
    while status is None or not condition(status):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {alertname} of {app} {what}; last {status}")
        time.sleep(POLL_S)
        status = status_of(am, app, alertname)
    return status


def is_active(status: Mapping[str, Any]) -> bool:
    """Alertmanager shows the alert firing: active, silenced by nothing, inhibited by nothing."""
    return status["state"] == "active" and not status["silencedBy"] and not status["inhibitedBy"]


def alert_check(url: str, *matchers: str, **extra: Any) -> CheckConfig:
    """The check ``alerts`` of type alertmanager at ``url``."""
    return CheckConfig(
        name="alerts", type="alertmanager", url=url, matchers=list(matchers), **extra
    )


def target_of(check: CheckConfig) -> TargetConfig:
    """The target ``production`` with that one check (its own url is never requested)."""
    return TargetConfig(name="production", url="http://127.0.0.1:1", checks=[check])


async def _probe_target(target: TargetConfig) -> CheckResult:
    async with Prober(MonitorSection(timeout=5)) as prober:
        result = await prober.probe_target(target)
    (only,) = result.checks
    return only


def probe(check: CheckConfig | TargetConfig) -> CheckResult:
    """One probe of the target (or of a target holding just the check) by a fresh Prober."""
    target = check if isinstance(check, TargetConfig) else target_of(check)
    return asyncio.run(_probe_target(target))


def probe_until(check: CheckConfig, condition: Callable[[CheckResult], bool]) -> CheckResult:
    """Probe until the result meets ``condition`` (Alertmanager has processed the alerts)."""
    deadline = time.monotonic() + DEADLINE_S
    result = probe(check)
    while not condition(result):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s; last result {result}")
        time.sleep(POLL_S)
        result = probe(check)
    return result


def is_down(result: CheckResult) -> bool:
    """The check is down."""
    return result.outcome is Outcome.DOWN


def described(result: CheckResult) -> list[dict[str, str]]:
    """The alerts the result's fields list."""
    alerts: list[dict[str, str]] = result.fields["alerts"]
    return alerts


# ---- firing or not ---------------------------------------------------------------------


def test_no_alert_is_up(am: AlertmanagerServer, app: str) -> None:
    """No alert matches the matchers: up, reason ok, a detail naming the matchers."""
    result = probe(alert_check(am.url, f'app="{app}"', PAGES))

    assert (result.outcome, result.reason, result.status_code) == (Outcome.UP, Reason.OK, 200)
    assert result.detail == f'no alert fires for app="{app}", {PAGES}'
    assert result.target == "production"
    assert result.check == "alerts"
    assert result.url == am.url + "/api/v2/alerts"


def test_a_matching_alert_fires(am: AlertmanagerServer, app: str) -> None:
    """A posted alert matching every matcher: down, reason alerts, named with its summary."""
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    post_alerts(am, alert(app, started=started))

    result = probe_until(alert_check(am.url, f'app="{app}"', PAGES), is_down)

    assert (result.reason, result.status_code) == (Reason.ALERTS, 200)
    assert result.detail == f"1 alert firing: HighErrorRate ({ERROR_RATE})"
    assert result.fields["firing"] == 1
    (listed,) = described(result)
    since = listed.pop("since")
    assert listed == {"alertname": "HighErrorRate", "summary": ERROR_RATE, "severity": "critical"}
    assert datetime.fromisoformat(since) == started


def test_alerts_that_do_not_match_do_not_count(am: AlertmanagerServer, app: str) -> None:
    """Another app's alert and this app's warning fire in Alertmanager, yet the check is up."""
    other = f"{app}-other"
    post_alerts(
        am,
        alert(app, "HighLatency", "p99 above 2 s", severity="warning"),
        alert(other, summary="the other app's errors"),
    )
    wait_for_status(am, app, "HighLatency", is_active, "fires")
    wait_for_status(am, other, "HighErrorRate", is_active, "fires")
    check = alert_check(am.url, f'app="{app}"', PAGES)

    quiet = probe(check)
    assert (quiet.outcome, quiet.reason) == (Outcome.UP, Reason.OK)

    post_alerts(am, alert(app))  # now one that matches: it alone is listed
    result = probe_until(check, is_down)
    assert result.reason is Reason.ALERTS
    assert result.detail == f"1 alert firing: HighErrorRate ({ERROR_RATE})"
    assert result.fields["firing"] == 1
    assert [(a["alertname"], a["severity"]) for a in described(result)] == [
        ("HighErrorRate", "critical")
    ]


def test_two_alerts_fire(am: AlertmanagerServer, app: str) -> None:
    """Two matching alerts: the detail counts them and names both, the fields list both."""
    post_alerts(am, alert(app), alert(app, "HighLatency", "p99 above 2 s", severity="page"))
    check = alert_check(am.url, f'app="{app}"', PAGES)

    result = probe_until(check, lambda r: is_down(r) and r.fields.get("firing") == 2)

    assert result.reason is Reason.ALERTS
    one = f"HighErrorRate ({ERROR_RATE})"
    two = "HighLatency (p99 above 2 s)"
    assert result.detail in (f"2 alerts firing: {one}; {two}", f"2 alerts firing: {two}; {one}")
    assert sorted((a["alertname"], a["summary"], a["severity"]) for a in described(result)) == [
        ("HighErrorRate", ERROR_RATE, "critical"),
        ("HighLatency", "p99 above 2 s", "page"),
    ]


# ---- silenced and inhibited --------------------------------------------------------------


def test_a_silence_clears_the_check_and_its_end_brings_it_back(
    am: AlertmanagerServer, app: str
) -> None:
    """Silenced in Alertmanager the alert does not count (up); expired, it fires again (down)."""
    post_alerts(am, alert(app))
    check = alert_check(am.url, f'app="{app}"', PAGES)
    probe_until(check, is_down)

    silence_id = am.create_silence({"app": app, "alertname": "HighErrorRate"})
    wait_for_status(
        am,
        app,
        "HighErrorRate",
        lambda s: s["state"] == "suppressed" and s["silencedBy"] == [silence_id],
        "silenced",
    )
    silenced = probe(check)
    assert (silenced.outcome, silenced.reason) == (Outcome.UP, Reason.OK)

    expire_silence(am, silence_id)
    wait_for_status(am, app, "HighErrorRate", is_active, "fires again")
    again = probe(check)
    assert (again.outcome, again.reason) == (Outcome.DOWN, Reason.ALERTS)
    assert again.detail == f"1 alert firing: HighErrorRate ({ERROR_RATE})"


def test_an_inhibited_alert_does_not_count(am: AlertmanagerServer, app: str) -> None:
    """HighErrorRate muted by its app's AppDown (the inhibit rule): the check is up."""
    check = alert_check(am.url, f'app="{app}"', 'alertname="HighErrorRate"')
    post_alerts(am, alert(app))
    probe_until(check, is_down)

    post_alerts(am, alert(app, "AppDown", "the app does not answer"))
    status = wait_for_status(
        am,
        app,
        "HighErrorRate",
        lambda s: s["state"] == "suppressed" and bool(s["inhibitedBy"]),
        "inhibited",
    )
    assert not status["silencedBy"]
    assert is_active(wait_for_status(am, app, "AppDown", is_active, "fires"))

    result = probe(check)
    assert (result.outcome, result.reason) == (Outcome.UP, Reason.OK)


# ---- Alertmanager refuses or is away ---------------------------------------------------


def test_a_matcher_alertmanager_rejects_is_a_query_fault(am: AlertmanagerServer) -> None:
    """A matcher the config accepts (Python compiles a possessive quantifier) but
    Alertmanager's Go regular expressions refuse with a 400: reason query; unknown,
    since the target may be fine, and down with ``on_error = "down"``."""
    matcher = 'app=~"hotdash*+"'
    check = alert_check(am.url, matcher)  # through the repository's own validation
    assert check.matchers == [matcher]

    result = probe(check)
    strict = probe(alert_check(am.url, matcher, on_error="down"))

    assert (result.outcome, result.reason, result.status_code) == (
        Outcome.UNKNOWN,
        Reason.QUERY,
        400,
    )
    assert result.detail.startswith("Alertmanager refused the request (400): "), result.detail
    assert "error parsing regexp" in result.detail
    assert "error parsing regexp" in result.body_excerpt
    assert (strict.outcome, strict.reason) == (Outcome.DOWN, Reason.QUERY)


def test_an_unreachable_alertmanager_is_a_connect_fault() -> None:
    """Nothing listens on the port: reason connect, no status; unknown (Alertmanager is
    away, not the target), down with ``on_error = "down"``."""
    url = f"http://127.0.0.1:{free_port()}"
    result = probe(alert_check(url, 'app="hotdash"'))
    strict = probe(alert_check(url, 'app="hotdash"', on_error="down"))

    assert (result.outcome, result.reason, result.status_code) == (
        Outcome.UNKNOWN,
        Reason.CONNECT,
        None,
    )
    assert result.detail
    assert (strict.outcome, strict.reason) == (Outcome.DOWN, Reason.CONNECT)


def test_a_server_error_is_a_status_fault_and_a_refused_token_a_query_fault(
    am: AlertmanagerServer, app: str
) -> None:
    """Through the authenticating proxy: a 503 is reason status; a wrong token's 401 is
    reason query, with the token masked where the proxy quotes it."""
    proxy = AlertmanagerProxy(am.url, token=TOKEN)
    try:
        proxy.inject(Fault(status=503, body="upstream overloaded"))
        failed = probe(alert_check(proxy.url, f'app="{app}"', token=TOKEN))
        wrong = "wrong-token-sentinel-3f9a"
        refused = probe(alert_check(proxy.url, f'app="{app}"', token=wrong))
    finally:
        proxy.close()

    assert (failed.outcome, failed.reason, failed.status_code) == (
        Outcome.UNKNOWN,
        Reason.STATUS,
        503,
    )
    assert failed.detail == "Alertmanager answered 503: upstream overloaded"
    assert (refused.outcome, refused.reason, refused.status_code) == (
        Outcome.UNKNOWN,
        Reason.QUERY,
        401,
    )
    assert refused.detail.startswith("Alertmanager refused the request (401): unauthorized")
    assert wrong not in refused.detail
    assert wrong not in refused.body_excerpt


# ---- the configuration file --------------------------------------------------------------

CONFIG_FILE = """
[[targets]]
name = "production"
url = "http://127.0.0.1:1"

  [[targets.checks]]
  name = "alerts"
  type = "alertmanager"
  url = "{url}/"
  matchers = ['app="{app}"', 'severity=~"critical|page"']
  token_env = "AM_CHECK_TOKEN"
"""


def test_the_toml_form_loads_and_probes_the_same(
    am: AlertmanagerServer, app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[[targets.checks]] type = "alertmanager"`` from a file: the same check, its token
    from token_env sent as a bearer, the same query and the same result as built in code."""
    for name in list(os.environ):  # nothing from the developer's shell
        if name.upper().startswith(("MONITOR_", "FLY_")) or name in (
            "GITHUB_TOKEN",
            "DATABASE_URL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AM_CHECK_TOKEN", TOKEN)
    proxy = AlertmanagerProxy(am.url, token=TOKEN)
    try:
        path = tmp_path / "config.toml"
        path.write_text(CONFIG_FILE.format(url=proxy.url, app=app), "utf-8")
        settings = load_settings(path)
        (target,) = settings.targets
        (check,) = target.checks
        assert (check.name, check.type, check.url) == ("alerts", "alertmanager", proxy.url)
        assert check.matchers == [f'app="{app}"', PAGES]
        assert check.token is not None
        assert check.token.get_secret_value() == TOKEN

        built = alert_check(am.url, f'app="{app}"', PAGES)
        quiet = probe(target)
        post_alerts(am, alert(app))
        in_code = probe_until(built, is_down)
        from_file = probe(target)
        seen = proxy.requests()
    finally:
        proxy.close()

    assert (quiet.outcome, quiet.reason) == (Outcome.UP, Reason.OK)
    assert (from_file.outcome, from_file.reason, from_file.status_code) == (
        Outcome.DOWN,
        Reason.ALERTS,
        200,
    )
    assert from_file.detail == in_code.detail == f"1 alert firing: HighErrorRate ({ERROR_RATE})"
    assert from_file.fields == in_code.fields
    assert len(seen) == 2
    for request in seen:
        assert request.method == "GET"
        assert request.authorized  # the bearer token reached Alertmanager's proxy
        parts = urlsplit(request.path)
        assert parts.path == "/api/v2/alerts"
        assert parse_qsl(parts.query) == [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
            ("unprocessed", "false"),
            ("filter", f'app="{app}"'),
            ("filter", PAGES),
        ]
