"""What an incident says in words: issue titles, bodies and comments (GitHub markdown).

Everything that comes from a probed response is untrusted: it is truncated,
fenced so it cannot close its fence, and defused (no @mentions, no issue
cross-references, no HTML) before it reaches an issue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from monitor.config import format_duration
from monitor.figures.slo import Deployment
from monitor.incidents.events import EventKind, IncidentEvent, TimelineRow
from monitor.incidents.quorum import RegionView
from monitor.incidents.tracker import Incident
from monitor.logs import secrets
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

MARKER_RE = re.compile(
    r"<!-- monitor:incident target=(?P<target>[A-Za-z0-9_.-]+) id=(?P<id>[A-Za-z0-9_.:-]+) -->"
)
EXCERPT_LIMIT = 600
BODY_LIMIT = 60_000  # GitHub refuses bodies over 65,536 characters (422): keep clear of it
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
ZWSP = "\u200b"  # breaks @mentions and #123 references without changing how text reads


def marker(target: str, incident_id: str) -> str:
    """The hidden line that identifies our issue for an incident."""
    return f"<!-- monitor:incident target={target} id={incident_id} -->"


def action_marker(key: str) -> str:
    """A hidden line identifying one comment, so a retry can tell it was already posted."""
    return f"<!-- monitor:action key={key} -->"


def parse_marker(body: str | None) -> tuple[str, str] | None:
    """(target, incident id) from an issue body carrying our marker."""
    match = MARKER_RE.search(body or "")
    return (match["target"], match["id"]) if match else None


_INLINE_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "@": "@" + ZWSP,
    "#": "#" + ZWSP,
    "|": "\\|",
    "`": "'",
}
_GH_REF = re.compile(r"\b(GH-)(?=\d)")


def defuse(text: str, limit: int = 300) -> str:
    """Inline text from outside: one line, no mentions, refs, HTML or table breaks.

    The result is at most ``limit`` characters, escapes included: escaping can grow
    text five-fold, and GitHub refuses a title over 256 characters outright.
    """
    # Bodies of probed responses can be megabytes: what lies beyond 16 x limit could
    # only show after a run of that much whitespace, so it is not even looked at.
    text = _CONTROL.sub("", " ".join(str(text)[: limit * 16 + 64].split()))
    # a target may echo our request headers back: secrets go before any escaping can
    # split them (escapes insert zero-width spaces)
    text = secrets.redact(text)
    # every character yields at least one: what lies beyond ``limit`` cannot show
    text = _GH_REF.sub("GH-" + ZWSP, text[: limit + 1])
    pieces = [_INLINE_ESCAPES.get(char, char) for char in text]
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    size = 0
    for piece in pieces:  # whole escapes only: half of "&amp;" would be a new entity
        if size + len(piece) > limit - 1:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "…"


def fenced(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """A code block that ``text`` cannot escape: the fence is longer than any backtick run."""
    text = secrets.redact(_CONTROL.sub("", text.replace("\r\n", "\n")))
    if len(text) > limit:
        text = text[:limit] + "\n… (truncated)"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def utc(moment: datetime) -> str:
    """``2026-11-29 21:53:57 UTC``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_failure(check: CheckResult) -> str:
    """A short phrase for a title: ``/health returned 503``, ``error-rate 7.2 %, above
    max 5 %`` (a query's check is named, its value said; its URL is Prometheus's)."""
    if check.reason in _MEASURED:
        return f"{check.check} {check.detail.split('; query:', 1)[0]}"
    path = "/" + check.url.split("/", 3)[3] if check.url.count("/") >= 3 else check.url
    phrases = {
        Reason.STATUS: f"returned {check.status_code}",
        Reason.TIMEOUT: "timed out",
        Reason.CONNECT: "refused the connection",
        Reason.DNS: "does not resolve",
        Reason.TLS: "has a TLS error",
        Reason.CONDITION: "reports unhealthy",
        Reason.INVALID_JSON: "returned invalid JSON",
        Reason.TOO_LARGE: "returned an oversized body",
        Reason.SLOW: "is slow",
    }
    return f"{path} {phrases.get(check.reason, 'failed')}"


# reasons whose detail already reads as the finding: the value and its bound, the alerts
_MEASURED = frozenset({Reason.THRESHOLD, Reason.EMPTY, Reason.ALERTS, Reason.QUERY})


def title(result: TargetResult) -> str:
    """An issue title an on-call engineer understands at a glance."""
    failing = result.failing
    if not failing:
        return f"{result.target} is degraded"
    if len(failing) == 1:
        return defuse(f"{result.target} is down: {describe_failure(failing[0])}", 120)
    return defuse(f"{result.target} is down: {len(failing)} checks failing", 120)


def _health_fields(result: TargetResult) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for check in result.checks:
        for name, value in check.fields.items():
            if name in fields and fields[name] != value:
                # two checks disagree (two queries' values): name the second's by its check
                name = f"{check.check}.{name}"
            fields.setdefault(name, value)
    return fields


