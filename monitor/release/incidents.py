"""``monitor check --no-open-incident``: the seed's "no active production incidents".

A deploy waits while an incident is open for its target. Who knows? The running
daemon first (``--monitor-url``: its ``/api/status`` says which incident is open,
with its issue), else the GitHub repository the daemon files into (open issues
carrying both the incident label and the target's label, whoever opened them).
When neither can be read the gate cannot vouch for anything and fails: an
approval nobody could check is not an approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from monitor.config import GithubSection
from monitor.incidents.text import target_label
from monitor.probing.judge import one_line

STATUS_PATH = "/api/status"


class LookupFailed(Exception):
    """Neither the daemon nor GitHub could say whether an incident is open."""


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """One incident open for a target, as its source describes it."""

    target: str
    title: str  # the incident id (daemon) or the issue's number and title (GitHub)
    url: str | None  # the issue, when there is one
    since: str | None  # ISO 8601, when the source says
    source: str  # "monitor" or "github"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "target": self.target,
            "title": self.title,
            "url": self.url,
            "since": self.since,
            "source": self.source,
        }


def from_monitor(base_url: str, targets: Sequence[str], timeout_s: float) -> list[OpenIncident]:
    """The incidents the daemon at ``base_url`` reports open for ``targets``."""
    url = base_url.rstrip("/") + STATUS_PATH
    try:
        response = httpx.get(url, timeout=timeout_s, headers={"Accept": "application/json"})
        response.raise_for_status()
        listed = {t["name"]: t for t in response.json()["targets"]}
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError) as exc:
        raise LookupFailed(f"cannot read {url}: {_short(exc)}") from None
    found = []
    for name in targets:
        entry = listed.get(name)
        if entry is None:
            raise LookupFailed(
                f"the monitor at {base_url} does not show target {name!r}"
                " (is it in status_page.targets?)"
            )
        incident = entry.get("open_incident") if isinstance(entry, dict) else None
        if incident and not isinstance(incident, dict):
            raise LookupFailed(f"{url} is not a monitor's status: open_incident={incident!r:.80}")
        if incident:
            found.append(
                OpenIncident(
                    target=name,
                    title=f"incident {incident.get('id', '?')}",
                    url=incident.get("issue_url"),
                    since=incident.get("started_at"),
                    source="monitor",
                )
            )
    return found


def from_github(settings: GithubSection, targets: Sequence[str]) -> list[OpenIncident]:
    """Open issues with the incident label (the first of ``github.labels``) and the
    target's label, in the repository the daemon files into."""
    if settings.token is None or settings.repository is None:
        raise LookupFailed(
            "--no-open-incident needs --monitor-url, or a GitHub token (GITHUB_TOKEN)"
            " and github.repository"
        )
    # PyGithub (~20 MB, ~70 ms with requests and cryptography) only when GitHub is asked:
    # a plain `monitor check` or one asking --monitor-url never loads it
    from github import Auth, Github, GithubException

    client = Github(
        auth=Auth.Token(settings.token.get_secret_value()),
        base_url=settings.api_url,
        timeout=max(1, int(settings.timeout)),
        retry=None,
        user_agent="fly-monitor",
        lazy=True,  # no GET of the repository: the issue list is the one request
    )
    try:
        repo = client.get_repo(settings.repository)
        found = []
        for name in targets:
            labels = [*settings.labels[:1], target_label(name)]
            for issue in repo.get_issues(state="open", labels=labels):
                if issue.pull_request is not None:  # the issues list holds pull requests too
                    continue
                found.append(
                    OpenIncident(
                        target=name,
                        title=f"#{issue.number} {issue.title}",
                        url=issue.html_url,
                        since=issue.created_at.isoformat() if issue.created_at else None,
                        source="github",
                    )
                )
        return found
    except GithubException as exc:
        raise LookupFailed(
            f"cannot list the open issues of {settings.repository}: {exc.status}"
            f" {_message(exc.data)}"
        ) from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise LookupFailed(f"cannot reach {settings.api_url}: {_short(exc)}") from None
    finally:
        client.close()


def _message(data: Any) -> str:
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _short(exc: BaseException) -> str:
    return one_line(str(exc)) or type(exc).__name__
