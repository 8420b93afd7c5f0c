"""Incident words: titles, bodies and comments, and the defusing of untrusted text."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest

from monitor.figures.slo import Deployment
from monitor.incidents import text
from monitor.incidents.tracker import Incident
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult
from tests.builders import T0, at, check, down, up

ZW = text.ZWSP
MB = 1_000_000
GITHUB_TITLE_LIMIT = 256
GITHUB_BODY_LIMIT = 65_536


def _incident(**changes: object) -> Incident:
    incident = Incident(
        id="production-20261101T120000Z",
        target="production",
        started_at=T0,
        probes_total=7,
        probes_failed=5,
    )
    return replace(incident, **changes)  # type: ignore[arg-type]


def _failing(reason: Reason, name: str = "health") -> CheckResult:
    status = 503 if reason is Reason.STATUS else None
    return check(Outcome.DOWN, reason, name=name, status=status, when=at(1))


# ---- titles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "phrase"),
    [
        (Reason.STATUS, "/health returned 503"),
        (Reason.TIMEOUT, "/health timed out"),
        (Reason.CONNECT, "/health refused the connection"),
        (Reason.DNS, "/health does not resolve"),
        (Reason.TLS, "/health has a TLS error"),
        (Reason.CONDITION, "/health reports unhealthy"),
        (Reason.INVALID_JSON, "/health returned invalid JSON"),
        (Reason.TOO_LARGE, "/health returned an oversized body"),
        (Reason.ERROR, "/health failed"),
    ],
    ids=lambda value: str(value),
)
def test_title_names_the_failure(reason: Reason, phrase: str) -> None:
    """One failing check: the title says which path and how, in words."""
    result = TargetResult("production", at(1), (_failing(reason),))

    assert text.title(result) == f"production is down: {phrase}"


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        pytest.param(
            (_failing(Reason.STATUS), _failing(Reason.TIMEOUT, "api")),
            "production is down: 2 checks failing",
            id="several-failing",
        ),
        pytest.param(
            (check(Outcome.DEGRADED, when=at(1)), check(Outcome.UP, name="api", when=at(1))),
            "production is degraded",
            id="degraded",
        ),
    ],
)
def test_title_for_several_or_degraded(checks: tuple[CheckResult, ...], expected: str) -> None:
    """Several failing checks are counted; a degraded target says so."""
    assert text.title(TargetResult("production", at(1), checks)) == expected


def test_title_is_bounded_whatever_the_url() -> None:
    """Escaping cannot push a title past GitHub's 256 characters (a 422 would block the queue)."""
    long = replace(_failing(Reason.STATUS), url="https://production.example/" + "&<@" * 500)

    title = text.title(TargetResult("production", at(1), (long,)))

    assert len(title) <= 120 < GITHUB_TITLE_LIMIT
    assert title.endswith("…")
    assert "&am…" not in title
    assert not re.search(r"&[a-z]*…$", title)


# ---- defuse -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "defused"),
    [
        pytest.param("ping @octocat", f"ping @{ZW}octocat", id="mention"),
        pytest.param("cc @acme/oncall", f"cc @{ZW}acme/oncall", id="team-mention"),
        pytest.param("see #123", f"see #{ZW}123", id="issue-ref"),
        pytest.param("acme/web#7", f"acme/web#{ZW}7", id="cross-repo-ref"),
        pytest.param("GH-42", f"GH-{ZW}42", id="gh-ref"),
        pytest.param(
            "<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;", id="html"
        ),
        pytest.param("<img src=x onerror=y>", "&lt;img src=x onerror=y&gt;", id="img"),
        pytest.param("a & b", "a &amp; b", id="ampersand"),
        pytest.param("a | b", "a \\| b", id="table-pipe"),
        pytest.param("```js", "'''js", id="backticks"),
        pytest.param("ok\n2026 level=error forged", "ok 2026 level=error forged", id="newline"),
        pytest.param("a\r\nb\tc", "a b c", id="crlf-tab"),
        pytest.param("red\x1b[31m bell\x07 nul\x00", "red[31m bell nul", id="control-chars"),
        pytest.param("abc\u202edcba", "abcdcba", id="bidi-override"),
    ],
)
def test_defuse(raw: str, defused: str) -> None:
    """Untrusted inline text: no pings, refs, HTML, table breaks, forged lines or controls."""
    assert text.defuse(raw) == defused


def test_defused_mention_still_reads_as_written() -> None:
    """``@org/team`` shows unchanged (a zero-width space) but no longer pings."""
    shown = text.defuse("@acme/oncall")

    assert shown != "@acme/oncall"
    assert shown.replace(ZW, "") == "@acme/oncall"
    assert not re.search(r"(^|\s)@[A-Za-z0-9]", shown)


