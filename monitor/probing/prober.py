"""Probing: one shared ``httpx.AsyncClient``, results as values, never exceptions."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from types import TracebackType

import httpx

from monitor import __version__
from monitor.clock import Clock, utcnow
from monitor.config import CheckConfig, MonitorSection, TargetConfig
from monitor.probing.errors import ConnectionLost, classify_error
from monitor.probing.judge import judge, mask_headers
from monitor.probing.results import CheckResult, Outcome, TargetResult

REGION_HEADER = "X-Monitor-Region"


def user_agent(region: str) -> str:
    """The monitor, its version and the region it probes from, for the app's logs."""
    return f"fly-monitor/{__version__} (region {region}; +https://github.com/)"


USER_AGENT = user_agent("local")  # a lone instance's


class _BodyTooLarge(Exception):
    pass


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
        self._limit = asyncio.Semaphore(settings.concurrency)
        limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            limits=limits,
            verify=verify,
            # the app's logs can tell the regions' probes apart
            headers={"User-Agent": user_agent(settings.region), REGION_HEADER: settings.region},
            max_redirects=10,
        )

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
        """Close the connection pool."""
        await self._client.aclose()

    async def probe_targets(self, targets: Sequence[TargetConfig]) -> list[TargetResult]:
        """Every check of every target, concurrently within the configured bound."""
        return list(await asyncio.gather(*(self.probe_target(t) for t in targets)))

    async def probe_target(self, target: TargetConfig) -> TargetResult:
        """All checks of one target, concurrently."""
        results = await asyncio.gather(*(self.probe_check(target, c) for c in target.checks))
        at = min((r.started_at for r in results), default=self._clock())
        return TargetResult(target=target.name, at=at, checks=tuple(results))

    async def probe_check(self, target: TargetConfig, check: CheckConfig) -> CheckResult:
        """Probe one check; whatever happens ends in a classified :class:`CheckResult`."""
        result = await self._probe(target, check)
        return mask_headers(result, check) if check.headers else result

    async def _probe(self, target: TargetConfig, check: CheckConfig) -> CheckResult:
        async with self._limit:
            url = target.check_url(check)
            started_at = self._clock()
            start = time.perf_counter()
            timeout_s = check.timeout or self._settings.timeout
            try:
                async with asyncio.timeout(timeout_s):
                    status, body, truncated = await self._fetch(check, url, timeout_s)
            except Exception as exc:  # every fault of the wire becomes a result
                reason, detail = classify_error(exc, timeout_s)
                return CheckResult(
                    target=target.name,
                    check=check.name,
                    url=url,
                    started_at=started_at,
                    duration_s=time.perf_counter() - start,
                    outcome=Outcome.DOWN,
                    reason=reason,
                    detail=detail,
                )
            duration_s = time.perf_counter() - start
            return judge(
                target.name,
                check,
                url,
                started_at,
                duration_s,
                status,
                body,
                truncated=truncated,
            )

    async def _fetch(
        self, check: CheckConfig, url: str, timeout_s: float
    ) -> tuple[int, bytes, bool]:
        headers = {name: value.get_secret_value() for name, value in check.headers.items()}
        request = self._client.build_request(
            check.method, url, headers=headers, timeout=httpx.Timeout(timeout_s)
        )
        try:
            response = await self._client.send(
                request, stream=True, follow_redirects=check.follow_redirects
            )
        except (httpx.ReadError, httpx.WriteError) as exc:
            # Reset (or broken pipe) before the response head: the peer is not
            # serving, which is a connect failure, unlike a reset mid-body. A clean
            # close (FIN) stays an error: httpcore cannot tell it from a partial head.
            raise ConnectionLost from exc
        try:
            body = await _read_capped(response, self._settings.max_body_bytes)
        except _BodyTooLarge:
            return response.status_code, b"", True
        finally:
            await response.aclose()
        return response.status_code, body, False


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
