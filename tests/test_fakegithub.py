"""Pins tests/fakegithub.py, driven through PyGithub so the real client code is exercised."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from github import (
    Auth,
    BadCredentialsException,
    GithubException,
    RateLimitExceededException,
    UnknownObjectException,
)
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubRetry import GithubRetry
from github.Repository import Repository

from tests.fakegithub import (
    DEFAULT_REPO,
    DEFAULT_TOKEN,
    FakeGitHub,
    Fault,
    cut_after_commit,
    cut_before_commit,
    delay,
    malformed_json,
    primary_rate_limit,
    redirect,
    secondary_rate_limit,
    status,
    too_many_requests,
)

# Re-exported so pytest finds the fixture here; tests/conftest.py may instead register
# the module with `pytest_plugins = ["tests.fakegithub"]` (a test module cannot: pytest
# would warn that the already-imported module cannot be assertion-rewritten).

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock starting at T0."""
    return FrozenClock()


@pytest.fixture
def clocked_github(clock: FrozenClock) -> Iterator[FakeGitHub]:
    """A FakeGitHub whose issue timestamps come from `clock`."""
    with FakeGitHub(clock=clock) as server:
        yield server
        assert server.errors == []


@pytest.fixture
def repo(fake_github: FakeGitHub) -> Repository:
    """DEFAULT_REPO through a non-retrying PyGithub client."""
    return fake_github.client().get_repo(DEFAULT_REPO)


def statuses(server: FakeGitHub) -> list[int]:
    return [r.status for r in server.requests]


# --- issues -----------------------------------------------------------------------


def test_issue_lifecycle_transcript(fake_github: FakeGitHub, repo: Repository) -> None:
    """create -> edit -> close as not_planned -> reopen, as PyGithub and the server see it."""
    fake_github.add_label(DEFAULT_REPO, "incident", "b60205", "an incident")
    issue = repo.create_issue("db down", body="probe failed", labels=["incident", "sev: high"])
    transcript = [(issue.state, issue.state_reason, sorted(lab.name for lab in issue.labels))]

    issue.edit(title="db down (3 checks)", labels=["incident"], assignees=["alice"])
    transcript.append((issue.state, issue.state_reason, [lab.name for lab in issue.labels]))
    issue.edit(state="closed", state_reason="not_planned")
    transcript.append((issue.state, issue.state_reason, [lab.name for lab in issue.labels]))
    closed_at = issue.closed_at
    issue.edit(state="open")
    transcript.append((issue.state, issue.state_reason, [lab.name for lab in issue.labels]))

    assert transcript == [
        ("open", None, ["incident", "sev: high"]),
        ("open", None, ["incident"]),
        ("closed", "not_planned", ["incident"]),
        ("open", "reopened", ["incident"]),
    ]
    assert closed_at is not None
    assert issue.closed_at is None
    assert [a.login for a in issue.assignees] == ["alice"]
    assert issue.html_url == f"{fake_github.url}/acme/web/issues/1"
    assert issue.comments_url == f"{fake_github.url}/repos/acme/web/issues/1/comments"
    [stored] = fake_github.issues(DEFAULT_REPO)
    assert (stored["number"], stored["title"], stored["body"]) == (
        1,
        "db down (3 checks)",
        "probe failed",
    )
    assert repo.get_issue(1).title == "db down (3 checks)"


def test_unknown_labels_are_created_like_github(fake_github: FakeGitHub, repo: Repository) -> None:
    """Creating an issue with unknown labels creates them (grey); known ones keep their color."""
    fake_github.add_label(DEFAULT_REPO, "incident", "b60205")
    repo.create_issue("x", labels=["INCIDENT", "monitor"])
    labels = {lab["name"]: lab["color"] for lab in fake_github.labels(DEFAULT_REPO)}
    assert labels == {"incident": "b60205", "monitor": "ededed"}
    assert [lab["name"] for lab in fake_github.issues()[0]["labels"]] == ["incident", "monitor"]


