"""Pins tests/fakegithub.py, driven through PyGithub so the real client code is exercised."""

from __future__ import annotations

import json
import re
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


# --- delivery KPIs: ETags, commits, compare, deployments, runs, statuses -----------

COMMITS = "/repos/acme/web/commits"


def raw_get(
    server: FakeGitHub,
    path: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    token: str = DEFAULT_TOKEN,
) -> requests.Response:
    """GET `path` with plain requests, so headers and status codes are seen as sent."""
    return requests.get(
        f"{server.url}{path}",
        params=params,
        headers={"Authorization": f"token {token}", **(headers or {})},
        timeout=5,
    )


def next_link(response: requests.Response) -> str | None:
    """The rel="next" URL of a reply's Link header, if any."""
    return response.links.get("next", {}).get("url")


@pytest.mark.parametrize(
    "if_none_match",
    [
        pytest.param(lambda tag: tag, id="weak-as-sent"),
        pytest.param(lambda tag: tag.removeprefix("W/"), id="strong-form"),
        pytest.param(lambda tag: f'"stale", {tag}', id="list"),
        pytest.param(lambda tag: "*", id="star"),
    ],
)
def test_if_none_match_is_a_free_304(
    fake_github: FakeGitHub, if_none_match: Callable[[str], str]
) -> None:
    """A GET naming the current ETag gets a bodiless 304 with it and spends no rate limit."""
    fake_github.add_issue(DEFAULT_REPO, title="x")
    first = raw_get(fake_github, "/repos/acme/web/issues")
    tag = first.headers["ETag"]
    assert re.fullmatch(r'W/"[0-9a-f]{64}"', tag)

    again = raw_get(
        fake_github, "/repos/acme/web/issues", headers={"If-None-Match": if_none_match(tag)}
    )
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", tag)
    assert again.headers["X-RateLimit-Remaining"] == first.headers["X-RateLimit-Remaining"]
    assert again.headers["X-RateLimit-Used"] == "1"
    assert fake_github.rate_remaining == 4999
    assert fake_github.request_count("GET", "/repos/acme/web/issues", status=304) == 1
    assert fake_github.request_count("GET", "/repos/acme/web/issues", status=200) == 1


def test_conditional_get_other_tag_or_bad_token(fake_github: FakeGitHub) -> None:
    """Another tag gets a 200 that spends; a bad token is a 401 before any 304."""
    tag = raw_get(fake_github, "/repos/acme/web").headers["ETag"]
    other = raw_get(fake_github, "/repos/acme/web", headers={"If-None-Match": 'W/"other"'})
    assert (other.status_code, other.headers["ETag"]) == (200, tag)
    denied = raw_get(
        fake_github, "/repos/acme/web", headers={"If-None-Match": tag}, token="ghp_wrong"
    )
    assert denied.status_code == 401
    assert "ETag" not in denied.headers
    assert statuses(fake_github) == [200, 200, 401]
    assert fake_github.rate_remaining == 4997


def test_changed_resource_gets_a_new_etag(fake_github: FakeGitHub, repo: Repository) -> None:
    """PyGithub's update() is a 304 while the issue is unchanged, a 200 with a new ETag after."""
    fake_github.add_issue(DEFAULT_REPO, title="x")
    issue = repo.get_issue(1)
    tag = issue.etag
    assert issue.update() is False
    fake_github.add_comment(DEFAULT_REPO, 1, "more")
    assert issue.update() is True
    assert issue.etag not in (None, tag)
    assert issue.comments == 1
    assert statuses(fake_github)[-3:] == [200, 304, 200]


# commits and compare


@pytest.fixture
def history(clocked_github: FakeGitHub, clock: FrozenClock) -> dict[str, str]:
    """main c1..c5 and feature f1, f2 off c3, a minute apart; orphan is a root of its own."""
    shas = {}
    for n in range(1, 4):
        shas[f"c{n}"] = clocked_github.add_commit(message=f"c{n}")
        clock.advance(minutes=1)
    clocked_github.set_branch(DEFAULT_REPO, "feature", shas["c3"])
    for name, branch in [("f1", "feature"), ("c4", "main"), ("f2", "feature"), ("c5", "main")]:
        shas[name] = clocked_github.add_commit(message=name, branch=branch)
        clock.advance(minutes=1)
    shas["o1"] = clocked_github.add_commit(message="o1", parents=[], branch="orphan")
    return shas


