"""An in-memory GitHub REST API on 127.0.0.1, with fault injection, for tests.

`FakeGitHub` serves the part of the API our sink reaches through PyGithub (repos,
issues, issue comments, labels, rate limit) over real HTTP, so the real client code
is what gets exercised: `Github(auth=Auth.Token(DEFAULT_TOKEN), base_url=server.url)`.
State lives in memory and is inspected from Python (`issues`, `comments`, `requests`,
`tokens_seen`, `leaks`). Faults are queued with `inject(method, path_regex, fault)`
and built by the functions below (`status`, `secondary_rate_limit`, `delay`, ...).

Register the `fake_github` fixture with `pytest_plugins = ["tests.fakegithub"]` in
`tests/conftest.py` (or in a test module).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import math
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import pytest
from github import Auth, Github
from urllib3 import Retry

__all__ = [
    "DEFAULT_REPO",
    "DEFAULT_TOKEN",
    "FakeGitHub",
    "Fault",
    "FaultKind",
    "RequestRecord",
    "cut_after_commit",
    "cut_before_commit",
    "delay",
    "fake_github",
    "malformed_json",
    "primary_rate_limit",
    "redirect",
    "secondary_rate_limit",
    "status",
    "too_many_requests",
]

DEFAULT_REPO = "acme/web"
"""The repository a `FakeGitHub` knows when none are given."""

DEFAULT_TOKEN = "ghp_fakegithub_test_token_0123456789"
"""The token a `FakeGitHub` accepts when no `valid_tokens` are given."""

_T = TypeVar("_T")
_DOCS = "https://docs.github.com/rest"
_SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID."
)
_PRIMARY_RATE_LIMIT_MESSAGE = (
    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID."
)
# Starts like JSON so PyGithub tries (and fails) to parse it instead of wrapping it
# as {"data": ...}, which it does for bodies that do not start with "{" or "[".
_MALFORMED_BODY = b'{"id": 1, "title": "truncated'
_RATE_WINDOW_S = 3600
_LABEL_COLOR = re.compile(r"[0-9a-fA-F]{6}")
_STATE_REASONS = {"completed", "not_planned", "reopened", "duplicate", None}


# --- faults -----------------------------------------------------------------------


class FaultKind(enum.Enum):
    """What an injected fault does to the request it matches."""

    STATUS = "status"  # reply with a canned status, headers and body
    DELAY = "delay"  # wait, then serve the request normally
    CUT_BEFORE_COMMIT = "cut_before_commit"  # close the connection, do nothing
    CUT_AFTER_COMMIT = "cut_after_commit"  # perform the request, then close without replying
    MALFORMED_JSON = "malformed_json"  # perform the request, reply 200 with broken JSON
    REDIRECT = "redirect"  # reply with a redirect, do nothing


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; build it with the module's fault functions."""

    kind: FaultKind
    code: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    commit: bool = False
    """For STATUS: perform the request before replying with the error."""
    reset_in_s: int | None = None
    """For primary rate limits: the reset time, relative to when the fault fires."""
    location: str = ""


def status(
    code: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    commit: bool = False,
) -> Fault:
    """Reply `code` with `body` (JSON-encoded unless bytes/str; GitHub-like by default).

    With `commit=True` the request is performed first, as when GitHub creates an issue
    and a proxy in front of it still answers 502.
    """
    return Fault(
        FaultKind.STATUS,
        code=code,
        body=body,
        headers=tuple((headers or {}).items()),
        commit=commit,
    )


def secondary_rate_limit(retry_after: int | None = 1) -> Fault:
    """A 403 with GitHub's secondary-rate-limit message and `Retry-After` (None: omit it)."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return status(403, {"message": _SECONDARY_RATE_LIMIT_MESSAGE}, headers)


def too_many_requests(retry_after: int = 1) -> Fault:
    """A 429 with GitHub's secondary-rate-limit message and `Retry-After`."""
    return status(
        429, {"message": _SECONDARY_RATE_LIMIT_MESSAGE}, {"Retry-After": str(retry_after)}
    )


def primary_rate_limit(reset_in: int = 1) -> Fault:
    """A 403 'API rate limit exceeded' with `X-RateLimit-Remaining: 0`, resetting in `reset_in` s."""
    return Fault(
        FaultKind.STATUS,
        code=403,
        body={"message": _PRIMARY_RATE_LIMIT_MESSAGE},
        reset_in_s=reset_in,
    )