@pytest.fixture
def four_issues(clocked_github: FakeGitHub, clock: FrozenClock) -> Repository:
    """#1 open [incident, sev1] updated last, #2 closed [incident], #3 open, #4 closed [both]."""
    seeds: list[dict[str, Any]] = [
        {"title": "a", "labels": ["incident", "sev1"]},
        {"title": "b", "labels": ["incident"], "state": "closed"},
        {"title": "c"},
        {"title": "d", "labels": ["incident", "sev1"], "state": "closed"},
    ]
    for seed in seeds:
        clocked_github.add_issue(DEFAULT_REPO, **seed)
        clock.advance(hours=1)
    repo = clocked_github.client().get_repo(DEFAULT_REPO)
    repo.get_issue(1).edit(body="touched at T0+4h")
    return repo


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, [3, 1], id="default-open-newest-first"),
        pytest.param({"state": "closed"}, [4, 2], id="closed"),
        pytest.param({"state": "all"}, [4, 3, 2, 1], id="all"),
        pytest.param({"state": "all", "labels": ["incident", "sev1"]}, [4, 1], id="labels-AND"),
        pytest.param({"state": "all", "labels": ["INCIDENT"]}, [4, 2, 1], id="labels-any-case"),
        pytest.param({"state": "all", "direction": "asc"}, [1, 2, 3, 4], id="created-asc"),
        pytest.param({"state": "all", "sort": "updated"}, [1, 4, 3, 2], id="updated-desc"),
        pytest.param(
            {"state": "all", "since": T0 + timedelta(hours=2, minutes=30)}, [4, 1], id="since"
        ),
    ],
)
def test_list_issues_filters_and_sorts(
    four_issues: Repository, kwargs: dict[str, Any], expected: list[int]
) -> None:
    """get_issues honours state, labels (AND, any case), sort, direction and since."""
    assert [i.number for i in four_issues.get_issues(**kwargs)] == expected


@pytest.mark.parametrize(
    ("per_page", "pages"),
    [pytest.param(30, 9, id="default-30"), pytest.param(100, 3, id="max-100")],
)
def test_issue_pagination_follows_link_headers(
    fake_github: FakeGitHub, per_page: int, pages: int
) -> None:
    """PaginatedList walks 250 issues page by page via Link, forwards and reversed."""
    for n in range(250):
        fake_github.add_issue(DEFAULT_REPO, title=f"issue {n}")
    repo = fake_github.client(per_page=per_page).get_repo(DEFAULT_REPO)

    numbers = [i.number for i in repo.get_issues()]
    assert numbers == list(range(250, 0, -1))
    assert fake_github.request_count("GET", "/repos/acme/web/issues") == pages
    assert repo.get_issues().totalCount == 250
    assert [i.number for i in repo.get_issues().reversed][:3] == [1, 2, 3]


def test_link_header_is_built_from_server_url(fake_github: FakeGitHub) -> None:
    """A middle page links prev/next/last/first on this server, keeping the query."""
    for n in range(7):
        fake_github.add_issue(DEFAULT_REPO, title=f"issue {n}")
    gh = fake_github.client()
    headers, data = gh.requester.requestJsonAndCheck(
        "GET", "/repos/acme/web/issues", parameters={"state": "all", "per_page": 2, "page": 2}
    )
    links = {}
    for link in headers["link"].split(", "):
        target, rel = link.split("; ")
        url = urllib.parse.urlsplit(target.strip("<>"))
        assert (
            f"{url.scheme}://{url.netloc}{url.path}" == f"{fake_github.url}/repos/acme/web/issues"
        )
        links[rel] = dict(urllib.parse.parse_qsl(url.query))
    assert links == {
        f'rel="{rel}"': {"state": "all", "per_page": "2", "page": page}
        for rel, page in [("prev", "1"), ("next", "3"), ("last", "4"), ("first", "1")]
    }
    assert [i["number"] for i in data] == [5, 4]