@pytest.mark.parametrize(
    ("basehead", "status", "ahead", "behind", "commits", "merge_base"),
    [
        pytest.param("c3...c5", "ahead", 2, 0, ["c4", "c5"], "c3", id="ahead"),
        pytest.param("c5...c3", "behind", 0, 2, [], "c3", id="behind"),
        pytest.param("main...c5", "identical", 0, 0, [], "c5", id="identical-branch-vs-sha"),
        pytest.param("main...feature", "diverged", 2, 2, ["f1", "f2"], "c3", id="diverged"),
        pytest.param("c1..feature", "ahead", 4, 0, ["c2", "c3", "f1", "f2"], "c1", id="two-dot"),
    ],
)
def test_compare_status_counts_and_oldest_first(
    clocked_github: FakeGitHub,
    history: dict[str, str],
    basehead: str,
    status: str,
    ahead: int,
    behind: int,
    commits: list[str],
    merge_base: str,
) -> None:
    """compare reports status, ahead/behind and head-only commits oldest first, by sha or branch."""
    names = {sha: name for name, sha in history.items()}
    spec = re.sub(r"c\d|f\d", lambda m: history[m.group()], basehead)
    body = raw_get(clocked_github, f"/repos/acme/web/compare/{spec}").json()
    assert (body["status"], body["ahead_by"], body["behind_by"]) == (status, ahead, behind)
    assert body["total_commits"] == len(commits)
    assert [names[c["sha"]] for c in body["commits"]] == commits
    assert names[body["merge_base_commit"]["sha"]] == merge_base
    assert body["files"] == []
    assert body["url"] == f"{clocked_github.url}/repos/acme/web/compare/{spec}"


def test_compare_through_pygithub(clocked_github: FakeGitHub, history: dict[str, str]) -> None:
    """repo.compare() parses: status, counts, commits and the merge base."""
    comparison = clocked_github.client().get_repo(DEFAULT_REPO).compare("main", "feature")
    assert [c.sha for c in comparison.commits] == [history["f1"], history["f2"]]
    assert (comparison.status, comparison.ahead_by, comparison.behind_by) == ("diverged", 2, 2)
    assert comparison.merge_base_commit.sha == history["c3"]
    assert comparison.base_commit.sha == history["c5"]


@pytest.mark.parametrize(
    ("forget", "basehead", "message"),
    [
        pytest.param("c1", "c1...c5", "Not Found", id="forgotten-base"),
        pytest.param("c5", "c1...main", "Not Found", id="branch-at-forgotten-head"),
        pytest.param(None, "nope...main", "Not Found", id="unknown-ref"),
        pytest.param(
            None, "main...orphan", "No common ancestor between main and orphan.", id="unrelated"
        ),
    ],
)
def test_compare_404s(
    clocked_github: FakeGitHub,
    history: dict[str, str],
    forget: str | None,
    basehead: str,
    message: str,
) -> None:
    """compare is a 404 for unknown or forgotten refs and for histories with no common ancestor."""
    if forget is not None:
        clocked_github.forget_commit(DEFAULT_REPO, history[forget])
    spec = basehead.replace("c1", history["c1"]).replace("c5", history["c5"])
    reply = raw_get(clocked_github, f"/repos/acme/web/compare/{spec}")
    assert (reply.status_code, reply.json()["message"]) == (404, message)
    with pytest.raises(GithubException) as excinfo:  # UnknownObjectException if "Not Found"
        _ = clocked_github.client().get_repo(DEFAULT_REPO).compare(*spec.split("...")).status
    assert excinfo.value.status == 404