@pytest.mark.parametrize("limit", [1, 2, 10, 64, 120, 300])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("x" * MB, id="plain"),
        pytest.param("&" * MB, id="ampersands"),
        pytest.param("@#|<>`" * (MB // 6), id="all-escapes"),
        pytest.param(" \n" * MB + "tail", id="whitespace"),
    ],
)
def test_defuse_never_exceeds_its_limit(raw: str, limit: int) -> None:
    """Escapes included, the result fits ``limit`` and never ends in half an escape."""
    defused = text.defuse(raw, limit)

    assert len(defused) <= limit
    assert not re.search(r"&[a-z]*$", defused.removesuffix("…"))


# ---- fenced -------------------------------------------------------------------------


def _fence_holds(block: str) -> str:
    """The content of a fenced block, asserting no inner line can close the fence."""
    lines = block.split("\n")
    opening = re.fullmatch(r"(`{3,})text", lines[0])
    assert opening is not None
    fence = opening[1]
    assert lines[-1] == fence
    for line in lines[1:-1]:  # a closer: up to 3 spaces, then at least as many backticks
        assert not re.match(rf" {{0,3}}`{{{len(fence)},}}\s*$", line)
    return "\n".join(lines[1:-1])


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("before\n```\n<b>out</b> @octocat\n```\nafter", id="three"),
        pytest.param("```````\nescape?\n```````", id="seven"),
        pytest.param("   ````\nindented closer", id="indented"),
        pytest.param("`" * 2000, id="long-run"),
        pytest.param("a\r\n```\r\nb\x1b[2J", id="crlf-and-control"),
    ],
)
def test_fenced_cannot_be_escaped(hostile: str) -> None:
    """Whatever backtick runs the body holds, the fence is longer and closes only at the end."""
    block = text.fenced(hostile)

    inner = _fence_holds(block)
    assert "\r" not in inner
    assert "\x1b" not in inner


def test_fenced_truncates() -> None:
    """A 1 MB body is cut to the excerpt limit, and says so."""
    block = text.fenced("y" * MB)

    assert len(block) < text.EXCERPT_LIMIT + 100
    assert _fence_holds(block).endswith("… (truncated)")


# ---- body -----------------------------------------------------------------------------


def _rich_result() -> TargetResult:
    failing = replace(
        _failing(Reason.STATUS),
        detail="expected [200, 302], got 503",
        body_excerpt='{"status": "down", "db": "timeout"}',
        fields={"status": "down", "error_rate": 0.42, "version": "1.4.3"},
    )
    return TargetResult("production", at(1), (failing, check(Outcome.UP, name="api", when=at(1))))


def test_body_has_everything_on_call_needs() -> None:
    """Marker, status, failing checks, health fields, excerpt, deployment, timeline, runbook."""
    deployment = Deployment("production", "1.4.2", "1.4.3", T0 - timedelta(minutes=6))
    timeline = [
        text.TimelineRow(at(m), "health", "down", 503, 0.05, "expected [200, 302], got 503")
        for m in (0, 1)
    ]

    body = text.body(
        _incident(),
        _rich_result(),
        at(10),
        timeline=timeline,
        deployment=deployment,
        runbook_url="https://runbooks.example/production",
        status_url="https://monitor.example/status",
    )

    assert body.startswith(
        "<!-- monitor:incident target=production id=production-20261101T120000Z -->\n"
    )
    assert text.parse_marker(body) == ("production", "production-20261101T120000Z")
    assert "## 🔴 DOWN: production, for 10m so far" in body
    assert "**First failure:** 2026-11-01 12:00:00 UTC" in body
    assert "5 of 7 probes failed" in body
    assert "| Check | URL | Outcome | Status | Reason | Latency |" in body
    assert (
        "| health | https://production.example/health | down | 503"
        " | status: expected [200, 302], got 503 | 50 ms |"
    ) in body
    assert "| api | https://production.example/api | up | 200 | ok: up | 50 ms |" in body
    assert "### Health payload" in body
    assert "| error_rate | 0.42 |" in body
    assert '| status | "down" |' in body
    assert '```text\n{"status": "down", "db": "timeout"}\n```' in body
    assert (
        "version 1.4.2 -> 1.4.3 was first seen 6m before the first failure"
        " (2026-11-01 11:54:00 UTC)."
    ) in body
    assert "### Timeline (UTC)" in body
    assert "| 12:01:00 | health | down | 503 | 50 ms | expected [200, 302], got 503 |" in body
    assert "Follow the runbook: https://runbooks.example/production" in body
    assert "Live status: https://monitor.example/status" in body


def test_body_without_runbook_points_at_the_setting() -> None:
    """No runbook configured: the body says which setting to fill in."""
    body = text.body(_incident(), down(at(1)), at(2))

    assert "No runbook is configured (`github.runbook_url`)." in body


