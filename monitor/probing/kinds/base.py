"""The contract of a check kind: what to request, and how to judge what came back.

The prober owns the wire (one connection pool, the concurrency bound, the
time-out, the body cap, TLS); a kind only says which request a check makes and
turns the complete answer into a :class:`CheckResult`. Judging is pure, so each
kind is tested table by table without a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from monitor.config import CheckConfig, TargetConfig
from monitor.probing.judge import EXCERPT_CHARS, masked
from monitor.probing.results import CheckResult, Outcome, Reason

# what the wire can go wrong with, whatever the kind (see probing.errors)
TRANSPORT_REASONS = frozenset(
    {Reason.DNS, Reason.CONNECT, Reason.TLS, Reason.TIMEOUT, Reason.TOO_LARGE, Reason.ERROR}
)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request a check makes."""

    method: str
    url: str  # no query string (no PromQL, no secret); userinfo only where it is sent
    params: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    follow_redirects: bool = False
    reads_certificate: bool = False  # record the server certificate's expiry

    @property
    def shown_url(self) -> str:
        """The URL as results show it: without a ``user:password@`` (httpx sends it as
        basic auth; issues and pages must not carry it)."""
        if "@" not in self.url:  # the common case, without parsing the URL on every probe
            return self.url
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back, complete: the status, the body (up to the cap), the timing."""

    target: str
    url: str
    started_at: datetime
    duration_s: float
    status: int
    body: bytes
    truncated: bool = False  # the body was larger than the read cap and was dropped
    cert_expires_at: datetime | None = None
    # what the check sent that must never be shown (header values, its token); a judge
    # masks body text with :meth:`masked` before cutting it, or a cut token would leak
    secrets: tuple[str, ...] = ()

    def masked(self, text: str) -> str:
        """``text`` with every secret of the check replaced by the mask."""
        return masked(text, self.secrets)

    def excerpt(self) -> str:
        """The body's first characters, masked before they are cut."""
        head = self.body[: EXCERPT_CHARS * 4 + 4096].decode("utf-8", errors="replace")
        return self.masked(head)[:EXCERPT_CHARS]

    def result(
        self, check: CheckConfig, outcome: Outcome, reason: Reason, detail: str, **extra: Any
    ) -> CheckResult:
        """A :class:`CheckResult` of this answer."""
        return CheckResult(
            target=self.target,
            check=check.name,
            url=self.url,
            started_at=self.started_at,
            duration_s=self.duration_s,
            outcome=outcome,
            reason=reason,
            detail=detail,
            status_code=self.status,
            cert_expires_at=self.cert_expires_at,
            **extra,
        )


class CheckKind(Protocol):
    """One ``type`` of check."""

    # the reasons its down results can carry (the metrics declare these series)
    reasons: frozenset[Reason]

    def request(self, target: TargetConfig, check: CheckConfig, timeout_s: float) -> Request:
        """The request that probes ``check``."""
        ...

    def judge(self, check: CheckConfig, answer: Answer) -> CheckResult:
        """Up, degraded, unknown or down, with a reason and a detail (pure)."""
        ...


def fault_outcome(check: CheckConfig) -> Outcome:
    """The outcome of a fault on the way to an answer (the wire, a refusal, a broken
    answer). For ``http`` the target is what failed: down. For a query to Prometheus or
    Alertmanager the monitoring service failed, and the target may be fine: unknown,
    unless the check says ``on_error = "down"``."""
    if check.type == "http" or check.on_error == "down":
        return Outcome.DOWN
    return Outcome.UNKNOWN


def bearer(check: CheckConfig) -> dict[str, str]:
    """The check's headers, with its token as a bearer (never shown: results are masked)."""
    headers = {name: value.get_secret_value() for name, value in check.headers.items()}
    if check.token is not None:
        headers["Authorization"] = f"Bearer {check.token.get_secret_value()}"
    return headers
