"""``type = "alertmanager"``: down while alerts matching the check's matchers fire.

It reads ``GET /api/v2/alerts`` with one ``filter`` per matcher (Alertmanager
ANDs them) and asks for active alerts only: silenced, inhibited and not yet
processed alerts are left out by Alertmanager, and again here by each alert's
own status, so a silence set for a deploy clears the check as it clears the
pages. The firing alerts' names and summaries go into the detail. When
Alertmanager cannot answer, the result is unknown (``on_error = "down"``: down).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.config import CheckConfig, TargetConfig
from monitor.probing.conditions import InvalidJSON, parse_json
from monitor.probing.judge import one_line
from monitor.probing.kinds.base import (
    TRANSPORT_REASONS,
    Answer,
    Request,
    bearer,
    fault_outcome,
)
from monitor.probing.results import CheckResult, Outcome, Reason

ALERTS_PATH = "/api/v2/alerts"
SHOWN_ALERTS = 10  # in the fields: the issue lists these, the count says how many more


class AlertmanagerKind:
    """The alerts that match, are active and are neither silenced nor inhibited."""

    reasons = TRANSPORT_REASONS | {
        Reason.STATUS,
        Reason.INVALID_JSON,
        Reason.QUERY,
        Reason.ALERTS,
    }

    def request(self, target: TargetConfig, check: CheckConfig, timeout_s: float) -> Request:
        """``GET <url>/api/v2/alerts?filter=...&silenced=false&inhibited=false``."""
        assert check.url is not None  # the schema requires it
        params = [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
            ("unprocessed", "false"),
            *(("filter", matcher) for matcher in check.matchers),
        ]
        return Request(
            method="GET", url=check.url + ALERTS_PATH, params=params, headers=bearer(check)
        )

    def judge(self, check: CheckConfig, answer: Answer) -> CheckResult:
        """Up with no firing alert; down (``alerts``) naming those that fire."""
        if answer.truncated:
            return answer.result(
                check, fault_outcome(check), Reason.TOO_LARGE, "answer larger than the read cap"
            )
        try:
            document = parse_json(answer.body)
        except InvalidJSON:
            document = None
        if answer.status != 200:
            return _refused(check, answer, document)
        if not isinstance(document, list) or not all(map(_is_alert, document)):
            # a proxy's page or a different API: saying "no alert fires" would be a guess
            return answer.result(
                check,
                fault_outcome(check),
                Reason.INVALID_JSON,
                "not an Alertmanager answer: expected a list of alerts with a status",
                body_excerpt=answer.excerpt(),
            )
        firing = [a for a in document if _fires(a)]
        matchers = ", ".join(check.matchers)
        if not firing:
            return answer.result(
                check, Outcome.UP, Reason.OK, one_line(f"no alert fires for {matchers}")
            )
        described = [_describe(alert, answer.masked) for alert in firing]
        count = f"{len(firing)} alert{'s' if len(firing) > 1 else ''} firing"
        return answer.result(
            check,
            Outcome.DOWN,
            Reason.ALERTS,
            one_line(f"{count}: " + "; ".join(_line(d) for d in described)),
            fields={"alerts": described[:SHOWN_ALERTS], "firing": len(firing)},
        )


def _is_alert(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("status"), dict)


def _fires(alert: dict[str, Any]) -> bool:
    """Active and neither silenced nor inhibited, by the alert's own status."""
    status = alert["status"]
    muted = status.get("silencedBy") or status.get("inhibitedBy") or status.get("mutedBy")
    return status.get("state") == "active" and not muted


def _describe(alert: dict[str, Any], masked: Callable[[str], str]) -> dict[str, str]:
    labels = _table(alert.get("labels"))
    notes = _table(alert.get("annotations"))
    summary = masked(str(notes.get("summary") or notes.get("description") or ""))
    described = {
        "alertname": str(labels.get("alertname", "(no alertname)"))[:100],
        "summary": summary[:200],
        "since": str(alert.get("startsAt", ""))[:40],
    }
    if "severity" in labels:
        described["severity"] = str(labels["severity"])[:40]
    return described


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _line(described: dict[str, str]) -> str:
    summary = described["summary"]
    return f"{described['alertname']} ({summary})" if summary else described["alertname"]


def _refused(check: CheckConfig, answer: Answer, document: Any) -> CheckResult:
    # Alertmanager's errors are a JSON string ("bad matcher format: ...") or an object
    if isinstance(document, str):
        said = answer.masked(document)
    elif isinstance(document, dict) and "message" in document:
        said = answer.masked(str(document["message"]))
    else:
        said = answer.excerpt()[:200] or "no body"
    if 400 <= answer.status < 500:  # a matcher it cannot parse (400), a token refused (401)
        reason, detail = Reason.QUERY, f"Alertmanager refused the request ({answer.status}): {said}"
    else:
        reason, detail = Reason.STATUS, f"Alertmanager answered {answer.status}: {said}"
    return answer.result(
        check, fault_outcome(check), reason, one_line(detail), body_excerpt=answer.excerpt()
    )
