"""Programmable HTTP targets on 127.0.0.1 for probe tests: real sockets, byte-level answers.

A :class:`TargetServer` runs an asyncio loop in a background thread and answers
each request with the *handler* routed at its path.  Handlers write raw bytes,
so a test can send what no well-behaved framework would: a lying
``Content-Length``, a chunked body that stops half way, a reset in the middle
of a body.  Build handlers with the constructors below (:func:`respond`,
:func:`json_body`, :func:`slow_body`, ...) or write one: it is any
``async def handler(request, conn)``.

Usage::

    def test_x(target_server):
        target_server.route("/health", json_body({"status": "ok"}))
        ...  # probe target_server.url + "/health"
        target_server.set("/health", respond(503))  # flip it to failing
        assert target_server.hits("/health") == 2

Everything is bounded: each connection has a time limit, request heads are
capped, and :meth:`TargetServer.stop` aborts every open connection.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import http
import json
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import pytest
import trustme

HOST = "127.0.0.1"
MAX_HEAD_BYTES = 64 * 1024
MAX_REQUEST_BODY_BYTES = 1024 * 1024
KEPT_REQUESTS_PER_PATH = 1000
_PIECE = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    target: str  # the request target as sent, query included
    path: str  # the target without its query: what routes match on
    version: str  # "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]  # in order, names lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


class Connection:
    """The server side of one TCP (or TLS) connection, as a handler sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # Cleared by handlers that break HTTP framing: the connection must not
        # carry another request after them.
        self.keep_alive = True

    async def send(self, data: bytes) -> None:
        """Write bytes and wait until the socket took them."""
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        """Close after flushing (a FIN): the client sees the end of the stream."""
        self.keep_alive = False
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Abort with SO_LINGER 0 so the kernel sends RST instead of FIN."""
        self.keep_alive = False
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Request, Connection], Awaitable[None]]


# -- response constructors -----------------------------------------------------------


def _head(status: int, headers: Mapping[str, str] | None = None) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def respond(
    status: int = 200,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    delay_s: float = 0,
) -> Handler:
    """A well-formed answer; ``Content-Length`` is added unless ``headers`` frame the body."""
    all_headers = dict(headers or {})
    if not _has(all_headers, "content-length") and not _has(all_headers, "transfer-encoding"):
        all_headers["Content-Length"] = str(len(body))

    async def handler(request: Request, conn: Connection) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        await conn.send(_head(status, all_headers) + (b"" if request.method == "HEAD" else body))

    return handler


def json_body(obj: Any, status: int = 200) -> Handler:
    """``obj`` as a JSON document."""
    return respond(status, json.dumps(obj).encode("utf-8"), {"Content-Type": "application/json"})


def delay(seconds: float, then: Handler | None = None) -> Handler:
    """Wait ``seconds`` before the status line (slow headers), then answer like ``then``."""
    follow = then or respond(200, b"ok")

    async def handler(request: Request, conn: Connection) -> None:
        await asyncio.sleep(seconds)
        await follow(request, conn)

    return handler


def slow_body(total_bytes: int, chunk: int = 1, every_s: float = 0.5) -> Handler:
    """Headers at once, then the body trickles: ``chunk`` bytes every ``every_s`` seconds."""

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(_head(200, {"Content-Length": str(total_bytes)}))
        sent = 0
        while sent < total_bytes:
            await asyncio.sleep(every_s)
            piece = min(chunk, total_bytes - sent)
            await conn.send(b"x" * piece)
            sent += piece

    return handler


def huge_body(n_bytes: int, chunked: bool = False) -> Handler:
    """``n_bytes`` of body, framed by ``Content-Length`` or as chunks of 64 KiB."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(n_bytes)}

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(_head(200, {"Content-Type": "application/octet-stream", **framing}))
        left = n_bytes
        while left > 0:
            piece = b"x" * min(_PIECE, left)
            left -= len(piece)
            await conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            await conn.send(b"0\r\n\r\n")

    return handler


def wrong_content_length(declared: int, actual_body: bytes) -> Handler:
    """Declare ``declared`` bytes, send ``actual_body``, then close the connection."""

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(_head(200, {"Content-Length": str(declared)}) + actual_body)
        await conn.close()

    return handler


