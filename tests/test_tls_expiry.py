"""TLS certificate expiry on https checks: degraded within ``cert_warn``, down once expired.

Certificates are minted by the test (trustme, with a chosen notAfter) and served over
TLS on 127.0.0.1; the results, the metric, ``ca_file``, ``SSL_CERT_FILE`` and the
status page are checked against them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import CheckConfig, MonitorSection, TargetConfig
from monitor.metrics import Metrics
from monitor.probing.prober import Prober
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from tests.daemon_process import (
    Daemons,
    clean_env,
    http_get,
    run_monitor,
    wait_for,
    write_config,
)
from tests.ports import free_port
from tests.targets import TargetServer, raw, respond, tls_identity

PATH = "/health"
EXPIRY_METRIC = "monitor_tls_cert_expiry_timestamp_seconds"


@pytest.fixture
def served() -> Iterator[Any]:
    """Start a TLS target whose certificate expires ``expires_in`` from now."""
    servers: list[TargetServer] = []

    def start(expires_in: timedelta) -> TargetServer:
        server = TargetServer(tls=tls_identity(expires_in=expires_in)).start()
        server.route(PATH, respond(200, b"ok"))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def target_for(server: TargetServer, **check: Any) -> TargetConfig:
    """The server as a target with one https check."""
    return TargetConfig(
        name="web", url=server.url, checks=[CheckConfig(name="health", path=PATH, **check)]
    )


async def probe(
    target: TargetConfig, verify: ssl.SSLContext | bool = True
) -> tuple[CheckResult, TargetResult]:
    """One cycle of ``target`` with a fresh prober."""
    async with Prober(MonitorSection(timeout=3), verify=verify) as prober:
        result = await prober.probe_target(target)
    return result.checks[0], result


def not_after(server: TargetServer) -> datetime:
    """The notAfter of the certificate ``server`` presents."""
    assert server.tls is not None
    pem = server.tls.cert.cert_chain_pems[0].bytes()
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def exported_expiry(result: TargetResult) -> float | None:
    """The expiry metric after the daemon's metrics observe ``result``."""
    metrics = Metrics(CollectorRegistry())
    metrics.observe(result, 0.0)
    return metrics.registry.get_sample_value(EXPIRY_METRIC, {"target": "web", "check": "health"})


@pytest.mark.parametrize(
    ("expires_in", "outcome", "reason", "detail"),
    [
        pytest.param(timedelta(days=2), Outcome.DEGRADED, Reason.TLS, "in 2d (cert_warn 14d)", id="2-days"),
        pytest.param(timedelta(days=20), Outcome.UP, Reason.OK, "200 in", id="20-days"),
        pytest.param(timedelta(days=-1), Outcome.DOWN, Reason.TLS, "certificate has expired", id="yesterday"),
    ],
)  # fmt: skip
async def test_expiry_decides_the_outcome_and_is_exported(
    served: Any, expires_in: timedelta, outcome: Outcome, reason: Reason, detail: str
) -> None:
    """2 days left is degraded, 20 days is up, expired yesterday is down for ``tls``; each
    result carries the notAfter, and the metric exports it to the second."""
    server = served(expires_in)
    assert server.tls is not None

    check, result = await probe(target_for(server), verify=server.tls.client_context())

    assert (check.outcome, check.reason) == (outcome, reason)
    assert detail in check.detail
    assert check.cert_expires_at == not_after(server)
    assert exported_expiry(result) == not_after(server).timestamp()


async def test_expired_certificate_says_when(served: Any) -> None:
    """An expired certificate's result names the date it expired, not only the failure."""
    server = served(timedelta(days=-1))
    assert server.tls is not None

    check, _ = await probe(target_for(server), verify=server.tls.client_context())

    assert check.detail.startswith(f"certificate expired {not_after(server):%Y-%m-%d %H:%M} UTC")


async def test_cert_warn_is_per_check(served: Any) -> None:
    """``cert_warn = "30d"`` makes a certificate with 20 days left degraded."""
    server = served(timedelta(days=20))
    assert server.tls is not None

    check, _ = await probe(target_for(server, cert_warn="30d"), verify=server.tls.client_context())

    assert (check.outcome, check.reason) == (Outcome.DEGRADED, Reason.TLS)
    assert "in 20d (cert_warn 30d)" in check.detail


async def test_plain_http_has_no_expiry(target_server: TargetServer) -> None:
    """Over plain HTTP there is no certificate: no expiry, no metric series."""
    target_server.route(PATH, respond(200, b"ok"))

    check, result = await probe(target_for(target_server))

    assert check.cert_expires_at is None
    assert exported_expiry(result) is None


