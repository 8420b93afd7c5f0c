"""What every HTTP channel shares: one client, and one reading of a service's answer.

A reply becomes a :class:`ChannelError` here, once, with the outbox's categories:
429 and ``Retry-After`` hold the service, 5xx and transport faults are transient,
410 disables the channel, any other 4xx is a permanent refusal (401 and 403 need a
human with the credentials). Error texts carry the status and a bounded piece of
the reply, never a request header (they hold the keys).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx

from monitor import __version__
from monitor.incidents.channels.base import ChannelError
from monitor.logs import REDACTED

USER_AGENT = f"fly-monitor/{__version__}"
REPLY_EXCERPT = 200  # characters of a refusal's body quoted in /healthz and the log


def client(timeout_s: float) -> httpx.Client:
    """A client for one channel's worker thread: no redirects, no retries of its own."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,  # a POST redirected elsewhere may act twice or nowhere
        headers={"User-Agent": USER_AGENT},
    )


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), else None."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def refusal(service: str, response: httpx.Response) -> ChannelError | None:
    """The error a reply means; None for a success (2xx)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    excerpt = _excerpt(response)
    if status == 429:
        wait = retry_after_s(response.headers) or 60.0
        return ChannelError("rate_limited", f"429 from {service}: {excerpt}", retry_after_s=wait)
    if status >= 500:
        return ChannelError(
            "server_error",
            f"{status} from {service}: {excerpt}",
            retry_after_s=retry_after_s(response.headers),
        )
    if status == 410:
        return ChannelError(
            "disabled", f"410 Gone from {service}: the endpoint asks us to stop", disable=True
        )
    if status in (401, 403):
        return ChannelError("auth", f"{status} from {service}: {excerpt}", auth=True)
    if 300 <= status < 400:
        return ChannelError(
            "redirect",
            f"{status} from {service} (redirects are not followed: fix the URL)",
            permanent=True,
        )
    return ChannelError("rejected", f"{status} from {service}: {excerpt}", permanent=True)


def without(response: httpx.Response, secret: str) -> httpx.Response:
    """``response`` with every occurrence of ``secret`` in its body masked, before anything
    quotes it (an excerpt cut mid-secret would otherwise leave part of it)."""
    try:
        body = response.text
    except (UnicodeDecodeError, httpx.HTTPError):
        return response
    if not secret or secret not in body:
        return response
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if name.lower() not in ("content-encoding", "content-length")
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=body.replace(secret, REDACTED).encode()
    )


def transport_error(service: str, exc: httpx.HTTPError, timeout_s: float) -> ChannelError:
    """A request that got no usable answer: transient. One that was sent (not refused at
    connect) may still be acted on: it is in flight for :func:`in_flight_s`."""
    in_flight = 0.0 if isinstance(exc, NOT_SENT) else in_flight_s(timeout_s)
    if isinstance(exc, httpx.TimeoutException):
        return ChannelError(
            "timeout",
            f"{service} did not answer in time ({type(exc).__name__})",
            in_flight_s=in_flight,
        )
    return ChannelError(
        "network", f"request to {service} failed: {type(exc).__name__}", in_flight_s=in_flight
    )


# the request never reached the service: nothing can land later
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
IN_FLIGHT_MIN_S = 5.0
IN_FLIGHT_TIMEOUTS = 3.0


def in_flight_s(timeout_s: float) -> float:
    """How long a request that got no answer may still land: three client time-outs, at
    least five seconds (a service acts within its own time-out of the request, or not)."""
    return max(IN_FLIGHT_MIN_S, IN_FLIGHT_TIMEOUTS * timeout_s)


def post_json(
    http: httpx.Client,
    service: str,
    url: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """POST ``payload`` (or ready ``content``) as JSON; raise :class:`ChannelError` unless 2xx."""
    try:
        if content is not None:
            merged = {"Content-Type": "application/json", **(headers or {})}
            response = http.post(url, content=content, headers=merged)
        else:
            response = http.post(url, json=payload, headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        raise transport_error(service, exc, http.timeout.read or 0.0) from None
    error = refusal(service, response)
    if error is not None:
        raise error
    return response


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.HTTPError):
        return "(unreadable body)"
    line = " ".join(text.split())
    return line[:REPLY_EXCERPT] or "(empty body)"
