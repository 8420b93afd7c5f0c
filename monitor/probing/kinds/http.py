"""``type = "http"``: request the target's URL plus the check's path (the default kind)."""

from __future__ import annotations

from dataclasses import replace

from monitor.config import CheckConfig, TargetConfig
from monitor.probing.judge import judge
from monitor.probing.kinds.base import TRANSPORT_REASONS, Answer, Request, bearer
from monitor.probing.results import CheckResult, Reason


class HttpKind:
    """A status, JSON conditions on the body, a latency budget, the certificate."""

    reasons = TRANSPORT_REASONS | {Reason.STATUS, Reason.CONDITION, Reason.INVALID_JSON}

    def request(self, target: TargetConfig, check: CheckConfig, timeout_s: float) -> Request:
        """``check.method`` on ``target.url + check.path``."""
        url = target.url + check.path
        return Request(
            method=check.method,
            url=url,
            headers=bearer(check),
            follow_redirects=check.follow_redirects,
            reads_certificate=url.startswith("https://"),
        )

    def judge(self, check: CheckConfig, answer: Answer) -> CheckResult:
        """See :func:`monitor.probing.judge.judge`."""
        result = judge(
            answer.target,
            check,
            answer.url,
            answer.started_at,
            answer.duration_s,
            answer.status,
            answer.body,
            truncated=answer.truncated,
            cert_expires_at=answer.cert_expires_at,
        )
        if answer.secrets and result.body_excerpt:
            return replace(result, body_excerpt=answer.excerpt())
        return result