def test_comment_pagination_and_create(fake_github: FakeGitHub, repo: Repository) -> None:
    """45 seeded comments plus one via PyGithub come back oldest first over 2 pages of 30."""
    issue = repo.create_issue("flapping")
    for n in range(45):
        fake_github.add_comment(DEFAULT_REPO, 1, f"check {n} failed")
    created = issue.create_comment("recovered")

    bodies = [c.body for c in issue.get_comments()]
    assert bodies == [f"check {n} failed" for n in range(45)] + ["recovered"]
    assert fake_github.request_count("GET", "/repos/acme/web/issues/1/comments") == 2
    assert created.html_url == f"{fake_github.url}/acme/web/issues/1#issuecomment-{created.id}"
    assert repo.get_issue(1).comments == 46
    assert fake_github.comments(DEFAULT_REPO, 1)[-1]["body"] == "recovered"


# --- labels, errors, auth -------------------------------------------------------------


def test_label_create_get_list_and_duplicate(fake_github: FakeGitHub, repo: Repository) -> None:
    """A label round-trips (even with ': ' in its name); creating it again is a 422."""
    created = repo.create_label("sev: high", "B60205", "paging severity")
    fetched = repo.get_label("sev: high")
    assert (fetched.name, fetched.color, fetched.description) == (
        "sev: high",
        "b60205",
        "paging severity",
    )
    assert fetched.url == created.url
    assert [lab.name for lab in repo.get_labels()] == ["sev: high"]

    with pytest.raises(GithubException) as excinfo:
        repo.create_label("SEV: HIGH", "000000")
    assert excinfo.value.status == 422
    assert excinfo.value.data["errors"][0]["code"] == "already_exists"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda r: r.create_issue(""), id="issue-without-title"),
        pytest.param(lambda r: r.create_label("x", "red"), id="label-bad-color"),
        pytest.param(lambda r: r.get_issue(1).edit(state="resolved"), id="bad-state"),
        pytest.param(lambda r: r.get_issue(1).edit(state_reason="whatever"), id="bad-reason"),
    ],
)
def test_invalid_input_is_a_422(
    fake_github: FakeGitHub, repo: Repository, call: Callable[[Repository], object]
) -> None:
    """Bad input surfaces as GithubException 422, like GitHub's validation errors."""
    fake_github.add_issue(DEFAULT_REPO, title="exists")
    with pytest.raises(GithubException) as excinfo:
        call(repo)
    assert type(excinfo.value) is GithubException
    assert excinfo.value.status == 422


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda gh: gh.get_repo("acme/nope"), id="unknown-repo"),
        pytest.param(lambda gh: gh.get_repo(DEFAULT_REPO).get_issue(99), id="unknown-issue"),
        pytest.param(lambda gh: gh.get_repo(DEFAULT_REPO).get_label("nope"), id="unknown-label"),
        pytest.param(lambda gh: gh.requester.requestJsonAndCheck("GET", "/nope"), id="path"),
    ],
)
def test_not_found_is_unknown_object(fake_github: FakeGitHub, call: Callable[[Any], Any]) -> None:
    """Unknown repos, issues, labels and paths are 404 'Not Found' -> UnknownObjectException."""
    with pytest.raises(UnknownObjectException):
        call(fake_github.client())
    assert fake_github.requests[-1].status == 404


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        pytest.param("ghp_wrong", BadCredentialsException, id="wrong-token"),
        pytest.param(Auth.AppAuthToken("ghp_wrong"), BadCredentialsException, id="wrong-bearer"),
        pytest.param(None, GithubException, id="no-authorization-header"),
        pytest.param(DEFAULT_TOKEN, None, id="token-scheme"),
        pytest.param(Auth.AppAuthToken(DEFAULT_TOKEN), None, id="bearer-scheme"),
    ],
)
def test_authorization(
    fake_github: FakeGitHub, auth: Any, expected: type[GithubException] | None
) -> None:
    """`token X` and `Bearer X` with a valid X pass; anything else is a 401."""
    gh = fake_github.client(auth)
    if expected is None:
        assert gh.get_repo(DEFAULT_REPO).full_name == DEFAULT_REPO
        return
    with pytest.raises(expected) as excinfo:
        gh.get_repo(DEFAULT_REPO)
    assert type(excinfo.value) is expected
    assert excinfo.value.status == 401


