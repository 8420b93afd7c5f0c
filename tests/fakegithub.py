"""An in-memory GitHub REST API on 127.0.0.1, with fault injection, for tests.

`FakeGitHub` serves the part of the API our sink reaches through PyGithub (repos,
issues, issue comments, labels, rate limit) and what the delivery KPIs read (commits,
compare, deployments and their statuses, workflows and runs, commit statuses) over
real HTTP, so the real client code is what gets exercised:
`Github(auth=Auth.Token(DEFAULT_TOKEN), base_url=server.url)`. Every 200 reply to a
GET carries a weak `ETag` of its body; `If-None-Match` gets a 304 that, as on GitHub,
does not spend the rate limit. State lives in memory, is seeded from Python
(`add_issue`, `add_commit`, `add_deployment`, `add_workflow_run`, ...) and inspected
from Python (`issues`, `comments`, `requests`, `request_count`, `tokens_seen`,
`leaks`). Faults are queued with `inject(method, path_regex, fault)` and built by the
functions below (`status`, `secondary_rate_limit`, `delay`, ...).

Register the `fake_github` fixture with `pytest_plugins = ["tests.fakegithub"]` in
`tests/conftest.py` (or in a test module).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import heapq
import itertools
import json
import math
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_COMMIT_STATES = ("error", "failure", "pending", "success")
_DEPLOYMENT_STATES = (
    "error", "failure", "inactive", "in_progress", "queued", "pending", "success",
)  # fmt: skip
_RUN_STATUSES = ("completed", "in_progress", "queued", "requested", "waiting", "pending")
_RUN_CONCLUSIONS = (
    "action_required", "cancelled", "failure", "neutral", "skipped", "stale",
    "startup_failure", "success", "timed_out",
)  # fmt: skip
_COMPARE_CAP = 250  # commits in a compare reply without page/per_page, like GitHub


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
    if_none_match: str | None = None


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
class _Commit:
    sha: str
    index: int  # creation order within the repo; breaks committer-date ties
    message: str
    parents: list[str]
    author: str | None  # login of the GitHub user, None for an unknown e-mail
    author_date: str  # rendered verbatim, e.g. with its +05:30 offset
    committer_date: str
    committer_at: datetime  # committer_date parsed, for ordering and since/until

    def order_key(self) -> tuple[float, int]:
        """Heap key: newest committer date first, then the later-added commit."""
        return -self.committer_at.timestamp(), -self.index


@dataclass
class _CommitStatus:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: datetime


@dataclass
class _DeploymentStatus:
    id: int
    state: str
    description: str
    environment_url: str
    log_url: str
    creator: str
    created_at: datetime


@dataclass
class _Deployment:
    id: int
    sha: str
    ref: str
    task: str
    environment: str
    description: str | None
    payload: dict[str, Any]
    creator: str
    created_at: datetime
    updated_at: datetime
    statuses: list[_DeploymentStatus] = field(default_factory=list)


@dataclass
class _Workflow:
    id: int
    path: str
    name: str
    created_at: datetime
    updated_at: datetime
    last_run_number: int = 0


@dataclass
class _WorkflowRun:
    id: int
    workflow_id: int
    name: str  # the workflow's name when the run was created
    head_sha: str
    head_branch: str
    event: str
    status: str
    conclusion: str | None
    run_number: int
    run_attempt: int
    display_title: str
    created_at: datetime
    updated_at: datetime
    run_started_at: datetime


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    created_at: datetime
    issues: dict[int, _Issue] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)  # keyed by lower-cased name
    commits: dict[str, _Commit] = field(default_factory=dict)  # keyed by sha
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha
    forgotten: set[str] = field(default_factory=set)  # shas gone as after a force-push + gc
    commit_seq: int = 0
    statuses: list[_CommitStatus] = field(default_factory=list)
    deployments: dict[int, _Deployment] = field(default_factory=dict)
    workflows: dict[int, _Workflow] = field(default_factory=dict)
    runs: dict[int, _WorkflowRun] = field(default_factory=dict)

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
    return None if moment is None else _stamp(moment)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _etag(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()}"'


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an `If-None-Match` value (one tag, a list, or `*`) names `etag`.

    Comparison is weak, as for GET: `W/"x"` and `"x"` match each other.
    """
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == opaque:
            return True
    return False


def _wall_clock() -> datetime:
    return datetime.now(UTC)


# --- server ---------------------------------------------------------------------


