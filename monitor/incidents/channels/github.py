"""The GitHub channel: one issue per incident, through PyGithub.

:class:`GithubIssues` is the boundary with PyGithub (every error becomes a
:class:`ChannelError` there); :class:`GithubChannel` turns incident events into
issue steps and performs them. PyGithub is synchronous and may sleep; it only
ever runs in the channel's outbox worker thread. Its own retries are off: a
POST retried blindly by the client could file an issue twice, so every retry
goes through the outbox, and a create or comment is looked for (by its hidden
marker) before it is sent again.

PyGithub (with requests and cryptography, ~20 MB and ~70 ms to import) loads when
the worker first needs GitHub (the start-up reconcile, after the first probes), not
when the channel is made: probing never waits for GitHub, not even for its import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from monitor.config import GithubSection
from monitor.incidents import text
from monitor.incidents.channels.base import (
    ACKNOWLEDGED,
    CLOSED,
    GONE,
    ChannelError,
    Delivery,
    MarkedIssue,
    PersonAction,
)
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.text import action_marker, parse_marker, payload_text, target_label
from monitor.logs import detach_handlers, get_logger
from monitor.store.base import ChannelHandle, NewAction, OutboxAction

if TYPE_CHECKING:
    from github import Github, GithubException
    from github.IssueComment import IssueComment
    from github.Repository import Repository

log = get_logger("monitor.github")
T = TypeVar("T")
SINK_UNCONFIGURED = "the GitHub sink needs github.token and github.repository"

LABEL_COLOURS = {"incident": "d73a4a", "monitor": "0e8a16"}
TARGET_LABEL_COLOUR = "fbca04"
RECENT_COMMENTS = 30  # how far back a retried comment looks for itself
WRITE_GAP_S = 0.25  # pause between two writes (PyGithub's default is 1 s)


def _import_pygithub() -> None:
    """Import PyGithub, and detach the stderr handler it attaches at import: its records
    must go through our pipeline only (one JSON line each, redacted)."""
    import github

    detach_handlers(github.__name__)


def translate(exc: BaseException) -> ChannelError:
    """One place where PyGithub's and requests' errors become ours."""
    if isinstance(exc, ChannelError):
        return exc
    _import_pygithub()  # loaded already in practice: what is translated came from its calls
    import requests
    from github import GithubException

    if isinstance(exc, GithubException):
        status = exc.status
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        retry_after = _retry_after(headers)
        message = _message(exc)
        if status == 401:
            return ChannelError("auth", f"401 bad credentials: {message}", auth=True)
        # 429 is a rate limit whatever its body says; a 403 only with a hint or the message
        if status == 429 or (
            status == 403 and (retry_after is not None or "rate limit" in message.lower())
        ):
            return ChannelError(
                "rate_limited",
                f"{status} rate limited: {message}",
                retry_after_s=retry_after or 60.0,
            )
        if status == 403:
            return ChannelError("forbidden", f"403 forbidden: {message}", auth=True)
        if status == 404:
            return ChannelError(
                "not_found",
                f"404 not found (repository or issue; check token access): {message}",
                auth=True,
            )
        if status == 422:
            return ChannelError("invalid", f"422 rejected: {message}")
        if status is not None and status >= 500:
            return ChannelError("server_error", f"{status} from GitHub: {message}")
        return ChannelError("http_error", f"{status}: {message}")
    if isinstance(exc, requests.Timeout):
        return ChannelError("timeout", f"GitHub did not answer in time: {type(exc).__name__}")
    if isinstance(exc, requests.ConnectionError):
        return ChannelError("network", f"connection to GitHub failed: {_first_line(exc)}")
    if isinstance(exc, ValueError):  # JSON that is not JSON
        return ChannelError("malformed", f"unreadable reply from GitHub: {_first_line(exc)}")
    if isinstance(exc, RuntimeError) and "redirected" in str(exc):
        # PyGithub follows a 301 only to the same scheme and host, and never to itself
        return ChannelError("redirect", f"GitHub redirected the request: {_first_line(exc)}")
    if isinstance(exc, TypeError | KeyError | AttributeError) and _raised_in_pygithub(exc):
        # valid JSON of the wrong shape (an unfollowed 302/307 to a list request, say)
        return ChannelError(
            "malformed", f"reply from GitHub not understood: {type(exc).__name__}: {exc}"
        )
    return ChannelError("error", f"{type(exc).__name__}: {_first_line(exc)}")


def _raised_in_pygithub(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is PyGithub's own code (parsing a reply)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == "github" or module.startswith("github."))


def _retry_after(headers: dict[str, str]) -> float | None:
    if headers.get("retry-after", "").strip().isdigit():
        return float(headers["retry-after"])
    if (
        headers.get("x-ratelimit-remaining") == "0"
        and headers.get("x-ratelimit-reset", "").isdigit()
    ):
        return max(1.0, float(headers["x-ratelimit-reset"]) - time.time())
    return None


def _message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:200]
    return _first_line(exc)


def _answered(created_at: datetime | None, what: str) -> None:
    """Check that GitHub's reply was the issue or comment; anything else did not act.

    PyGithub raises only for status >= 400: a 302 or 307 (a renamed or transferred
    repository answers writes with 307) comes back as a "success" whose body is
    ``{"message": "Moved Permanently", "url": ...}``. Taken at its word, the outbox
    would mark a close done while the issue stays open. ``created_at`` is checked
    because PyGithub fills ``number`` and ``id`` from the URL when the reply lacks them.
    """
    if created_at is None:
        raise ChannelError(
            "redirect",
            f"GitHub's reply to the {what} carried no issue or comment (an unfollowed"
            " redirect: was the repository renamed or transferred?)",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class IssueRef:
    """An issue that tracks an incident."""

    number: int
    url: str | None = None


class GithubIssues:
    """Incident issues in one repository: PyGithub behind our own errors."""

    def __init__(self, settings: GithubSection, *, client: Github | None = None) -> None:
        if settings.token is None or settings.repository is None:
            raise ValueError(SINK_UNCONFIGURED)
        _import_pygithub()
        from github import Auth, Github

        self._settings = settings
        self._client = client or Github(
            auth=Auth.Token(settings.token.get_secret_value()),
            base_url=settings.api_url,
            timeout=max(1, int(settings.timeout)),  # PyGithub asserts an int
            retry=None,  # retries belong to the outbox, which never repeats a create blindly
            user_agent="fly-monitor",
            lazy=True,  # no GET before a PATCH or POST: fewer requests per action
            per_page=100,
            # PyGithub's defaults (0.25 s between requests, 1 s between writes) pace bulk
            # scripts; an incident is a handful of requests, sent one at a time by the
            # outbox, which also honours Retry-After. A short gap keeps the spirit of
            # GitHub's "pause between writes" without making recovery wait seconds.
            seconds_between_requests=None,
            seconds_between_writes=WRITE_GAP_S,
        )
        self._repo: Repository = self._client.get_repo(settings.repository)
        self._labels_ready: set[str] = set()

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except Exception as exc:  # translated once, here, at the boundary
            raise translate(exc) from exc

    def _ensure_labels(self, labels: Sequence[str]) -> None:
        from github import GithubException

        for name in labels:
            if name in self._labels_ready:
                continue
            try:
                # With ``lazy=True`` the name is known without a request; the colour is not,
                # so reading it performs the GET that tells whether the label exists.
                self._repo.get_label(name).color  # noqa: B018
            except GithubException as exc:
                if exc.status != 404:
                    raise translate(exc) from exc
                colour = LABEL_COLOURS.get(name, TARGET_LABEL_COLOUR)
                description = "Opened and closed by fly-monitor"
                try:
                    self._repo.create_label(name, colour, description)
                except GithubException as create_exc:
                    if create_exc.status != 422:  # 422: created meanwhile, which is fine
                        raise translate(create_exc) from create_exc
            except Exception as exc:
                raise translate(exc) from exc
            self._labels_ready.add(name)

    def find_issue(
        self,
        target: str,
        incident_id: str,
        adoptable: Callable[[str], bool] | None = None,
    ) -> IssueRef | None:
        """Our open issue for this incident (list filtered by label, never search).

        Failing an exact match, an open issue of the same target whose incident id
        ``adoptable`` accepts (one filed by ``monitor verify --file-incident``, or
        by a store that was lost) is the same outage: one open incident per target.
        """

        def lookup() -> IssueRef | None:
            candidates = []
            for issue in self._repo.get_issues(state="open", labels=[target_label(target)]):
                found = parse_marker(issue.body)
                if found == (target, incident_id):
                    return IssueRef(issue.number, issue.html_url)
                if found is not None and found[0] == target:
                    candidates.append((issue, found[1]))
            for issue, other_id in candidates:
                if adoptable is not None and adoptable(other_id):
                    return IssueRef(issue.number, issue.html_url)
            return None

        return self._call(lookup)

    def open_issue(
        self, title: str, body: str, labels: Sequence[str], assignees: Sequence[str]
    ) -> IssueRef:
        """Create the issue with labels (made if missing) and assignees."""
        self._ensure_labels(labels)
        extra: dict[str, Any] = {"assignees": list(assignees)} if assignees else {}
        try:
            issue = self._call(
                lambda: self._repo.create_issue(
                    title=title, body=body, labels=list(labels), **extra
                )
            )
        except ChannelError as exc:
            if exc.reason != "invalid" or not assignees:
                raise
            # 422 with assignees: usually someone who cannot be assigned (left the org).
            # GitHub created nothing, so filing without them is safe and beats never filing.
            log.warning("assignees rejected; filing the issue without them", error=str(exc))
            issue = self._call(
                lambda: self._repo.create_issue(title=title, body=body, labels=list(labels))
            )
        _answered(issue.created_at, "create issue")
        number = issue.number
        log.info("github issue opened", number=number, url=issue.html_url)
        return IssueRef(number, issue.html_url)

    def comment(self, issue: IssueRef, body: str, key: str, *, maybe_posted: bool = False) -> None:
        """Post a comment; on a retry, first check whether the last attempt got through."""
        number = issue.number

        def post() -> None:
            handle = self._repo.get_issue(number)
            if maybe_posted:
                comments = handle.get_comments()
                total = comments.totalCount
                recent: list[IssueComment] = (
                    list(comments[max(0, total - RECENT_COMMENTS) :]) if total else []
                )
                if any(action_marker(key) in (c.body or "") for c in recent):
                    log.info("github comment already posted", number=number, key=key)
                    return
            _answered(handle.create_comment(body).created_at, "comment")

        self._issue_call(number, post)

    def edit(self, issue: IssueRef, body: str, title: str | None = None) -> None:
        """Replace the body (and title)."""
        number = issue.number
        extra: dict[str, Any] = {"title": title} if title else {}
        self._patch(number, "edit", body=body, **extra)

    def close(self, issue: IssueRef, body: str | None = None) -> None:
        """Close as completed, with the final body in the same request when given."""
        extra: dict[str, Any] = {"body": body} if body else {}
        self._patch(issue.number, "close", state="closed", state_reason="completed", **extra)

    def reopen(self, issue: IssueRef) -> None:
        """Reopen."""
        self._patch(issue.number, "reopen", state="open", state_reason="reopened")

    def _patch(self, number: int, what: str, **fields: Any) -> None:
        def patch() -> None:
            handle = self._repo.get_issue(number)
            handle.edit(**fields)
            _answered(handle.created_at, what)  # the edit filled the handle from the reply

        self._issue_call(number, patch)

    def _issue_call(self, number: int, operation: Callable[[], None]) -> None:
        """An action on one issue; a 404 for the issue alone means it was deleted."""
        try:
            self._call(operation)
        except ChannelError as exc:
            if exc.reason != "not_found":
                raise
            # 404 names no culprit: if the repository still answers, the issue is gone,
            # and retrying would block the target's queue for ever
            self._call(lambda: self._client.get_repo(self._settings.repository or "").id)
            raise ChannelError(GONE, f"issue #{number} no longer exists (deleted?)") from exc

    def people(self, incident_id: str, number: int, ack_label: str) -> list[PersonAction]:
        """What people did to one open incident's issue: closed it, or labelled it."""

        def read() -> list[PersonAction]:
            issue = self._repo.get_issue(number)
            found = []
            if issue.state == "closed":
                login = issue.closed_by.login if issue.closed_by is not None else None
                at = issue.closed_at or datetime.now(UTC)
                found.append(PersonAction(incident_id, CLOSED, login, at))
            labels = {label.name.lower() for label in issue.labels}
            if ack_label.lower() in labels:
                found.append(PersonAction(incident_id, ACKNOWLEDGED, None, issue.updated_at))
            return found

        return self._call(read)

    def find_marked(self, label: str, marker: str) -> IssueRef | None:
        """An issue, open or closed, with ``label`` whose body holds ``marker`` (a report)."""

        def lookup() -> IssueRef | None:
            # newest first: the one we look for was filed lately, if at all
            listing = self._repo.get_issues(
                state="all", labels=[label], sort="created", direction="desc"
            )
            for issue in listing:
                if marker in (issue.body or ""):
                    return IssueRef(issue.number, issue.html_url)
            return None

        return self._call(lookup)

    def open_marked_issues(self) -> list[MarkedIssue]:
        """Open issues with our marker, across targets (labels filter on the common labels)."""

        def scan() -> list[MarkedIssue]:
            found = []
            # our issues all carry the first configured label: filter on it when there is one
            common = self._settings.labels[:1]
            listing = (
                self._repo.get_issues(state="open", labels=common)
                if common
                else self._repo.get_issues(state="open")
            )
            for issue in listing:
                parsed = parse_marker(issue.body)
                if parsed is not None:
                    found.append(MarkedIssue(issue.number, issue.html_url, parsed[0], parsed[1]))
            return found

        return self._call(scan)