def truncated_chunked() -> Handler:
    """A chunked body that stops without its terminating zero-length chunk (then FIN)."""

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(_head(200, {"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n")
        await conn.send(b"10\r\nonly part")  # a chunk announced as 16 bytes, 9 sent
        await conn.close()

    return handler


def reset_mid_body(sent: int = 100, declared: int = 1000, pause_s: float = 0.1) -> Handler:
    """Headers and ``sent`` of ``declared`` body bytes, a pause, then RST (SO_LINGER 0).

    The pause lets the client read the head first, so the reset lands while it
    waits for the body rather than racing the head.
    """

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(_head(200, {"Content-Length": str(declared)}) + b"x" * sent)
        await asyncio.sleep(pause_s)
        conn.reset()

    return handler


def reset_before_response() -> Handler:
    """Read the request, answer nothing, RST."""

    async def handler(request: Request, conn: Connection) -> None:
        conn.reset()

    return handler


def close_before_response() -> Handler:
    """Read the request, answer nothing, FIN."""

    async def handler(request: Request, conn: Connection) -> None:
        await conn.close()

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    """A redirect to ``location`` (absolute or a path on this server)."""
    return respond(status, b"", {"Location": location})


def redirect_loop(status: int = 302) -> Handler:
    """A redirect to the very path that was requested: followed, it never ends."""

    async def handler(request: Request, conn: Connection) -> None:
        await redirect(request.target, status)(request, conn)

    return handler


def raw(data: bytes, *, then_close: bool = True) -> Handler:
    """Exactly ``data`` on the wire, nothing added; then FIN unless ``then_close`` is false."""

    async def handler(request: Request, conn: Connection) -> None:
        await conn.send(data)
        if then_close:
            await conn.close()

    return handler


def not_found() -> Handler:
    """The answer for paths without a route."""
    return respond(404, b"no route", {"Content-Type": "text/plain"})


# -- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSIdentity:
    """A throwaway CA and a server certificate it issued."""

    ca: trustme.CA
    cert: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        """What the server presents."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA (pass as ``Prober(verify=...)``)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def tls_identity(
    hostname: str = HOST, *, expired: bool = False, expires_in: timedelta | None = None
) -> TLSIdentity:
    """A CA and a certificate for ``hostname``; ``expired`` dates it a day in the past,
    ``expires_in`` sets its notAfter that far from now (negative: expired)."""
    ca = trustme.CA()
    if expired:
        expires_in = timedelta(days=-1)
    if expires_in is not None:
        now = datetime.now(UTC).replace(microsecond=0)  # notAfter has whole seconds
        cert = ca.issue_cert(
            hostname, not_before=now - timedelta(days=30), not_after=now + expires_in
        )
    else:
        cert = ca.issue_cert(hostname)
    return TLSIdentity(ca=ca, cert=cert)


# -- the server ----------------------------------------------------------------------------


@dataclass
class _Stats:
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: dict[str, collections.deque[Request]] = field(default_factory=dict)
    connections: int = 0
    peak_connections: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


class TargetServer:
    """An HTTP/1.1 server on 127.0.0.1 whose answers the test scripts, run in a thread."""

    def __init__(
        self,
        *,
        tls: TLSIdentity | None = None,
        connection_limit_s: float = 10.0,
        default: Handler | None = None,
    ) -> None:
        self.tls = tls
        self._server_context = tls.server_context() if tls else None
        self._connection_limit_s = connection_limit_s
        self._default = default or not_found()
        self._routes: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle

    def __enter__(self) -> TargetServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TargetServer:
        """Bind an ephemeral port and serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._run, name="target-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=5):
            raise RuntimeError("target server did not start within 5 s")
        if self._failed is not None:
            raise RuntimeError("target server failed to start") from self._failed
        return self

    def stop(self) -> None:
        """Abort every connection and end the thread; prompt whatever handlers are doing."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=5)
        if thread.is_alive():
            raise RuntimeError("target server thread did not stop within 5 s")
        self._loop = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start(); a thread must not die loudly
            self._failed = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection, HOST, 0, limit=MAX_HEAD_BYTES, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    # -- the scripted behaviour

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS), no trailing slash."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def route(self, path: str, handler: Handler) -> None:
        """Answer requests for ``path`` (query ignored) with ``handler``."""
        with self._lock:
            self._routes[path] = handler

    def set(self, path: str, handler: Handler) -> None:
        """Replace the handler of ``path`` while the server runs (same as :meth:`route`)."""
        self.route(path, handler)

    def hits(self, path: str) -> int:
        """How many requests for ``path`` arrived."""
        with self._lock:
            return self._stats.hits[path]

    def requests(self, path: str) -> list[Request]:
        """The requests for ``path``, oldest first (the last 1000)."""
        with self._lock:
            return list(self._stats.requests.get(path, ()))

    @property
    def peak_connections(self) -> int:
        """The most connections open at once."""
        with self._lock:
            return self._stats.peak_connections

    @property
    def peak_in_flight(self) -> int:
        """The most requests being answered at once."""
        with self._lock:
            return self._stats.peak_in_flight

    @property
    def errors(self) -> list[str]:
        """Unexpected faults in handlers (client resets are expected and not listed)."""
        with self._lock:
            return list(self._stats.errors)

    # -- per connection

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._stats.connections += 1
            self._stats.peak_connections = max(
                self._stats.peak_connections, self._stats.connections
            )
        conn = Connection(reader, writer)
        try:
            async with asyncio.timeout(self._connection_limit_s):
                if self._server_context is not None:
                    await writer.start_tls(self._server_context)
                await self._serve(conn)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, rejected our certificate, or took too long
        except asyncio.CancelledError:
            pass  # stop(): end quietly, the transport is aborted below
        except Exception as exc:
            with self._lock:
                self._stats.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.transport.abort()
            with self._lock:
                self._stats.connections -= 1
            self._tasks.discard(task)

    async def _serve(self, conn: Connection) -> None:
        while conn.keep_alive:
            request = await _read_request(conn.reader)
            if request is None:
                return
            with self._lock:
                handler = self._routes.get(request.path, self._default)
                self._stats.hits[request.path] += 1
                kept = self._stats.requests.setdefault(
                    request.path, collections.deque(maxlen=KEPT_REQUESTS_PER_PATH)
                )
                kept.append(request)
                self._stats.in_flight += 1
                self._stats.peak_in_flight = max(self._stats.peak_in_flight, self._stats.in_flight)
            try:
                await handler(request, conn)
            finally:
                with self._lock:
                    self._stats.in_flight -= 1
            if (request.header("connection") or "").lower() == "close":
                return


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    except asyncio.LimitOverrunError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = tuple(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    )
    request = Request(method, target, target.split("?", 1)[0], version, headers)
    length = request.header("content-length")
    if length and length.isdigit() and 0 < int(length) <= MAX_REQUEST_BODY_BYTES:
        body = await reader.readexactly(int(length))
        request = Request(method, target, request.path, version, headers, body)
    return request


@functools.cache
def _unlistened_socket() -> socket.socket:
    # Bound but never listening: connecting gets RST (refused), and the port stays
    # ours for the whole session, so no other process can start listening on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    atexit.register(sock.close)
    return sock


def refused_port() -> int:
    """A port on 127.0.0.1 where a connection is refused."""
    port: int = _unlistened_socket().getsockname()[1]
    return port


# -- fixtures (registered from tests/conftest.py with pytest_plugins) ---------------------


@pytest.fixture
def target_server() -> Iterator[TargetServer]:
    """A plain-HTTP target server, stopped after the test."""
    with TargetServer() as server:
        yield server


@pytest.fixture
def target_server_tls() -> Iterator[TargetServer]:
    """An HTTPS target server with a certificate for 127.0.0.1 from a throwaway CA.

    ``target_server_tls.tls.client_context()`` trusts it; default verification does not.
    """
    with TargetServer(tls=tls_identity()) as server:
        yield server


@dataclass
class RegionalHealth:
    """``/health`` that answers 503 to the probes of the regions in ``failing``."""

    failing: set[str] = field(default_factory=set)
    seen: dict[str, int] = field(default_factory=dict)  # probes per X-Monitor-Region
    agents: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, request: Request, conn: Connection) -> None:
        region = request.header("x-monitor-region") or "?"
        with self.lock:
            self.seen[region] = self.seen.get(region, 0) + 1
            self.agents.add(request.header("user-agent") or "")
            status = 503 if region in self.failing else 200
        await respond(status, b'{"status": "ok"}' if status == 200 else b"{}")(request, conn)

    def fail(self, *regions: str) -> None:
        """From now on, exactly these regions see the target down."""
        with self.lock:
            self.failing = set(regions)
