"""Probe results: plain values that every other part of the monitor reads.

A probe never raises; whatever happened on the wire ends up here as an
:class:`Outcome` with a :class:`Reason` and a human-readable ``detail``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Outcome(enum.StrEnum):
    """How one check, or one target as a whole, fared."""

    UP = "up"  # expected status, conditions true, within the latency budget
    DEGRADED = "degraded"  # serving, but slow, near a threshold or a certificate's expiry
    # the check could not tell (a query with no samples and on_empty = "unknown"): it
    # neither fails nor recovers a target, and its time is not counted as known
    UNKNOWN = "unknown"
    DOWN = "down"  # anything else: wrong status, transport error, condition false

    @property
    def is_good(self) -> bool:
        """Degraded is slow but serving: it counts as up for incidents and uptime."""
        return self is Outcome.UP or self is Outcome.DEGRADED

    @property
    def is_known(self) -> bool:
        """False for unknown: such a result vouches for nothing, good or bad."""
        return self is not Outcome.UNKNOWN

    @property
    def severity(self) -> int:
        """Order for picking the worst outcome of several checks."""
        return _SEVERITY[self]


# a target with one check down is down; with one unknown (and none down) it is unknown
_SEVERITY = {Outcome.UP: 0, Outcome.DEGRADED: 1, Outcome.UNKNOWN: 2, Outcome.DOWN: 3}


class Reason(enum.StrEnum):
    """Why a check was not plainly up: a small closed set, detail goes in text."""

    OK = "ok"  # nothing wrong
    SLOW = "slow"  # over the latency budget (only with DEGRADED)
    DNS = "dns"  # the host name did not resolve
    CONNECT = "connect"  # refused, unreachable, reset before a response
    TLS = "tls"  # handshake or certificate failure; degraded: the certificate expires soon
    TIMEOUT = "timeout"  # no complete response within the check's timeout
    STATUS = "status"  # a status code that the check does not expect
    CONDITION = "condition"  # a JMESPath condition was false on the JSON body
    INVALID_JSON = "invalid_json"  # a condition needed JSON and the body was not
    TOO_LARGE = "too_large"  # the body exceeded the read cap
    QUERY = "query"  # Prometheus or Alertmanager refused the question (bad PromQL, 4xx)
    EMPTY = "empty"  # the query returned no sample (down or unknown, as on_empty says)
    THRESHOLD = "threshold"  # a queried value is past its max or min (degraded_* too)
    ALERTS = "alerts"  # matching alerts fire in Alertmanager (not silenced or inhibited)
    ERROR = "error"  # anything else (protocol error, broken response)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one probe of one check."""

    target: str
    check: str
    url: str
    started_at: datetime  # UTC, when the request was sent
    duration_s: float  # until the body was read (or the failure)
    outcome: Outcome
    reason: Reason
    detail: str = ""  # one line for people: "expected [200, 302], got 503"
    status_code: int | None = None
    body_excerpt: str = ""  # the first few hundred characters, for the incident issue
    fields: Mapping[str, Any] = field(default_factory=dict)  # selected JSON health fields
    version: str | None = None  # the deployed version, when the check names its field
    # when the server's TLS certificate expires (https only, None when not known)
    cert_expires_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True for up and degraded."""
        return self.outcome.is_good


@dataclass(frozen=True, slots=True)
class TargetResult:
    """All checks of one target from one probe cycle, judged as a whole."""

    target: str
    at: datetime  # the earliest check start of the cycle
    checks: Sequence[CheckResult]
    # The worst outcome among the checks; UP when there are none. Worked out once:
    # recording a result asks for it about ten times (metrics, quorum, tracker, log).
    outcome: Outcome = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        worst = max((c.outcome for c in self.checks), key=lambda o: o.severity, default=Outcome.UP)
        object.__setattr__(self, "outcome", worst)  # frozen: set once, here

    @property
    def failing(self) -> list[CheckResult]:
        """The checks that are down."""
        return [c for c in self.checks if c.outcome is Outcome.DOWN]

    @property
    def ok(self) -> bool:
        """True when no check is down or unknown."""
        return self.outcome.is_good

    @property
    def down(self) -> bool:
        """True when a check is down (an unknown one does not make a target down)."""
        return self.outcome is Outcome.DOWN
