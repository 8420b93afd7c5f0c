"""The KPI table as people read it: the command's table and the weekly report issue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from monitor.figures.report import duration_text, percent
from monitor.kpis.maths import AT_LEAST, Kpi
from monitor.kpis.table import KpiTable
from monitor.kpis.weeks import iso_week

REPORT_LABEL = "kpi-report"
_NAMES = {
    "deployment_frequency_per_week": "deployment frequency",
    "lead_time_median_s": "lead time (median)",
    "change_failure_rate": "change failure rate",
    "mttr_s": "MTTR",
    "test_pass_rate": "test pass rate",
    "security_scan_pass_rate": "security scan pass rate",
    "performance_score": "performance score",
    "staging_health": "staging health",
}


def value_text(key: str, value: float | None) -> str:
    """A KPI's value in its own unit."""
    if value is None:
        return "no data"
    if key == "deployment_frequency_per_week":
        return f"{value:.1f}/week"
    if key.endswith("_s"):
        return duration_text(value)
    if key == "performance_score":
        return f"{value:.0f}"
    return percent(value, 2 if key == "staging_health" else 1)


def objective_text(kpi: Kpi) -> str:
    """The bar, with its direction."""
    text = value_text(kpi.key, kpi.objective)
    if kpi.key in AT_LEAST:
        return text if text == "100.0 %" else f">= {text}"
    return f"< {text}"


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def basis_text(kpi: Kpi) -> str:
    """What the figure stands on, in a few words."""
    d = kpi.detail
    match kpi.key:
        case "deployment_frequency_per_week":
            return (
                f"{kpi.samples} deployments ({len(d['only_in_github'])} only in GitHub, "
                f"{len(d['only_observed'])} only observed)"
            )
        case "lead_time_median_s":
            bases = ", ".join(f"{n} by {b}" for b, n in sorted(d["basis"].items())) or "none"
            return f"{kpi.samples} commits of {d['deployments_measured']} deployments ({bases}); p90 {duration_text(d['p90_s'])}"
        case "change_failure_rate":
            return f"{kpi.samples} deployments; {d['by_incident']} failed by incident, {d['by_rollback']} by rollback"
        case "mttr_s":
            return f"{kpi.samples} resolved; median {duration_text(d['median_s'])}"
        case "test_pass_rate" | "security_scan_pass_rate":
            if not d["workflows"]:
                return "no workflows configured"
            left_out = ", ".join(f"{n} {c}" for c, n in d["excluded"].items() if n)
            return f"{kpi.samples} runs, {d['failed']} failed" + (
                f"; left out: {left_out}" if left_out else ""
            )
        case "performance_score":
            return f"{kpi.samples} deployed commits scored" + (
                f"; lowest {d['min']}" if d["min"] is not None else ""
            )
        case _:
            target = d.get("target") or "no staging target"
            return f"{target}; coverage {percent(d.get('coverage'), 1)}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def freshness(table: KpiTable) -> str:
    """One line on how old GitHub's part of the figures is."""
    if not table.github_configured:
        return "GitHub: not configured (github.repository and a token): its KPIs have no data"
    sync = table.sync
    if sync.succeeded_at is None:
        line = "GitHub data: never read yet"
    else:
        line = (
            f"GitHub data as of {_when(sync.succeeded_at)} ({duration_text(table.data_age_s)} old)"
        )
    if sync.error:
        line += f"; the last sync failed: {sync.error}"
    return line


def render_table(table: KpiTable) -> str:
    """The table a reviewer reads (``monitor kpis``)."""
    w = table.window
    rows = [("KPI", "value", "objective", "met", "based on")]
    rows += [
        (
            _NAMES[k.key],
            value_text(k.key, k.value),
            objective_text(k),
            _verdict(k.met),
            basis_text(k),
        )
        for k in table.kpis
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"KPIs {_when(w.start)} .. {_when(w.end)} ({duration_text(w.seconds)})",
        freshness(table),
        "",
    ]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    missed = table.missed
    lines.append("")
    lines.append(
        "missed: " + ", ".join(_NAMES[k.key] for k in missed)
        if missed
        else "every KPI with data meets its objective"
    )
    return "\n".join(lines) + "\n"


# ---- the weekly report -----------------------------------------------------------------


def report_marker(week: str) -> str:
    """The hidden line that makes a report issue findable (and never filed twice)."""
    return f"<!-- monitor:kpi-report week={week} -->"


