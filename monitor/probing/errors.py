"""Transport faults as reasons: what went wrong on the wire, in a closed set of words.

httpx, anyio and the OS each wrap the real cause differently; this walks the
exception chain once and names it (``dns``, ``connect``, ``tls``, ``timeout``,
``error``) with a one-line detail a person reads in an issue or a log.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence

import httpx

from monitor.probing.judge import one_line
from monitor.probing.results import Reason


class ConnectionLost(Exception):
    """The connection was reset before a response head arrived (raised ``from`` httpx's)."""


def classify_error(exc: BaseException, timeout_s: float) -> tuple[Reason, str]:
    """Map an exception from the HTTP stack to a reason and a one-line detail."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return Reason.TIMEOUT, f"no complete response within {timeout_s:g}s"
    if isinstance(exc, httpx.TooManyRedirects):
        return Reason.ERROR, "too many redirects"
    chain = causes(exc)
    if any(isinstance(c, socket.gaierror) for c in chain):
        return Reason.DNS, f"name resolution failed: {_short(exc)}"
    if any(isinstance(c, ssl.SSLError | ssl.CertificateError) for c in chain):
        return Reason.TLS, f"TLS failed: {_short(exc)}"
    if isinstance(exc, httpx.ConnectError):
        text = _short(exc)
        if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
            return Reason.DNS, f"name resolution failed: {text}"
        return Reason.CONNECT, f"cannot connect: {_os_error(chain) or text}"
    if isinstance(exc, ConnectionLost):
        return (
            Reason.CONNECT,
            f"connection lost before a response: {_os_error(chain) or _short(exc)}",
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Reason.ERROR, f"broken response: {_short(exc)}"
    if isinstance(exc, httpx.HTTPError | OSError):
        return Reason.ERROR, f"{type(exc).__name__}: {_short(exc)}"
    return Reason.ERROR, f"unexpected {type(exc).__name__}: {_short(exc)}"


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what lies beneath it (``__cause__``, else ``__context__``), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _os_error(chain: Sequence[BaseException]) -> str:
    """The system's words for the innermost errno, e.g. "Connection refused"; "" if none.

    anyio hides a refusal behind "All connection attempts failed" and httpx's
    ReadError has no message at all; the errno at the bottom says what happened.
    """
    for cause in reversed(chain):
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
            errno = cause.errno
            if errno is not None and errno > 0:  # gaierror's are negative: not errno values
                return os.strerror(errno)
    return ""


def _short(exc: BaseException) -> str:
    # httpx's ReadError and friends can have an empty message: say what lies beneath.
    for link in causes(exc):
        text = one_line(str(link))
        if text:
            return text
    return type(exc).__name__