def test_compare_caps_250_unpaginated_and_paginates(clocked_github: FakeGitHub) -> None:
    """Unpaginated compare holds the newest 250 of 260 commits; per_page/page walk them all.

    The clock is frozen, so all commits share one date: order comes from the graph.
    """
    base = clocked_github.add_commit(message="base")
    shas = [clocked_github.add_commit(message=f"c{n}") for n in range(260)]
    path = f"/repos/acme/web/compare/{base}...main"

    capped = raw_get(clocked_github, path)
    body = capped.json()
    assert (body["total_commits"], len(body["commits"])) == (260, 250)
    assert [c["sha"] for c in body["commits"]] == shas[10:]
    assert "Link" not in capped.headers

    pages: list[list[str]] = []
    url: str | None = f"{clocked_github.url}{path}?per_page=100"
    while url:
        reply = requests.get(url, headers={"Authorization": f"token {DEFAULT_TOKEN}"}, timeout=5)
        assert reply.json()["total_commits"] == 260
        pages.append([c["sha"] for c in reply.json()["commits"]])
        url = next_link(reply)
    assert [len(p) for p in pages] == [100, 100, 60]
    assert [sha for page in pages for sha in page] == shas

    second = raw_get(clocked_github, path, {"page": 2}).json()  # page size 250 by default
    assert [c["sha"] for c in second["commits"]] == shas[250:]
    comparison = clocked_github.client().get_repo(DEFAULT_REPO).compare(base, "main")
    assert [c.sha for c in comparison.commits] == shas


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({}, ["c5", "c4", "c3", "c2", "c1"], id="main-newest-first"),
        pytest.param({"sha": "feature"}, ["f2", "f1", "c3", "c2", "c1"], id="branch"),
        pytest.param({"since": "2025-01-01T12:02:00Z"}, ["c5", "c4", "c3"], id="since"),
        pytest.param({"until": "2025-01-01T12:01:00Z"}, ["c2", "c1"], id="until"),
        pytest.param(
            {"since": "2025-01-01T13:01:00+01:00", "until": "2025-01-01T12:03:00Z"},
            ["c3", "c2"],
            id="since-with-offset-and-until",
        ),
        pytest.param({"sha": "orphan"}, ["o1"], id="root"),
    ],
)
def test_list_commits(
    clocked_github: FakeGitHub,
    history: dict[str, str],
    params: dict[str, str],
    expected: list[str],
) -> None:
    """commits lists what `sha` reaches, newest first, within inclusive since/until."""
    names = {sha: name for name, sha in history.items()}
    # c1 12:00, c2 12:01, c3 12:02, f1 12:03, c4 12:04, f2 12:05, c5 12:06
    reply = raw_get(clocked_github, COMMITS, params)
    assert [names[c["sha"]] for c in reply.json()] == expected


def test_list_commits_through_pygithub_walks_merges(
    clocked_github: FakeGitHub, clock: FrozenClock, history: dict[str, str]
) -> None:
    """After merging feature into main, get_commits interleaves both lines by date."""
    merge = clocked_github.add_commit(message="merge", parents=["main", "feature"])
    names = {sha: name for name, sha in history.items()} | {merge: "merge"}
    repo = clocked_github.client().get_repo(DEFAULT_REPO)
    assert [names[c.sha] for c in repo.get_commits()] == [
        "merge", "c5", "f2", "c4", "f1", "c3", "c2", "c1",
    ]  # fmt: skip
    since = T0 + timedelta(minutes=4)
    assert [names[c.sha] for c in repo.get_commits(since=since)] == ["merge", "c5", "f2", "c4"]
    assert [p.sha for p in repo.get_commit(merge).parents] == [history["c5"], history["f2"]]


def test_forgotten_commit_is_gone(clocked_github: FakeGitHub, history: dict[str, str]) -> None:
    """forget_commit makes reads of the sha 404; history walks skip it."""
    gone = history["c2"]
    clocked_github.forget_commit(DEFAULT_REPO, gone)
    for path in (f"{COMMITS}/{gone}", f"{COMMITS}/{gone}/statuses", f"{COMMITS}/{gone}/status"):
        reply = raw_get(clocked_github, path)
        assert (reply.status_code, reply.json()["message"]) == (
            404,
            f"No commit found for SHA: {gone}",
        )
    assert raw_get(clocked_github, COMMITS, {"sha": gone}).status_code == 404
    listed = [c["sha"] for c in raw_get(clocked_github, COMMITS).json()]
    assert gone not in listed
    assert history["c1"] not in listed  # only reachable through the forgotten commit


