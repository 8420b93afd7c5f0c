"""The HTTP side: ``/metrics``, ``/healthz`` and the status routes, on Starlette.

Handlers only read what the daemon already holds; none of them waits for a
probe, the store's writers or GitHub.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.config import split_listen
from monitor.metrics import Metrics

MAX_REQUEST_BODY_BYTES = 1024  # only POST /api/maintenance takes a (small) body


class HealthSource(Protocol):
    """What ``/healthz`` asks the daemon."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details for the JSON body)."""
        ...


class _RefuseBodies:
    """Reject request bodies larger than anything a read-only server needs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                too_big = value.isdigit() and int(value) > MAX_REQUEST_BODY_BYTES
                if name == b"content-length" and too_big:
                    response = JSONResponse({"error": "request body too large"}, 413)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(
    metrics: Metrics, health: HealthSource, extra_routes: list[Route] | None = None
) -> Starlette:
    """The ASGI application; ``extra_routes`` adds the status page and API."""

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    async def healthz(_: Request) -> Response:
        ok, detail = health.health()
        return JSONResponse({"status": "ok" if ok else "unhealthy", **detail}, 200 if ok else 503)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": message, "path": request.url.path}, status)

    routes = [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *(extra_routes or []),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_RefuseBodies)],
        exception_handlers={HTTPException: not_found},
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _dual_stack_socket(port: int) -> socket.socket:
    """``[::]:port`` serving IPv4 too: Fly's checks and scrapes may come over either."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving the app inside the daemon's event loop."""

    def __init__(self, app: ASGIApp, listen: str) -> None:
        host, port = split_listen(listen)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # our logging pipeline already owns the root logger
            access_log=False,
            lifespan="off",
            h11_max_incomplete_event_size=16 * 1024,  # bounds request line + headers
            limit_concurrency=200,
            timeout_keep_alive=5,
            server_header=False,
        )
        self._server = _Server(config)
        self._host, self._port = host, port

    async def serve(self) -> None:
        """Run until :meth:`stop`."""
        if self._host == "::":
            await self._server.serve(sockets=[_dual_stack_socket(self._port)])
        else:
            await self._server.serve()

    @property
    def started(self) -> bool:
        """True once the socket is bound."""
        return bool(self._server.started)

    @property
    def bound_port(self) -> int | None:
        """The real port (useful with port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None

    def stop(self) -> None:
        """Ask uvicorn to finish."""
        self._server.should_exit = True
