"""The HTTP side on a real uvicorn: exposition formats, health, limits, unknown paths."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import CheckConfig, TargetConfig
from monitor.metrics import Metrics
from monitor.web.server import HttpServer, create_app
from tests.ports import free_port


class Health:
    """A switchable health source."""

    def __init__(self) -> None:
        self.ok = True

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.ok, {"problems": [] if self.ok else ["no completed probe cycle for: x"]}


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Health, Metrics]]:
    """The app on 127.0.0.1 with an ephemeral port."""
    metrics = Metrics()
    health = Health()
    server = HttpServer(create_app(metrics, health), "127.0.0.1:0")
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{server.bound_port}", health, metrics
    server.stop()
    await asyncio.wait_for(task, 5)


async def test_metrics_in_prometheus_text_and_openmetrics(
    served: tuple[str, Health, Metrics],
) -> None:
    """/metrics speaks Prometheus text by default and OpenMetrics when asked."""
    url, _, _ = served
    async with httpx.AsyncClient() as client:
        plain = await client.get(f"{url}/metrics")
        open_metrics = await client.get(
            f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(plain.text)}
    assert "monitor_build_info" in names
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


async def test_no_created_series_in_either_format(served: tuple[str, Health, Metrics]) -> None:
    """Counters and histograms export no ``_created`` series, in text or OpenMetrics."""
    url, _, metrics = served
    metrics.declare(
        [TargetConfig(name="web", url="http://127.0.0.1:9", checks=[CheckConfig(name="health")])]
    )
    metrics.probes.labels("web", "health").inc()
    async with httpx.AsyncClient() as client:
        plain = await client.get(f"{url}/metrics")
        open_metrics = await client.get(
            f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert 'monitor_probes_total{check="health",target="web"} 1.0' in plain.text
    for body in (plain.text, open_metrics.text):
        assert "_created" not in body


async def test_healthz_follows_the_daemon(served: tuple[str, Health, Metrics]) -> None:
    """/healthz is 200 while healthy and 503 with the reason when not."""
    url, health, _ = served
    async with httpx.AsyncClient() as client:
        good = await client.get(f"{url}/healthz")
        health.ok = False
        bad = await client.get(f"{url}/healthz")
    assert (good.status_code, good.json()["status"]) == (200, "ok")
    assert (bad.status_code, bad.json()["status"]) == (503, "unhealthy")
    assert bad.json()["problems"] == ["no completed probe cycle for: x"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/metrics/../healthz/x", 404),
        ("POST", "/metrics", 405),
        ("DELETE", "/healthz", 405),
    ],
    ids=["unknown", "traversal", "dotted", "post-metrics", "delete-healthz"],
)
async def test_unknown_paths_and_methods_answer_json(
    served: tuple[str, Health, Metrics], method: str, path: str, status: int
) -> None:
    """Unknown paths are 404 and wrong methods 405, both with a JSON error, never a 500."""
    url, _, _ = served
    async with httpx.AsyncClient() as client:
        response = await client.request(method, url + path)
    assert response.status_code == status
    assert "error" in response.json()


async def test_request_bodies_are_refused(served: tuple[str, Health, Metrics]) -> None:
    """A large request body is refused with 413 before anything reads it."""
    url, _, _ = served
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/metrics", content=b"x" * 100_000)
    assert response.status_code == 413


def _raw_request(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


async def test_huge_headers_are_refused(served: tuple[str, Health, Metrics]) -> None:
    """Request headers beyond the limit end the connection with an error, not memory growth."""
    url, _, _ = served
    port = int(url.rsplit(":", 1)[1])
    payload = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    answer = await asyncio.to_thread(_raw_request, port, payload)
    assert not answer.startswith(b"HTTP/1.1 200")


async def test_ipv6_any_address_serves_ipv4_too() -> None:
    """listen = "[::]:PORT" answers on 127.0.0.1 and on ::1 (Fly checks may use either)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    server = HttpServer(create_app(Metrics(), Health()), f"[::]:{port}")
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            v4 = await client.get(f"http://127.0.0.1:{port}/healthz")
            v6 = await client.get(f"http://[::1]:{port}/healthz")
        assert (v4.status_code, v6.status_code) == (200, 200)
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
