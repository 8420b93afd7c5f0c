"""Probing: one shared ``httpx.AsyncClient``, results as values, never exceptions.

The prober owns the wire for every kind of check (see ``probing.kinds``): the
connection pool (one more per ``ca_file``), the concurrency bound, the
time-out over the whole exchange, the body cap and the server certificate's
expiry. A kind says what to request and judges what came back.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from monitor import __version__
from monitor.clock import Clock, utcnow
from monitor.config import CheckConfig, MonitorSection, TargetConfig
from monitor.probing.errors import ConnectionLost, causes, classify_error
from monitor.probing.judge import check_secrets, mask_headers
from monitor.probing.kinds import Answer, CheckKind, Request, fault_outcome, kind_of
from monitor.probing.results import CheckResult, TargetResult
from monitor.probing.transport import AiohttpTransport

REGION_HEADER = "X-Monitor-Region"
# A pooled connection idle longer than this is not reused (httpcore's default, kept):
# at the 15-minute and 1-minute cadences every probe opens a fresh connection.
KEEPALIVE_S = 5.0
# Built requests kept for reuse, one per check (~1 KB each). A bound, not a working
# size: a process's checks are fixed (a new config is a new process), and a cycle of
# more checks than this would rebuild every request at every cycle.
MAX_CACHED_REQUESTS = 100_000


def user_agent(region: str) -> str:
    """The monitor, its version and the region it probes from, for the app's logs."""
    return f"fly-monitor/{__version__} (region {region}; +https://github.com/)"


USER_AGENT = user_agent("local")  # a lone instance's


class _BodyTooLarge(Exception):
    pass


class _NoCookies(httpx.Cookies):
    """Cookies that stay empty: nothing a target sets is kept."""

    def extract_cookies(self, response: httpx.Response) -> None:
        # httpx would build a urllib request and an email message from every response
        # to offer a cookie jar its Set-Cookie headers: a seventh of a probe's time
        return None


class _StatelessClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose cookies are always :class:`_NoCookies`.

    Probes are stateless, as blackbox_exporter's are: no cookie from one probe is sent
    with the next (a sticky-session cookie would pin the app instance the monitor
    sees), and none is kept across a redirect either.
    """

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("a prober's client keeps no cookies")


class OutgoingRequests:
    """The httpx request of each check, built once and sent on every probe.

    Building one through the client costs about a tenth of a probe (httpx merges the
    URL, headers and time-out in pure Python), and a check asks the same thing every
    time. Sending changes nothing a resend would not do again: a redirect builds a new
    request, the client keeps no cookies to add (``_NoCookies``), and basic auth from a
    URL's ``user:pass@`` sets its header in place, with the same value each time.

    The checks of a target mostly differ in their path alone. The client builds the
    first request of each shape (method, scheme and authority, headers, time-out); the
    others take that one's headers, empty body and time-out, and httpx parses only
    their URL. That halves the building in a cycle that meets every check for the
    first time, as ``monitor check``'s does. (A request built from a template already
    sent with basic auth carries that header from the start: the same value, in the
    same place, since the userinfo is part of the shape.) tests/test_probe.py pins that
    both ways put the same request on the wire.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        on_built: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self._client = client
        self._on_built = on_built  # the transport's own preparation of a new request
        self._built: dict[tuple[object, ...], httpx.Request] = {}
        self._templates: dict[tuple[object, ...], httpx.Request] = {}

    def get(self, request: Request, timeout_s: float) -> httpx.Request:
        """The httpx request for ``request``, built on its first use."""
        headers = tuple(request.headers.items())
        key = (request.method, request.url, tuple(request.params), headers, timeout_s)
        built = self._built.get(key)
        if built is None:
            if len(self._built) >= MAX_CACHED_REQUESTS:  # never with a fixed config
                self._built.clear()
                self._templates.clear()
            built = self._built[key] = self._build(request, headers, timeout_s)
            if self._on_built is not None:
                self._on_built(built)
        return built

    def _build(
        self, request: Request, headers: tuple[tuple[str, str], ...], timeout_s: float
    ) -> httpx.Request:
        # The URL up to its third slash holds all of the scheme and the authority,
        # which decide the Host header (and a default port): one shape, one Host.
        origin = request.url.split("/", 3)[:3]
        shape = (request.method, *origin, headers, timeout_s)
        template = self._templates.get(shape)
        # a relative URL, which the client merges with its base, fails as a probe (the
        # config refuses one): the client builds it, to fail in its words
        if template is None or template.url.is_relative_url:
            template = self._client.build_request(
                request.method,
                request.url,
                params=list(request.params) or None,
                headers=dict(headers),
                timeout=httpx.Timeout(timeout_s),
            )
            self._templates.setdefault(shape, template)
            return template
        # stream=: httpx adds no header of its own (the template has them all, Host
        # and Content-Length included) and reads no body
        return httpx.Request(
            request.method,
            request.url,
            params=list(request.params) or None,
            headers=template.headers,
            stream=template.stream,
            extensions=template.extensions,
        )