def test_secret_only_sent_in_authorization(repo: Repository, fake_github: FakeGitHub) -> None:
    """tokens_seen records the token; leaks() finds it anywhere else, and only there."""
    issue = repo.create_issue("x", labels=["a"])
    issue.create_comment("hello")
    list(repo.get_issues())
    assert set(fake_github.tokens_seen) == {DEFAULT_TOKEN}
    assert len(fake_github.tokens_seen) == len(fake_github.requests)
    assert fake_github.leaks(DEFAULT_TOKEN) == []

    issue.create_comment(f"oops {DEFAULT_TOKEN}")
    assert fake_github.leaks(DEFAULT_TOKEN) == ["POST /repos/acme/web/issues/1/comments: body"]


# --- rate limits ------------------------------------------------------------------


def test_rate_limit_headers_and_endpoint(fake_github: FakeGitHub) -> None:
    """Every response carries X-RateLimit-*; remaining drops per request, not for /rate_limit."""
    gh = fake_github.client()
    repo = gh.get_repo(DEFAULT_REPO)
    headers = {k.lower(): v for k, v in repo.raw_headers.items()}
    assert headers["x-ratelimit-limit"] == "5000"
    assert headers["x-ratelimit-remaining"] == "4999"
    assert headers["x-ratelimit-used"] == "1"
    assert headers["x-ratelimit-resource"] == "core"
    assert int(headers["x-ratelimit-reset"]) > time.time()

    assert repo.get_labels().totalCount == 0
    overview = gh.get_rate_limit()
    assert overview.resources.core.remaining == 4998 == fake_github.rate_remaining
    assert gh.rate_limiting == (4998, 5000)


def test_exhausted_rate_limit_is_a_primary_rate_limit_error() -> None:
    """Past `rate_limit` requests the server answers 403 'API rate limit exceeded'."""
    with FakeGitHub(rate_limit=2) as server:
        gh = server.client()
        gh.get_repo(DEFAULT_REPO)
        gh.get_repo(DEFAULT_REPO)
        with pytest.raises(RateLimitExceededException):
            gh.get_repo(DEFAULT_REPO)
        assert statuses(server) == [200, 200, 403]


# --- faults -----------------------------------------------------------------------

_RETRYING = GithubRetry(secondary_rate_wait=0.05)


@pytest.mark.parametrize(
    ("fault", "count", "retry", "expected", "seen"),
    [
        pytest.param(status(500), 1, _RETRYING, None, [500, 200], id="500-retried"),
        pytest.param(status(502), 1, None, GithubException, [502], id="502-no-retry"),
        pytest.param(
            status(500), None, GithubRetry(total=2), requests.exceptions.RetryError,
            [500, 500, 500], id="500-retries-exhausted",
        ),
        pytest.param(
            status(401, {"message": "Bad credentials"}), 1, None, BadCredentialsException,
            [401], id="401",
        ),
        pytest.param(status(404), 1, None, UnknownObjectException, [404], id="404"),
        pytest.param(status(422), 1, _RETRYING, GithubException, [422], id="422-not-retried"),
        pytest.param(too_many_requests(0), 1, _RETRYING, None, [429, 200], id="429-retried"),
        pytest.param(too_many_requests(0), 1, None, GithubException, [429], id="429-no-retry"),
        pytest.param(
            secondary_rate_limit(None), 1, _RETRYING, None, [403, 200], id="secondary-by-message"
        ),
        pytest.param(
            secondary_rate_limit(0), 1, None, RateLimitExceededException, [403], id="secondary"
        ),
        pytest.param(
            primary_rate_limit(3600), 1, GithubRetry(max_rate_limit_wait=5),
            RateLimitExceededExceedsMaxWait, [403], id="primary-beyond-max-wait",
        ),
        pytest.param(
            primary_rate_limit(1), 1, None, RateLimitExceededException, [403], id="primary"
        ),
        pytest.param(malformed_json(), 1, None, json.JSONDecodeError, [200], id="malformed-json"),
        pytest.param(
            cut_before_commit(), 1, None, requests.exceptions.ConnectionError, [0], id="cut"
        ),
        pytest.param(cut_before_commit(), 1, _RETRYING, None, [0, 200], id="cut-retried"),
    ],
)  # fmt: skip
def test_fault_on_get_surfaces_through_pygithub(
    fake_github: FakeGitHub,
    fault: Fault,
    count: int | None,
    retry: GithubRetry | None,
    expected: type[Exception] | None,
    seen: list[int],
) -> None:
    """Each fault reaches PyGithub as the given exception (or is retried away)."""
    fake_github.inject("GET", r"/repos/acme/web", fault, count=count)
    gh = fake_github.client(retry=retry)
    if expected is None:
        assert gh.get_repo(DEFAULT_REPO).full_name == DEFAULT_REPO
    else:
        with pytest.raises(expected) as excinfo:
            gh.get_repo(DEFAULT_REPO)
        assert type(excinfo.value) is expected
    assert statuses(fake_github) == seen