def body(
    incident: Incident,
    result: TargetResult,
    now: datetime,
    *,
    timeline: Sequence[TimelineRow] = (),
    deployment: Deployment | None = None,
    runbook_url: str | None = None,
    status_url: str | None = None,
    regions: Sequence[RegionView] = (),
) -> str:
    """The issue body: current status first, then evidence, timeline and runbook."""
    target = incident.target
    lines = [marker(target, incident.id)]
    lines += _status_section(incident, result, now)
    if regions:
        lines += ["", "### Regions", "", regions_line(regions), ""]
        lines += ["| Region | Sees | Since (UTC) | Last probe | Detail |", "|---|---|---|---|---|"]
        for view in regions:
            failing = ", ".join(describe_failure(c) for c in view.result.failing)
            lines.append(
                f"| {defuse(view.region, 32)} | {view.outcome.value}"
                f"{'' if view.fresh else ' (stale: no vote)'} | {utc(view.since)}"
                f" | {utc(view.at)} | {defuse(failing, 160) or '-'} |"
            )
    lines += ["", "### What is failing", ""]
    lines += _checks_table(result)
    for check in result.checks:
        if check.outcome is not Outcome.UP and check.body_excerpt:
            lines += [
                "",
                f"<details><summary>Response excerpt: {defuse(check.check, 64)}</summary>",
                "",
                fenced(check.body_excerpt),
                "",
                "</details>",
            ]
    fields = _health_fields(result)
    if fields:
        lines += ["", "### Health payload", "", "| Field | Value |", "|---|---|"]
        for name, value in fields.items():
            lines.append(f"| {defuse(name, 64)} | {defuse(json.dumps(value, default=str), 200)} |")
    if deployment is not None:
        lines += ["", "### Recent deployment", "", deployment_note(deployment, incident.started_at)]
    if timeline:
        lines += [
            "",
            "### Timeline (UTC)",
            "",
            "| Time |" + (" Region |" if regions else "")
            + " Check | Outcome | Status | Latency | Detail |",
            "|---|" + ("---|" if regions else "") + "---|---|---|---|---|",
        ]  # fmt: skip
        for row in timeline:
            where = f" {defuse(row.region, 32)} |" if regions else ""
            lines.append(
                f"| {row.at:%H:%M:%S} |{where} {defuse(row.check, 64)} | {row.outcome}"
                f" | {row.status or '-'} | {row.duration_s * 1000:.0f} ms"
                f" | {defuse(row.detail, 120)} |"
            )
    lines += ["", "### Runbook", ""]
    if runbook_url:
        lines.append(f"Follow the runbook: {runbook_url}")
    else:
        lines.append("No runbook is configured (`github.runbook_url`).")
    if status_url:
        lines.append(f"Live status: {status_url}")
    lines += [
        "",
        f"<sub>Maintained by fly-monitor; last updated {utc(now)}. Incident `{incident.id}`.</sub>",
    ]
    text = "\n".join(lines) + "\n"
    if len(text) > BODY_LIMIT:  # many checks and fields: a refused body would block the queue
        text = text[:BODY_LIMIT] + "\n\n… (truncated to fit GitHub's limit)\n"
    return text


def _status_section(incident: Incident, result: TargetResult, now: datetime) -> list[str]:
    elapsed = format_duration(max(incident.elapsed_s(now), 1))
    probes = f"{incident.probes_failed} of {incident.probes_total} probes failed"
    if incident.resolved_at is not None:
        duration = format_duration(max(incident.duration_s or 0, 1))
        return [
            f"## ✅ RESOLVED: {incident.target} was down for {duration}",
            "",
            f"**First failure:** {utc(incident.started_at)}  ",
            f"**Recovered:** {utc(incident.resolved_at)} ({probes})",
        ]
    state = "DEGRADED" if result.ok else "DOWN"
    icon = "🟡" if result.ok else "🔴"
    return [
        f"## {icon} {state}: {incident.target}, for {elapsed} so far",
        "",
        f"**First failure:** {utc(incident.started_at)}  ",
        f"**Last probe:** {utc(result.at)}: {result.outcome.value} ({probes})",
    ]


def _checks_table(result: TargetResult) -> list[str]:
    rows = ["| Check | URL | Outcome | Status | Reason | Latency |", "|---|---|---|---|---|---|"]
    for check in result.checks:
        rows.append(
            f"| {defuse(check.check, 64)} | {defuse(check.url, 200)} | {check.outcome.value}"
            f" | {check.status_code or '-'} | {check.reason.value}: {defuse(check.detail, 200)}"
            f" | {check.duration_s * 1000:.0f} ms |"
        )
    return rows


def deployment_note(deployment: Deployment, first_failure: datetime) -> str:
    """``version 1.4.2 -> 1.4.3 was first seen 6 minutes before the first failure``."""
    before = format_duration(max((first_failure - deployment.seen_at).total_seconds(), 1))
    source = defuse(deployment.from_version or "(unknown)", 60)
    return (
        f"version {source} -> {defuse(deployment.to_version, 60)} was first seen"
        f" {before} before the first failure ({utc(deployment.seen_at)})."
    )


