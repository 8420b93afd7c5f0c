"""The chaos run with every paging channel in CI: ``bench/chaos_channels.py`` for 50 s.

The soak's chaos (flapping targets, a faulty fake GitHub, ``kill -9`` of the daemon and
restarts on the same state) with PagerDuty, Slack, a signed webhook, email over STARTTLS
and the real Alertmanager configured, each receiver getting random one-shot faults
(5xx, 429 with ``Retry-After``, a delay past the client's time-out after which the
service acts, act-then-cut). The bar is that of ``docs/reliability.md``, "Chaos with
every channel": one PagerDuty alert per incident and reopen, triggered then resolved;
every webhook id handled once; one Slack message per incident with its resolution in
the thread; every mail received (repeats allowed, same Message-ID); no Alertmanager
alert active after the drain; nothing lost, the outbox empty; and the soak's own bar.
(An Alertmanager alert re-fired after its resolve is reported beside the bar.)
Without ``prometheus-alertmanager`` the run leaves that channel out and says so, except
under ``CI=true``, where its absence fails the run.

The other tests replay, deterministically and in seconds, what the chaos found: a step
whose request timed out at the service (which then acted late) must not land after the
incident's next step. A request sent that got no answer is in flight for a while
(``http.in_flight_s``): its retry and the steps behind it wait that out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests import receivers_pagerduty_slack as rx
from tests.amserver import (
    NULL_CONFIG,
    AlertmanagerProxy,
    AlertmanagerServer,
    Fault,
    alertmanager_binary,
    require_binary,
)
from tests.bench_run import run_bench
from tests.daemon_process import Daemons, clean_env, toml_value, wait_for, write_config
from tests.ports import free_port
from tests.targets import TargetServer, respond

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHAOS_SECONDS = 50
CHAOS_SEED = 1  # every receiver faulted (each kind of fault on some), three kills
# start-up, 50 s of chaos, a drain that may wait out a 30 s lease (Slack, email) behind a
# backoff, and the verdict: about 90 s; the rest is room for a slow machine
CHAOS_LIMIT_S = 300
# a request held at the service this long: past the client's 1 s time-out, inside the
# time it is treated as in flight (http.in_flight_s: 5 s at least)
HELD_S = 4.0
# the held request, its retry after the in-flight wait, the resolve, with room
SETTLED_S = HELD_S + 5.0 + 10.0
# the variables secret_env names (the values are the receivers' made-up credentials)
PD_VARIABLE, SLACK_VARIABLE = "PD_ROUTING_KEY", "SLACK_BOT_TOKEN"


def test_chaos_with_every_channel(tmp_path: Path) -> None:
    """Pins the bar of the chaos run with every paging channel configured."""
    code, summary, shown = run_bench(
        "chaos_channels.py",
        [f"--seconds={CHAOS_SECONDS}", f"--seed={CHAOS_SEED}", "--drain-timeout=150"],
        tmp_path,
        CHAOS_LIMIT_S,
    )

    assert summary["failures"] == [], shown
    assert code == 0, shown
    channels = summary["channels"]
    for name in ("pagerduty", "slack", "webhook", "email"):
        assert channels[name]["problems"] == [], shown
        assert channels[name]["missing"] == [], shown
        assert channels[name]["stopped_at_the_end"] == 0, shown
    if alertmanager_binary() is not None or os.environ.get("CI") == "true":
        assert "skipped" not in channels["alertmanager"], shown
        assert channels["alertmanager"]["active_after_drain"] == 0, shown
    assert summary["outbox_pending_at_the_end"] == 0, shown
    # enough chaos to judge: incidents on every channel, receivers and GitHub faulted, kills
    assert summary["incidents"]["recorded"] >= 3, shown
    assert summary["truth"]["must_open"] >= 3, shown
    assert summary["chaos"]["kills"] >= 2, shown
    assert summary["chaos"]["faults_injected"] >= 5, shown
    for name, verdict in channels.items():
        if "skipped" not in verdict:
            assert verdict["faults_hit"] >= 2, f"{name}: too few faults hit\n{shown}"
    assert summary["chaos"]["unexpected_exits"] == [], shown
    assert summary["logs"]["non_json_lines"] == 0, shown
    assert summary["logs"]["crashes"] == {}, shown
    assert summary["logs"]["stderr_lines"] == 0, shown


# ---- what the chaos found, one at a time ----------------------------------------------------


def _daemon_config(
    tmp_path: Path, target: TargetServer, channel: dict[str, Any], **monitor: Any
) -> Path:
    """The e2e config (no GitHub: the journal) with one ``[[channels]]`` table."""
    config = write_config(
        tmp_path / "config.toml",
        target_url=target.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
        **monitor,
    )
    table = {"name": "oncall", "timeout": 1, **channel}
    with config.open("a", encoding="utf-8") as file:
        file.write(
            "\n[[channels]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
        )
    return config


def _switchable(target: TargetServer) -> dict[str, int]:
    health = {"status": 503}

    async def switch(request: Any, conn: Any) -> None:
        await respond(health["status"], b"{}")(request, conn)

    target.route("/health", switch)
    return health


def test_a_trigger_landing_after_its_resolve_opens_no_alert(
    tmp_path: Path, target_server: TargetServer
) -> None:
    """Pins that a late trigger never leaves PagerDuty an alert open after the resolve."""
    health = _switchable(target_server)
    with rx.FakePagerDuty() as pagerduty, Daemons.session(tmp_path) as daemons:
        pagerduty.inject(rx.delay(HELD_S), route="trigger")  # PagerDuty acts, but late
        config = _daemon_config(
            tmp_path,
            target_server,
            {"type": "pagerduty", "url": pagerduty.endpoint, "secret_env": PD_VARIABLE},
        )
        daemon = daemons.start(config, clean_env(**{PD_VARIABLE: rx.PD_ROUTING_KEY}))
        try:
            daemon.wait_healthy()
            wait_for(
                lambda: not pagerduty.pending_faults, 15, "the first trigger held", daemon.logs
            )
            health["status"] = 200  # the incident resolves while that trigger is held
            wait_for(
                lambda: "resolve" in [e["event_action"] for e in pagerduty.events],
                SETTLED_S,
                "the resolve, after the held trigger surely landed",
                daemon.logs,
            )
            pagerduty.settled(HELD_S + 2)
        except AssertionError as exc:
            raise RuntimeError(f"the scene did not play out: {exc}") from exc
        assert pagerduty.violations == []
        (key,) = pagerduty.alerts
        assert pagerduty.histories(key) == [["triggered", "resolved"]], pagerduty.actions(key)


def test_a_fire_landing_after_its_resolve_leaves_no_alert_active(
    tmp_path: Path, target_server: TargetServer
) -> None:
    """Pins that Alertmanager shows no active alert once an incident's resolve was taken."""
    binary = require_binary()
    health = _switchable(target_server)
    with (
        AlertmanagerServer(tmp_path / "alertmanager", NULL_CONFIG, binary=binary) as server,
        Daemons.session(tmp_path) as daemons,
    ):
        proxy = AlertmanagerProxy(server.url)
        try:
            proxy.inject(Fault(delay_s=HELD_S))  # the first post (the fire) lands late
            channel = {"type": "alertmanager", "urls": [proxy.url], "resend_interval": "30s"}
            daemon = daemons.start(_daemon_config(tmp_path, target_server, channel), clean_env())
            try:
                daemon.wait_healthy()
                wait_for(lambda: proxy.requests(), 15, "the fire held", daemon.logs)
                health["status"] = 200
                wait_for(lambda: proxy.forwarded >= 3, SETTLED_S, "fires and resolve", daemon.logs)
            except AssertionError as exc:
                raise RuntimeError(f"the scene did not play out: {exc}") from exc
            active = server.alerts('alertname="MonitorIncident"')
            assert active == [], active
        finally:
            proxy.close()


