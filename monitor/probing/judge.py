"""Judging a complete HTTP answer: status, body cap, JSON conditions, latency budget.

Pure: the prober hands over what arrived and when; this decides up, degraded
or down, with a reason and a detail, and masks the check's header secrets in
whatever the result repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from monitor.config import MASK, CheckConfig
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
                    one_line("condition false: " + "; ".join(failed)),
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


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