GITHUB = "github"
# GitHub abandons a request after 10 s. After a client timeout on a create, the first
# request may still be running there: a retry sooner could miss the marker it is
# about to write, and file a second issue (or comment).
CREATE_SETTLE_S = 15.0
# how often the open incidents' issues are read for a person's close or ack label: one
# request per open incident, so a few a minute even in a bad hour
WATCH_INTERVAL_S = 60.0


class GithubChannel:
    """Incident events as one GitHub issue each: opened, commented, edited, closed."""

    name = GITHUB
    kind = GITHUB

    def __init__(self, settings: GithubSection, issues: GithubIssues | None = None) -> None:
        if issues is None and (settings.token is None or settings.repository is None):
            raise ValueError(SINK_UNCONFIGURED)  # at start-up, as before PyGithub loaded later
        self._settings = settings
        self._made: GithubIssues | None = issues
        self._making = threading.Lock()

    @property
    def _issues(self) -> GithubIssues:
        """The PyGithub side, made on first use (in the outbox worker, off the event loop)."""
        with self._making:
            if self._made is None:
                self._made = GithubIssues(self._settings)
            return self._made

    # ---- planning: when the event is decided ------------------------------------------

    def plan(self, event: IncidentEvent) -> Sequence[NewAction]:
        """The issue steps for ``event``; the body is rendered now and edited in whole."""
        incident, result = event.incident, event.result
        body = text.body(
            incident,
            result,
            event.decided_at,
            timeline=event.timeline,
            deployment=event.deployment,
            runbook_url=self._settings.runbook_url,
            status_url=event.status_url,
            regions=event.regions,
        )
        title = text.title(result)

        def step(kind: str, *, supersede: bool = False, **payload: object) -> NewAction:
            return NewAction(
                self.name, incident.id, incident.target, kind, payload, supersede=supersede
            )

        def edit(**payload: object) -> NewAction:
            return step("edit", supersede=True, body=body, **payload)

        if event.kind is EventKind.ACKNOWLEDGED:
            return []  # it came from the issue itself
        if event.kind is EventKind.OPENED:
            labels = text.labels_for(incident.target, self._settings.labels)
            assignees = list(self._settings.assignees)
            return [step("open", title=title, body=body, labels=labels, assignees=assignees)]
        comment = step("comment", body=text.event_comment(event), key=event.key, event=event.kind)
        if event.kind is EventKind.REOPENED:
            return [step("reopen"), comment, edit(title=title)]
        if event.kind is EventKind.UPDATED:
            return [comment, edit(title=title)]
        if event.kind is EventKind.REMINDER:
            return [comment, edit()]
        if event.kind is EventKind.MAINTENANCE:
            return [comment]
        # resolved: the final body rides on the close, one write less on the recovery path
        return [comment, step("close", body=body)]

    def close_steps(self, issue: MarkedIssue, words: str, key: str) -> Sequence[NewAction]:
        """Comment ``words`` on an issue found while reconciling, then close it."""
        body = f"{action_marker(key)}\n{words}"
        return [
            NewAction(
                self.name,
                issue.incident_id,
                issue.target,
                "comment",
                {"body": body, "key": key, "number": issue.number},
            ),
            NewAction(
                self.name, issue.incident_id, issue.target, "close", {"number": issue.number}
            ),
        ]

    # ---- delivery: in the outbox worker ------------------------------------------------

    def settle_s(self, action: OutboxAction) -> float:
        """Creates and comments may land after we die mid-request: lease them."""
        return CREATE_SETTLE_S if action.kind in ("open", "comment", "report") else 0.0

    def deliver(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle | None:
        """Perform one issue step; an open returns the issue, found or filed."""
        payload = action.payload
        if action.kind == "open":
            return self._open(action, delivery)
        if action.kind == "report":
            return self._report(action)
        issue, found = self._issue_for(action, delivery)
        if issue is None:
            log.warning(
                "no issue for incident; action skipped",
                incident=action.incident_id,
                kind=action.kind,
            )
            return None
        if self._reminder_unwanted(action, issue):
            log.info("reminder skipped: a person has the issue", number=issue.number)
            return ChannelHandle(issue.number, issue.url) if found else None
        if action.kind == "comment":
            # Always look for the comment's marker first: ``attempts`` cannot say whether
            # an earlier try got through (killed between the POST and its completion, or
            # the completion itself failed), and a reminder posted twice is noise on a phone.
            self._issues.comment(
                issue,
                payload_text(payload, "body"),
                payload_text(payload, "key"),
                maybe_posted=True,
            )
        elif action.kind == "edit":
            self._issues.edit(
                issue, payload_text(payload, "body"), payload_text(payload, "title") or None
            )
        elif action.kind == "close":
            self._issues.close(issue, payload_text(payload, "body") or None)
        elif action.kind == "reopen":
            self._issues.reopen(issue)
        else:
            raise ChannelError("invalid", f"unknown GitHub step {action.kind!r}")
        return ChannelHandle(issue.number, issue.url) if found else None

    def _reminder_unwanted(self, action: OutboxAction, issue: IssueRef) -> bool:
        """A person who closed or acknowledged the issue wants no more reminders: look
        first (an hourly read), whatever the watch has not reported yet."""
        if action.kind != "comment" or action.payload.get("event") != "reminder":
            return False
        return bool(self._issues.people(action.incident_id, issue.number, self._settings.ack_label))

    def _open(self, action: OutboxAction, delivery: Delivery) -> ChannelHandle:
        payload = action.payload
        existing = self._issues.find_issue(
            action.target,
            action.incident_id,
            adoptable=lambda other: not delivery.is_recorded(other),
        )
        if existing is not None:
            log.warning(
                "adopting existing issue instead of creating one",
                incident=action.incident_id,
                number=existing.number,
            )
            ref = existing
        else:
            ref = self._issues.open_issue(
                payload_text(payload, "title"),
                payload_text(payload, "body"),
                _strings(payload, "labels"),
                _strings(payload, "assignees"),
            )
        return ChannelHandle(ref.number, ref.url)

    def _report(self, action: OutboxAction) -> ChannelHandle:
        """File a KPI report issue, unless an earlier try did (its marker is in the body)."""
        payload = action.payload
        labels = _strings(payload, "labels")
        marker = payload_text(payload, "marker")
        found = self._issues.find_marked(labels[0], marker) if labels and marker else None
        if found is None:
            found = self._issues.open_issue(
                payload_text(payload, "title"), payload_text(payload, "body"), labels, []
            )
        return ChannelHandle(found.number, found.url)

    def _issue_for(self, action: OutboxAction, delivery: Delivery) -> tuple[IssueRef | None, bool]:
        """The issue to act on, and whether it was found just now (so it gets recorded)."""
        number = action.payload.get("number")
        if isinstance(number, int):  # reconcile names the issue itself
            return IssueRef(number), False
        handle = delivery.handle
        if handle is not None and handle.number is not None:
            return IssueRef(handle.number, handle.url), False
        # filed by an earlier store, or before a token was configured: find it by marker
        found = self._issues.find_issue(action.target, action.incident_id)
        return found, found is not None

    def open_marked_issues(self) -> list[MarkedIssue]:
        """Every open issue that carries our marker (start-up reconcile)."""
        return self._issues.open_marked_issues()

    watch_interval_s = WATCH_INTERVAL_S

    def watch(self, handles: Sequence[tuple[str, ChannelHandle]]) -> list[PersonAction]:
        """What people did to the open incidents' issues (one read per issue)."""
        found = []
        for incident_id, handle in handles:
            if handle.number is not None:
                found += self._issues.people(incident_id, handle.number, self._settings.ack_label)
        return found


def _strings(payload: Mapping[str, object], key: str) -> list[str]:
    value = payload.get(key)
    return [str(item) for item in value] if isinstance(value, list) else []