@pytest.mark.parametrize(
    ("author_date", "committer_date", "rendered"),
    [
        pytest.param(
            "2026-11-20T09:15:00+05:30",
            None,
            ("2026-11-20T09:15:00+05:30", "2026-11-20T09:15:00+05:30"),
            id="offset-string-verbatim",
        ),
        pytest.param(
            "2026-11-20T09:15:00+05:30",
            "2026-11-19T22:00:00-08:00",
            ("2026-11-20T09:15:00+05:30", "2026-11-19T22:00:00-08:00"),
            id="two-offsets",
        ),
        pytest.param(
            datetime(2026, 11, 20, 3, 45, tzinfo=UTC),
            None,
            ("2026-11-20T03:45:00Z", "2026-11-20T03:45:00Z"),
            id="datetime-as-utc-z",
        ),
    ],
)
def test_commit_dates_keep_their_offsets(
    fake_github: FakeGitHub,
    author_date: datetime | str,
    committer_date: str | None,
    rendered: tuple[str, str],
) -> None:
    """Commit dates given as offset strings come back verbatim; PyGithub parses them aware."""
    sha = fake_github.add_commit(
        message="tz", author_date=author_date, committer_date=committer_date, author="alice"
    )
    body = raw_get(fake_github, f"{COMMITS}/{sha}").json()
    assert (body["commit"]["author"]["date"], body["commit"]["committer"]["date"]) == rendered
    assert body["author"]["login"] == "alice"
    commit = fake_github.client().get_repo(DEFAULT_REPO).get_commit(sha)
    assert commit.commit.author.date == datetime(2026, 11, 20, 3, 45, tzinfo=UTC)
    assert commit.commit.author.date.isoformat().replace("+00:00", "Z") == rendered[0]


def test_commit_json_shape_and_refs(fake_github: FakeGitHub) -> None:
    """A commit reads by sha, short sha or branch, with GitHub's fields; unknown is a 404."""
    first = fake_github.add_commit(message="first")
    sha = fake_github.add_commit(message="second")
    assert fake_github.branch_head(DEFAULT_REPO, "main") == sha
    for ref in (sha, sha[:7], "main"):
        body = raw_get(fake_github, f"{COMMITS}/{ref}").json()
        assert body["sha"] == sha
    assert {"sha", "node_id", "url", "html_url", "commit", "author", "committer", "parents"} <= (
        body.keys()
    )
    assert body["author"] is None
    assert body["parents"] == [
        {
            "sha": first,
            "url": f"{fake_github.url}{COMMITS}/{first}",
            "html_url": f"{fake_github.url}/acme/web/commit/{first}",
        }
    ]
    assert body["commit"]["message"] == "second"
    missing = raw_get(fake_github, f"{COMMITS}/nope")
    assert (missing.status_code, missing.json()["message"]) == (
        404,
        "No commit found for SHA: nope",
    )


# deployments


@pytest.fixture
def deployments(clocked_github: FakeGitHub, clock: FrozenClock) -> dict[str, int]:
    """p1 (production, sha a), s1 (staging, a), then m2 and p2 at the same instant, p3."""
    seeds: list[tuple[str, dict[str, Any]]] = [
        ("p1", {"sha": "a" * 40}),
        ("s1", {"sha": "a" * 40, "environment": "staging"}),
        ("m2", {"sha": "b" * 40, "ref": "v2", "task": "deploy:migrations"}),
        ("p2", {"sha": "b" * 40, "ref": "v2"}),
        ("p3", {"sha": "c" * 40}),
    ]
    ids = {}
    for name, seed in seeds:
        ids[name] = clocked_github.add_deployment(DEFAULT_REPO, **seed)
        if name != "m2":
            clock.advance(hours=1)
    return ids


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, ["p3", "p2", "m2", "s1", "p1"], id="newest-first-id-breaks-ties"),
        pytest.param({"environment": "production"}, ["p3", "p2", "m2", "p1"], id="environment"),
        pytest.param({"environment": "staging"}, ["s1"], id="staging"),
        pytest.param({"sha": "a" * 40}, ["s1", "p1"], id="sha"),
        pytest.param({"ref": "v2"}, ["p2", "m2"], id="ref"),
        pytest.param({"task": "deploy:migrations"}, ["m2"], id="task"),
        pytest.param({"environment": "qa"}, [], id="none"),
    ],
)
def test_list_deployments_filters_and_order(
    clocked_github: FakeGitHub,
    deployments: dict[str, int],
    kwargs: dict[str, str],
    expected: list[str],
) -> None:
    """get_deployments is newest first (then id desc) and filters by sha, ref, task, environment."""
    names = {i: name for name, i in deployments.items()}
    repo = clocked_github.client().get_repo(DEFAULT_REPO)
    assert [names[d.id] for d in repo.get_deployments(**kwargs)] == expected


