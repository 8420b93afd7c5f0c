"""Encodings shared by the backends: Unix seconds for times, JSON for tracker state and
region views."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from monitor.figures.slo import Deployment
from monitor.incidents.tracker import Incident, Phase, TrackerState
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult


def ts(moment: datetime) -> float:
    """Unix seconds of an aware datetime."""
    return moment.timestamp()


def dt(seconds: float) -> datetime:
    """An aware UTC datetime from Unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def opt_dt(seconds: float | None) -> datetime | None:
    """An aware UTC datetime, or None for None."""
    return None if seconds is None else dt(seconds)


def deployment_json(deployment: Deployment) -> str:
    """A deployment as the JSON stored beside the incident it preceded."""
    return json.dumps(
        {
            "from_version": deployment.from_version,
            "to_version": deployment.to_version,
            "seen_at": deployment.seen_at.isoformat(),
        }
    )


def state_to_json(state: TrackerState) -> str:
    """The tracker state as JSON (datetimes as ISO strings)."""
    # the JSON of dataclasses.asdict(state), without its deep copy of every field:
    # written once per target result, where asdict was a tenth of recording it
    return json.dumps(_fields(state), default=_encode_state)


def _fields(value: TrackerState | Incident) -> dict[str, Any]:
    return {field.name: getattr(value, field.name) for field in fields(value)}


def _encode_state(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Incident):
        return _fields(value)
    raise TypeError(type(value))


def state_from_json(text: str) -> TrackerState:
    """Inverse of :func:`state_to_json`."""
    raw = json.loads(text)

    def when(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    incident = None
    if raw.get("incident"):
        i = raw["incident"]
        incident = Incident(
            id=i["id"],
            target=i["target"],
            started_at=datetime.fromisoformat(i["started_at"]),
            resolved_at=when(i.get("resolved_at")),
            probes_total=i.get("probes_total", 0),
            probes_failed=i.get("probes_failed", 0),
            signature=tuple(i.get("signature", ())),
            last_notice_at=when(i.get("last_notice_at")),
            reopened=i.get("reopened", 0),
            acknowledged_at=when(i.get("acknowledged_at")),
            closed_at=when(i.get("closed_at")),
        )
    return TrackerState(
        target=raw["target"],
        phase=Phase(raw["phase"]),
        fail_streak=raw.get("fail_streak", 0),
        good_streak=raw.get("good_streak", 0),
        streak_started_at=when(raw.get("streak_started_at")),
        incident=incident,
    )


def result_to_json(result: TargetResult) -> str:
    """A target result as a region view keeps it: what issue text and the page show.

    Body excerpts and JSON fields stay out: the view is rewritten every cycle.
    """
    return json.dumps(
        {
            "target": result.target,
            "at": ts(result.at),
            "checks": [
                {
                    "check": c.check,
                    "url": c.url,
                    "started_at": ts(c.started_at),
                    "duration_s": c.duration_s,
                    "outcome": c.outcome.value,
                    "reason": c.reason.value,
                    "detail": c.detail[:500],
                    "status": c.status_code,
                    "version": c.version,
                    "cert_expires_at": None if c.cert_expires_at is None else ts(c.cert_expires_at),
                }
                for c in result.checks
            ],
        }
    )


def result_from_json(text: str) -> TargetResult:
    """Inverse of :func:`result_to_json`."""
    raw = json.loads(text)
    return TargetResult(
        target=raw["target"],
        at=dt(raw["at"]),
        checks=tuple(
            CheckResult(
                target=raw["target"],
                check=c["check"],
                url=c["url"],
                started_at=dt(c["started_at"]),
                duration_s=c["duration_s"],
                outcome=Outcome(c["outcome"]),
                reason=Reason(c["reason"]),
                detail=c["detail"],
                status_code=c["status"],
                version=c["version"],
                cert_expires_at=opt_dt(c.get("cert_expires_at")),  # absent in older rows
            )
            for c in raw["checks"]
        ),
    )
