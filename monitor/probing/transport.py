"""The prober's wire: an httpx transport that sends through one aiohttp connection pool.

The code is written against httpx (requests, responses, redirects, auth, cookies,
content decoding); only the transport underneath is aiohttp, because httpcore's pool
is where the time went (docs/benchmarks.md section 1: 6.6 s for 1,000 probes against
0.8 s here, bare aiohttp 0.1 s).

What this adapter owns, and why it is not ``httpx-aiohttp``'s:

* aiohttp's errors become the httpx errors that ``probing.errors`` classifies, chained
  ``from`` the original so the cause (``gaierror``, ``SSLCertVerificationError``,
  ``ConnectionResetError``) stays visible: a refused connection is ``ConnectError``, a
  reset or a close before the response head is ``ReadError`` / ``RemoteProtocolError``,
  never a time-out (``httpx-aiohttp`` 0.2 maps every connection error to
  ``ConnectTimeout``).
* The server certificate of the connection that answered goes into the response's
  ``extensions["ssl_object"]``, so its expiry is read from the same handshake.
* Limits on the response head (see ``MAX_HEAD_BYTES``) keep the hostile answers of
  docs/reliability.md classified as they were under h11.
* An idempotent request whose pooled connection the server closed under it is resent
  once on a fresh connection (the keep-alive race, encode/httpx#2983); a fresh one that
  fails is not (aiohttp's own resend, which does both, is off).
* Proxies from the environment, read once, as httpx read them.
* No state between probes beyond the pool: no cookie jar, no decompression (httpx
  decodes, so the body cap counts decoded bytes).
* Time-outs: httpx's ``connect`` one is aiohttp's; the ``read`` one is left to the
  caller's deadline over the whole exchange (the prober's), see ``_connect_timeout``.
* A body that came whole with the head is handed over as bytes (``_body``).

The session and its connector are made on first use, inside the running event loop
(aiohttp binds them to the loop that creates them), and closed by ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import yarl
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from monitor.probing.errors import causes

READ_CHUNK = 64 * 1024
# Limits on the response head. httpcore ran h11 with one limit, ~100 KiB for the whole
# head; aiohttp limits lines and their number, so both are set and the whole head is
# checked once parsed: a line up to 16 KiB (a large Content-Security-Policy or Link
# header is a few KiB), up to 10,240 lines, at most 256 KiB in all. A hostile head can
# cost ~170 MB for the moment it takes to refuse it (10,240 lines of 16 KiB).
MAX_HEADER_LINE = 16 * 1024
MAX_HEADERS = 10_240
MAX_HEAD_BYTES = 256 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# a bound, not a working size: one entry per check's request (prober.MAX_CACHED_REQUESTS)
MAX_CACHED_URLS = 100_000
# errors raised before the request went out: nothing to resend (refused, DNS, TLS)
_NOT_SENT = (aiohttp.ClientConnectorError,)
_OS_ERROR_REPR = re.compile(r"\w+Error\(\d+, '([^']+)'\)")  # ConnectionResetError(104, '...')


# Whether the request in flight in this task went out on a pooled connection (set by
# _Handler as aiohttp hands it the request; a context variable because aiohttp's
# errors do not say which connection failed)
_REUSED: ContextVar[bool] = ContextVar("probe_connection_reused", default=False)


class _Handler(ResponseHandler):
    """aiohttp's protocol for one connection, which also remembers its TLS session (a
    connection closed after its answer has dropped its transport before we look) and
    how many requests it has carried."""

    ssl_object: ssl.SSLObject | None = None
    requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ssl_object = transport.get_extra_info("ssl_object")

    def set_response_params(self, *args: Any, **kwargs: Any) -> None:
        self.requests += 1  # aiohttp calls this once per request sent on the connection
        _REUSED.set(self.requests > 1)
        super().set_response_params(*args, **kwargs)


class _Connector(aiohttp.TCPConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiohttp has no public hook for the protocol class; the tests in
        # tests/test_tls_expiry.py and tests/test_probe.py pin what this is for
        self._factory = functools.partial(_Handler, loop=self._loop)  # type: ignore[assignment]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp ``ClientSession`` (HTTP/1.1, keep-alive pooled)."""

    def __init__(
        self, verify: ssl.SSLContext | bool, *, max_connections: int, keepalive_s: float
    ) -> None:
        self._verify = verify  # True: aiohttp's default context (the system's trust store)
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        # HTTP(S)_PROXY and NO_PROXY, read once, as httpx's own transport honoured them
        # (httpx ignores them once it is given a transport). Not aiohttp's trust_env: it
        # reads them, and ~/.netrc for credentials to send to targets, on every request.
        self._proxies = _proxies_from_environment()
        # proxy passwords, which an error message must not carry
        self._secrets = tuple(
            password for proxy in self._proxies.values() if (password := urlsplit(proxy).password)
        )
        # a check's request is built once and resent (prober.OutgoingRequests): its URL, an
        # immutable object, converts once, when prepared; the entry holds it, so its id
        # stays its own. A redirect's URL is new at every probe: converted, not kept.
        self._urls: dict[int, tuple[httpx.URL, yarl.URL]] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _Connector(
                limit=self._max_connections,
                ssl=self._verify,
                keepalive_timeout=self._keepalive_s,
                # a failed lookup is not cached, a good one for 10 s: the cadence is minutes
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # httpx has set every header it sends; aiohttp would add Content-Type to
                # a POST without a body
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
                max_headers=MAX_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            # aiohttp resends an idempotent request after any reset or close before the
            # answer, on a fresh connection too, which would hide a target failing every
            # other connection: handle_async_request resends after a pooled one only
            self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread() or None  # checks send no body (a POST, an empty one)
        url = self._aiohttp_url(request.url)
        resend = request.method in IDEMPOTENT
        with _httpx_errors(request, self._secrets):
            while True:
                _REUSED.set(False)
                try:
                    response = await self._session_now().request(
                        request.method,
                        url,
                        headers=_headers(request),
                        data=body,
                        allow_redirects=False,  # httpx follows them, as configured per check
                        proxy=self._proxy_for(request.url),
                        timeout=_connect_timeout(timeout.get("connect")),
                    )
                    break
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # once, on a fresh connection, when the pooled one was closed under
                    # the request (the keep-alive race, encode/httpx#2983)
                    if not (resend and _REUSED.get()) or isinstance(exc, _NOT_SENT):
                        raise
                    resend = False
        extensions: dict[str, Any] = {
            "http_version": b"HTTP/%d.%d" % (response.version or (1, 1)),
            "reason_phrase": (response.reason or "").encode("ascii", "replace"),
        }
        head_bytes = _head_bytes(response.raw_headers)
        if head_bytes > MAX_HEAD_BYTES:
            response.close()
            raise httpx.RemoteProtocolError(
                f"response head of {head_bytes:,} bytes, over {MAX_HEAD_BYTES:,}", request=request
            )
        if (ssl_object := _ssl_object(response)) is not None:
            extensions["ssl_object"] = ssl_object
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_body(response, request),
            request=request,
            extensions=extensions,
        )

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if not self._proxies:  # the common case: nothing to look up per request
            return None
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        host = f"{url.host}:{url.port}" if url.port else url.host  # NO_PROXY may name a port
        if proxy is None or urllib.request.proxy_bypass(host):
            return None
        return proxy

    def prepare(self, request: httpx.Request) -> None:
        """Convert the URL of a request that will be sent again and again, once, before
        its first sending (the prober prepares each request it builds, and builds a
        cycle's requests in one loop before the first goes out)."""
        if len(self._urls) >= MAX_CACHED_URLS:  # never with a fixed config
            self._urls.clear()
        url = request.url
        with contextlib.suppress(Exception):  # the sending meets it again, and maps it
            self._urls[id(url)] = (url, _aiohttp_url(url))

    def _aiohttp_url(self, url: httpx.URL) -> yarl.URL:
        cached = self._urls.get(id(url))
        if cached is not None and cached[0] is url:
            return cached[1]
        return _aiohttp_url(url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _head_bytes(raw_headers: tuple[tuple[bytes, bytes], ...]) -> int:
    """The size of a response head; 0 when it cannot pass the limit (lines are at most
    MAX_HEADER_LINE long), which spares counting on every probe."""
    if len(raw_headers) <= MAX_HEAD_BYTES // (MAX_HEADER_LINE + 4):
        return 0
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)