def test_deployments_paginate_with_link(
    clocked_github: FakeGitHub, deployments: dict[str, int]
) -> None:
    """per_page=2 splits five deployments over three pages linked by Link next/last."""
    names = {i: name for name, i in deployments.items()}
    first = raw_get(clocked_github, "/repos/acme/web/deployments", {"per_page": 2})
    assert [names[d["id"]] for d in first.json()] == ["p3", "p2"]
    assert "page=3" in first.links["last"]["url"]
    url = next_link(first)
    assert url is not None
    second = requests.get(url, headers={"Authorization": f"token {DEFAULT_TOKEN}"}, timeout=5)
    assert [names[d["id"]] for d in second.json()] == ["m2", "s1"]


def test_deployment_json_and_statuses(
    clocked_github: FakeGitHub, clock: FrozenClock, deployments: dict[str, int]
) -> None:
    """A deployment's statuses come newest first with GitHub's fields; PyGithub parses both."""
    deployment_id = deployments["p3"]
    for state in ("queued", "in_progress", "success"):
        clock.advance(minutes=5)
        clocked_github.add_deployment_status(
            DEFAULT_REPO,
            deployment_id,
            state,
            environment_url="https://acme.example",
            log_url="https://ci.example/1",
        )
    repo = clocked_github.client().get_repo(DEFAULT_REPO)
    deployment = repo.get_deployment(deployment_id)
    assert (deployment.sha, deployment.environment, deployment.creator.login) == (
        "c" * 40,
        "production",
        "github-actions[bot]",
    )
    assert deployment.production_environment is True
    assert deployment.updated_at == clock.now
    assert deployment.created_at == T0 + timedelta(hours=3)
    found = list(deployment.get_statuses())
    assert [s.state for s in found] == ["success", "in_progress", "queued"]
    assert found[0].created_at == clock.now
    assert found[0].environment_url == "https://acme.example"
    assert deployment.get_status(found[-1].id).state == "queued"
    raw = raw_get(clocked_github, f"/repos/acme/web/deployments/{deployment_id}/statuses").json()
    assert raw[0]["deployment_url"] == deployment.url
    assert raw[0]["environment"] == "production"
    assert raw[0]["target_url"] == raw[0]["log_url"] == "https://ci.example/1"
    assert raw_get(clocked_github, "/repos/acme/web/deployments/1").status_code == 404