def regions_line(regions: Sequence[RegionView]) -> str:
    """Who sees the failure: "2 of 3 regions see it down: ams (since 12:00:01 UTC), ord (...)"."""
    fresh = [v for v in regions if v.fresh]
    down = [v for v in fresh if v.down]
    seen = ", ".join(f"{defuse(v.region, 32)} (since {utc(v.since)})" for v in down) or "none"
    stale = [defuse(v.region, 32) for v in regions if not v.fresh]
    text = f"{len(down)} of {len(fresh)} fresh regions see it down: {seen}."
    if stale:
        text += f" No recent result from {', '.join(stale)}: not counted."
    return text


def changed_comment(incident: Incident, result: TargetResult, detail: str, key: str) -> str:
    """A comment when the failure changes character."""
    what = "; ".join(
        f"{c.check}: {c.outcome.value} ({c.reason.value}, {c.detail})" for c in result.checks
    )
    return "\n".join(
        [
            action_marker(key),
            f"**The failure changed** at {utc(result.at)}: {defuse(detail, 300)}",
            "",
            defuse(what, 600),
        ]
    )


def reminder_comment(incident: Incident, result: TargetResult, now: datetime, key: str) -> str:
    """A reminder with elapsed time and probe counts."""
    return "\n".join(
        [
            action_marker(key),
            f"**Still open** after {format_duration(max(incident.elapsed_s(now), 1))},"
            f" last probe {_phase_word(result)}"
            f" (since {utc(incident.started_at)}): {incident.probes_failed} of"
            f" {incident.probes_total} probes failed.",
        ]
    )


def _phase_word(result: TargetResult) -> str:
    if not result.ok:
        return "down"
    return "degraded, recovering" if result.outcome is Outcome.DEGRADED else "up, recovering"


def resolved_comment(incident: Incident, key: str) -> str:
    """The closing comment: measured duration, first failure and recovery times."""
    assert incident.resolved_at is not None
    return "\n".join(
        [
            action_marker(key),
            f"**Resolved.** {incident.target} was down for"
            f" **{format_duration(max(incident.duration_s or 0, 1))}**"
            f" ({incident.duration_s:.0f} s).",
            "",
            f"- First failure: {utc(incident.started_at)}",
            f"- Recovered: {utc(incident.resolved_at)} (first good probe of the closing streak)",
            f"- Probes: {incident.probes_failed} of {incident.probes_total} failed",
        ]
    )


def reopened_comment(incident: Incident, result: TargetResult, key: str) -> str:
    """The comment when a flap reopens the issue within reopen_window."""
    failing = ", ".join(describe_failure(c) for c in result.failing) or result.outcome.value
    return "\n".join(
        [
            action_marker(key),
            f"**Failing again** at {utc(result.at)}: {defuse(failing, 300)}. Reopened"
            f" ({_times(incident.reopened)} reopened); the incident still counts from"
            f" {utc(incident.started_at)}.",
        ]
    )


def event_comment(event: IncidentEvent) -> str:
    """What an event says as a comment (the title, for an opening, which has none); with
    several regions, who sees what."""
    text = _comment(event)
    if event.regions and event.kind is not EventKind.OPENED:
        text += "\n\n" + regions_line(event.regions)
    return text


def _comment(event: IncidentEvent) -> str:
    incident, result, key = event.incident, event.result, event.key
    if event.kind is EventKind.UPDATED:
        return changed_comment(incident, result, event.detail, key)
    if event.kind is EventKind.REMINDER:
        return reminder_comment(incident, result, event.decided_at, key)
    if event.kind is EventKind.RESOLVED:
        return resolved_comment(incident, key)
    if event.kind is EventKind.REOPENED:
        return reopened_comment(incident, result, key)
    if event.kind is EventKind.MAINTENANCE:
        return "\n".join([action_marker(key), f"**Maintenance window** {event.detail}"])
    if event.kind is EventKind.ACKNOWLEDGED:
        who = f" by {defuse(event.actor, 60)}" if event.actor else ""
        return "\n".join([action_marker(key), f"**Acknowledged**{who}: {event.detail}"])
    return title(result)


def _times(count: int) -> str:
    # never "#1": GitHub would render it as a link to issue 1
    return "once" if count == 1 else f"{count} times"


def labels_for(target: str, configured: Sequence[str]) -> list[str]:
    """The configured labels plus ``target:<name>``, which look-ups filter on."""
    return [*dict.fromkeys([*configured, target_label(target)])]


def target_label(target: str) -> str:
    """The label that marks a target's incident issues."""
    return f"target:{target}"


def payload_text(payload: Mapping[str, Any], key: str) -> str:
    """A text field of an outbox payload, or an empty string."""
    value = payload.get(key)
    return value if isinstance(value, str) else ""