def _headers(request: httpx.Request) -> list[tuple[str, str]]:
    # the raw pairs as they go on the wire: Headers.multi_items() guesses an encoding
    # for every header on every call
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
    ]


def _aiohttp_url(url: httpx.URL) -> yarl.URL:
    """The URL as httpx encoded it, sent as is (yarl would re-encode the path: a
    ``%2e%2e`` would become ``..`` and probe another resource), without ``user:pass@``:
    httpx has made it an Authorization header, and aiohttp refuses both at once."""
    plain = url.copy_with(userinfo=b"") if url.userinfo else url
    return yarl.URL(str(plain), encoded=True)


def _proxies_from_environment() -> dict[str, str]:
    """HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY as httpx read them: a proxy
    without a scheme is an http:// one."""
    found = urllib.request.getproxies_environment()
    return {
        scheme: proxy if scheme == "no" or "://" in proxy else f"http://{proxy}"
        for scheme, proxy in found.items()
    }


def _ssl_object(response: aiohttp.ClientResponse) -> ssl.SSLObject | None:
    """The TLS session of the connection that answered (None over plain HTTP).

    A body that came with the head has already released the connection (or closed it,
    after ``Connection: close``) by now, so this asks the protocol the response keeps,
    which remembered its session (``_Handler``); aiohttp has no public accessor for it.
    """
    protocol = getattr(response, "_protocol", None)
    return protocol.ssl_object if isinstance(protocol, _Handler) else None