def test_new_deployment_status_changes_the_list_etag(
    clocked_github: FakeGitHub, clock: FrozenClock, deployments: dict[str, int]
) -> None:
    """The deployments list stays 304 until a status moves a deployment's updated_at."""
    path = "/repos/acme/web/deployments"
    tag = raw_get(clocked_github, path).headers["ETag"]
    assert raw_get(clocked_github, path, headers={"If-None-Match": tag}).status_code == 304
    clock.advance(minutes=1)
    clocked_github.add_deployment_status(DEFAULT_REPO, deployments["p1"], "inactive")
    changed = raw_get(clocked_github, path, headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != tag
    assert changed.json()[-1]["updated_at"] == "2025-01-01T16:01:00Z"
    assert clocked_github.request_count("GET", path, status=304) == 1


# workflow runs

RUN_SEEDS: list[tuple[str, dict[str, Any]]] = [
    ("ci1", {"created_at": T0}),
    ("ci2", {"created_at": T0 + timedelta(hours=1), "conclusion": "failure"}),
    (
        "dep1",
        {
            "path": ".github/workflows/deploy.yml",
            "created_at": T0 + timedelta(days=1),
            "event": "workflow_dispatch",
        },
    ),
    (
        "ci3",
        {
            "created_at": T0 + timedelta(days=1, hours=2),
            "status": "in_progress",
            "head_branch": "feature",
            "head_sha": "f" * 40,
        },
    ),
    ("ci4", {"created_at": T0 + timedelta(days=2), "conclusion": "cancelled"}),
    (
        "dep2",
        {
            "path": ".github/workflows/deploy.yml",
            "created_at": T0 + timedelta(days=2, hours=1),
            "status": "queued",
        },
    ),
]


@pytest.fixture
def runs(clocked_github: FakeGitHub) -> dict[str, int]:
    """Six runs of ci.yml and deploy.yml from 2025-01-01 12:00Z (T0) to 2025-01-03 13:00Z."""
    sha = clocked_github.add_commit(message="ship it\n\ndetails")
    return {
        name: clocked_github.add_workflow_run(DEFAULT_REPO, **{"head_sha": sha, **seed})
        for name, seed in RUN_SEEDS
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, ["dep2", "ci4", "ci3", "dep1", "ci2", "ci1"], id="newest-first"),
        pytest.param({"created": "2025-01-02"}, ["ci3", "dep1"], id="bare-date-is-that-day"),
        pytest.param({"created": ">=2025-01-02"}, ["dep2", "ci4", "ci3", "dep1"], id="ge-date"),
        pytest.param({"created": ">2025-01-02"}, ["dep2", "ci4"], id="gt-date-after-that-day"),
        pytest.param({"created": "<2025-01-02"}, ["ci2", "ci1"], id="lt-date"),
        pytest.param(
            {"created": "<=2025-01-02"}, ["ci3", "dep1", "ci2", "ci1"], id="le-date-whole-day"
        ),
        pytest.param(
            {"created": "2025-01-01..2025-01-02"}, ["ci3", "dep1", "ci2", "ci1"], id="range"
        ),
        pytest.param({"created": "2025-01-03..*"}, ["dep2", "ci4"], id="open-range"),
        pytest.param(
            {"created": ">2025-01-01T12:00:00Z"},
            ["dep2", "ci4", "ci3", "dep1", "ci2"],
            id="gt-datetime-excludes-it",
        ),
        pytest.param(
            {"created": "<2025-01-02T14:00:00+02:00"}, ["ci2", "ci1"], id="lt-datetime-offset"
        ),
        pytest.param({"status": "success"}, ["dep1", "ci1"], id="status-as-conclusion"),
        pytest.param({"status": "completed"}, ["ci4", "dep1", "ci2", "ci1"], id="status"),
        pytest.param({"status": "in_progress"}, ["ci3"], id="in-progress"),
        pytest.param({"status": "queued"}, ["dep2"], id="queued"),
        pytest.param({"branch": "feature"}, ["ci3"], id="branch"),
        pytest.param({"event": "workflow_dispatch"}, ["dep1"], id="event"),
        pytest.param({"head_sha": "f" * 40}, ["ci3"], id="head-sha"),
        pytest.param(
            {"status": "completed", "created": ">=2025-01-02"}, ["ci4", "dep1"], id="combined"
        ),
    ],
)
def test_list_workflow_runs_filters(
    clocked_github: FakeGitHub,
    runs: dict[str, int],
    kwargs: dict[str, Any],
    expected: list[str],
) -> None:
    """get_workflow_runs honours created ranges, status (or conclusion), branch, event, head_sha."""
    names = {i: name for name, i in runs.items()}
    found = clocked_github.client().get_repo(DEFAULT_REPO).get_workflow_runs(**kwargs)
    assert [names[r.id] for r in found] == expected
    assert found.totalCount == len(expected)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"created": ">=yesterday"}, id="bad-created"),
        pytest.param({"status": "done"}, id="bad-status"),
    ],
)
def test_workflow_run_filters_reject_nonsense(
    fake_github: FakeGitHub, params: dict[str, str]
) -> None:
    """An unparseable `created` or unknown `status` is a 422."""
    assert raw_get(fake_github, "/repos/acme/web/actions/runs", params).status_code == 422


def test_workflow_run_json_and_pagination(clocked_github: FakeGitHub, runs: dict[str, int]) -> None:
    """Runs carry GitHub's fields (conclusion null until done) in a paginated object body."""
    reply = raw_get(clocked_github, "/repos/acme/web/actions/runs", {"per_page": 4})
    body = reply.json()
    assert body["total_count"] == 6
    assert len(body["workflow_runs"]) == 4
    assert "page=2" in reply.links["last"]["url"]
    dep2, _, ci3 = body["workflow_runs"][:3]
    assert {
        "id", "name", "node_id", "head_branch", "head_sha", "path", "display_title",
        "run_number", "run_attempt", "event", "status", "conclusion", "workflow_id", "url",
        "html_url", "created_at", "updated_at", "run_started_at", "jobs_url", "workflow_url",
    } <= dep2.keys()  # fmt: skip
    assert (dep2["name"], dep2["path"], dep2["run_number"]) == (
        "deploy",
        ".github/workflows/deploy.yml",
        2,
    )
    assert (ci3["status"], ci3["conclusion"], ci3["run_number"]) == ("in_progress", None, 3)
    assert dep2["display_title"] == "ship it"  # the head commit's first line
    assert ci3["created_at"] == ci3["run_started_at"] == "2025-01-02T14:00:00Z"
    assert ci3["workflow_url"].endswith(f"/actions/workflows/{ci3['workflow_id']}")
    page2 = raw_get(clocked_github, "/repos/acme/web/actions/runs", {"per_page": 4, "page": 2})
    assert [r["id"] for r in page2.json()["workflow_runs"]] == [runs["ci2"], runs["ci1"]]


