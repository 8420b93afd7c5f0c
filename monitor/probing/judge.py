"""Judging a complete HTTP answer: status, body cap, JSON conditions, the certificate's
expiry, latency budget.

Pure: the prober hands over what arrived and when; this decides up, degraded
or down, with a reason and a detail, and masks the check's header secrets in
whatever the result repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from monitor.config import MASK, CheckConfig, format_duration
from monitor.probing.conditions import (
    InvalidJSON,
    failed_conditions,
    parse_json,
    search,
    select_fields,
)
from monitor.probing.results import CheckResult, Outcome, Reason

EXCERPT_CHARS = 300


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
    cert_expires_at: datetime | None = None,
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
            cert_expires_at=cert_expires_at,
            **extra,
        )

    expiry = certificate_verdict(check, started_at, cert_expires_at)
    if expiry is not None and expiry[0] is Outcome.DOWN:
        return result(*expiry)
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
                    one_line("condition false: " + "; ".join(failed)),
                    fields=fields,
                    version=version,
                )
    budget = check.max_response_time
    if budget is not None and duration_s > budget:  # first: the latency alert watches it
        return result(
            Outcome.DEGRADED,
            Reason.SLOW,
            f"took {duration_s * 1000:.0f} ms, budget {budget * 1000:.0f} ms",
            fields=fields,
            version=version,
        )
    if expiry is not None:  # degraded: serving, with a date to act by (its own metric)
        return result(*expiry, fields=fields, version=version)
    return result(
        Outcome.UP,
        Reason.OK,
        f"{status} in {duration_s * 1000:.0f} ms",
        fields=fields,
        version=version,
    )


def certificate_verdict(
    check: CheckConfig, now: datetime, expires_at: datetime | None
) -> tuple[Outcome, Reason, str] | None:
    """Down once the certificate has expired, degraded within ``cert_warn`` of it."""
    if expires_at is None:
        return None
    left_s = (expires_at - now).total_seconds()
    if left_s <= 0:
        return Outcome.DOWN, Reason.TLS, f"certificate expired {expires_at:%Y-%m-%d %H:%M} UTC"
    if left_s < check.cert_warn:
        return (
            Outcome.DEGRADED,
            Reason.TLS,
            f"certificate expires {expires_at:%Y-%m-%d %H:%M} UTC, in {_left(left_s)}"
            f" (cert_warn {format_duration(check.cert_warn)})",
        )
    return None


def _left(seconds: float) -> str:
    # whole days read better than 1d23h59m58s; the last day to the minute
    unit = 86400 if seconds >= 86400 else 60
    return format_duration(max(round(seconds / unit), 1) * unit)


def masked(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each of ``secrets`` replaced by the mask (the longest first, so a
    secret containing another is masked whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def check_secrets(check: CheckConfig) -> list[str]:
    """What a check sends that must never be shown: header values and its token."""
    values = [v.get_secret_value() for v in check.headers.values()]
    if check.token is not None:
        values.append(check.token.get_secret_value())
    return values


def mask_headers(result: CheckResult, check: CheckConfig) -> CheckResult:
    """The result with the check's header values and token masked: a target may echo
    our request (an error page quoting headers, a parser complaining about a header
    line), and what a result says reaches logs, issues, the status page and CI output."""
    values = check_secrets(check)

    def clean(text: str) -> str:
        return masked(text, values)

    def clean_value(value: Any) -> Any:
        # fields nest: an alert list holds tables of summaries a service wrote
        if isinstance(value, str):
            return clean(value)
        if isinstance(value, list):
            return [clean_value(item) for item in value]
        if isinstance(value, dict):
            return {clean_value(k): clean_value(v) for k, v in value.items()}
        return value

    return replace(
        result,
        detail=clean(result.detail),
        body_excerpt=clean(result.body_excerpt),
        fields=clean_value(dict(result.fields)),
        version=None if result.version is None else clean(result.version),
    )


def _statuses(codes: Sequence[int]) -> str:
    return codes[0].__str__() if len(codes) == 1 else " or ".join(map(str, codes))


def excerpt(body: bytes, chars: int = EXCERPT_CHARS) -> str:
    """The first ``chars`` characters of a body as text, invalid UTF-8 replaced."""
    return body[: chars * 4].decode("utf-8", errors="replace")[:chars]


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
