"""Chaos with every paging channel: the soak, plus PagerDuty, Slack, webhook, email, Alertmanager.

    python bench/chaos_channels.py --seconds 60 --seed 1     # one minute of chaos, then the drain
    python bench/chaos_channels.py --seconds 180 --seed 3    # the run in docs/reliability.md

The soak (``bench/soak.py``: flapping targets, a faulty fake GitHub, ``kill -9`` of the
daemon a few times a minute, restarted on the same state file) with every ``[[channels]]``
type configured beside the issues, each against a receiver that checks the service's
contract and keeps what it was sent (everything on 127.0.0.1, seeded and bounded):

* ``pagerduty``: ``FakePagerDuty`` (Events API v2: alerts deduplicated by ``dedup_key``);
* ``slack`` with a bot token: ``FakeSlack`` (messages, threads, edits, metadata look-ups);
* ``webhook``: ``WebhookReceiver`` (Standard Webhooks signatures verified, each
  ``webhook-id`` handled once, a repeat counted as a duplicate);
* ``email``: ``SmtpReceiver`` (aiosmtpd, STARTTLS required with a ``trustme`` CA that the
  daemon trusts through ``SSL_CERT_FILE``, a login required);
* ``alertmanager``: the real ``prometheus-alertmanager`` behind ``AlertmanagerProxy``
  (a bearer token, and the faults). Without the binary the run leaves the channel out
  and says so in the summary; under ``CI=true`` that is a failure, as in
  ``tests/amserver.py``.

Every secret reaches the daemon through the variable its ``secret_env`` names. During the
chaos each receiver gets random one-shot faults (drawn from the seed, apart from the
soak's own draws, so a seed's soak part is the soak's): a 5xx, 429 with ``Retry-After``
(Slack also ``ok: false, ratelimited``), a delay past the client's time-out after which
the service still acts, and "act, then cut the connection". SMTP has no 5xx-to-retry or
``Retry-After``: its transient refusals, 421 and 451, stand in for both.

Then faults are cleared, targets stay healthy and the daemon drains (the soak's drain:
``monitor_outbox_pending`` 0, no incident or issue open; here also the state file's
outbox empty and no delayed request still in flight at a receiver), bounded by
``--drain-timeout``. The verdict takes every incident in the state file's ``incidents``
table, and the steps each channel was given for it (the ``outbox`` table keeps done
steps: the ledger of what each channel owed), against what each receiver holds:

* PagerDuty: per incident exactly ``1 + reopens`` alerts under ``dedup_key`` = the
  incident id, each triggered then resolved once; no alert under any other key; every
  step accepted (repeats deduplicated under the same key are counted).
* Webhook: every step's ``webhook-id`` handled exactly once (repeats acknowledged as
  duplicates are counted); each incident has its ``incident.opened`` and
  ``incident.resolved``; no signature or schema refused.
* Slack: one parent message per incident, reading ``[RESOLVED]`` at the end; every reply
  once in its thread (the resolution's included).
* Email (at-least-once): every step's mail received, the opened and the resolved mail
  of each incident among them; repeats allowed and counted, each with the same
  ``Message-ID`` and subject; every mail over TLS, after the login.
* Alertmanager: every fire and resolve taken by Alertmanager (200 through the proxy);
  no ``MonitorIncident`` alert active after the drain. Meanwhile every 0.5 s the
  active alerts are compared with the state file: an alert still active more than a
  second after its incident's resolve was delivered is reported (``stale_after_resolve``).
* Nothing lost: every step done, the outbox empty; no receiver saw a contract breach;
  and the soak's own bar on GitHub's issues and the durations.

The JSON summary is the last line of stdout (``--out`` also writes it); the exit code is
0 when the bar is met, 1 otherwise. ``tests/test_chaos_channels.py`` runs this for 50 s;
``docs/reliability.md`` ("Chaos with every channel") has the figures of a long run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as c
import httpx
from soak import KILLS_PER_MINUTE, QUIET_TAIL_S, Soak, _read_incidents, _workdir

from tests import receivers_pagerduty_slack as ps
from tests.amserver import (
    MISSING,
    NULL_CONFIG,
    AlertmanagerProxy,
    AlertmanagerServer,
    alertmanager_binary,
)
from tests.amserver import Fault as ProxyFault
from tests.daemon_process import sample_value, toml_value
from tests.receivers_webhook_email import (
    DUPLICATE,
    HANDLED,
    SmtpReceiver,
    TlsFiles,
    WebhookReceiver,
    tls_files,
)

# ---- the channels under test -------------------------------------------------------------

CHANNEL_TIMEOUT_S = 1.5  # every channel's client time-out
LATE_S = CHANNEL_TIMEOUT_S + 1.0  # a delayed request lands this long after it was sent
RESEND_S = 3.0  # Alertmanager: open incidents re-sent this often (endsAt 4 intervals ahead)
SMTP_LOGIN = ("monitor", "chaos-smtp-Pa55word")
MAIL_FROM = "Fly Monitor <monitor@alerts.example>"
MAIL_TO = "oncall@example.com"
AM_TOKEN = "chaos-alertmanager-bearer-token"
ENV = {  # channel -> the variable its secret_env names
    "pagerduty": "CHAOS_PD_ROUTING_KEY",
    "slack": "CHAOS_SLACK_BOT_TOKEN",
    "webhook": "CHAOS_WEBHOOK_SECRET",
    "email": "CHAOS_SMTP_PASSWORD",
    "alertmanager": "CHAOS_AM_TOKEN",
}
CHANNELS = tuple(ENV)

# the points of the bar a late-landing request breaks (docs/reliability.md, "Found")
LATE_TRIGGER = "pagerduty: no alert opened by a trigger landing after its resolve"
STALE_MESSAGE = "slack: every incident's message reads resolved at the end"

# ---- the faults ----------------------------------------------------------------------------

CHANNEL_FAULT_EVERY_S = (2.0, 6.0)  # per receiver
MAX_PENDING_CHANNEL_FAULTS = 1  # per receiver: a fault waits for that service's next request
CHANNEL_FAULTS = {
    "pagerduty": ("500", "503", "429-retry-after", "delay-past-timeout", "cut-after-act"),
    "slack": (
        "500",
        "503",
        "429-retry-after",
        "ratelimited-retry-after",  # Slack's way: HTTP 200, ok false
        "delay-past-timeout",
        "cut-after-act",
    ),
    "webhook": ("500", "503", "429-retry-after", "delay-past-timeout", "cut-after-act"),
    # SMTP's transient refusals stand in for 5xx and 429 (it has no Retry-After)
    "email": ("421", "451", "delay-past-timeout", "cut-after-act"),
    "alertmanager": ("500", "503", "429-retry-after", "delay-past-timeout", "cut-after-act"),
}
# after the faults are cleared, a request delayed just before lands within this
AFTER_FAULTS_S = LATE_S + 1.0
STALE_GRACE_S = 1.0  # an alert active this long after its resolve was delivered is stale
SAMPLE_S = 0.5


def make_channel_plan(
    rng: random.Random, seconds: float, channels: tuple[str, ...]
) -> list[tuple[float, str, str]]:
    """One-shot faults per receiver at random offsets: (offset, channel, fault), by time."""
    faults = []
    for channel in channels:
        t = rng.uniform(1.0, 4.0)
        while t < seconds - QUIET_TAIL_S:
            faults.append((round(t, 3), channel, rng.choice(CHANNEL_FAULTS[channel])))
            t += rng.uniform(*CHANNEL_FAULT_EVERY_S)
    return sorted(faults)


def standard_webhooks_secret(key: bytes) -> str:
    """``whsec_`` and the key in base64, as a Standard Webhooks signer takes it."""
    return f"whsec_{base64.b64encode(key).decode()}"


def _http_fault(name: str) -> ps.Fault:
    """A fault of the PagerDuty and Slack receivers."""
    return {
        "500": lambda: ps.status(500),
        "503": lambda: ps.status(503),
        "429-retry-after": lambda: ps.too_many_requests(retry_after_s=1),
        "ratelimited-retry-after": lambda: ps.slack_error("ratelimited", retry_after_s=1),
        "delay-past-timeout": lambda: ps.delay(LATE_S),
        "cut-after-act": ps.cut_after_act,
    }[name]()


def _proxy_fault(name: str) -> ProxyFault:
    """A fault of the proxy in front of Alertmanager."""
    return {
        "500": ProxyFault(status=500),
        "503": ProxyFault(status=503),
        "429-retry-after": ProxyFault(status=429, retry_after="1"),
        "delay-past-timeout": ProxyFault(delay_s=LATE_S),
        "cut-after-act": ProxyFault(cut_after_forwarding=True),
    }[name]


# the names WebhookReceiver.fail and SmtpReceiver.fail take
_RECEIVER_FAULT = {
    "500": "500",
    "503": "503",
    "429-retry-after": "429",  # WebhookReceiver answers Retry-After: 7
    "421": "421",
    "451": "451",
    "delay-past-timeout": "delay",
    "cut-after-act": "cut",
}


# ---- Alertmanager: what it took -----------------------------------------------------------


class TakenAlerts:
    """The proxy's upstream client, recording every batch of alerts Alertmanager took (200).

    ``AlertmanagerProxy`` counts what it forwarded but keeps no bodies of the answers;
    this wrapper stands in for its ``httpx.Client`` (``tests/amserver.py`` is shared).
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.batches: list[tuple[float, list[dict[str, Any]]]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Forward, and note the alerts of a POST Alertmanager accepted."""
        response = self._client.request(method, path, **kwargs)
        if method == "POST" and path.startswith("/api/v2/alerts") and response.is_success:
            try:
                alerts = json.loads(kwargs.get("content") or b"[]")
            except ValueError:
                alerts = []
            with self._lock:
                self.batches.append((time.time(), alerts if isinstance(alerts, list) else []))
        return response

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert taken, in order."""
        with self._lock:
            return [alert for _, batch in self.batches for alert in batch]

    def close(self) -> None:
        """Close the wrapped client."""
        self._client.close()


# ---- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receivers:
    """Every service the daemon pages, as started for one run."""

    pagerduty: ps.FakePagerDuty
    slack: ps.FakeSlack
    webhook: WebhookReceiver
    smtp: SmtpReceiver
    tls: TlsFiles  # the SMTP server's throwaway CA (the daemon's SSL_CERT_FILE)
    alertmanager: AlertmanagerServer | None  # None: the binary is not installed
    proxy: AlertmanagerProxy | None
    taken: TakenAlerts | None


class ChannelChaos(Soak):
    """The soak with every paging channel configured; use as a context manager.

    From the soak it takes the targets and their script, the GitHub faults, the kills
    and restarts, the sampler of open issues, the drain and its whole verdict; the
    receivers, their faults and the per-channel verdict are its own.
    """

    def __init__(self, *, exclude_channel_faults: tuple[str, ...] = (), **soak: Any) -> None:
        super().__init__(**soak)
        self.exclude_channel_faults = exclude_channel_faults
        self.ci = os.environ.get("CI") == "true"
        self.am_binary = alertmanager_binary()
        self.channels = CHANNELS if self.am_binary is not None else CHANNELS[:-1]
        # its own stream: the soak's plan for a seed stays the soak's
        self.channel_rng = random.Random(f"{self.seed}/channels")
        self.channel_plan = make_channel_plan(self.channel_rng, self.seconds, self.channels)
        # Standard Webhooks' form, whsec_ and base64 of 32 random bytes (from the seed)
        self.signing = standard_webhooks_secret(
            self.channel_rng.getrandbits(256).to_bytes(32, "big")
        )
        self.channel_faults: Counter[str] = Counter()  # "fault@channel" -> injected
        self.channel_faults_skipped: Counter[str] = Counter()  # one still pending there
        self.channel_faults_unused: Counter[str] = Counter()  # channel -> pending at the end
        self.faults_over = threading.Event()
        self.faults_cleared_at: float | None = None
        self.sampling_over = threading.Event()
        self.stale: dict[str, dict[str, Any]] = {}  # incident -> a stale alert episode
        self.am_samples = 0
        self.final_samples: list[Any] = []
        self._stack = contextlib.ExitStack()
        self._receivers: Receivers | None = None

    # -- lifecycle

    def __enter__(self) -> ChannelChaos:
        try:
            self._start_receivers()
            super().__enter__()  # the fake GitHub, the targets, the soak's config
            self._configure_channels()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.faults_over.set()
        self.sampling_over.set()
        try:
            super().__exit__(*exc)  # the daemons first: nothing sends to a stopped receiver
        finally:
            self._stack.close()

    @property
    def rx(self) -> Receivers:
        """The receivers (started by ``__enter__``)."""
        assert self._receivers is not None, "use ChannelChaos as a context manager"
        return self._receivers

    @property
    def alertmanager(self) -> AlertmanagerServer | None:
        """The real Alertmanager, unless its binary is missing."""
        return self._receivers.alertmanager if self._receivers is not None else None

    def _start_receivers(self) -> None:
        stack = self._stack
        tls = tls_files(self.workdir)
        pagerduty = stack.enter_context(ps.FakePagerDuty())
        slack = stack.enter_context(ps.FakeSlack())
        webhook = stack.enter_context(WebhookReceiver(self.signing))
        smtp = stack.enter_context(SmtpReceiver(tls, login=SMTP_LOGIN))
        alertmanager = proxy = taken = None
        if self.am_binary is not None:
            alertmanager = stack.enter_context(
                AlertmanagerServer(
                    self.workdir / "alertmanager", NULL_CONFIG, binary=self.am_binary
                )
            )
            proxy = AlertmanagerProxy(alertmanager.url, token=AM_TOKEN)
            stack.callback(proxy.close)
            # the proxy forwards through its client: this one keeps what Alertmanager took
            taken = TakenAlerts(proxy._client)
            proxy._client = taken  # type: ignore[assignment]
        self._receivers = Receivers(
            pagerduty, slack, webhook, smtp, tls, alertmanager, proxy, taken
        )

    def _configure_channels(self) -> None:
        """Append a ``[[channels]]`` table per receiver; secrets go in the environment."""
        assert self.config is not None
        rx = self.rx
        tables: list[dict[str, object]] = [
            {"url": rx.pagerduty.endpoint},
            {"url": rx.slack.api_url, "channel": ps.SLACK_CHANNEL_ID},
            {"url": rx.webhook.url},
            {
                "host": "127.0.0.1",
                "port": rx.smtp.port,
                "tls": "starttls",
                "from": MAIL_FROM,
                "to": [MAIL_TO],
                "username": SMTP_LOGIN[0],
            },
        ]
        if rx.proxy is not None:
            tables.append({"urls": [rx.proxy.url], "resend_interval": RESEND_S})
        lines = []
        for name, table in zip(self.channels, tables, strict=True):
            fields = {
                "name": name,
                "type": name,
                "secret_env": ENV[name],
                "timeout": CHANNEL_TIMEOUT_S,
                **table,
            }
            lines += ["", "[[channels]]", *(f"{k} = {toml_value(v)}" for k, v in fields.items())]
        with self.config.open("a", encoding="utf-8") as config:
            config.write("\n".join(lines) + "\n")
        secrets = {
            "pagerduty": ps.PD_ROUTING_KEY,
            "slack": ps.SLACK_TOKEN,
            "webhook": self.signing,
            "email": SMTP_LOGIN[1],
            "alertmanager": AM_TOKEN,
        }
        self.env.update({ENV[name]: secrets[name] for name in self.channels})
        self.env["SSL_CERT_FILE"] = str(rx.tls.ca_file)  # the SMTP server's throwaway CA

    # -- the script

    def run(self) -> dict[str, Any]:
        """The soak's run, with the Alertmanager sampler alongside."""
        sampler = threading.Thread(target=self._sample_alertmanager, name="chaos-am", daemon=True)
        sampler.start()
        try:
            return super().run()
        finally:
            self.sampling_over.set()
            sampler.join(timeout=10)

    def _script(self) -> None:
        """The soak's script (targets, GitHub faults) with the channel faults beside it."""
        thread = threading.Thread(target=self._channel_script, name="chaos-faults", daemon=True)
        thread.start()
        try:
            super()._script()
        finally:
            self.faults_over.set()
            thread.join(timeout=10)

    def _channel_script(self) -> None:
        for offset, channel, fault in self.channel_plan:
            if self.faults_over.wait(max(0.0, self.t0 + offset - time.time())):
                return
            if fault in self.exclude_channel_faults or (
                f"{fault}@{channel}" in self.exclude_channel_faults
            ):
                continue
            if self._pending_faults(channel) >= MAX_PENDING_CHANNEL_FAULTS:
                self.channel_faults_skipped[f"{fault}@{channel}"] += 1
                continue
            self._inject(channel, fault)
            self.channel_faults[f"{fault}@{channel}"] += 1

    def _inject(self, channel: str, fault: str) -> None:
        rx = self.rx
        if channel == "pagerduty":
            rx.pagerduty.inject(_http_fault(fault))
        elif channel == "slack":
            rx.slack.inject(_http_fault(fault))
        elif channel == "webhook":
            rx.webhook.fail(_RECEIVER_FAULT[fault], delay_s=LATE_S)
        elif channel == "email":
            rx.smtp.fail(_RECEIVER_FAULT[fault], delay_s=LATE_S)
        else:
            assert rx.proxy is not None
            rx.proxy.inject(_proxy_fault(fault))

    def _pending_faults(self, channel: str) -> int:
        # WebhookReceiver, SmtpReceiver and the proxy keep their queues without a count
        # or a clear of their own (tests/ is shared): read under their locks
        rx = self.rx
        if channel == "pagerduty":
            return rx.pagerduty.pending_faults
        if channel == "slack":
            return rx.slack.pending_faults
        receiver: Any = {"webhook": rx.webhook, "email": rx.smtp}.get(channel)
        if receiver is not None:
            with receiver._lock:
                return len(receiver._faults)
        assert rx.proxy is not None
        with rx.proxy._lock:
            return len(rx.proxy.faults)

    def _clear_faults(self) -> None:
        """The soak's (GitHub), then every receiver's; what was never used is counted."""
        super()._clear_faults()
        for channel in self.channels:
            self.channel_faults_unused[channel] = self._pending_faults(channel)
        rx = self.rx
        rx.pagerduty.clear_faults()
        rx.slack.clear_faults()
        for receiver in (rx.webhook, rx.smtp):
            with receiver._lock:
                receiver._faults.clear()
        if rx.proxy is not None:
            with rx.proxy._lock:
                rx.proxy.faults.clear()
        self.faults_cleared_at = time.time()

    # -- the drain

    def _drained(self) -> bool:
        """The soak's test, the state file's outbox empty, and no delayed request in flight."""
        if self.faults_cleared_at is None or time.time() < self.faults_cleared_at + AFTER_FAULTS_S:
            return False
        if self.rx.pagerduty.in_flight or self.rx.slack.in_flight:
            return False
        if not super()._drained():
            return False
        if _pending_in_outbox(self.state_path) != 0:
            return False
        with contextlib.suppress(OSError, AssertionError, ValueError):
            assert self.current is not None
            self.final_samples = self.current.samples()
        return True

    def _sample_alertmanager(self) -> None:
        """Every 0.5 s: an active alert whose incident's resolve was delivered is stale."""
        if self.alertmanager is None:
            return
        while not self.sampling_over.wait(SAMPLE_S):
            with contextlib.suppress(httpx.HTTPError, sqlite3.Error):
                self._sample_alertmanager_once()

    def _sample_alertmanager_once(self) -> None:
        assert self.alertmanager is not None
        active = self.alertmanager.alerts('alertname="MonitorIncident"')
        resolved = _resolve_delivered(self.state_path, "alertmanager")
        now = time.time()
        self.am_samples += 1
        for alert in active:
            incident = str(alert.get("annotations", {}).get("incident"))
            done_at = resolved.get(incident)
            if done_at is None or now - done_at < STALE_GRACE_S:
                continue
            episode = self.stale.setdefault(
                incident,
                {
                    "incident": incident,
                    "target": alert.get("labels", {}).get("target"),
                    "resolve_delivered_s": round(done_at - self.t0, 2),
                    "first_seen_s": round(now - self.t0, 2),
                    "ends_at": alert.get("endsAt"),
                },
            )
            episode["last_seen_s"] = round(now - self.t0, 2)

    # -- the verdict

    def _summary(self, chaos_end: float, drain_s: float, drained: bool) -> dict[str, Any]:
        """The soak's summary (GitHub, durations, logs), with every channel judged."""
        self.sampling_over.set()
        summary = super()._summary(chaos_end, drain_s, drained)
        rx = self.rx
        for receiver in (rx.pagerduty, rx.slack):
            with contextlib.suppress(AssertionError):  # reported below as it stands
                receiver.settled(timeout_s=LATE_S + 1)
        incidents = _read_incidents(self.state_path)
        ledger = _read_outbox(self.state_path)
        steps = {name: [s for s in ledger if s["channel"] == name] for name in CHANNELS}
        channels: dict[str, dict[str, Any]] = {
            "pagerduty": judge_pagerduty(incidents, steps["pagerduty"], rx.pagerduty),
            "slack": judge_slack(incidents, steps["slack"], rx.slack),
            "webhook": judge_webhook(incidents, steps["webhook"], rx.webhook),
            "email": judge_email(incidents, steps["email"], rx.smtp),
        }
        if rx.alertmanager is not None and rx.proxy is not None and rx.taken is not None:
            channels["alertmanager"] = judge_alertmanager(
                incidents, steps["alertmanager"], rx.alertmanager, rx.proxy, rx.taken
            )
            channels["alertmanager"]["stale_after_resolve"] = sorted(
                self.stale.values(), key=lambda e: e["first_seen_s"]
            )
            channels["alertmanager"]["samples"] = self.am_samples
        else:
            channels["alertmanager"] = {
                "skipped": f"{MISSING}; left out of this run"
                + (" (a failure under CI=true)" if self.ci else "")
            }
        failed_steps = _failures_by_channel(self.daemons.started)
        for name, verdict in channels.items():
            if "skipped" in verdict:
                continue
            verdict["faults_injected"] = {
                k.partition("@")[0]: n
                for k, n in sorted(self.channel_faults.items())
                if k.endswith(f"@{name}")
            }
            injected = sum(verdict["faults_injected"].values())
            verdict["faults_hit"] = injected - self.channel_faults_unused[name]
            verdict["faults_skipped"] = sum(
                n for k, n in self.channel_faults_skipped.items() if k.endswith(f"@{name}")
            )
            verdict["daemon_failures_by_reason"] = dict(sorted(failed_steps[name].items()))
            verdict["stopped_at_the_end"] = sample_value(
                self.final_samples, "monitor_channel_stopped", channel=name
            )

        pending = _pending_in_outbox(self.state_path)
        stopped = [n for n, v in channels.items() if v.get("stopped_at_the_end")]
        checks = dict(summary["checks"])
        checks.update(
            {
                "pagerduty: one alert per incident (and reopen), triggered then resolved": not (
                    channels["pagerduty"]["problems"]
                ),
                LATE_TRIGGER: not channels["pagerduty"]["late"],
                "slack: one message per incident, every reply once in its thread": not (
                    channels["slack"]["problems"]
                ),
                STALE_MESSAGE: not channels["slack"]["stale"],
                "webhook: every id handled once, opened and resolved per incident": not (
                    channels["webhook"]["problems"]
                ),
                "email: every mail received, opened and resolved per incident": not (
                    channels["email"]["problems"]
                ),
                "alertmanager: every step taken, nothing active after the drain": not (
                    channels["alertmanager"].get("problems")
                ),
                "alertmanager present (CI=true)": not (self.ci and self.alertmanager is None),
                "nothing lost: every step delivered": all(
                    not v.get("missing") for v in channels.values()
                ),
                "outbox empty": pending == 0,
                "no channel stopped": not stopped,
            }
        )
        failures = [name for name, ok in checks.items() if not ok]
        ordered: dict[str, Any] = {"bench": "chaos_channels"}
        ordered.update({k: v for k, v in summary.items() if k != "bench"})
        ordered.update(
            {
                "passed": not failures,
                "failures": failures,
                "checks": checks,
                "incidents": {
                    "recorded": len(incidents),
                    "reopened": sum(1 for r in incidents if r["reopened"]),
                    "unresolved": [r["id"] for r in incidents if r["resolved_at"] is None],
                },
                "outbox_pending_at_the_end": pending,
                "channels": channels,
            }
        )
        ordered["config"] = {
            **summary["config"],
            "channels": list(self.channels),
            "channel_timeout_s": CHANNEL_TIMEOUT_S,
            "late_s": LATE_S,
            "alertmanager_resend_s": RESEND_S if self.alertmanager is not None else None,
            "excluded_channel_faults": list(self.exclude_channel_faults),
        }
        return ordered


# ---- reading the state file ------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    return db


def _read_outbox(path: Path) -> list[dict[str, Any]]:
    """Every step each channel was given (done ones are kept), oldest first; no superseded."""
    if not path.exists():
        return []
    db = _connect(path)
    try:
        rows = db.execute(
            "SELECT id, channel, incident_id, target, kind, payload, created_at, attempts,"
            " done_at, last_error FROM outbox ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    steps = []
    for row in rows:
        step = dict(row)
        if step["last_error"] == "superseded":
            continue  # a newer rewrite of the same message replaced it before it was tried
        step["payload"] = json.loads(step["payload"])
        steps.append(step)
    return steps


def _pending_in_outbox(path: Path) -> int | None:
    """Steps not done yet, from the state file; None when it cannot be read."""
    if not path.exists():
        return None
    try:
        db = _connect(path)
        try:
            (count,) = db.execute("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return int(count)


def _resolve_delivered(path: Path, channel: str) -> dict[str, float]:
    """Resolved incidents whose every step on ``channel`` is done: when the last resolve was."""
    if not path.exists():
        return {}
    db = _connect(path)
    try:
        rows = db.execute(
            "SELECT o.incident_id AS incident, MAX(o.done_at) AS done_at FROM outbox o"
            " JOIN incidents i ON i.id = o.incident_id"
            " WHERE o.channel = ? AND o.kind = 'resolve' AND o.done_at IS NOT NULL"
            " AND i.resolved_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM outbox p"
            "  WHERE p.channel = o.channel AND p.incident_id = o.incident_id"
            "  AND p.done_at IS NULL)"
            " GROUP BY o.incident_id",
            (channel,),
        ).fetchall()
    finally:
        db.close()
    return {row["incident"]: float(row["done_at"]) for row in rows}


def _failures_by_channel(daemons: list[Any]) -> dict[str, Counter[str]]:
    """``outbox action failed`` lines of every daemon life, by channel and reason."""
    found: dict[str, Counter[str]] = {name: Counter() for name in CHANNELS}
    for daemon in daemons:
        for line in daemon.stdout().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            sink = record.get("sink")
            event = str(record.get("event", ""))
            if sink in found and event.startswith("outbox action") and record.get("reason"):
                found[sink][str(record["reason"])] += 1
    return found


def _event_of(key: str) -> str:
    """The transition in an event key (``<incident>:<transition>:<time>``)."""
    parts = key.split(":")
    return parts[-2] if len(parts) >= 3 else ""


def _figures(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "steps": len(steps),
        "steps_done": sum(1 for s in steps if s["done_at"] is not None),
        "attempts": sum(int(s["attempts"]) for s in steps),
        "steps_retried": sum(1 for s in steps if int(s["attempts"]) > 1),
    }


# ---- the verdict per channel (pure: the state file's rows and the receivers' records) --------


def judge_pagerduty(
    incidents: list[dict[str, Any]], steps: list[dict[str, Any]], pd: ps.FakePagerDuty
) -> dict[str, Any]:
    """One alert per incident and reopen, triggered then resolved; every event accepted.

    An alert beyond those (a trigger that PagerDuty took after the incident's resolve, which
    nothing resolves) is listed apart, in ``late``.
    """
    ids = {row["id"] for row in incidents}
    accepted = Counter(_pd_event(event) for event in pd.events)
    planned = [_pd_event(step["payload"]) for step in steps]
    missing = [list(p) for p in planned if accepted[p] == 0]
    unplanned = [list(p) for p in accepted if p not in set(planned)]
    problems: list[str] = []
    late: list[str] = []
    for row in incidents:
        key = row["id"]
        reopens = sum(
            1
            for s in steps
            if s["incident_id"] == key
            and s["payload"].get("payload", {}).get("custom_details", {}).get("event") == "reopened"
        )
        alerts = pd.alerts.get(key, [])
        if len(alerts) < 1 + reopens:
            problems.append(f"{key}: {len(alerts)} alerts for {1 + reopens} (1 + reopens)")
        late += [
            f"{key}: alert {n} of {1 + reopens} expected, {alert.states} by {alert.events}"
            for n, alert in enumerate(alerts[1 + reopens :], 2 + reopens)
        ]
        for alert in alerts[: 1 + reopens]:
            if alert.states != ["triggered", "resolved"]:
                problems.append(f"{key}: an alert went {alert.states}")
            if alert.events[-1:] != ["resolve"] or alert.events.count("resolve") != 1:
                problems.append(f"{key}: an alert's events {alert.events}")
    strangers = sorted(set(pd.alerts) - ids)
    problems += [f"an alert for no incident: {key}" for key in strangers]
    problems += [f"contract: {v}" for v in pd.violations]
    problems += [f"accepted but never planned: {p}" for p in unplanned]
    return {
        **_figures(steps),
        "requests": len(pd.requests),
        "events_accepted": len(pd.events),
        "alerts": sum(len(a) for a in pd.alerts.values()),
        "repeats": sum(n - 1 for n in accepted.values() if n > 1),
        "deduplicated_resolves": len(pd.dropped),
        "missing": missing,
        "late": late,
        "problems": problems,
    }


def _pd_event(event: dict[str, Any]) -> tuple[str, str, str]:
    payload = event.get("payload") or {}
    return (
        str(event.get("dedup_key")),
        str(event.get("event_action")),
        str(payload.get("timestamp")),
    )


def judge_slack(
    incidents: list[dict[str, Any]], steps: list[dict[str, Any]], slack: ps.FakeSlack
) -> dict[str, Any]:
    """One parent per incident reading resolved; every reply once, in its thread."""
    ids = {row["id"] for row in incidents}
    ours = [m for m in slack.messages[ps.SLACK_CHANNEL_ID] if _slack_meta(m) is not None]
    parents: dict[str, list[dict[str, Any]]] = {}
    for message in ours:
        if message.get("thread_ts") in (None, message["ts"]):
            incident, _ = _slack_meta(message) or ("", "")
            parents.setdefault(incident, []).append(message)
    problems: list[str] = []
    stale: list[str] = []  # a message that does not read resolved at the end
    missing: list[str] = []
    duplicates: list[str] = []
    resolution_replies = 0
    for row in incidents:
        found = parents.get(row["id"], [])
        if len(found) != 1:
            problems.append(f"{row['id']}: {len(found)} parent messages")
            continue
        parent = found[0]
        if not str(parent.get("text", "")).startswith("[RESOLVED]"):
            stale.append(f"{row['id']}: the message reads {parent.get('text', '')[:80]!r}")
        thread = [parent] + [m for m in ours if m.get("thread_ts") == parent["ts"] != m["ts"]]
        for step in steps:
            if step["incident_id"] != row["id"] or step["kind"] != "reply":
                continue
            key = str(step["payload"].get("key"))
            copies = sum(1 for m in thread if (_slack_meta(m) or ("", ""))[1] == key)
            anywhere = sum(1 for m in ours if (_slack_meta(m) or ("", ""))[1] == key)
            if copies == 0:
                missing.append(key + (" (elsewhere)" if anywhere else ""))
            if anywhere > 1:
                duplicates.append(key)
            if _event_of(key) == "resolved" and copies:
                resolution_replies += 1
    strangers = sorted(set(parents) - ids)
    problems += [f"a message for no incident: {i}" for i in strangers]
    problems += [f"reply {key} posted more than once" for key in duplicates]
    problems += [f"contract: {v}" for v in slack.violations]
    return {
        **_figures(steps),
        "requests": len(slack.requests),
        "parents": sum(len(p) for p in parents.values()),
        "replies": len(ours) - sum(len(p) for p in parents.values()),
        "resolution_replies": resolution_replies,
        "updates": len(slack.updates),
        "repeats": len(duplicates),
        "missing": missing,
        "stale": stale,
        "problems": problems,
    }


def _slack_meta(message: dict[str, Any]) -> tuple[str, str] | None:
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != "monitor_incident":
        return None
    payload = metadata.get("event_payload") or {}
    return str(payload.get("incident_id")), str(payload.get("key"))


def judge_webhook(
    incidents: list[dict[str, Any]], steps: list[dict[str, Any]], hooks: WebhookReceiver
) -> dict[str, Any]:
    """Every webhook-id handled exactly once; opened and resolved per incident."""
    ids = {row["id"] for row in incidents}
    planned = {str(s["payload"]["webhook_id"]): s for s in steps}
    handled = dict(hooks.handled)
    acted = Counter(hooks.ids(HANDLED))
    missing = sorted(set(planned) - set(handled))
    problems = [f"{i} handled {n} times" for i, n in acted.items() if n > 1]
    problems += [f"handled but never planned: {i}" for i in sorted(set(handled) - set(planned))]
    types: dict[str, set[str]] = {}
    for document in handled.values():
        data = document.get("data", {})
        types.setdefault(str(data.get("incident_id")), set()).add(str(document.get("type")))
    for row in incidents:
        lacking = {"incident.opened", "incident.resolved"} - types.get(row["id"], set())
        if lacking:
            problems.append(f"{row['id']}: no {sorted(lacking)}")
    problems += [f"an event for no incident: {i}" for i in sorted(set(types) - ids)]
    problems += [f"refused: {why}" for why in hooks.rejections]
    outcomes = Counter(a.outcome for a in hooks.attempts)
    return {
        **_figures(steps),
        "requests": len(hooks.attempts),
        "handled": len(handled),
        "repeats": outcomes[DUPLICATE],
        "outcomes": dict(sorted(outcomes.items())),
        "missing": missing,
        "problems": problems,
    }


def judge_email(
    incidents: list[dict[str, Any]], steps: list[dict[str, Any]], smtp: SmtpReceiver
) -> dict[str, Any]:
    """Every mail received (repeats allowed, same Message-ID); opened and resolved each."""
    mails = list(smtp.mails)
    copies = Counter(m.message_id for m in mails)
    subjects: dict[str, set[str]] = {}
    for mail in mails:
        subjects.setdefault(mail.message_id, set()).add(mail.subject)
    planned = {str(s["payload"]["message_id"]): s for s in steps}
    missing = sorted(i for i in planned if copies[i] == 0)
    problems = [f"received but never planned: {i}" for i in sorted(set(copies) - set(planned))]
    problems += [
        f"{i}: copies differ in subject {sorted(s)}" for i, s in subjects.items() if len(s) > 1
    ]
    for row in incidents:
        mine = [s for s in steps if s["incident_id"] == row["id"]]
        opened = [s for s in mine if s["payload"].get("thread") is None]
        resolved = [s for s in mine if str(s["payload"].get("body", "")).startswith("RESOLVED:")]
        if not opened or not any(copies[s["payload"]["message_id"]] for s in opened):
            problems.append(f"{row['id']}: no opened mail")
        if not resolved or not all(copies[s["payload"]["message_id"]] for s in resolved):
            problems.append(f"{row['id']}: no resolved mail")
    problems += [f"not over TLS: {m.message_id}" for m in mails if not m.tls]
    problems += [f"no login: {m.message_id}" for m in mails if m.login != SMTP_LOGIN[0]]
    problems += [f"refused: {why}" for why in smtp.rejections]
    return {
        **_figures(steps),
        "requests": smtp.data_attempts,
        "mails": len(mails),
        "distinct": len(copies),
        "repeats": sum(n - 1 for n in copies.values()),
        "repeated_message_ids": sum(1 for n in copies.values() if n > 1),
        "missing": missing,
        "problems": problems,
    }


def judge_alertmanager(
    incidents: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    server: AlertmanagerServer,
    proxy: AlertmanagerProxy,
    taken: TakenAlerts,
) -> dict[str, Any]:
    """Every fire and resolve taken; no incident alert active after the drain."""
    ids = {row["id"] for row in incidents}
    alerts = taken.alerts()

    def matches(step: dict[str, Any], alert: dict[str, Any]) -> bool:
        want = step["payload"]["alert"]
        got = alert.get("annotations", {})
        if got.get("incident") != step["incident_id"]:
            return False
        if step["kind"] == "resolve":
            return bool(alert.get("endsAt") == want.get("endsAt"))
        wanted = want.get("annotations", {})
        return all(got.get(k) == wanted.get(k) for k in ("summary", "description"))

    missing, resolve_copies = [], Counter[str]()
    for step in steps:
        found = sum(1 for alert in alerts if matches(step, alert))
        if not found:
            missing.append(f"{step['kind']} {step['incident_id']} (step {step['id']})")
        if step["kind"] == "resolve":
            resolve_copies[str(step["id"])] = found
    active = server.alerts('alertname="MonitorIncident"')
    problems = [
        f"active after the drain: {a.get('labels', {}).get('target')}"
        f" ({a.get('annotations', {}).get('incident')})"
        for a in active
    ]
    named = {str(a.get("annotations", {}).get("incident")) for a in alerts}
    problems += [f"an alert for no incident: {i}" for i in sorted(named - ids)]
    seen = proxy.requests()
    problems += [f"unauthorized: {s.method} {s.path}" for s in seen if not s.authorized]
    for row in incidents:
        kinds = {s["kind"] for s in steps if s["incident_id"] == row["id"]}
        if kinds != {"fire", "resolve"}:
            problems.append(f"{row['id']}: steps {sorted(kinds)}")
    return {
        **_figures(steps),
        "requests": len(seen),
        "posts_taken": len(taken.batches),
        "alerts_taken": len(alerts),
        "repeats": sum(n - 1 for n in resolve_copies.values() if n > 1),
        "active_after_drain": len(active),
        "missing": missing,
        "problems": problems,
    }


# ---- the command -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the chaos and print its JSON summary; exit 1 when the bar is not met."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the chaos phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", type=int, default=3, choices=range(1, 9), metavar="N")
    p.add_argument("--kills-per-minute", type=float, default=KILLS_PER_MINUTE)
    p.add_argument("--drain-timeout", type=float, default=150.0, metavar="SECONDS")
    p.add_argument(
        "--exclude-fault",
        action="append",
        default=[],
        metavar="FAULT[@ENDPOINT]",
        help="leave out a GitHub fault (as bench/soak.py)",
    )
    p.add_argument(
        "--exclude-channel-fault",
        action="append",
        default=[],
        metavar="FAULT[@CHANNEL]",
        help=f"leave out a receiver's fault; channels {', '.join(CHANNELS)}",
    )
    p.add_argument("--workdir", type=Path, help="keep logs and the state file here")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = p.parse_args(argv)

    def stop_on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through __exit__: daemons and servers stop

    signal.signal(signal.SIGTERM, stop_on_term)
    with _workdir(args.workdir) as workdir:
        with ChannelChaos(
            seconds=args.seconds,
            seed=args.seed,
            targets=args.targets,
            workdir=workdir,
            kills_per_minute=args.kills_per_minute,
            drain_timeout_s=args.drain_timeout,
            exclude_faults=tuple(args.exclude_fault),
            exclude_channel_faults=tuple(args.exclude_channel_fault),
        ) as chaos:
            if chaos.alertmanager is None:
                c.say(f"chaos_channels: {MISSING}: the alertmanager channel is left out")
            c.say(
                f"chaos_channels: seed {args.seed}, {args.seconds:g} s of chaos,"
                f" {len(chaos.names)} targets, channels {', '.join(chaos.channels)};"
                f" {len(chaos.plan.segments)} scripted outages, {len(chaos.plan.kills)} kills,"
                f" {len(chaos.plan.faults)} GitHub faults, {len(chaos.channel_plan)} channel"
                f" faults; workdir {workdir}"
            )
            summary = chaos.run()
        summary["plan"] = {
            "segments": [asdict(s) for s in chaos.plan.segments],
            "kills": chaos.plan.kills,
            "channel_faults": chaos.channel_plan,
        }
        c.emit(summary, args.out)
    status_line = "PASSED" if summary["passed"] else f"FAILED: {', '.join(summary['failures'])}"
    c.say(f"chaos_channels: {status_line}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