def delay(seconds: float) -> Fault:
    """Wait `seconds` (e.g. past the client's timeout), then serve the request normally."""
    return Fault(FaultKind.DELAY, delay_s=seconds)


def cut_before_commit() -> Fault:
    """Close the connection without replying and without performing the request."""
    return Fault(FaultKind.CUT_BEFORE_COMMIT)


def cut_after_commit() -> Fault:
    """Perform the request, then close the connection without replying."""
    return Fault(FaultKind.CUT_AFTER_COMMIT)


def malformed_json() -> Fault:
    """Perform the request, then reply 200 with a body that is not valid JSON."""
    return Fault(FaultKind.MALFORMED_JSON)


def redirect(location: str, code: int = 301) -> Fault:
    """Reply `code` with `Location: location` (a path is made absolute on this server).

    PyGithub follows only 301 (same scheme and host), re-requesting the path without
    its query string.
    """
    return Fault(FaultKind.REDIRECT, code=code, location=location)


# --- records --------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One request as the server saw it; `status` 0 means no response was sent."""

    method: str
    path: str
    status: int


@dataclass
class _Exchange:
    """Everything recorded about one request, for `leaks` and `tokens_seen`."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    token: str | None
    status: int = 0


class _Request(NamedTuple):
    method: str
    target: str
    body: bytes
    token: str | None
    rate_exhausted: bool


@dataclass
class _Injection:
    method: str
    path: re.Pattern[str]
    fault: Fault
    remaining: int | None


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Label:
    id: int
    name: str
    color: str
    description: str | None


@dataclass
class _Comment:
    id: int
    body: str
    user: str
    created_at: datetime
    updated_at: datetime


@dataclass
class _Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: str
    labels: list[str]
    assignees: list[str]
    state: str
    state_reason: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    comments: list[_Comment] = field(default_factory=list)


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    created_at: datetime
    issues: dict[int, _Issue] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)  # keyed by lower-cased name

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class _HTTPError(Exception):
    """Raised inside routing to reply with a GitHub-shaped error."""

    def __init__(self, code: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.reply = _json_reply(code, _error_body(code, message, errors))


def _error_body(code: int, message: str, errors: list[dict[str, str]] | None = None) -> Any:
    body: dict[str, Any] = {"message": message, "documentation_url": _DOCS, "status": str(code)}
    if errors:
        body["errors"] = errors
    return body


def _json_reply(code: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(code, json.dumps(payload).encode(), dict(headers or {}))


def _timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall_clock() -> datetime:
    return datetime.now(UTC)


# --- server ---------------------------------------------------------------------


class FakeGitHub:
    """A GitHub REST API double on 127.0.0.1; start it with `with FakeGitHub() as server:`.

    Thread-safe: one lock guards state, faults and logs. `clock` stamps issues and
    comments (freeze it for deterministic `since`/`sort`); rate-limit resets use the
    wall clock because PyGithub compares them with its own.
    """

    def __init__(
        self,
        repos: Iterable[str] = (DEFAULT_REPO,),
        *,
        valid_tokens: Iterable[str] = (DEFAULT_TOKEN,),
        login: str = "monitor-bot",
        rate_limit: int = 5000,
        clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        self._repo_names = tuple(repos)
        self._valid_tokens = frozenset(valid_tokens)
        self._login = login
        self._rate_limit = rate_limit
        self._clock = clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[Github] = []
        self.errors: list[BaseException] = []
        """Exceptions raised inside the fake itself (its bugs, never the client's)."""
        self._reset_state()

    # lifecycle

    def start(self) -> Self:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # bounds how long close() waits
            name="fakegithub",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Close clients made by `client`, stop serving and drop open connections."""
        for gh in self._clients:
            gh.close()
        self._clients.clear()
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8123`; pass it as PyGithub's `base_url`."""
        if self._httpd is None:
            raise RuntimeError("FakeGitHub is not started; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def client(
        self,
        auth: str | Auth.Auth | None = DEFAULT_TOKEN,
        *,
        retry: int | Retry | None = None,
        timeout_s: int = 5,
        per_page: int = 30,
    ) -> Github:
        """A PyGithub client for this server, without PyGithub's request throttling.

        `auth` is a token (sent as `token X`), any `github.Auth` object, or None for no
        Authorization header. `retry=None` means no retries at all (PyGithub's own
        default is `github.GithubRetry.GithubRetry()`). `close` closes the client.
        """
        gh = Github(
            auth=Auth.Token(auth) if isinstance(auth, str) else auth,
            base_url=self.url,
            timeout=timeout_s,
            retry=retry,
            per_page=per_page,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._clients.append(gh)
        return gh

    # inspection

    def issues(self, repo: str = DEFAULT_REPO) -> list[dict[str, Any]]:
        """Every issue of `repo` as GitHub would render it, by ascending number."""
        with self._lock:
            r = self._repo_or_raise(repo)
            return [self._issue_json(r, i) for _, i in sorted(r.issues.items())]

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """The comments on issue `number` of `repo`, oldest first."""
        with self._lock:
            r = self._repo_or_raise(repo)
            issue = r.issues[number]
            return [self._comment_json(r, issue, c) for c in issue.comments]

    def labels(self, repo: str = DEFAULT_REPO) -> list[dict[str, Any]]:
        """The labels of `repo` as GitHub would render them, by name."""
        with self._lock:
            r = self._repo_or_raise(repo)
            return [self._label_json(r, lab) for _, lab in sorted(r.labels.items())]

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of (method, path without query, status) for every request so far."""
        with self._lock:
            return [
                RequestRecord(e.method, urllib.parse.urlsplit(e.target).path, e.status)
                for e in self._exchanges
            ]

    def request_count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        """How many requests matched `method` (any if None) and `path_prefix` (any if None)."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
        )

    @property
    def tokens_seen(self) -> list[str]:
        """The token of every request that sent an Authorization header, in order."""
        with self._lock:
            return [e.token for e in self._exchanges if e.token is not None]

    def leaks(self, secret: str) -> list[str]:
        """Where `secret` was sent other than as the Authorization token (empty: nowhere)."""
        found: list[str] = []
        with self._lock:
            for e in self._exchanges:
                where = f"{e.method} {e.target}"
                if secret in urllib.parse.unquote(e.target):
                    found.append(f"{where}: URL")
                for name, value in e.headers:
                    if name.lower() != "authorization" and secret in value:
                        found.append(f"{where}: header {name}")
                if secret in e.body.decode("utf-8", "replace"):
                    found.append(f"{where}: body")
        return found

    @property
    def rate_remaining(self) -> int:
        """What `X-RateLimit-Remaining` would say now."""
        with self._lock:
            return self._rate_remaining

    @property
    def pending_faults(self) -> int:
        """Injected faults not yet used up (an unlimited one counts once)."""
        with self._lock:
            return len(self._injections)

    # seeding and faults

    def add_issue(
        self,
        repo: str = DEFAULT_REPO,
        *,
        title: str,
        body: str | None = None,
        labels: Iterable[str] = (),
        assignees: Iterable[str] = (),
        state: str = "open",
        state_reason: str | None = None,
    ) -> dict[str, Any]:
        """Create an issue directly (no HTTP, no log); unknown labels are created."""
        with self._lock:
            r = self._repo_or_raise(repo)
            issue = self._create_issue(r, title, body, list(labels), list(assignees))
            if state == "closed":
                self._set_state(issue, "closed", state_reason or "completed")
            return self._issue_json(r, issue)

    def add_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        """Add a comment to issue `number` directly (no HTTP, no log)."""
        with self._lock:
            r = self._repo_or_raise(repo)
            issue = r.issues[number]
            return self._comment_json(r, issue, self._create_comment(issue, body))

    def close_as(self, repo: str, number: int, login: str) -> dict[str, Any]:
        """Close issue `number` as the person `login` does in the web UI (no HTTP, no log)."""
        with self._lock:
            r = self._repo_or_raise(repo)
            issue = r.issues[number]
            self._set_state(issue, "closed", "completed")
            issue.closed_by = login
            issue.updated_at = self._clock()
            return self._issue_json(r, issue)

    def add_label(
        self,
        repo: str = DEFAULT_REPO,
        name: str = "bug",
        color: str = "d73a4a",
        description: str | None = None,
    ) -> dict[str, Any]:
        """Create a label directly (no HTTP, no log)."""
        with self._lock:
            r = self._repo_or_raise(repo)
            return self._label_json(r, self._ensure_label(r, name, color, description))

    def inject(self, method: str, path_regex: str, fault: Fault, count: int | None = 1) -> None:
        """Queue `fault` for the next `count` requests (None: all) matching both patterns.

        `method` is an HTTP method or "*"; `path_regex` must match the whole path,
        without the query string. The oldest matching injection fires first.
        """
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None, got {count}")
        with self._lock:
            self._injections.append(
                _Injection(method.upper(), re.compile(path_regex), fault, count)
            )

    def reset(self) -> None:
        """Forget issues, labels, faults, logs and rate-limit use; keep port and clients."""
        with self._lock:
            self._reset_state()

    # internals: state

    def _reset_state(self) -> None:
        with self._lock:
            self._ids = itertools.count(1001)
            self._user_ids: dict[str, int] = {}
            self._repos: dict[str, _Repo] = {}
            for full_name in self._repo_names:
                owner, _, name = full_name.partition("/")
                repo = _Repo(next(self._ids), owner, name, self._clock())
                self._repos[full_name.lower()] = repo
            self._injections: list[_Injection] = []
            self._exchanges: list[_Exchange] = []
            self._rate_remaining = self._rate_limit
            self._rate_reset_at = int(time.time()) + _RATE_WINDOW_S

    def _repo_or_raise(self, full_name: str) -> _Repo:
        try:
            return self._repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"unknown repo {full_name!r}; known: {self._repo_names}") from None

    def _ensure_label(
        self, repo: _Repo, name: str, color: str = "ededed", description: str | None = None
    ) -> _Label:
        label = repo.labels.get(name.lower())
        if label is None:
            label = _Label(next(self._ids), name, color, description)
            repo.labels[name.lower()] = label
        return label

    def _create_issue(
        self,
        repo: _Repo,
        title: str,
        body: str | None,
        labels: list[str],
        assignees: list[str],
    ) -> _Issue:
        now = self._clock()
        number = max(repo.issues, default=0) + 1
        names = [self._ensure_label(repo, name).name for name in dict.fromkeys(labels)]
        issue = _Issue(
            id=next(self._ids),
            number=number,
            title=title,
            body=body,
            user=self._login,
            labels=names,
            assignees=list(dict.fromkeys(assignees)),
            state="open",
            state_reason=None,
            created_at=now,
            updated_at=now,
            closed_at=None,
            closed_by=None,
        )
        repo.issues[number] = issue
        return issue

    def _create_comment(self, issue: _Issue, body: str) -> _Comment:
        now = self._clock()
        comment = _Comment(next(self._ids), body, self._login, now, now)
        issue.comments.append(comment)
        issue.updated_at = now
        return comment

    def _set_state(self, issue: _Issue, state: str, reason: str | None) -> None:
        # GitHub fills state_reason itself when a client only flips the state.
        if state == "closed":
            if issue.state != "closed":
                issue.closed_at = self._clock()
                issue.closed_by = self._login
            issue.state_reason = reason or "completed"
        elif issue.state == "closed":
            issue.closed_at = None
            issue.closed_by = None
            issue.state_reason = reason or "reopened"
        elif reason is not None:
            issue.state_reason = reason
        issue.state = state

    # internals: rendering

    def _user_json(self, login: str, kind: str = "User") -> dict[str, Any]:
        uid = self._user_ids.setdefault(login, 5000 + len(self._user_ids))
        base = self.url
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_fake{uid}",
            "avatar_url": f"{base}/avatars/{login}",
            "gravatar_id": "",
            "url": f"{base}/users/{login}",
            "html_url": f"{base}/{login}",
            "type": kind,
            "site_admin": False,
        }

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        open_count = sum(1 for i in repo.issues.values() if i.state == "open")
        return {
            "id": repo.id,
            "node_id": f"R_fake{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(repo.owner, "Organization"),
            "html_url": f"{self.url}/{repo.full_name}",
            "description": None,
            "fork": False,
            "url": api,
            "issues_url": f"{api}/issues{{/number}}",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments{{/number}}",
            "created_at": _timestamp(repo.created_at),
            "updated_at": _timestamp(repo.created_at),
            "pushed_at": _timestamp(repo.created_at),
            "has_issues": True,
            "archived": False,
            "disabled": False,
            "visibility": "public",
            "default_branch": "main",
            "open_issues_count": open_count,
            "open_issues": open_count,
            "permissions": {"admin": False, "push": True, "pull": True},
        }

    def _label_json(self, repo: _Repo, label: _Label) -> dict[str, Any]:
        name = urllib.parse.quote(label.name, safe="")
        return {
            "id": label.id,
            "node_id": f"LA_fake{label.id}",
            "url": f"{self.url}/repos/{repo.full_name}/labels/{name}",
            "name": label.name,
            "color": label.color,
            "default": False,
            "description": label.description,
        }

    def _issue_json(self, repo: _Repo, issue: _Issue) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}/issues/{issue.number}"
        assignees = [self._user_json(login) for login in issue.assignees]
        return {
            "url": api,
            "repository_url": f"{self.url}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "timeline_url": f"{api}/timeline",
            "html_url": f"{self.url}/{repo.full_name}/issues/{issue.number}",
            "id": issue.id,
            "node_id": f"I_fake{issue.id}",
            "number": issue.number,
            "title": issue.title,
            "user": self._user_json(issue.user),
            "labels": [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels],
            "state": issue.state,
            "state_reason": issue.state_reason,
            "locked": False,
            "active_lock_reason": None,
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "milestone": None,
            "comments": len(issue.comments),
            "created_at": _timestamp(issue.created_at),
            "updated_at": _timestamp(issue.updated_at),
            "closed_at": _timestamp(issue.closed_at),
            "closed_by": None if issue.closed_by is None else self._user_json(issue.closed_by),
            "author_association": "MEMBER",
            "body": issue.body,
            "performed_via_github_app": None,
        }

    def _comment_json(self, repo: _Repo, issue: _Issue, comment: _Comment) -> dict[str, Any]:
        issue_url = f"{self.url}/repos/{repo.full_name}/issues/{issue.number}"
        return {
            "url": f"{self.url}/repos/{repo.full_name}/issues/comments/{comment.id}",
            "html_url": (
                f"{self.url}/{repo.full_name}/issues/{issue.number}#issuecomment-{comment.id}"
            ),
            "issue_url": issue_url,
            "id": comment.id,
            "node_id": f"IC_fake{comment.id}",
            "user": self._user_json(comment.user),
            "created_at": _timestamp(comment.created_at),
            "updated_at": _timestamp(comment.updated_at),
            "author_association": "MEMBER",
            "body": comment.body,
            "performed_via_github_app": None,
        }

    def _rate_json(self) -> dict[str, Any]:
        return {
            "limit": self._rate_limit,
            "remaining": self._rate_remaining,
            "reset": self._rate_reset_at,
            "used": self._rate_limit - self._rate_remaining,
            "resource": "core",
        }

    # internals: request handling (called from handler threads)

    def _serve(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Reply | None:
        """Answer one request; None means: close the connection without replying."""
        path = urllib.parse.urlsplit(target).path
        token = _token_from(headers)
        with self._lock:
            exchange = _Exchange(method, target, headers, body, token)
            self._exchanges.append(exchange)
            rate_headers, exhausted = self._spend_rate(path)
            fault = self._take_fault(method, path)
        try:
            if fault is not None and fault.kind is FaultKind.DELAY:
                if self._stopping.wait(fault.delay_s):
                    return None
                fault = None
            with self._lock:
                request = _Request(method, target, body, token, exhausted)
                reply = self._apply(fault, request, rate_headers)
                exchange.status = 0 if reply is None else reply.status
                return reply
        except Exception as exc:  # the fake's own bug: answer, and let the fixture fail
            with self._lock:
                self.errors.append(exc)
                exchange.status = 500
            return _json_reply(500, {"message": f"fakegithub internal error: {exc!r}"})

    def _apply(
        self,
        fault: Fault | None,
        request: _Request,
        rate_headers: dict[str, str],
    ) -> _Reply | None:
        if fault is None:
            return self._finish(self._dispatch(request), rate_headers)
        match fault.kind:
            case FaultKind.CUT_BEFORE_COMMIT:
                return None
            case FaultKind.CUT_AFTER_COMMIT:
                self._dispatch(request)
                return None
            case FaultKind.MALFORMED_JSON:
                self._dispatch(request)
                return self._finish(_Reply(200, _MALFORMED_BODY), rate_headers)
            case FaultKind.REDIRECT:
                location = fault.location
                if location.startswith("/"):
                    location = self.url + location
                body_json = {"message": "Moved Permanently", "url": location}
                reply = _json_reply(fault.code, body_json, {"Location": location})
                return self._finish(reply, rate_headers)
            case FaultKind.STATUS:
                if fault.commit:
                    self._dispatch(request)
                return self._finish(_fault_reply(fault), rate_headers)
            case _:  # DELAY was served before the lock was taken
                raise AssertionError(f"unhandled fault {fault}")

    @staticmethod
    def _finish(reply: _Reply, rate_headers: dict[str, str]) -> _Reply:
        # The fault's own headers win, e.g. X-RateLimit-Remaining: 0.
        reply.headers = {**rate_headers, **reply.headers}
        return reply

    def _spend_rate(self, path: str) -> tuple[dict[str, str], bool]:
        """Count one request; return the rate-limit headers and whether none was left."""
        now = int(time.time())
        if now >= self._rate_reset_at:
            self._rate_remaining = self._rate_limit
            self._rate_reset_at = now + _RATE_WINDOW_S
        exhausted = False
        # GitHub does not count /rate_limit against the limit.
        if path != "/rate_limit":
            exhausted = self._rate_remaining == 0
            self._rate_remaining = max(self._rate_remaining - 1, 0)
        headers = {
            "X-RateLimit-Limit": str(self._rate_limit),
            "X-RateLimit-Remaining": str(self._rate_remaining),
            "X-RateLimit-Reset": str(self._rate_reset_at),
            "X-RateLimit-Used": str(self._rate_limit - self._rate_remaining),
            "X-RateLimit-Resource": "core",
        }
        return headers, exhausted

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for injection in self._injections:
            if injection.method in ("*", method) and injection.path.fullmatch(path):
                if injection.remaining is not None:
                    injection.remaining -= 1
                    if injection.remaining == 0:
                        self._injections.remove(injection)
                return injection.fault
        return None

    def _dispatch(self, request: _Request) -> _Reply:
        try:
            self._authenticate(request.token)
            if request.rate_exhausted:
                raise _HTTPError(403, _PRIMARY_RATE_LIMIT_MESSAGE)
            return self._route(request.method, request.target, request.body)
        except _HTTPError as exc:
            return exc.reply

    def _authenticate(self, token: str | None) -> None:
        if token is None:
            raise _HTTPError(401, "Requires authentication")
        if token not in self._valid_tokens:
            raise _HTTPError(401, "Bad credentials")

    def _route(self, method: str, target: str, raw_body: bytes) -> _Reply:
        split = urllib.parse.urlsplit(target)
        # Split before unquoting so an encoded "/" in a label name stays in its segment.
        parts = [urllib.parse.unquote(p) for p in split.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, True).items()}
        verb = "GET" if method == "HEAD" else method

        match parts:
            case ["rate_limit"] if verb == "GET":
                core = self._rate_json()
                resources = {"core": core, "search": {**core, "resource": "search"}}
                resources["graphql"] = {**core, "resource": "graphql"}
                return _json_reply(200, {"resources": resources, "rate": core})
            case ["users", login] if verb == "GET":
                return _json_reply(200, self._user_json(login))
            case ["repos", owner, name, *rest]:
                repo = self._repos.get(f"{owner}/{name}".lower())
                if repo is None:
                    raise _HTTPError(404, "Not Found")
                return self._route_repo(repo, verb, rest, query, split.path, raw_body)
        raise _HTTPError(404, "Not Found")

    def _route_repo(
        self,
        repo: _Repo,
        verb: str,
        rest: list[str],
        query: dict[str, str],
        path: str,
        raw_body: bytes,
    ) -> _Reply:
        match rest, verb:
            case [], "GET":
                return _json_reply(200, self._repo_json(repo))
            case ["issues"], "GET":
                return self._list_issues(repo, query, path)
            case ["issues"], "POST":
                return self._post_issue(repo, _json_object(raw_body))
            case ["issues", number], "GET":
                return _json_reply(200, self._issue_json(repo, self._issue(repo, number)))
            case ["issues", number], "PATCH":
                return self._patch_issue(repo, self._issue(repo, number), _json_object(raw_body))
            case ["issues", number, "comments"], "GET":
                issue = self._issue(repo, number)
                since = _since(query)
                found = [c for c in issue.comments if since is None or c.updated_at >= since]
                return self._paginate(
                    found, query, path, lambda c: self._comment_json(repo, issue, c)
                )
            case ["issues", number, "comments"], "POST":
                issue = self._issue(repo, number)
                payload = _json_object(raw_body)
                text = payload.get("body")
                if not isinstance(text, str) or not text:
                    raise _HTTPError(422, 'Invalid request.\n\n"body" wasn\'t supplied.')
                comment = self._create_comment(issue, text)
                return _json_reply(201, self._comment_json(repo, issue, comment))
            case ["labels"], "GET":
                labels = [lab for _, lab in sorted(repo.labels.items())]
                return self._paginate(labels, query, path, lambda lab: self._label_json(repo, lab))
            case ["labels"], "POST":
                return self._post_label(repo, _json_object(raw_body))
            case ["labels", name], "GET":
                label = repo.labels.get(name.lower())
                if label is None:
                    raise _HTTPError(404, "Not Found")
                return _json_reply(200, self._label_json(repo, label))
        raise _HTTPError(404, "Not Found")

    def _issue(self, repo: _Repo, number: str) -> _Issue:
        issue = repo.issues.get(int(number)) if number.isdigit() else None
        if issue is None:
            raise _HTTPError(404, "Not Found")
        return issue

    def _list_issues(self, repo: _Repo, query: dict[str, str], path: str) -> _Reply:
        state = query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _invalid("Issue", "state")
        wanted = {n.strip().lower() for n in query.get("labels", "").split(",") if n.strip()}
        since = _since(query)
        sort = query.get("sort", "created")
        direction = query.get("direction", "desc")
        if sort not in ("created", "updated", "comments"):
            raise _invalid("Issue", "sort")
        if direction not in ("asc", "desc"):
            raise _invalid("Issue", "direction")

        def sort_key(issue: _Issue) -> tuple[Any, int]:
            primary: Any = {
                "created": issue.created_at,
                "updated": issue.updated_at,
                "comments": len(issue.comments),
            }[sort]
            return primary, issue.number

        found = [
            issue
            for issue in repo.issues.values()
            if (state == "all" or issue.state == state)
            and wanted <= {n.lower() for n in issue.labels}
            and (since is None or issue.updated_at >= since)
        ]
        found.sort(key=sort_key, reverse=direction == "desc")
        return self._paginate(found, query, path, lambda i: self._issue_json(repo, i))

    def _paginate(
        self,
        items: list[_T],
        query: dict[str, str],
        path: str,
        render: Callable[[_T], dict[str, Any]],
    ) -> _Reply:
        """Reply with one page of `items`, rendering only that page, and a Link header."""
        per_page = _int_param(query, "per_page", 30)
        per_page = 30 if per_page < 1 else min(per_page, 100)
        page = max(_int_param(query, "page", 1), 1)
        last = max(math.ceil(len(items) / per_page), 1)

        def link(to_page: int, rel: str) -> str:
            params = urllib.parse.urlencode({**query, "page": to_page})
            return f'<{self.url}{path}?{params}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        start = (page - 1) * per_page
        page_items = [render(item) for item in items[start : start + per_page]]
        return _json_reply(200, page_items, headers)

    def _post_issue(self, repo: _Repo, payload: dict[str, Any]) -> _Reply:
        title = payload.get("title")
        if not isinstance(title, str) or not title:
            raise _HTTPError(422, 'Invalid request.\n\n"title" wasn\'t supplied.')
        assignees = _names(payload.get("assignees"), "assignees")
        if isinstance(payload.get("assignee"), str):
            assignees.insert(0, payload["assignee"])
        issue = self._create_issue(
            repo,
            title,
            _optional_str(payload.get("body"), "body"),
            _names(payload.get("labels"), "labels"),
            assignees,
        )
        return _json_reply(201, self._issue_json(repo, issue))

    def _patch_issue(self, repo: _Repo, issue: _Issue, payload: dict[str, Any]) -> _Reply:
        state = payload.get("state", issue.state)
        reason = payload.get("state_reason")
        if state not in ("open", "closed"):
            raise _invalid("Issue", "state")
        if reason not in _STATE_REASONS:
            raise _invalid("Issue", "state_reason")
        if "title" in payload:
            title = payload["title"]
            if not isinstance(title, str) or not title:
                raise _invalid("Issue", "title")
            issue.title = title
        if "body" in payload:
            issue.body = _optional_str(payload["body"], "body")
        if "labels" in payload:
            names = _names(payload["labels"], "labels")
            issue.labels = [self._ensure_label(repo, n).name for n in dict.fromkeys(names)]
        if "assignees" in payload:
            issue.assignees = list(dict.fromkeys(_names(payload["assignees"], "assignees")))
        if "state" in payload or "state_reason" in payload:
            self._set_state(issue, state, reason)
        issue.updated_at = self._clock()
        return _json_reply(200, self._issue_json(repo, issue))

    def _post_label(self, repo: _Repo, payload: dict[str, Any]) -> _Reply:
        name = payload.get("name")
        color = payload.get("color", "ededed")
        if not isinstance(name, str) or not name:
            raise _HTTPError(422, 'Invalid request.\n\n"name" wasn\'t supplied.')
        if not isinstance(color, str) or not _LABEL_COLOR.fullmatch(color):
            raise _invalid("Label", "color")
        if name.lower() in repo.labels:
            raise _HTTPError(
                422,
                "Validation Failed",
                [{"resource": "Label", "code": "already_exists", "field": "name"}],
            )
        label = self._ensure_label(
            repo, name, color.lower(), _optional_str(payload.get("description"), "description")
        )
        return _json_reply(201, self._label_json(repo, label))