def test_workflows_and_per_workflow_runs(clocked_github: FakeGitHub, runs: dict[str, int]) -> None:
    """Workflows list by id; their runs read by file name or id; an unknown workflow is a 404."""
    repo = clocked_github.client().get_repo(DEFAULT_REPO)
    workflows = list(repo.get_workflows())
    assert [(w.name, w.path, w.state) for w in workflows] == [
        ("ci", ".github/workflows/ci.yml", "active"),
        ("deploy", ".github/workflows/deploy.yml", "active"),
    ]
    deploy_runs = [r.id for r in repo.get_workflow("deploy.yml").get_runs()]
    assert deploy_runs == [runs["dep2"], runs["dep1"]]
    by_id = raw_get(clocked_github, f"/repos/acme/web/actions/workflows/{workflows[0].id}/runs")
    assert by_id.json()["total_count"] == 4
    by_name = raw_get(
        clocked_github, "/repos/acme/web/actions/workflows/ci.yml/runs", {"status": "failure"}
    )
    assert [r["id"] for r in by_name.json()["workflow_runs"]] == [runs["ci2"]]
    for path in (
        "/repos/acme/web/actions/workflows/nope.yml/runs",
        "/repos/acme/web/actions/runs/1",
    ):
        assert raw_get(clocked_github, path).status_code == 404


def test_rerun_keeps_id_and_bumps_attempt(clocked_github: FakeGitHub, runs: dict[str, int]) -> None:
    """A re-run keeps id and created_at, bumps run_attempt and restarts run_started_at."""
    at = T0 + timedelta(days=3)
    clocked_github.rerun_workflow_run(DEFAULT_REPO, runs["ci2"], conclusion="success", at=at)
    run = clocked_github.client().get_repo(DEFAULT_REPO).get_workflow_run(runs["ci2"])
    assert (run.id, run.run_attempt, run.status, run.conclusion) == (
        runs["ci2"],
        2,
        "completed",
        "success",
    )
    assert (run.created_at, run.run_started_at, run.updated_at) == (T0 + timedelta(hours=1), at, at)
    assert run.previous_attempt_url == f"{run.url}/attempts/1"

    clocked_github.rerun_workflow_run(DEFAULT_REPO, runs["ci2"], conclusion=None, at=at)
    assert run.update() is True
    assert (run.run_attempt, run.status) == (3, "in_progress")
    assert run.conclusion is None
    clocked_github.complete_workflow_run(
        DEFAULT_REPO, runs["ci2"], "failure", at + timedelta(minutes=9)
    )
    assert run.update() is True
    assert (run.status, run.conclusion, run.updated_at) == (
        "completed",
        "failure",
        at + timedelta(minutes=9),
    )
    assert run.update() is False  # unchanged: a free 304


def test_complete_in_progress_run(clocked_github: FakeGitHub, runs: dict[str, int]) -> None:
    """complete_workflow_run finishes a queued run; finishing it twice is an error."""
    clocked_github.complete_workflow_run(
        DEFAULT_REPO, runs["dep2"], "success", T0 + timedelta(days=4)
    )
    body = raw_get(clocked_github, f"/repos/acme/web/actions/runs/{runs['dep2']}").json()
    assert (body["status"], body["conclusion"], body["updated_at"]) == (
        "completed",
        "success",
        "2025-01-05T12:00:00Z",
    )
    with pytest.raises(ValueError, match="already completed"):
        clocked_github.complete_workflow_run(DEFAULT_REPO, runs["dep2"], "failure")