def html_base(api_url: str) -> str | None:
    """The web address behind an API address: api.github.com -> github.com,
    ghe.example.com/api/v3 -> ghe.example.com; None when it cannot be told."""
    parts = urlsplit(api_url)
    if parts.hostname == "api.github.com":
        return "https://github.com"
    if parts.path.rstrip("/").endswith("/api/v3"):
        return f"{parts.scheme}://{parts.netloc}"
    return None


def _change(kpi: Kpi, before: Kpi) -> str:
    if kpi.value is None or before.value is None:
        return "-"
    delta = kpi.value - before.value
    if kpi.key == "deployment_frequency_per_week":
        return f"{delta:+.1f}/week"
    if kpi.key.endswith("_s"):
        sign = "+" if delta >= 0 else "-"
        return sign + duration_text(abs(delta))
    if kpi.key == "performance_score":
        return f"{delta:+.0f}"
    return f"{delta * 100:+.2f} pt"


def weekly_report(
    table: KpiTable,
    before: KpiTable,
    repository: str,
    web_url: str | None,
    issue_of: Callable[[str], str | None],
) -> tuple[str, str]:
    """Title and body of the report issue for ``table``'s week, against the week before."""
    week, previous = iso_week(table.window.start), iso_week(before.window.start)
    lines = [
        report_marker(week),
        f"KPIs for ISO week {week}: {_when(table.window.start)} to {_when(table.window.end)}.",
        freshness(table) + ".",
        "",
        f"| KPI | value | objective | met | change since {previous} | based on |",
        "|---|---|---|---|---|---|",
    ]
    for kpi in table.kpis:
        lines.append(
            f"| {_NAMES[kpi.key]} | {value_text(kpi.key, kpi.value)} | {objective_text(kpi)}"
            f" | {_verdict(kpi.met)} | {_change(kpi, before.kpi(kpi.key))} | {basis_text(kpi)} |"
        )
    lines += ["", "### Behind the figures", ""]
    lines += _links(table.kpis, repository, web_url, issue_of)
    lines += ["", "Filed by fly-monitor; `monitor kpis --since ... --until ...` recomputes it."]
    return f"KPI report {week}", "\n".join(lines) + "\n"


def _links(
    kpis: tuple[Kpi, ...],
    repository: str,
    web_url: str | None,
    issue_of: Callable[[str], str | None],
) -> list[str]:
    by_key: Mapping[str, Mapping[str, Any]] = {k.key: k.detail for k in kpis}

    def deployment(ref: Mapping[str, Any]) -> str:
        sha = str(ref["sha"])
        commit = (
            f"[`{sha[:7]}`]({web_url}/{repository}/commit/{sha})" if web_url else f"`{sha[:7]}`"
        )
        run = f" ([run]({ref['url']}))" if ref.get("url") else ""
        return f"deployment {ref['id']} of {commit}{run}"

    lines = []
    deployments = by_key["deployment_frequency_per_week"]["deployments"]
    lines.append(f"- Deployments: {len(deployments)}")
    lines += [f"  - {deployment(d)}, succeeded {d['succeeded_at']}" for d in deployments]
    for failure in by_key["change_failure_rate"]["failures"]:
        if failure["cause"] == "incident":
            issue = issue_of(str(failure["incident"]))
            cause = (
                f"incident [{failure['incident']}]({issue})"
                if issue
                else f"incident {failure['incident']}"
            )
        else:
            cause = f"[rollback run]({failure['run']})" if failure.get("run") else "a rollback run"
        lines.append(f"- Failed change: {deployment(failure)}, followed by {cause}")
    for incident in by_key["mttr_s"]["resolved"]:
        issue = issue_of(str(incident["incident"]))
        name = f"[{incident['incident']}]({issue})" if issue else str(incident["incident"])
        took = duration_text(incident["duration_s"])
        lines.append(f"- Incident {name}: restored in {took}")
    for key in ("test_pass_rate", "security_scan_pass_rate"):
        for run in by_key[key]["failures"]:
            target = (
                f"[{run['workflow']} run {run['run']}]({run['url']})"
                if run.get("url")
                else f"{run['workflow']} run {run['run']}"
            )
            lines.append(f"- {_NAMES[key]}: {target} concluded {run['conclusion']}")
    for note in by_key["lead_time_median_s"]["notes"]:
        lines.append(f"- Lead time of deployment {note['deployment']}: {note['note']}")
    return lines
