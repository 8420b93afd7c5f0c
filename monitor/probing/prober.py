"""Probing: one shared ``httpx.AsyncClient``, results as values, never exceptions."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from monitor.clock import Clock, utcnow
from monitor.config import MASK, CheckConfig, MonitorSection, TargetConfig
from monitor.probing.conditions import (
    InvalidJSON,
    failed_conditions,
    parse_json,
    search,
    select_fields,
)
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

EXCERPT_CHARS = 300
USER_AGENT = "fly-monitor/0.1 (+https://github.com/)"


class _BodyTooLarge(Exception):
    pass


class _ConnectionLost(Exception):
    """The connection was reset before a response head arrived (raised ``from`` httpx's)."""


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
            headers={"User-Agent": USER_AGENT},
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
            raise _ConnectionLost from exc
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


def judge(
    target: str,
    check: CheckConfig,
    url: str,
    started_at: datetime,
    duration_s: float,
    status: int,
    body: bytes,
    *,
    truncated: bool = False,
) -> CheckResult:
    """Turn a complete HTTP answer into a :class:`CheckResult` (pure)."""

    def result(outcome: Outcome, reason: Reason, detail: str, **extra: Any) -> CheckResult:
        return CheckResult(
            target=target,
            check=check.name,
            url=url,
            started_at=started_at,
            duration_s=duration_s,
            outcome=outcome,
            reason=reason,
            detail=detail,
            status_code=status,
            body_excerpt=excerpt(body),
            **extra,
        )

    # The status first: a 503 with a huge error page is down for its status, not its size.
    if status not in check.expect_status:
        return result(
            Outcome.DOWN, Reason.STATUS, f"expected {_statuses(check.expect_status)}, got {status}"
        )
    if truncated:
        return result(Outcome.DOWN, Reason.TOO_LARGE, "body larger than the read cap")
    needs_json = bool(check.conditions or check.version)
    fields: dict[str, Any] = {}
    version: str | None = None
    if body[:1] in (b"{", b"[") or needs_json:
        try:
            document = parse_json(body)
        except InvalidJSON as exc:
            if check.conditions:
                return result(Outcome.DOWN, Reason.INVALID_JSON, str(exc))
            document = None
        if document is not None:
            fields = select_fields(check.fields, document)
            if check.version:
                found = search(check.version, document)
                if isinstance(found, str | int | float) and not isinstance(found, bool):
                    version = str(found)[:100]
            failed = failed_conditions(check.conditions, document)
            if failed:
                return result(
                    Outcome.DOWN,
                    Reason.CONDITION,
                    _one_line("condition false: " + "; ".join(failed)),
                    fields=fields,
                    version=version,
                )
    budget = check.max_response_time
    if budget is not None and duration_s > budget:
        return result(
            Outcome.DEGRADED,
            Reason.SLOW,
            f"took {duration_s * 1000:.0f} ms, budget {budget * 1000:.0f} ms",
            fields=fields,
            version=version,
        )
    return result(
        Outcome.UP,
        Reason.OK,
        f"{status} in {duration_s * 1000:.0f} ms",
        fields=fields,
        version=version,
    )


def mask_headers(result: CheckResult, check: CheckConfig) -> CheckResult:
    """The result with the check's header values masked: a target may echo our request
    (an error page quoting headers, a parser complaining about a header line), and what
    a result says reaches logs, issues, the status page and CI output."""
    values = [v.get_secret_value() for v in check.headers.values()]
    values = sorted((v for v in values if v), key=len, reverse=True)

    def clean(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
        return text

    fields = {k: clean(v) if isinstance(v, str) else v for k, v in result.fields.items()}
    return replace(
        result,
        detail=clean(result.detail),
        body_excerpt=clean(result.body_excerpt),
        fields=fields,
        version=None if result.version is None else clean(result.version),
    )


def _statuses(codes: Sequence[int]) -> str:
    return codes[0].__str__() if len(codes) == 1 else " or ".join(map(str, codes))


def excerpt(body: bytes) -> str:
    """The first characters of a body as text, invalid UTF-8 replaced."""
    return body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def classify_error(exc: BaseException, timeout_s: float) -> tuple[Reason, str]:
    """Map an exception from the HTTP stack to a reason and a one-line detail."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return Reason.TIMEOUT, f"no complete response within {timeout_s:g}s"
    if isinstance(exc, httpx.TooManyRedirects):
        return Reason.ERROR, "too many redirects"
    causes = list(_causes(exc))
    if any(isinstance(c, socket.gaierror) for c in causes):
        return Reason.DNS, f"name resolution failed: {_short(exc)}"
    if any(isinstance(c, ssl.SSLError | ssl.CertificateError) for c in causes):
        return Reason.TLS, f"TLS failed: {_short(exc)}"
    if isinstance(exc, httpx.ConnectError):
        text = _short(exc)
        if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
            return Reason.DNS, f"name resolution failed: {text}"
        return Reason.CONNECT, f"cannot connect: {_os_error(causes) or text}"
    if isinstance(exc, _ConnectionLost):
        return (
            Reason.CONNECT,
            f"connection lost before a response: {_os_error(causes) or _short(exc)}",
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Reason.ERROR, f"broken response: {_short(exc)}"
    if isinstance(exc, httpx.HTTPError | OSError):
        return Reason.ERROR, f"{type(exc).__name__}: {_short(exc)}"
    return Reason.ERROR, f"unexpected {type(exc).__name__}: {_short(exc)}"


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _os_error(causes: Sequence[BaseException]) -> str:
    """The system's words for the innermost errno, e.g. "Connection refused"; "" if none.

    anyio hides a refusal behind "All connection attempts failed" and httpx's
    ReadError has no message at all; the errno at the bottom says what happened.
    """
    for cause in reversed(causes):
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
            errno = cause.errno
            if errno is not None and errno > 0:  # gaierror's are negative: not errno values
                return os.strerror(errno)
    return ""


def _short(exc: BaseException) -> str:
    # httpx's ReadError and friends can have an empty message: say what lies beneath.
    for link in _causes(exc):
        text = _one_line(str(link))
        if text:
            return text
    return type(exc).__name__


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
