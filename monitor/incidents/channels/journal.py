"""The journal sink: incidents as log lines, for running without a GitHub token."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monitor.incidents.channels.base import IssueRef, MarkedIssue
from monitor.incidents.text import parse_marker
from monitor.logs import get_logger

log = get_logger("monitor.journal")


class JournalSink:
    """Writes every incident action to the log; the store keeps the incidents."""

    name = "journal"

    def find_issue(
        self,
        target: str,
        incident_id: str,
        adoptable: Callable[[str], bool] | None = None,
    ) -> IssueRef | None:
        """The journal has no issues to find."""
        return None

    def open_issue(
        self, title: str, body: str, labels: Sequence[str], assignees: Sequence[str]
    ) -> IssueRef:
        """Log the opening."""
        found = parse_marker(body)
        log.warning(
            "journal: incident opened",
            title=title,
            incident=found[1] if found else None,
            labels=list(labels),
        )
        return IssueRef(None)

    def comment(self, issue: IssueRef, body: str, key: str, *, maybe_posted: bool = False) -> None:
        """Log the comment's first line of content."""
        lines = [line for line in body.splitlines() if line and not line.startswith("<!--")]
        log.warning("journal: incident update", key=key, text=lines[0] if lines else "")

    def edit(self, issue: IssueRef, body: str, title: str | None = None) -> None:
        """Body edits are noise in a log: debug level."""
        log.debug("journal: incident status refreshed", title=title)

    def close(self, issue: IssueRef, body: str | None = None) -> None:
        """Log the close."""
        log.warning("journal: incident closed")

    def reopen(self, issue: IssueRef) -> None:
        """Log the reopen."""
        log.warning("journal: incident reopened")

    def open_marked_issues(self) -> list[MarkedIssue]:
        """Nothing to reconcile."""
        return []