class FakeGitHub:
    """A GitHub REST API double on 127.0.0.1; start it with `with FakeGitHub() as server:`.

    Thread-safe: one lock guards state, faults and logs. `clock` stamps issues,
    comments and whatever is seeded without an explicit time (freeze it for
    deterministic `since`/`sort`); rate-limit resets use the wall clock because
    PyGithub compares them with its own.
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
        lazy: bool = False,
    ) -> Github:
        """A PyGithub client for this server, without PyGithub's request throttling.

        `auth` is a token (sent as `token X`), any `github.Auth` object, or None for no
        Authorization header. `retry=None` means no retries at all (PyGithub's own
        default is `github.GithubRetry.GithubRetry()`). `lazy=True` is how the sink
        builds its client. `close` closes the client.
        """
        gh = Github(
            auth=Auth.Token(auth) if isinstance(auth, str) else auth,
            base_url=self.url,
            timeout=timeout_s,
            retry=retry,
            per_page=per_page,
            lazy=lazy,  # as the sink: no GET before a PATCH
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

    def request_count(
        self,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
    ) -> int:
        """How many requests matched `method`, `path_prefix` and reply `status` (None: any).

        `status=304` counts the conditional GETs answered "Not Modified", which did not
        spend the rate limit; `status=200` the ones that did and got a body.
        """
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (status is None or r.status == status)
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

    def add_commit(
        self,
        repo: str = DEFAULT_REPO,
        *,
        message: str = "change",
        parents: Sequence[str] | None = None,
        author_date: datetime | str | None = None,
        committer_date: datetime | str | None = None,
        sha: str | None = None,
        branch: str | None = "main",
        author: str | None = None,
    ) -> str:
        """Create a commit directly (no HTTP, no log) and return its sha.

        `parents=None` means the current head of `branch` (none for its first commit);
        otherwise each parent is a sha or branch name the repo knows (two make a merge).
        Dates are aware datetimes (rendered `...Z` in UTC) or ISO-8601 strings with an
        offset, e.g. `"2026-11-20T09:15:00+05:30"`, rendered verbatim; `author_date`
        defaults to the clock and `committer_date` to `author_date`. `sha` defaults to a
        deterministic 40-hex string. `branch` (None: no branch) moves to the new commit.
        `author` is the GitHub login behind the commit (None: the `author` object is null).
        """
        with self._lock:
            r = self._repo_or_raise(repo)
            if parents is None:
                head = r.branches.get(branch) if branch is not None else None
                parent_shas = [head] if head is not None and head in r.commits else []
            else:
                parent_shas = [self._known_commit(r, ref).sha for ref in parents]
            r.commit_seq += 1
            if sha is None:
                seed = f"{r.full_name}\n{r.commit_seq}\n{message}".encode()
                sha = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
            sha = sha.lower()
            if not _FULL_SHA.fullmatch(sha):
                raise ValueError(f"sha must be 40 hex digits, got {sha!r}")
            if sha in r.commits:
                raise ValueError(f"commit {sha} already exists in {r.full_name}")
            authored = _git_date(self._clock() if author_date is None else author_date)
            committed = authored if committer_date is None else _git_date(committer_date)
            r.commits[sha] = _Commit(
                sha=sha,
                index=r.commit_seq,
                message=message,
                parents=parent_shas,
                author=author,
                author_date=authored[0],
                committer_date=committed[0],
                committer_at=committed[1],
            )
            r.forgotten.discard(sha)
            if branch is not None:
                r.branches[branch] = sha
            return sha

    def set_branch(self, repo: str, name: str, sha: str) -> None:
        """Point branch `name` at commit `sha` (a sha or branch name), creating the branch."""
        with self._lock:
            r = self._repo_or_raise(repo)
            r.branches[name] = self._known_commit(r, sha).sha

    def branch_head(self, repo: str, name: str) -> str:
        """The sha branch `name` points at (KeyError if there is no such branch)."""
        with self._lock:
            return self._repo_or_raise(repo).branches[name]

    def forget_commit(self, repo: str, sha: str) -> None:
        """Make commit `sha` vanish, as after a force-push and garbage collection.

        Every API reading it (commit, commits list, compare, commit statuses) answers 404;
        branches still pointing at it resolve to nothing. Its descendants keep their
        parent link, which history walks skip.
        """
        with self._lock:
            r = self._repo_or_raise(repo)
            sha = sha.lower()
            if sha not in r.commits:
                raise KeyError(f"unknown commit {sha!r} in {r.full_name}")
            del r.commits[sha]
            r.forgotten.add(sha)

    def add_commit_status(
        self,
        repo: str = DEFAULT_REPO,
        *,
        sha: str,
        state: str,
        context: str,
        description: str | None = "",
        target_url: str | None = None,
        created_at: datetime | None = None,
        creator: str | None = None,
    ) -> int:
        """Post a commit status directly (no HTTP, no log) and return its id.

        Like the endpoint, any 40-hex `sha` is accepted, known as a commit or not.
        `state` is one of error, failure, pending, success; `creator` defaults to the
        server's login and `created_at` to the clock.
        """
        if state not in _COMMIT_STATES:
            raise ValueError(f"state must be one of {_COMMIT_STATES}, got {state!r}")
        if not _FULL_SHA.fullmatch(sha.lower()):
            raise ValueError(f"sha must be 40 hex digits, got {sha!r}")
        with self._lock:
            r = self._repo_or_raise(repo)
            status = self._create_commit_status(
                r, sha.lower(), state, context, description, target_url, creator, created_at
            )
            return status.id

    def add_deployment(
        self,
        repo: str = DEFAULT_REPO,
        *,
        sha: str,
        environment: str = "production",
        ref: str = "main",
        created_at: datetime | None = None,
        task: str = "deploy",
        creator: str = "github-actions[bot]",
        description: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> int:
        """Create a deployment directly (no HTTP, no log) and return its id.

        `created_at` (and `updated_at`) default to the clock. `production_environment`
        is rendered true for the environment named "production".
        """
        with self._lock:
            r = self._repo_or_raise(repo)
            moment = _aware(created_at, "created_at") or self._clock()
            deployment = _Deployment(
                id=next(self._ids),
                sha=sha,
                ref=ref,
                task=task,
                environment=environment,
                description=description,
                payload=dict(payload or {}),
                creator=creator,
                created_at=moment,
                updated_at=moment,
            )
            r.deployments[deployment.id] = deployment
            return deployment.id

    def add_deployment_status(
        self,
        repo: str,
        deployment_id: int,
        state: str,
        *,
        created_at: datetime | None = None,
        description: str = "",
        environment_url: str | None = None,
        log_url: str | None = None,
        creator: str = "github-actions[bot]",
    ) -> int:
        """Add a status to deployment `deployment_id` directly and return the status id.

        `state` is one of error, failure, inactive, in_progress, queued, pending,
        success. The deployment's `updated_at` moves to the status's `created_at` (default:
        the clock), which changes the deployments list's body and so its ETag; with a
        frozen clock, advance it first or the list looks unchanged.
        """
        if state not in _DEPLOYMENT_STATES:
            raise ValueError(f"state must be one of {_DEPLOYMENT_STATES}, got {state!r}")
        with self._lock:
            r = self._repo_or_raise(repo)
            deployment = r.deployments[deployment_id]
            moment = _aware(created_at, "created_at") or self._clock()
            status = _DeploymentStatus(
                id=next(self._ids),
                state=state,
                description=description,
                environment_url=environment_url or "",
                log_url=log_url or "",
                creator=creator,
                created_at=moment,
            )
            deployment.statuses.append(status)
            deployment.updated_at = max(deployment.updated_at, moment)
            return status.id

    def add_workflow(self, repo: str, path: str, name: str | None = None) -> int:
        """Declare the workflow in file `path` (name: the file stem) and return its id.

        Optional: `add_workflow_run` declares unknown workflows itself. ValueError if
        the workflow exists (rename it with `rename_workflow`).
        """
        with self._lock:
            r = self._repo_or_raise(repo)
            if self._find_workflow(r, path) is not None:
                raise ValueError(f"workflow {path!r} already exists in {r.full_name}")
            return self._create_workflow(r, path, name, self._clock()).id

    def rename_workflow(self, repo: str, path: str, new_name: str) -> None:
        """Change the display name of the workflow in `path` (its `name:` key).

        Runs created afterwards carry `new_name`; older runs keep the name they ran
        under. The workflow's `id` and `path` stay the same.
        """
        with self._lock:
            r = self._repo_or_raise(repo)
            workflow = self._find_workflow(r, path)
            if workflow is None:
                raise KeyError(f"unknown workflow {path!r} in {r.full_name}")
            workflow.name = new_name
            workflow.updated_at = max(workflow.updated_at, self._clock())

    def add_workflow_run(
        self,
        repo: str = DEFAULT_REPO,
        *,
        path: str = ".github/workflows/ci.yml",
        head_sha: str,
        conclusion: str | None = "success",
        status: str = "completed",
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
        event: str = "push",
        head_branch: str = "main",
        name: str | None = None,
    ) -> int:
        """Record a run of the workflow in `path` directly (no HTTP, no log); return its id.

        An unknown workflow is declared (named `name` or the file stem); a `name`
        differing from a known workflow's renames it first, as a changed `name:` key
        would. `conclusion` is kept only when `status` is "completed" (null otherwise;
        finish such a run with `complete_workflow_run`). `created_at` defaults to the
        clock, `updated_at` to `created_at`; `run_started_at` is `created_at`.
        """
        if status not in _RUN_STATUSES:
            raise ValueError(f"status must be one of {_RUN_STATUSES}, got {status!r}")
        if status == "completed" and conclusion not in _RUN_CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {_RUN_CONCLUSIONS}, got {conclusion!r}")
        with self._lock:
            r = self._repo_or_raise(repo)
            created = _aware(created_at, "created_at") or self._clock()
            updated = _aware(updated_at, "updated_at") or created
            workflow = self._find_workflow(r, path)
            if workflow is None:
                workflow = self._create_workflow(r, path, name, created)
            elif name is not None and name != workflow.name:
                workflow.name = name
                workflow.updated_at = max(workflow.updated_at, created)
            workflow.last_run_number += 1
            commit = r.commits.get(head_sha.lower())
            run = _WorkflowRun(
                id=next(self._ids),
                workflow_id=workflow.id,
                name=workflow.name,
                head_sha=head_sha,
                head_branch=head_branch,
                event=event,
                status=status,
                conclusion=conclusion if status == "completed" else None,
                run_number=workflow.last_run_number,
                run_attempt=1,
                display_title=workflow.name if commit is None else commit.message.split("\n")[0],
                created_at=created,
                updated_at=updated,
                run_started_at=created,
            )
            r.runs[run.id] = run
            return run.id

    def rerun_workflow_run(
        self,
        repo: str,
        run_id: int,
        *,
        conclusion: str | None,
        at: datetime | None = None,
    ) -> None:
        """Re-run run `run_id`: same id, `run_attempt` + 1, `created_at` unchanged.

        `run_started_at` and `updated_at` become `at` (default: the clock). With a
        `conclusion` the attempt is completed; with None it is in_progress (finish it
        with `complete_workflow_run`).
        """
        if conclusion is not None and conclusion not in _RUN_CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {_RUN_CONCLUSIONS}, got {conclusion!r}")
        with self._lock:
            run = self._repo_or_raise(repo).runs[run_id]
            moment = _aware(at, "at") or self._clock()
            run.run_attempt += 1
            run.status = "in_progress" if conclusion is None else "completed"
            run.conclusion = conclusion
            run.run_started_at = moment
            run.updated_at = moment

    def complete_workflow_run(
        self, repo: str, run_id: int, conclusion: str, at: datetime | None = None
    ) -> None:
        """Finish run `run_id` (queued or in progress) with `conclusion` at `at` (default: now)."""
        if conclusion not in _RUN_CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {_RUN_CONCLUSIONS}, got {conclusion!r}")
        with self._lock:
            run = self._repo_or_raise(repo).runs[run_id]
            if run.status == "completed":
                raise ValueError(f"run {run_id} is already completed")
            run.status = "completed"
            run.conclusion = conclusion
            run.updated_at = _aware(at, "at") or self._clock()

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
        """Forget all repo content, faults, logs and rate-limit use; keep port and clients."""
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

    def _resolve(self, repo: _Repo, ref: str) -> _Commit | None:
        """The commit a branch name, full sha or unique abbreviated sha names, if any."""
        name = ref.removeprefix("refs/heads/")
        if name in repo.branches:
            return repo.commits.get(repo.branches[name])
        sha = ref.lower()
        if sha in repo.commits:
            return repo.commits[sha]
        if _SHORT_SHA.fullmatch(sha):
            found = [c for full, c in repo.commits.items() if full.startswith(sha)]
            if len(found) == 1:
                return found[0]
        return None

    def _known_commit(self, repo: _Repo, ref: str) -> _Commit:
        commit = self._resolve(repo, ref)
        if commit is None:
            raise ValueError(f"no commit {ref!r} in {repo.full_name}")
        return commit

    def _commit_or_404(self, repo: _Repo, ref: str) -> _Commit:
        commit = self._resolve(repo, ref)
        if commit is None:
            raise _HTTPError(404, f"No commit found for SHA: {ref}")
        return commit

    def _ancestors(self, repo: _Repo, commit: _Commit) -> set[str]:
        """`commit` and every known commit reachable through parents (forgotten ones cut)."""
        seen: set[str] = set()
        stack = [commit.sha]
        while stack:
            sha = stack.pop()
            if sha in seen or sha not in repo.commits:
                continue
            seen.add(sha)
            stack.extend(repo.commits[sha].parents)
        return seen

    def _walk(self, repo: _Repo, head: _Commit, exclude: set[str] | None = None) -> list[_Commit]:
        """Commits reachable from `head` but not in `exclude`, newest first, like `git log`.

        A priority walk by committer date (ties: the later-added commit first), so a
        child always precedes the parent it was added after.
        """
        exclude = exclude or set()
        if head.sha in exclude:
            return []
        heap = [(head.order_key(), head.sha)]
        queued = {head.sha}
        found = []
        while heap:
            _, sha = heapq.heappop(heap)
            commit = repo.commits[sha]
            found.append(commit)
            for parent_sha in commit.parents:
                parent = repo.commits.get(parent_sha)
                if parent is not None and parent_sha not in queued and parent_sha not in exclude:
                    queued.add(parent_sha)
                    heapq.heappush(heap, (parent.order_key(), parent_sha))
        return found

    def _find_workflow(self, repo: _Repo, key: str) -> _Workflow | None:
        """A workflow by id, file path or file name (e.g. `ci.yml`)."""
        if key.isdigit():
            return repo.workflows.get(int(key))
        for workflow in repo.workflows.values():
            if key in (workflow.path, workflow.path.rsplit("/", 1)[-1]):
                return workflow
        return None

    def _create_workflow(
        self, repo: _Repo, path: str, name: str | None, created_at: datetime
    ) -> _Workflow:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        workflow = _Workflow(next(self._ids), path, name or stem, created_at, created_at)
        repo.workflows[workflow.id] = workflow
        return workflow

    def _create_commit_status(
        self,
        repo: _Repo,
        sha: str,
        state: str,
        context: str,
        description: str | None,
        target_url: str | None,
        creator: str | None = None,
        created_at: datetime | None = None,
    ) -> _CommitStatus:
        status = _CommitStatus(
            id=next(self._ids),
            sha=sha,
            state=state,
            context=context,
            description=description,
            target_url=target_url,
            creator=creator or self._login,
            created_at=_aware(created_at, "created_at") or self._clock(),
        )
        repo.statuses.append(status)
        return status

    # internals: rendering

    def _user_json(self, login: str, kind: str | None = None) -> dict[str, Any]:
        if kind is None:
            kind = "Bot" if login.endswith("[bot]") else "User"
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

    def _mini_repo_json(self, repo: _Repo) -> dict[str, Any]:
        """The minimal repository object that runs and combined statuses embed."""
        return {
            "id": repo.id,
            "node_id": f"R_fake{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(repo.owner, "Organization"),
            "html_url": f"{self.url}/{repo.full_name}",
            "url": f"{self.url}/repos/{repo.full_name}",
        }

    def _commit_json(self, repo: _Repo, commit: _Commit, *, detail: bool = False) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        user = None if commit.author is None else self._user_json(commit.author)
        name = commit.author or "A. Developer"
        email = (
            "developer@example.com"
            if commit.author is None
            else f"{commit.author}@users.noreply.github.com"
        )
        tree = hashlib.sha1(f"tree {commit.sha}".encode(), usedforsecurity=False).hexdigest()
        body: dict[str, Any] = {
            "sha": commit.sha,
            "node_id": f"C_fake{commit.sha[:16]}",
            "commit": {
                "author": {"name": name, "email": email, "date": commit.author_date},
                "committer": {"name": name, "email": email, "date": commit.committer_date},
                "message": commit.message,
                "tree": {"sha": tree, "url": f"{api}/git/trees/{tree}"},
                "url": f"{api}/git/commits/{commit.sha}",
                "comment_count": 0,
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
            "url": f"{api}/commits/{commit.sha}",
            "html_url": f"{self.url}/{repo.full_name}/commit/{commit.sha}",
            "comments_url": f"{api}/commits/{commit.sha}/comments",
            "author": user,
            "committer": user,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{api}/commits/{parent}",
                    "html_url": f"{self.url}/{repo.full_name}/commit/{parent}",
                }
                for parent in commit.parents
            ],
        }
        if detail:
            body["stats"] = {"total": 0, "additions": 0, "deletions": 0}
            body["files"] = []
        return body

    def _commit_status_json(
        self, repo: _Repo, status: _CommitStatus, *, creator: bool = True
    ) -> dict[str, Any]:
        user = self._user_json(status.creator)
        body: dict[str, Any] = {
            "url": f"{self.url}/repos/{repo.full_name}/statuses/{status.sha}",
            "avatar_url": user["avatar_url"],
            "id": status.id,
            "node_id": f"SC_fake{status.id}",
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": _stamp(status.created_at),
            "updated_at": _stamp(status.created_at),
        }
        if creator:  # the combined status's entries have none, like GitHub's
            body["creator"] = user
        return body

    def _deployment_json(self, repo: _Repo, deployment: _Deployment) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        url = f"{api}/deployments/{deployment.id}"
        return {
            "url": url,
            "id": deployment.id,
            "node_id": f"DE_fake{deployment.id}",
            "sha": deployment.sha,
            "ref": deployment.ref,
            "task": deployment.task,
            "payload": deployment.payload,
            "original_environment": deployment.environment,
            "environment": deployment.environment,
            "description": deployment.description,
            "creator": self._user_json(deployment.creator),
            "created_at": _stamp(deployment.created_at),
            "updated_at": _stamp(deployment.updated_at),
            "statuses_url": f"{url}/statuses",
            "repository_url": api,
            "transient_environment": False,
            "production_environment": deployment.environment == "production",
            "performed_via_github_app": None,
        }

    def _deployment_status_json(
        self, repo: _Repo, deployment: _Deployment, status: _DeploymentStatus
    ) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        deployment_url = f"{api}/deployments/{deployment.id}"
        return {
            "url": f"{deployment_url}/statuses/{status.id}",
            "id": status.id,
            "node_id": f"DES_fake{status.id}",
            "state": status.state,
            "creator": self._user_json(status.creator),
            "description": status.description,
            "environment": deployment.environment,
            "target_url": status.log_url,
            "created_at": _stamp(status.created_at),
            "updated_at": _stamp(status.created_at),
            "deployment_url": deployment_url,
            "repository_url": api,
            "environment_url": status.environment_url,
            "log_url": status.log_url,
            "performed_via_github_app": None,
        }

    def _workflow_json(self, repo: _Repo, workflow: _Workflow) -> dict[str, Any]:
        badge_name = urllib.parse.quote(workflow.name, safe="")
        return {
            "id": workflow.id,
            "node_id": f"W_fake{workflow.id}",
            "name": workflow.name,
            "path": workflow.path,
            "state": "active",
            "created_at": _stamp(workflow.created_at),
            "updated_at": _stamp(workflow.updated_at),
            "url": f"{self.url}/repos/{repo.full_name}/actions/workflows/{workflow.id}",
            "html_url": f"{self.url}/{repo.full_name}/blob/main/{workflow.path}",
            "badge_url": f"{self.url}/{repo.full_name}/workflows/{badge_name}/badge.svg",
        }

    def _run_json(self, repo: _Repo, run: _WorkflowRun) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        url = f"{api}/actions/runs/{run.id}"
        workflow = repo.workflows[run.workflow_id]
        commit = repo.commits.get(run.head_sha.lower())
        head_commit = None
        if commit is not None:
            rendered = self._commit_json(repo, commit)["commit"]
            head_commit = {
                "id": commit.sha,
                "tree_id": rendered["tree"]["sha"],
                "message": commit.message,
                "timestamp": commit.committer_date,
                "author": {k: rendered["author"][k] for k in ("name", "email")},
                "committer": {k: rendered["committer"][k] for k in ("name", "email")},
            }
        actor = self._user_json(self._login)
        mini_repo = self._mini_repo_json(repo)
        return {
            "id": run.id,
            "name": run.name,
            "node_id": f"WFR_fake{run.id}",
            "check_suite_id": run.id + 1,
            "check_suite_node_id": f"CS_fake{run.id + 1}",
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": workflow.path,
            "display_title": run.display_title,
            "run_number": run.run_number,
            "run_attempt": run.run_attempt,
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": workflow.id,
            "url": url,
            "html_url": f"{self.url}/{repo.full_name}/actions/runs/{run.id}",
            "pull_requests": [],
            "created_at": _stamp(run.created_at),
            "updated_at": _stamp(run.updated_at),
            "run_started_at": _stamp(run.run_started_at),
            "actor": actor,
            "triggering_actor": actor,
            "jobs_url": f"{url}/jobs",
            "logs_url": f"{url}/logs",
            "check_suite_url": f"{api}/check-suites/{run.id + 1}",
            "artifacts_url": f"{url}/artifacts",
            "cancel_url": f"{url}/cancel",
            "rerun_url": f"{url}/rerun",
            "previous_attempt_url": (
                None if run.run_attempt == 1 else f"{url}/attempts/{run.run_attempt - 1}"
            ),
            "workflow_url": f"{api}/actions/workflows/{workflow.id}",
            "head_commit": head_commit,
            "repository": mini_repo,
            "head_repository": mini_repo,
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
        if_none_match = next((v for k, v in headers if k.lower() == "if-none-match"), None)
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
                request = _Request(method, target, body, token, exhausted, if_none_match)
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
            reply = self._dispatch(request)
            if request.method in ("GET", "HEAD") and reply.status == 200:
                tag = _etag(reply.body)  # of the body only, not of the Link header
                reply.headers["ETag"] = tag
                if request.if_none_match is not None and _etag_matches(request.if_none_match, tag):
                    reply = _Reply(304, b"", {"ETag": tag})
                    rate_headers = self._refund_rate(request, rate_headers)
            return self._finish(reply, rate_headers)
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

    def _refund_rate(self, request: _Request, rate_headers: dict[str, str]) -> dict[str, str]:
        """Give back what a request answered 304 spent; as on GitHub, a 304 is free."""
        if request.rate_exhausted or urllib.parse.urlsplit(request.target).path == "/rate_limit":
            return rate_headers  # nothing was spent
        self._rate_remaining = min(self._rate_remaining + 1, self._rate_limit)
        remaining = int(rate_headers["X-RateLimit-Remaining"]) + 1
        return {
            **rate_headers,
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Used": str(self._rate_limit - remaining),
        }

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
            # Refs may hold "/" (feature/x): PyGithub quotes them keeping it, so they
            # arrive as several segments.
            case ["commits"], "GET":
                return self._list_commits(repo, query, path)
            case ["commits", *ref, "statuses"], "GET" if ref:
                return self._list_commit_statuses(repo, "/".join(ref), query, path)
            case ["statuses", *ref], "GET" if ref:  # the legacy alias PyGithub lists with
                return self._list_commit_statuses(repo, "/".join(ref), query, path)
            case ["commits", *ref, "status"], "GET" if ref:
                return self._combined_status(repo, self._status_sha(repo, "/".join(ref)))
            case ["commits", *ref], "GET" if ref:
                commit = self._commit_or_404(repo, "/".join(ref))
                return _json_reply(200, self._commit_json(repo, commit, detail=True))
            case ["compare", *basehead], "GET" if basehead:
                return self._compare(repo, "/".join(basehead), query, path)
            case ["statuses", sha], "POST":
                return self._post_commit_status(repo, sha, _json_object(raw_body))
            case ["deployments"], "GET":
                return self._list_deployments(repo, query, path)
            case ["deployments", deployment_id], "GET":
                deployment = self._deployment(repo, deployment_id)
                return _json_reply(200, self._deployment_json(repo, deployment))
            case ["deployments", deployment_id, "statuses"], "GET":
                deployment = self._deployment(repo, deployment_id)
                statuses = sorted(
                    deployment.statuses, key=lambda s: (s.created_at, s.id), reverse=True
                )
                return self._paginate(
                    statuses,
                    query,
                    path,
                    lambda s: self._deployment_status_json(repo, deployment, s),
                )
            case ["deployments", deployment_id, "statuses", status_id], "GET":
                deployment = self._deployment(repo, deployment_id)
                for status in deployment.statuses:
                    if str(status.id) == status_id:
                        return _json_reply(
                            200, self._deployment_status_json(repo, deployment, status)
                        )
                raise _HTTPError(404, "Not Found")
            case ["actions", "workflows"], "GET":
                workflows = [w for _, w in sorted(repo.workflows.items())]
                return self._paginate(
                    workflows,
                    query,
                    path,
                    lambda w: self._workflow_json(repo, w),
                    wrap=lambda page: {"total_count": len(workflows), "workflows": page},
                )
            case ["actions", "workflows", workflow_id], "GET":
                workflow = self._workflow(repo, workflow_id)
                return _json_reply(200, self._workflow_json(repo, workflow))
            case ["actions", "workflows", workflow_id, "runs"], "GET":
                workflow = self._workflow(repo, workflow_id)
                return self._list_runs(repo, query, path, workflow)
            case ["actions", "runs"], "GET":
                return self._list_runs(repo, query, path, None)
            case ["actions", "runs", run_id], "GET":
                run = repo.runs.get(int(run_id)) if run_id.isdigit() else None
                if run is None:
                    raise _HTTPError(404, "Not Found")
                return _json_reply(200, self._run_json(repo, run))
        raise _HTTPError(404, "Not Found")

    def _deployment(self, repo: _Repo, deployment_id: str) -> _Deployment:
        found = repo.deployments.get(int(deployment_id)) if deployment_id.isdigit() else None
        if found is None:
            raise _HTTPError(404, "Not Found")
        return found

    def _workflow(self, repo: _Repo, workflow_id: str) -> _Workflow:
        found = self._find_workflow(repo, workflow_id)
        if found is None:
            raise _HTTPError(404, "Not Found")
        return found

    def _status_sha(self, repo: _Repo, ref: str) -> str:
        """The sha whose commit statuses `ref` reads: a known commit, or any 40-hex sha."""
        commit = self._resolve(repo, ref)
        if commit is not None:
            return commit.sha
        sha = ref.lower()
        if _FULL_SHA.fullmatch(sha) and sha not in repo.forgotten:
            return sha
        raise _HTTPError(404, f"No commit found for SHA: {ref}")

    def _list_commit_statuses(
        self, repo: _Repo, ref: str, query: dict[str, str], path: str
    ) -> _Reply:
        sha = self._status_sha(repo, ref)
        found = sorted(
            (s for s in repo.statuses if s.sha == sha),
            key=lambda s: (s.created_at, s.id),
            reverse=True,
        )
        return self._paginate(found, query, path, lambda s: self._commit_status_json(repo, s))

    def _list_commits(self, repo: _Repo, query: dict[str, str], path: str) -> _Reply:
        ref = query.get("sha") or "main"
        if not repo.commits:
            raise _HTTPError(409, "Git Repository is empty.")
        head = self._commit_or_404(repo, ref)
        since = _iso_param(query, "since", "Commit")
        until = _iso_param(query, "until", "Commit")
        found = [
            c
            for c in self._walk(repo, head)
            if (since is None or c.committer_at >= since)
            and (until is None or c.committer_at <= until)
        ]
        return self._paginate(found, query, path, lambda c: self._commit_json(repo, c))

    def _compare(self, repo: _Repo, basehead: str, query: dict[str, str], path: str) -> _Reply:
        base_ref, sep, head_ref = basehead.partition("...")
        if not sep:
            base_ref, sep, head_ref = basehead.partition("..")
        base = self._resolve(repo, base_ref) if sep and base_ref else None
        head = self._resolve(repo, head_ref) if sep and head_ref else None
        if base is None or head is None:
            raise _HTTPError(404, "Not Found")
        base_reach = self._ancestors(repo, base)
        head_reach = self._ancestors(repo, head)
        common = base_reach & head_reach
        if not common:
            raise _HTTPError(404, f"No common ancestor between {base_ref} and {head_ref}.")
        # Ancestors of a common commit are common, so the best merge bases are the
        # common commits that are no common commit's parent.
        parents = {p for sha in common for p in repo.commits[sha].parents}
        merge_base = max(
            (repo.commits[sha] for sha in common - parents),
            key=lambda c: (c.committer_at, c.index),
        )
        ahead = len(head_reach - base_reach)
        behind = len(base_reach - head_reach)
        status = (
            ("identical" if not ahead else "ahead")
            if not behind
            else ("behind" if not ahead else "diverged")
        )
        commits = self._walk(repo, head, base_reach)[::-1]  # oldest first, like GitHub
        html = f"{self.url}/{repo.full_name}/compare/{basehead}"
        owner = repo.owner
        summary: dict[str, Any] = {
            "url": f"{self.url}{path}",
            "html_url": html,
            "permalink_url": (
                f"{self.url}/{repo.full_name}/compare/"
                f"{owner}:{base.sha[:7]}...{owner}:{head.sha[:7]}"
            ),
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "base_commit": self._commit_json(repo, base),
            "merge_base_commit": self._commit_json(repo, merge_base),
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "total_commits": len(commits),
        }

        def render(commit: _Commit) -> dict[str, Any]:
            return self._commit_json(repo, commit)

        if "page" in query or "per_page" in query:
            # Paginated, each page starts with its earliest commit. GitHub's own page
            # size here is 250 by default and up to 1000 (as PyGithub documents).
            return self._paginate(
                commits,
                query,
                path,
                render,
                wrap=lambda page: {**summary, "commits": page, "files": []},
                default_per_page=_COMPARE_CAP,
                max_per_page=1000,
            )
        # Unpaginated, GitHub caps the list at 250 commits and the last one is the most
        # recent of the whole comparison: the newest 250, oldest first.
        shown = [render(c) for c in commits[-_COMPARE_CAP:]]
        return _json_reply(200, {**summary, "commits": shown, "files": []})

    def _post_commit_status(self, repo: _Repo, sha: str, payload: dict[str, Any]) -> _Reply:
        # Lenient: GitHub needs a known commit; any 40-hex sha not forgotten will do here.
        if not _FULL_SHA.fullmatch(sha.lower()) or sha.lower() in repo.forgotten:
            raise _HTTPError(422, f"No commit found for SHA: {sha}")
        state = payload.get("state")
        if state not in _COMMIT_STATES:
            raise _invalid("Status", "state")
        context = payload.get("context", "default")
        if not isinstance(context, str) or not context:
            raise _invalid("Status", "context")
        status = self._create_commit_status(
            repo,
            sha.lower(),
            state,
            context,
            _optional_str(payload.get("description"), "description", "Status"),
            _optional_str(payload.get("target_url"), "target_url", "Status"),
        )
        return _json_reply(201, self._commit_status_json(repo, status))

    def _combined_status(self, repo: _Repo, sha: str) -> _Reply:
        latest: dict[str, _CommitStatus] = {}
        for status in sorted(repo.statuses, key=lambda s: (s.created_at, s.id)):
            if status.sha == sha:
                latest[status.context] = status
        chosen = sorted(latest.values(), key=lambda s: (s.created_at, s.id), reverse=True)
        states = {s.state for s in chosen}
        if states & {"error", "failure"}:
            state = "failure"
        elif not chosen or "pending" in states:
            state = "pending"
        else:
            state = "success"
        api = f"{self.url}/repos/{repo.full_name}"
        body = {
            "state": state,
            "statuses": [self._commit_status_json(repo, s, creator=False) for s in chosen],
            "sha": sha,
            "total_count": len(chosen),
            "repository": self._mini_repo_json(repo),
            "commit_url": f"{api}/commits/{sha}",
            "url": f"{api}/commits/{sha}/status",
        }
        return _json_reply(200, body)

    def _list_deployments(self, repo: _Repo, query: dict[str, str], path: str) -> _Reply:
        def wanted(deployment: _Deployment) -> bool:
            return all(
                not query.get(key) or query[key] == getattr(deployment, key)
                for key in ("sha", "ref", "task", "environment")
            )

        found = sorted(
            (d for d in repo.deployments.values() if wanted(d)),
            key=lambda d: (d.created_at, d.id),
            reverse=True,
        )
        return self._paginate(found, query, path, lambda d: self._deployment_json(repo, d))

    def _list_runs(
        self,
        repo: _Repo,
        query: dict[str, str],
        path: str,
        workflow: _Workflow | None,
    ) -> _Reply:
        status = query.get("status") or None
        if status is not None and status not in _RUN_STATUSES + _RUN_CONCLUSIONS:
            raise _invalid("WorkflowRun", "status")
        created = _created_range(query["created"]) if query.get("created") else None

        def wanted(run: _WorkflowRun) -> bool:
            if workflow is not None and run.workflow_id != workflow.id:
                return False
            if status in _RUN_CONCLUSIONS and run.conclusion != status:
                return False
            if status in _RUN_STATUSES and run.status != status:
                return False
            for key, value in (("branch", run.head_branch), ("event", run.event)):
                if query.get(key) and query[key] != value:
                    return False
            if query.get("head_sha") and query["head_sha"].lower() != run.head_sha.lower():
                return False
            if created is not None:
                lo, hi = created
                moment = run.created_at.replace(microsecond=0)
                return (lo is None or moment >= lo) and (hi is None or moment < hi)
            return True

        found = sorted(
            (run for run in repo.runs.values() if wanted(run)),
            key=lambda run: (run.created_at, run.id),
            reverse=True,
        )
        return self._paginate(
            found,
            query,
            path,
            lambda run: self._run_json(repo, run),
            wrap=lambda page: {"total_count": len(found), "workflow_runs": page},
        )

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
        *,
        wrap: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        default_per_page: int = 30,
        max_per_page: int = 100,
    ) -> _Reply:
        """Reply with one page of `items`, rendering only that page, and a Link header.

        The body is the page as a list, or `wrap(page)` for endpoints whose body is an
        object around the list, e.g. `{"total_count": n, "workflow_runs": [...]}`.
        """
        per_page = _int_param(query, "per_page", default_per_page)
        per_page = default_per_page if per_page < 1 else min(per_page, max_per_page)
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
        return _json_reply(200, page_items if wrap is None else wrap(page_items), headers)

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


def _optional_str(value: Any, field_name: str, resource: str = "Issue") -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(resource, field_name)
    return value


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        return default


def _since(query: dict[str, str]) -> datetime | None:
    return _iso_param(query, "since", "Issue")


def _iso_param(query: dict[str, str], name: str, resource: str) -> datetime | None:
    """An ISO-8601 query parameter (UTC when it has no offset), or a 422."""
    raw = query.get(name)
    if not raw:
        return None
    try:
        # A "+" left unencoded in a query string arrives as a space.
        moment = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise _invalid(resource, name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _created_range(raw: str) -> tuple[datetime | None, datetime | None]:
    """GitHub's date-range syntax as a half-open [low, high) UTC interval (None: open).

    Accepts `>=X`, `>X`, `<=X`, `<X`, `X..Y` (either side may be `*`) and a bare `X`;
    a date X stands for its whole UTC day, a date-time for its second.
    """
    text = raw.strip()
    try:
        if ".." in text:
            low, _, high = text.partition("..")
            return (
                None if low.strip() == "*" else _span(low)[0],
                None if high.strip() == "*" else _span(high)[1],
            )
        for op in (">=", "<=", ">", "<"):
            if text.startswith(op):
                start, end = _span(text[len(op) :])
                return {
                    ">=": (start, None),
                    ">": (end, None),
                    "<=": (None, end),
                    "<": (None, start),
                }[op]
        return _span(text)
    except ValueError:
        raise _invalid("WorkflowRun", "created") from None


def _span(text: str) -> tuple[datetime, datetime]:
    text = text.strip().replace(" ", "+")
    if _DAY.fullmatch(text):
        start = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    start = moment.replace(microsecond=0)
    return start, start + timedelta(seconds=1)


def _git_date(value: datetime | str) -> tuple[str, datetime]:
    """A commit date as (rendered, parsed): datetimes go to UTC `Z`, strings verbatim."""
    if isinstance(value, datetime):
        moment = _aware(value, "date")
        assert moment is not None
        return _stamp(moment), moment.replace(microsecond=0)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"a commit date needs an offset, got {value!r}")
    return value, parsed


def _aware(moment: datetime | None, name: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment


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