@pytest.mark.parametrize(
    ("fault", "retry", "expected", "created"),
    [
        pytest.param(
            cut_after_commit(), None, requests.exceptions.ConnectionError, 1, id="cut-after"
        ),
        pytest.param(cut_after_commit(), GithubRetry(), None, 2, id="cut-after-retried-dupe"),
        pytest.param(status(502, commit=True), None, GithubException, 1, id="502-after"),
        pytest.param(status(502, commit=True), GithubRetry(), None, 2, id="502-after-retried-dupe"),
        pytest.param(
            cut_before_commit(), None, requests.exceptions.ConnectionError, 0, id="cut-before"
        ),
        pytest.param(status(502), GithubRetry(), None, 1, id="502-before-retried"),
    ],
)
def test_fault_on_create_issue_and_what_github_did(
    fake_github: FakeGitHub,
    fault: Fault,
    retry: GithubRetry | None,
    expected: type[Exception] | None,
    created: int,
) -> None:
    """Commit faults leave the issue created; PyGithub's default retry re-POSTs a duplicate."""
    fake_github.inject("POST", r"/repos/acme/web/issues", fault)
    repo = fake_github.client(retry=retry).get_repo(DEFAULT_REPO)
    if expected is None:
        repo.create_issue("db down")
    else:
        with pytest.raises(expected):
            repo.create_issue("db down")
    assert [i["title"] for i in fake_github.issues()] == ["db down"] * created


def test_patch_is_not_retried_by_github_retry(fake_github: FakeGitHub) -> None:
    """GithubRetry retries GET and POST but not PATCH: a 502 on edit surfaces at once."""
    fake_github.add_issue(DEFAULT_REPO, title="x")
    fake_github.inject("PATCH", r"/repos/acme/web/issues/1", status(502))
    issue = fake_github.client(retry=GithubRetry()).get_repo(DEFAULT_REPO).get_issue(1)
    with pytest.raises(GithubException) as excinfo:
        issue.edit(state="closed")
    assert excinfo.value.status == 502
    assert fake_github.issues()[0]["state"] == "open"


def test_retry_after_is_slept(fake_github: FakeGitHub) -> None:
    """GithubRetry sleeps a secondary rate limit's Retry-After before retrying."""
    fake_github.inject("GET", r"/repos/acme/web", secondary_rate_limit(retry_after=1))
    gh = fake_github.client(retry=GithubRetry())
    started = time.monotonic()
    gh.get_repo(DEFAULT_REPO)
    assert time.monotonic() - started >= 1.0
    assert statuses(fake_github) == [403, 200]


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        pytest.param(None, requests.exceptions.ReadTimeout, id="no-retry"),
        pytest.param(GithubRetry(), None, id="get-resent-after-timeout"),
    ],
)
def test_delay_past_client_timeout(
    fake_github: FakeGitHub, retry: GithubRetry | None, expected: type[Exception] | None
) -> None:
    """A reply slower than PyGithub's timeout is a ReadTimeout, which GithubRetry re-sends."""
    fake_github.inject("GET", r"/repos/acme/web", delay(1.5))
    gh = fake_github.client(retry=retry, timeout_s=1)
    started = time.monotonic()
    if expected is None:
        assert gh.get_repo(DEFAULT_REPO).full_name == DEFAULT_REPO
    else:
        with pytest.raises(expected):
            gh.get_repo(DEFAULT_REPO)
    assert 1.0 <= time.monotonic() - started < 1.5