@dataclass(frozen=True, slots=True)
class _Pool:
    """One connection pool: the transport, and the httpx client over it."""

    client: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport
    requests: OutgoingRequests

    async def send(self, request: httpx.Request, *, follow_redirects: bool) -> httpx.Response:
        """The answer's head, its body still to read.

        The client adds what some checks need: redirects, and basic auth from a URL's
        ``user:pass@``. A check that needs neither goes straight to the transport, as
        the client would send it (the client built the request, so its headers and
        time-out are in it; it keeps no cookies and has no hooks), which spares a tenth
        of a probe.
        """
        if follow_redirects or request.url.userinfo or self.client.is_closed:
            # (a closed client refuses, as it should: the transport would open anew)
            return await self.client.send(request, stream=True, follow_redirects=follow_redirects)
        response = await self.transport.handle_async_request(request)
        response.request = request  # as the client does: a transport need not
        return response


@dataclass(frozen=True, slots=True)
class _Planned:
    """A check as its probe will send it.

    The requests of a cycle are built before its first probe goes out: in one loop,
    building costs about half what it does when each is built as its probe starts,
    between the answers of the others, since the loop's code and data stay in the CPU's
    caches (``monitor check`` meets every check for the first time; later cycles find
    their requests built). ``outgoing`` is None when httpx refused to build it: the
    probe builds it again, inside its own error handling, and reports the reason.
    """

    check: CheckConfig
    kind: CheckKind  # what requests it and judges the answer
    request: Request
    timeout_s: float
    outgoing: httpx.Request | None