@functools.lru_cache(maxsize=64)
def _connect_timeout(connect_s: float | None) -> aiohttp.ClientTimeout:
    """The connect time-out alone: the read time-out is the caller's deadline over the
    whole exchange (the prober's ``asyncio.timeout``, the same seconds, started first,
    which a slow body counts against). A per-read timer, re-armed on every packet,
    could never fire before it and cost a twentieth of a probe."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s)


def _body(response: aiohttp.ClientResponse, request: httpx.Request) -> httpx.AsyncByteStream:
    """The body as a stream; as bytes when all of it came with the head (a health
    answer's usual size), which spares the reads that would wait for nothing.

    Not an encoded body: httpx would decode it in one piece, and a small gzip bomb that
    came whole would expand entirely before the body cap could stop it; read by chunks,
    the cap stops it within one chunk's expansion.
    """
    content = response.content
    if not content.is_eof() or aiohttp.hdrs.CONTENT_ENCODING in response.headers:
        return _Body(response, request)
    with _httpx_errors(request):
        data = content.read_nowait()  # raises what the parser found wrong with the body
    response.release()  # read to its end: the connection goes back to the pool
    return httpx.ByteStream(data)


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; closing it early drops the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(READ_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; close() drops one whose
        # body was left unread (a capped body), which must not be reused mid-stream
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request, secrets: Sequence[str] = ()) -> Iterator[None]:
    """Re-raise aiohttp's errors as the httpx error that says the same thing."""
    try:
        yield
    except UnicodeError as exc:  # a host name IDNA cannot encode (a label over 63 bytes)
        unresolvable = socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}")
        raise httpx.ConnectError(str(unresolvable), request=request) from unresolvable
    except Exception as exc:  # CancelledError is a BaseException: it passes untouched
        mapped = _mapped(exc)
        if mapped is None:
            raise
        message = _message(exc, tls=request.url.scheme == "https")
        for secret in secrets:
            message = message.replace(secret, "***")
        raise mapped(message, request=request) from exc


def _mapped(exc: Exception) -> type[httpx.TransportError] | None:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError
    if isinstance(exc, aiohttp.ClientConnectorError):  # DNS, refused, TLS handshake
        return httpx.ConnectError
    if isinstance(exc, aiohttp.ServerDisconnectedError):  # a clean close before the head
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.ClientOSError):  # a reset or a broken pipe
        return httpx.ReadError
    if isinstance(exc, aiohttp.ClientPayloadError):  # a body cut short or mis-framed
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.ClientResponseError):  # a head aiohttp cannot parse
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError
    return None


def _message(exc: Exception, tls: bool) -> str:
    """The words an issue shows: the underlying error's, without aiohttp's wrapping."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused: {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        said = str(exc.os_error)
        if said:
            return said
        # a bare reset or EOF while connecting: say where, not aiohttp's "[None]"
        return "connection closed during the TLS handshake" if tls else "connection lost"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected without sending a response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        said = next((m for c in causes(exc) if (m := _http_message(c))), "body cut short")
        # aiohttp names the connection error (a reset) only in its message, as a repr
        lost = _OS_ERROR_REPR.search(str(exc))
        return f"incomplete body: {said.rstrip('.')}" + (f" ({lost[1]})" if lost else "")
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.message or str(exc)
    return str(exc)


def _http_message(exc: BaseException) -> str:
    """The message of aiohttp's parser errors (``Not enough data to satisfy ...``)."""
    return exc.message if isinstance(exc, HttpProcessingError) else ""