def test_redirect_is_followed(fake_github: FakeGitHub) -> None:
    """PyGithub follows a 301 (e.g. a renamed repo) to a path on the same server."""
    fake_github.inject("GET", r"/repos/acme/old", redirect("/repos/acme/web"))
    assert fake_github.client().get_repo("acme/old").full_name == DEFAULT_REPO
    assert fake_github.requests == [
        ("GET", "/repos/acme/old", 301),
        ("GET", "/repos/acme/web", 200),
    ]


def test_fault_matching_and_counts(fake_github: FakeGitHub) -> None:
    """A fault fires for its method and whole path only, `count` times, oldest first."""
    fake_github.inject("POST", r"/repos/acme/web", status(500))  # wrong method: never fires
    fake_github.inject("*", r"/repos/acme/web", status(503), count=2)
    fake_github.inject("GET", r"/repos/acme/web/labels/.*", status(404), count=None)
    gh = fake_github.client()

    for _ in range(3):
        with pytest.raises(GithubException):
            gh.get_repo(DEFAULT_REPO).get_label("bug")
    assert statuses(fake_github) == [503, 503, 200, 404]
    assert fake_github.pending_faults == 2


# --- inspection, lifecycle, concurrency --------------------------------------------


def test_request_log_and_count(fake_github: FakeGitHub, repo: Repository) -> None:
    """requests logs (method, path, status); request_count filters by method and prefix."""
    repo.create_issue("x").create_comment("y")
    assert fake_github.requests == [
        ("GET", "/repos/acme/web", 200),
        ("POST", "/repos/acme/web/issues", 201),
        ("POST", "/repos/acme/web/issues/1/comments", 201),
    ]
    assert fake_github.request_count() == 3
    assert fake_github.request_count("post") == 2
    assert fake_github.request_count(path_prefix="/repos/acme/web/issues") == 2
    assert fake_github.request_count("GET", "/repos/acme/web/issues") == 0


def test_reset_forgets_everything(fake_github: FakeGitHub, repo: Repository) -> None:
    """reset() drops issues, labels, faults, logs and rate-limit use, keeping the port."""
    url = fake_github.url
    repo.create_issue("x", labels=["a"])
    fake_github.inject("GET", r".*", status(500), count=None)
    fake_github.reset()
    assert (fake_github.issues(), fake_github.labels(), fake_github.requests) == ([], [], [])
    assert (fake_github.pending_faults, fake_github.rate_remaining) == (0, 5000)
    assert fake_github.url == url
    assert repo.create_issue("y").number == 1


def test_known_repos_are_configurable() -> None:
    """The server serves exactly the repos it was built with."""
    with FakeGitHub(["acme/api", "acme/web"]) as server:
        gh = server.client()
        assert gh.get_repo("acme/api").create_issue("x").number == 1
        assert gh.get_repo("acme/web").get_issues().totalCount == 0
        with pytest.raises(UnknownObjectException):
            gh.get_repo("other/web")


def test_close_stops_serving() -> None:
    """After the with-block the port refuses connections and `url` is unavailable."""
    with FakeGitHub() as server:
        port = urllib.parse.urlsplit(server.url).port
        assert port is not None
    with pytest.raises(RuntimeError):
        _ = server.url
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


def test_concurrent_creates_get_unique_numbers(fake_github: FakeGitHub) -> None:
    """Issues created from 4 threads at once get distinct, gapless numbers."""
    repos = [fake_github.client().get_repo(DEFAULT_REPO) for _ in range(4)]

    def create_ten(repo: Repository) -> list[int]:
        return [repo.create_issue(f"t{n}").number for n in range(10)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        numbers = [n for batch in pool.map(create_ten, repos) for n in batch]
    assert sorted(numbers) == list(range(1, 41))