def test_an_update_landing_after_the_resolution_leaves_the_message_resolved(
    tmp_path: Path, target_server: TargetServer
) -> None:
    """Pins that the incident's Slack message reads resolved once the incident is."""
    health = _switchable(target_server)
    with rx.FakeSlack() as slack, Daemons.session(tmp_path) as daemons:
        channel = {
            "type": "slack",
            "url": slack.api_url,
            "secret_env": SLACK_VARIABLE,
            "channel": rx.SLACK_CHANNEL_ID,
        }
        config = _daemon_config(tmp_path, target_server, channel, reminder_interval="2s")
        slack.inject(rx.delay(HELD_S), route="chat.update")  # the reminder's rewrite, late
        daemon = daemons.start(config, clean_env(**{SLACK_VARIABLE: rx.SLACK_TOKEN}))
        try:
            daemon.wait_healthy()
            wait_for(lambda: not slack.pending_faults, 20, "a reminder's update held", daemon.logs)
            health["status"] = 200
            wait_for(
                lambda: any(str(p.get("text")).startswith("[RESOLVED]") for p in slack.parents()),
                SETTLED_S,
                "the resolution's update",
                daemon.logs,
            )
            slack.settled(HELD_S + 2)
        except AssertionError as exc:
            raise RuntimeError(f"the scene did not play out: {exc}") from exc
        assert slack.violations == []
        (parent,) = slack.parents()
        assert str(parent["text"]).startswith("[RESOLVED]"), parent["text"]