def test_rename_keeps_path_and_workflow_id(
    clocked_github: FakeGitHub, clock: FrozenClock, runs: dict[str, int]
) -> None:
    """After a rename new runs carry the new name, old runs keep theirs; path and id stay."""
    clock.advance(days=5)
    clocked_github.rename_workflow(DEFAULT_REPO, ".github/workflows/ci.yml", "CI pipeline")
    renamed = clocked_github.add_workflow_run(DEFAULT_REPO, head_sha="e" * 40)
    body = raw_get(clocked_github, "/repos/acme/web/actions/workflows/ci.yml/runs").json()
    found = {r["id"]: r for r in body["workflow_runs"]}
    assert found[renamed]["name"] == "CI pipeline"
    assert found[runs["ci1"]]["name"] == "ci"
    assert {(r["path"], r["workflow_id"]) for r in found.values()} == {
        (".github/workflows/ci.yml", found[runs["ci1"]]["workflow_id"])
    }
    assert found[renamed]["run_number"] == 5
    workflow = clocked_github.client().get_repo(DEFAULT_REPO).get_workflow("ci.yml")
    assert (workflow.name, workflow.id) == ("CI pipeline", found[renamed]["workflow_id"])


# commit statuses


def test_commit_statuses_list_and_combined(clocked_github: FakeGitHub, clock: FrozenClock) -> None:
    """Statuses list newest first (contexts repeat); the combined status keeps each context's latest."""
    sha = clocked_github.add_commit(message="x")
    commit = clocked_github.client().get_repo(DEFAULT_REPO).get_commit(sha)
    for state, context in [
        ("pending", "ci/build"),
        ("failure", "lint"),
        ("success", "ci/build"),
        ("success", "lint"),
    ]:
        commit.create_status(state, "https://ci.example/1", f"{context} {state}", context)
        clock.advance(minutes=1)

    assert [(s.context, s.state) for s in commit.get_statuses()] == [
        ("lint", "success"),
        ("ci/build", "success"),
        ("lint", "failure"),
        ("ci/build", "pending"),
    ]
    combined = commit.get_combined_status()
    assert (combined.state, combined.sha, combined.total_count) == ("success", sha, 2)
    assert [(s.context, s.state) for s in combined.statuses] == [
        ("lint", "success"),
        ("ci/build", "success"),
    ]
    raw = raw_get(clocked_github, f"{COMMITS}/main/statuses").json()
    assert raw[0]["creator"]["login"] == "monitor-bot"
    assert (raw[0]["description"], raw[0]["created_at"]) == ("lint success", "2025-01-01T12:03:00Z")


@pytest.mark.parametrize(
    ("states", "combined"),
    [
        pytest.param([], "pending", id="none"),
        pytest.param(["success", "success"], "success", id="all-success"),
        pytest.param(["success", "pending"], "pending", id="one-pending"),
        pytest.param(["success", "error"], "failure", id="error-is-failure"),
        pytest.param(["pending", "failure"], "failure", id="failure-beats-pending"),
    ],
)
def test_combined_status_state(fake_github: FakeGitHub, states: list[str], combined: str) -> None:
    """The combined state: failure on any error/failure, else pending if any (or none), else success."""
    sha = "ab" * 20  # not a known commit: statuses are accepted for any 40-hex sha
    for n, state in enumerate(states):
        fake_github.add_commit_status(DEFAULT_REPO, sha=sha, state=state, context=f"ctx{n}")
    body = raw_get(fake_github, f"{COMMITS}/{sha}/status").json()
    assert (body["state"], body["total_count"]) == (combined, len(states))


@pytest.mark.parametrize(
    ("sha", "payload", "code"),
    [
        pytest.param("ab" * 20, {"state": "success"}, 201, id="unknown-sha-accepted"),
        pytest.param("ab" * 20, {"state": "done"}, 422, id="bad-state"),
        pytest.param("main", {"state": "success"}, 422, id="not-a-sha"),
    ],
)
def test_post_commit_status(
    fake_github: FakeGitHub, sha: str, payload: dict[str, str], code: int
) -> None:
    """POST statuses/{sha} validates state and sha; context defaults to "default"."""
    reply = requests.post(
        f"{fake_github.url}/repos/acme/web/statuses/{sha}",
        json=payload,
        headers={"Authorization": f"token {DEFAULT_TOKEN}"},
        timeout=5,
    )
    assert reply.status_code == code
    if code == 201:
        assert (reply.json()["context"], reply.json()["description"]) == ("default", None)
        assert raw_get(fake_github, f"{COMMITS}/{sha}/statuses").json() == [reply.json()]