class Prober:
    """Runs checks with one connection pool and a bound on concurrent requests."""

    def __init__(
        self,
        settings: MonitorSection,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = utcnow,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._transport = transport
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._pool = self._new_pool(verify)
        self._ca_pools: dict[Path, _Pool] = {}  # one pool per private CA

    def _new_pool(self, verify: ssl.SSLContext | bool) -> _Pool:
        settings = self._settings
        transport = self._transport or AiohttpTransport(
            # True: the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR when set), as
            # curl and blackbox_exporter trust it; aiohttp loaded it at import already
            verify,
            max_connections=settings.concurrency,
            keepalive_s=KEEPALIVE_S,
        )
        # limits and verify are the transport's: httpx uses neither beside a transport
        client = _StatelessClient(
            transport=transport,
            # the app's logs can tell the regions' probes apart
            headers={"User-Agent": user_agent(settings.region), REGION_HEADER: settings.region},
            max_redirects=10,
        )
        prepare = transport.prepare if isinstance(transport, AiohttpTransport) else None
        return _Pool(client, transport, OutgoingRequests(client, prepare))

    def _pool_for(self, check: CheckConfig) -> _Pool:
        if check.ca_file is None:
            return self._pool
        pool = self._ca_pools.get(check.ca_file)
        if pool is None:  # trusts the bundle alone, like curl --cacert
            context = ssl.create_default_context(cafile=str(check.ca_file))
            pool = self._ca_pools[check.ca_file] = self._new_pool(context)
        return pool

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools."""
        for pool in (self._pool, *self._ca_pools.values()):
            await pool.client.aclose()

    async def probe_targets(self, targets: Sequence[TargetConfig]) -> list[TargetResult]:
        """Every check of every target, concurrently within the configured bound."""
        # every request is built before the first goes out: see _Planned
        plans = [(target, self._plan(target)) for target in targets]
        return list(await asyncio.gather(*(self._probe_target(t, p) for t, p in plans)))

    async def probe_target(self, target: TargetConfig) -> TargetResult:
        """All checks of one target, concurrently."""
        return await self._probe_target(target, self._plan(target))

    async def probe_check(self, target: TargetConfig, check: CheckConfig) -> CheckResult:
        """Probe one check; whatever happens ends in a classified :class:`CheckResult`."""
        return await self._probe_check(target, self._planned(target, check))

    def _plan(self, target: TargetConfig) -> list[_Planned]:
        return [self._planned(target, check) for check in target.checks]

    def _planned(self, target: TargetConfig, check: CheckConfig) -> _Planned:
        timeout_s = check.timeout or self._settings.timeout
        kind = kind_of(check)
        request = kind.request(target, check, timeout_s)
        try:
            outgoing: httpx.Request | None = self._pool_for(check).requests.get(request, timeout_s)
        except Exception:  # a URL or CA file httpx refuses: the probe meets it and says so
            outgoing = None
        return _Planned(check, kind, request, timeout_s, outgoing)

    async def _probe_target(self, target: TargetConfig, planned: list[_Planned]) -> TargetResult:
        results = await asyncio.gather(*(self._probe_check(target, p) for p in planned))
        at = min((r.started_at for r in results), default=self._clock())
        return TargetResult(target=target.name, at=at, checks=tuple(results))

    async def _probe_check(self, target: TargetConfig, planned: _Planned) -> CheckResult:
        check = planned.check
        result = await self._probe(target, planned)
        return mask_headers(result, check) if check.headers or check.token else result

    async def _probe(self, target: TargetConfig, planned: _Planned) -> CheckResult:
        check, request, timeout_s = planned.check, planned.request, planned.timeout_s
        async with self._limit:
            started_at = self._clock()
            start = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status, body, truncated, expires_at = await self._fetch(planned)
            except Exception as exc:  # every fault of the wire becomes a result
                reason, detail = classify_error(exc, timeout_s)
                expired_at = None
                if request.reads_certificate and _certificate_expired(exc):
                    # the URL that failed: after a redirect it is not the one asked for
                    failed_url = _request_url(exc) or request.url
                    expired_at = await _expired_certificate(
                        failed_url, start + timeout_s, started_at
                    )
                    if expired_at is not None:
                        detail = f"certificate expired {expired_at:%Y-%m-%d %H:%M} UTC: {detail}"
                return CheckResult(
                    target=target.name,
                    check=check.name,
                    url=request.shown_url,
                    started_at=started_at,
                    duration_s=time.perf_counter() - start,
                    outcome=fault_outcome(check),
                    reason=reason,
                    detail=detail,
                    cert_expires_at=expired_at,
                )
            answer = Answer(
                target=target.name,
                url=request.shown_url,
                started_at=started_at,
                duration_s=time.perf_counter() - start,
                status=status,
                body=body,
                truncated=truncated,
                cert_expires_at=expires_at,
                secrets=tuple(check_secrets(check)) if check.headers or check.token else (),
            )
            return planned.kind.judge(check, answer)

    async def _fetch(self, planned: _Planned) -> tuple[int, bytes, bool, datetime | None]:
        request = planned.request
        pool = self._pool_for(planned.check)
        outgoing = planned.outgoing
        if outgoing is None:  # httpx refused it ahead: it raises again, within the probe
            outgoing = pool.requests.get(request, planned.timeout_s)
        try:
            response = await pool.send(outgoing, follow_redirects=request.follow_redirects)
        except (httpx.ReadError, httpx.WriteError) as exc:
            # Reset (or broken pipe) before the response head: the peer is not
            # serving, which is a connect failure, unlike a reset mid-body. A clean
            # close (FIN) before the head stays an error (RemoteProtocolError).
            raise ConnectionLost from exc
        expires_at = _certificate_expiry(response) if request.reads_certificate else None
        try:
            body = await _read_capped(response, self._settings.max_body_bytes)
        except _BodyTooLarge:
            return response.status_code, b"", True, expires_at
        finally:
            await response.aclose()
        return response.status_code, body, False, expires_at


def _certificate_expiry(response: httpx.Response) -> datetime | None:
    """When the certificate of the connection that answered expires (None over plain
    HTTP, or when the transport does not say)."""
    ssl_object = response.extensions.get("ssl_object")
    if ssl_object is None and (stream := response.extensions.get("network_stream")):
        ssl_object = stream.get_extra_info("ssl_object")  # httpx's own transport
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    certificate = ssl_object.getpeercert()  # parsed only when verified: the normal case
    not_after = certificate.get("notAfter") if certificate else None
    if not isinstance(not_after, str):
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


def _certificate_expired(exc: BaseException) -> bool:
    """True when verification failed because the certificate's notAfter has passed."""
    for link in causes(exc):
        # aiohttp's own certificate error is an SSLCertVerificationError too, without
        # a verify code: the code is on the ssl module's error it wraps
        code = getattr(link, "verify_code", None)
        if isinstance(link, ssl.SSLCertVerificationError) and code is not None:
            return bool(code == X509_V_ERR_CERT_HAS_EXPIRED)
    return False


X509_V_ERR_CERT_HAS_EXPIRED = 10  # OpenSSL's verify code for "certificate has expired"


def _request_url(exc: BaseException) -> str | None:
    try:
        return str(exc.request.url) if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # httpx raises when an error carries no request
        return None


async def _expired_certificate(url: str, deadline: float, now: datetime) -> datetime | None:
    """The notAfter of a certificate that failed verification as expired, read over a
    second, unverified handshake (within the check's time-out): the metric and the
    issue then say when it expired, not only that it did."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    remaining_s = deadline - time.perf_counter()
    if remaining_s <= 0:
        return None
    try:
        async with asyncio.timeout(remaining_s):
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, host, port, ssl=context, server_hostname=host
            )
            try:
                ssl_object = transport.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            finally:
                transport.abort()  # no close_notify: nothing was said, nothing to finish
    except (OSError, TimeoutError):
        return None
    if not der:
        return None
    from cryptography import x509  # only here: an expired certificate is rare

    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    return not_after if not_after <= now else None  # another certificate answered


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length", "")
    # A HEAD answer declares the length of a body it does not send.
    if response.request.method != "HEAD" and declared.isdigit() and int(declared) > cap:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