def test_resolved_body_leads_with_the_duration() -> None:
    """Once resolved, the body's first line says so, with the measured duration."""
    resolved = _incident(resolved_at=T0 + timedelta(minutes=23, seconds=17))

    body = text.body(resolved, up(at(25)), at(25))

    assert "## ✅ RESOLVED: production was down for 23m17s" in body
    assert "**Recovered:** 2026-11-01 12:23:17 UTC" in body


def test_body_is_bounded_with_hostile_responses() -> None:
    """1 MB of hostile excerpt, detail, fields and URL: a body GitHub accepts, marker intact."""
    forged_marker = text.marker("production", "forged")
    hostile = (forged_marker + "\n```\n@octocat #1 <script>x</script> |\n") * (MB // 80)
    checks = tuple(
        CheckResult(
            target="production",
            check=f"check{n}" + "|" * 10_000,
            url="https://production.example/" + "&" * MB,
            started_at=at(1),
            duration_s=1.0,
            outcome=Outcome.DOWN,
            reason=Reason.STATUS,
            detail=hostile,
            status_code=500,
            body_excerpt=hostile,
            fields={f"field{i}" + "<" * 1000: hostile for i in range(20)},
        )
        for n in range(10)
    )
    result = TargetResult("production", at(1), checks)
    timeline = [text.TimelineRow(at(1), "c" * MB, "down", 500, 1.0, hostile)] * 50

    body = text.body(_incident(), result, at(5), timeline=timeline)

    assert len(body) < GITHUB_BODY_LIMIT
    assert text.parse_marker(body) == ("production", "production-20261101T120000Z")
    outside_fences = re.sub(r"(`{4,})text\n.*?\n\1", "", body, flags=re.DOTALL)
    assert "<script>" not in outside_fences
    assert not re.search(r"(^|\s)@octocat", outside_fences)
    assert "#1 " not in outside_fences
    key = "production-20261101T120000Z:changed:20261101T120100"
    changed = text.changed_comment(_incident(), result, hostile, key)
    assert len(changed) < 2_000
    assert "<script>" not in changed
    assert len(text.title(result)) <= GITHUB_TITLE_LIMIT


def test_body_with_hundreds_of_fields_is_cut_below_githubs_limit() -> None:
    """A body GitHub would refuse (422, retried forever) is cut to fit, marker first."""
    fields = {f"field_{i:03}": "v" * 300 for i in range(400)}
    failing = replace(_failing(Reason.STATUS), fields=fields)

    body = text.body(_incident(), TargetResult("production", at(1), (failing,)), at(2))

    assert len(body) < GITHUB_BODY_LIMIT
    assert body.endswith("… (truncated to fit GitHub's limit)\n")
    assert text.parse_marker(body) == ("production", "production-20261101T120000Z")


# ---- comments -------------------------------------------------------------------------


def test_resolved_comment_states_the_exact_duration() -> None:
    """The close comment gives the measured duration, readable and in seconds, and both ends."""
    resolved = _incident(resolved_at=T0 + timedelta(hours=1, minutes=2, seconds=5))
    key = "production-20261101T120000Z:resolved:20261101T130400"

    comment = text.resolved_comment(resolved, key)

    assert comment.startswith(text.action_marker(key) + "\n")
    assert "**Resolved.** production was down for **1h2m5s** (3725 s)." in comment
    assert "- First failure: 2026-11-01 12:00:00 UTC" in comment
    assert "- Recovered: 2026-11-01 13:02:05 UTC" in comment
    assert "- Probes: 5 of 7 failed" in comment


def test_reminder_and_reopen_comments_carry_their_marker() -> None:
    """Every comment starts with its action marker, so a retry can find it."""
    key = "production-20261101T120000Z:reminder:20261101T130000"

    reminder = text.reminder_comment(_incident(), down(at(60)), at(60), key)
    reopened = text.reopened_comment(_incident(reopened=1), down(at(70)), key)

    assert reminder.startswith(text.action_marker(key))
    assert "**Still open** after 1h, last probe down" in reminder
    assert reopened.startswith(text.action_marker(key))
    assert "**Failing again**" in reopened
    assert "(once reopened)" in reopened


def test_marker_round_trip_and_labels() -> None:
    """The marker parses back; labels add ``target:<name>`` once."""
    assert text.parse_marker("x\n" + text.marker("staging", "staging-1") + "\ny") == (
        "staging",
        "staging-1",
    )
    assert text.parse_marker("no marker") is None
    assert text.parse_marker(None) is None
    assert text.labels_for("staging", ["incident", "target:staging"]) == [
        "incident",
        "target:staging",
    ]