# --- request parsing helpers ------------------------------------------------------


def _token_from(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, credential = value.partition(" ")
            if scheme.lower() in ("token", "bearer") and credential:
                return credential.strip()
            return value
    return None


def _fault_reply(fault: Fault) -> _Reply:
    headers = dict(fault.headers)
    if fault.reset_in_s is not None:
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset"] = str(int(time.time()) + fault.reset_in_s)
    body = fault.body
    if body is None:
        body = _error_body(fault.code, HTTPStatus(fault.code).phrase)
    if isinstance(body, bytes | str):
        raw = body.encode() if isinstance(body, str) else body
        return _Reply(fault.code, raw, headers)
    return _json_reply(fault.code, body, headers)


def _invalid(resource: str, field_name: str) -> _HTTPError:
    return _HTTPError(
        422, "Validation Failed", [{"resource": resource, "code": "invalid", "field": field_name}]
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        raise _HTTPError(400, "Problems parsing JSON") from None
    if not isinstance(payload, dict):
        raise _HTTPError(400, "Problems parsing JSON")
    return payload


def _names(value: Any, field_name: str) -> list[str]:
    """Label or login names, given as strings or as objects with a `name`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("Issue", field_name)
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name:
            raise _invalid("Issue", field_name)
        names.append(name)
    return names


def _optional_str(value: Any, field_name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid("Issue", field_name)
    return value


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        return default


def _since(query: dict[str, str]) -> datetime | None:
    raw = query.get("since")
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _invalid("Issue", "since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- HTTP plumbing ----------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], fake: FakeGitHub) -> None:
        self.fake = fake
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock handler threads waiting on keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or vanish are part of the job; anything else is a bug.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            with self.fake._lock:
                self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like api.github.com
    # Headers and body go out in separate writes; with Nagle on, the body then waits
    # for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.fake._serve(self.command, self.path, list(self.headers.items()), body)
        if reply is None:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            self.send_header("X-OAuth-Scopes", "repo")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:  # the client gave up (timeout) before we answered
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # The request log lives in FakeGitHub.requests; stderr stays quiet.
        pass


# --- pytest -----------------------------------------------------------------------


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A started `FakeGitHub` knowing DEFAULT_REPO and DEFAULT_TOKEN; fails on its own bugs."""
    with FakeGitHub() as server:
        yield server
        assert server.errors == [], f"fakegithub raised internally: {server.errors!r}"
