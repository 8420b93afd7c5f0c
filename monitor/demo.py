"""``monitor demo``: a sample service that breaks and heals, and the daemon watching it.

Everything runs on 127.0.0.1 with short intervals, so a newcomer sees a probe,
an incident opened and resolved (in the journal) and the metrics within a
minute, with no token and no network.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.config import Settings, load_settings
from monitor.logs import get_logger

log = get_logger("monitor.demo")

# (seconds, state) repeating: healthy, then an outage long enough to open an incident
SCHEDULE: tuple[tuple[float, str], ...] = (
    (12.0, "healthy"),
    (10.0, "down"),
    (12.0, "healthy"),
    (6.0, "slow"),
)


class SampleService:
    """A tiny app with /health and /api/monitoring/health that follows SCHEDULE."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self.deploys = 0
        self._last_state = "healthy"

    def state(self) -> str:
        """Where the schedule stands now."""
        state = self._scheduled_state()
        if state != self._last_state and state == "healthy":
            self.deploys += 1  # every recovery ships a "fix": a new version
        self._last_state = state
        return state

    def _scheduled_state(self) -> str:
        period = sum(length for length, _ in SCHEDULE)
        offset = (self._clock() - self._started) % period
        for length, state in SCHEDULE:
            if offset < length:
                return state
            offset -= length
        return SCHEDULE[-1][1]

    def app(self) -> Starlette:
        """The ASGI app."""

        async def health(_: Request) -> Response:
            if self.state() == "down":
                return JSONResponse({"error": "database unavailable"}, 503)
            return Response("ok")

        async def monitoring(_: Request) -> Response:
            state = self.state()
            if state == "slow":
                await asyncio.sleep(0.3)
            body = {
                "status": "healthy" if state != "down" else "unhealthy",
                "version": f"1.4.{self.deploys}",
                "errorRate": 0.2 if state == "down" else 0.001,
                "activeAlerts": ["db-connections"] if state == "down" else [],
            }
            return JSONResponse(body, 503 if state == "down" else 200)

        return Starlette(
            routes=[Route("/health", health), Route("/api/monitoring/health", monitoring)]
        )


def demo_settings(service_url: str, state_dir: Path, listen: str) -> Settings:
    """The daemon's configuration for the demo: fast cadence, journal sink."""
    check = {"path": "/api/monitoring/health", "conditions": ["status == 'healthy'"]}
    return load_settings(
        None,
        monitor={
            "interval": "2s",
            "incident_interval": "1s",
            "timeout": "2s",
            "open_after": 3,
            "close_after": 2,
            "reopen_window": "3s",
            "reminder_interval": "8s",
            "jitter": 0,
            "listen": listen,
            "state_path": str(state_dir / "demo.db"),
        },
        github={"enabled": False},
        targets=[
            {
                "name": "demo",
                "url": service_url,
                "slo": 0.995,
                "checks": [
                    {"name": "health", "path": "/health", "expect_status": [200, 302]},
                    {
                        "name": "monitoring",
                        "version": "version",
                        "max_response_time": "200ms",
                        **check,
                    },
                ],
            }
        ],
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(listen: str, duration_s: float | None) -> int:
    """Start the sample service and the daemon; return the daemon's exit code."""
    from monitor.daemon.daemon import Daemon

    async def go() -> int:
        port = _free_port()
        service = uvicorn.Server(
            uvicorn.Config(
                SampleService().app(),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
            )
        )
        service_task = asyncio.create_task(service.serve())
        while not service.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.02)  # the first probe must not race the service's bind
        with tempfile.TemporaryDirectory(prefix="monitor-demo-") as state_dir:
            settings = demo_settings(f"http://127.0.0.1:{port}", Path(state_dir), listen)
            daemon = Daemon(settings)
            log.info(
                "demo",
                sample_service=f"http://127.0.0.1:{port}",
                metrics=f"http://{listen}/metrics",
                status=f"http://{listen}/status",
                hint="the sample service breaks for 10 s every 40 s; watch for 'incident opened'",
            )
            if duration_s is not None:
                asyncio.get_running_loop().call_later(duration_s, daemon.request_stop)
            code = await daemon.run()
        service.should_exit = True
        await service_task
        return code

    return asyncio.run(go())