async def test_ca_file_trusts_a_private_ca(served: Any, tmp_path: Path) -> None:
    """A check's ``ca_file`` (a PEM bundle) verifies a private CA's certificate; without
    it the same server is down for ``tls``."""
    server = served(timedelta(days=20))
    assert server.tls is not None
    bundle = tmp_path / "private-ca.pem"
    server.tls.ca.cert_pem.write_to_path(str(bundle))

    trusted, _ = await probe(target_for(server, ca_file=bundle))
    untrusted, _ = await probe(target_for(server))

    assert trusted.outcome is Outcome.UP
    assert trusted.cert_expires_at == not_after(server)
    assert (untrusted.outcome, untrusted.reason) == (Outcome.DOWN, Reason.TLS)


def test_ssl_cert_file_keeps_working(served: Any, tmp_path: Path) -> None:
    """``SSL_CERT_FILE`` in the environment the monitor starts with is its trust store
    (OpenSSL reads it when the default context loads), with no ca_file: ``monitor check``
    trusts the test CA through it, and without it the same check fails for ``tls``."""
    server = served(timedelta(days=20))
    assert server.tls is not None
    bundle = tmp_path / "ca.pem"
    server.tls.ca.cert_pem.write_to_path(str(bundle))
    config = write_config(
        tmp_path / "config.toml",
        target_url=server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state.db",
    )

    def check(**env: str) -> dict[str, Any]:
        done = run_monitor("check", "--config", str(config), "--json", **env)
        [result] = json.loads(done.stdout)["targets"][0]["checks"]
        return dict(result)

    trusted = check(SSL_CERT_FILE=str(bundle))
    assert trusted["outcome"] == "up", trusted
    untrusted = check()
    assert (untrusted["outcome"], untrusted["reason"]) == ("down", "tls"), untrusted


def test_daemon_exports_and_shows_the_expiry(served: Any, daemons: Daemons, tmp_path: Path) -> None:
    """The running daemon, trusting the CA through ``ca_file``: the check is degraded, the
    metric holds the notAfter, and /api/status and the status page show the date."""
    server = served(timedelta(days=2))
    assert server.tls is not None
    bundle = tmp_path / "ca.pem"
    server.tls.ca.cert_pem.write_to_path(str(bundle))
    config = write_config(
        tmp_path / "config.toml",
        target_url=server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state" / "monitor.db",
        target="web",
    )
    with config.open("a", encoding="utf-8") as file:
        file.write(f"ca_file = {json.dumps(str(bundle))}\n")
    daemon = daemons.start(config, clean_env())
    daemon.wait_healthy()
    expires = not_after(server)

    wait_for(
        lambda: daemon.value(EXPIRY_METRIC, target="web", check="health"),
        10,
        "the expiry metric",
        daemon.logs,
    )
    assert daemon.value(EXPIRY_METRIC, target="web", check="health") == expires.timestamp()
    [check] = daemon.api_status()["targets"][0]["checks"]
    assert check["state"] == "degraded"
    assert check["reason"] == "tls"
    assert datetime.fromisoformat(check["cert_expires_at"]) == expires
    code, page = http_get(f"{daemon.base_url}/status")
    assert code == 200
    assert (
        f'certificate expires <time datetime="{check["cert_expires_at"]}">{expires:%Y-%m-%d}</time>'
        in page
    )
    assert expires.astimezone(UTC).date() >= datetime.now(UTC).date()


async def test_latency_budget_is_reported_before_the_certificate(served: Any) -> None:
    """Slow and near expiry: the result says slow (the latency alert watches that), and
    still carries the expiry for its own metric."""
    server = served(timedelta(days=2))
    assert server.tls is not None

    check, _ = await probe(
        target_for(server, max_response_time=0.000001), verify=server.tls.client_context()
    )

    assert (check.outcome, check.reason) == (Outcome.DEGRADED, Reason.SLOW)
    assert check.cert_expires_at == not_after(server)


@pytest.mark.parametrize("close", ["Connection: close", "HTTP/1.0"])
async def test_expiry_is_read_when_the_server_closes_after_its_answer(
    served: Any, close: str
) -> None:
    """A server that closes the connection after its answer (``Connection: close``, or
    HTTP/1.0 as Python's http.server does) still has its certificate read: the answer
    released the connection before the prober looks, so the session is remembered."""
    server = served(timedelta(days=3))
    assert server.tls is not None
    head = (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        if close == "Connection: close"
        else b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    server.route(PATH, raw(head))

    check, _ = await probe(target_for(server), verify=server.tls.client_context())

    assert (check.outcome, check.reason) == (Outcome.DEGRADED, Reason.TLS), check.detail
    assert check.cert_expires_at == not_after(server)
