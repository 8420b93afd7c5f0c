"""A small app for Prometheus to scrape, and the authenticating proxy Fly puts in front of
its managed Prometheus: the two ends a ``type = "prometheus"`` check is tested between.

:class:`PromApp` serves ``/metrics`` on 127.0.0.1 in Prometheus's text format with one
counter, ``http_requests_total{app="hotdash", status="200"|"503"}``. Traffic never
stops: a background thread adds :attr:`PromApp.per_tick` requests every
:attr:`PromApp.tick_s`, and :attr:`PromApp.error_share` of them (switched by the test at
any time) count as 503. Errors are dealt out with a carry, not by chance, so a share of
0.2 is exactly one request in five and a scraped ratio settles on exactly 20 %.

:class:`AuthProxy` passes GET requests on to a real Prometheus only when they carry
``Authorization: Bearer <token>``; anything else gets the 401 JSON error that Prometheus's
API clients expect. It records every Authorization header it saw (None: none sent).

Both are stdlib ``http.server`` servers in daemon threads; use them as context managers
(or call ``close``) so nothing outlives the test.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
APP = "hotdash"
METRIC = "http_requests_total"
STATUSES = ("200", "503")
POLL_S = 0.05  # how long serve_forever may take to notice a shutdown
UPSTREAM_TIMEOUT_S = 10.0
UNAUTHORIZED = {"status": "error", "errorType": "unauthorized", "error": "bad token"}


class _Server(ThreadingHTTPServer):
    """A threading server whose request threads never keep the interpreter alive."""

    daemon_threads = True
    block_on_close = False


def _start(
    serve: Callable[[BaseHTTPRequestHandler], None], name: str
) -> tuple[_Server, threading.Thread]:
    """A quiet HTTP/1.1 server on a free port whose GETs go to ``serve``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            serve(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(POLL_S,), name=name, daemon=True)
    thread.start()
    return server, thread


def _stop(server: _Server, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
    except OSError:  # the client gave up first (its time-out): nobody to answer
        handler.close_connection = True


class PromApp:
    """An app whose ``/metrics`` counts requests by status while traffic keeps flowing.

    ``with PromApp() as app:`` starts the server and the traffic; ``app.error_share =
    0.2`` makes every fifth request from then on a 503.
    """

    def __init__(self, *, per_tick: int = 50, tick_s: float = 0.1) -> None:
        self.per_tick = per_tick
        """Requests added per tick (50 every 100 ms: 500 per second)."""
        self.tick_s = tick_s
        """Seconds between ticks, kept on a fixed schedule so the rate does not drift."""
        self.error_share = 0.0
        """The share of each tick's requests that are 503s, from 0 to 1."""
        self.scrapes = 0
        """How many times ``/metrics`` has been read."""
        self._counts = dict.fromkeys(STATUSES, 0)
        self._carry = 0.0  # errors owed by the ticks so far, below one
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 and start the traffic."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server, serving = _start(self._serve, "promapp")
        traffic = threading.Thread(target=self._traffic, name="promapp-traffic", daemon=True)
        traffic.start()
        self._threads = [serving, traffic]
        return self

    def close(self) -> None:
        """Stop the traffic and the server."""
        if self._server is None:
            return
        self._stopping.set()
        serving, traffic = self._threads
        traffic.join(timeout=5)
        _stop(self._server, serving)
        self._server = None
        self._threads = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what it serves

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123``."""
        if self._server is None:
            raise RuntimeError("PromApp is not started; use it as a context manager")
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def address(self) -> str:
        """``host:port``, as a Prometheus scrape target and its ``instance`` label."""
        return self.url.removeprefix("http://")

    def counts(self) -> dict[str, int]:
        """The counter's values by status, right now."""
        with self._lock:
            return dict(self._counts)

    def exposition(self) -> str:
        """``/metrics`` as Prometheus's text format (version 0.0.4)."""
        counts = self.counts()
        lines = [
            f"# HELP {METRIC} Requests served, by status.",
            f"# TYPE {METRIC} counter",
        ]
        lines += [f'{METRIC}{{app="{APP}",status="{s}"}} {counts[s]}' for s in STATUSES]
        return "\n".join(lines) + "\n"

    def tick(self) -> None:
        """Serve one tick's requests: ``per_tick`` of them, ``error_share`` as 503s."""
        with self._lock:
            share = min(max(self.error_share, 0.0), 1.0)
            self._carry += self.per_tick * share
            errors = min(int(self._carry + 1e-9), self.per_tick)
            self._carry = max(self._carry - errors, 0.0)
            self._counts["503"] += errors
            self._counts["200"] += self.per_tick - errors

    def _traffic(self) -> None:
        due = time.monotonic()
        while not self._stopping.is_set():
            self.tick()
            due += self.tick_s
            self._stopping.wait(max(due - time.monotonic(), 0.0))

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?", 1)[0] != "/metrics":
            _reply(handler, 404, b"not found\n", "text/plain; charset=utf-8")
            return
        with self._lock:
            self.scrapes += 1
        body = self.exposition().encode()
        _reply(handler, 200, body, "text/plain; version=0.0.4; charset=utf-8")


class AuthProxy:
    """A stand-in for Fly's managed Prometheus: a GET proxy to ``upstream`` that wants
    ``Authorization: Bearer <token>`` and answers 401 (Prometheus's error JSON) without it.

    ``echo = True`` makes the refusal quote the Authorization header it got, as a careless
    proxy would: what the check repeats of an answer must still not show its token.
    """

    def __init__(self, upstream: str, token: str, *, echo: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        """The real Prometheus's base URL."""
        self.token = token
        """The bearer token it accepts."""
        self.echo = echo
        """Quote the Authorization header received in each refusal."""
        self.padding = 0
        """Filler characters before the quote: moves it to where a client cuts the text."""
        self._authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._server, self._thread = _start(self._handle, "authproxy")

    @property
    def url(self) -> str:
        """The base URL a check is given instead of Prometheus's."""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request so far, oldest first (None: absent)."""
        with self._lock:
            return list(self._authorizations)

    def close(self) -> None:
        """Stop serving."""
        _stop(self._server, self._thread)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        authorization = handler.headers.get("Authorization")
        with self._lock:
            self._authorizations.append(authorization)
        if authorization != f"Bearer {self.token}":
            refusal = dict(UNAUTHORIZED)
            if self.echo:
                filler = "." * self.padding
                refusal["error"] = f"bad token{filler}: you sent {authorization!r}"
            _reply(handler, 401, json.dumps(refusal).encode(), "application/json")
            return
        status, body, content_type = self._forward(handler.path)
        _reply(handler, status, body, content_type)

    def _forward(self, path: str) -> tuple[int, bytes, str]:
        """Prometheus's answer to ``GET path``, an error status included."""
        try:
            with urllib.request.urlopen(self.upstream + path, timeout=UPSTREAM_TIMEOUT_S) as got:
                return got.status, got.read(), got.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
        except OSError as exc:  # Prometheus is down: a gateway's answer
            return 502, f"bad gateway: {exc}".encode(), "text/plain; charset=utf-8"
