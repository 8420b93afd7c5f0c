"""The GitHub sink's boundary: every PyGithub and requests error becomes one ChannelError."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from github import (
    BadCredentialsException,
    GithubException,
    RateLimitExceededException,
    UnknownObjectException,
)
from github.Issue import Issue

from monitor.config import GithubSection
from monitor.incidents.channels.base import ChannelError
from monitor.incidents.channels.github import GithubIssues, IssueRef, translate
from monitor.incidents.text import marker
from tests import fakegithub as fg
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub

SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes."
PRIMARY = "API rate limit exceeded for user ID 1."


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads('{"id": 1, "title": "trunc')
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


def _pygithub_parse_error() -> TypeError:
    """PyGithub reading an issue from a string: what a redirect body in a list leads to."""
    issue = Issue.__new__(Issue)
    issue._initAttributes()
    try:
        issue._useAttributes("url")  # type: ignore[arg-type]
    except TypeError as exc:
        return exc
    raise AssertionError("PyGithub accepted a string as an issue")


def _own_type_error() -> TypeError:
    try:
        raise TypeError("a bug of ours")
    except TypeError as exc:
        return exc


TRANSLATIONS = [
    pytest.param(
        BadCredentialsException(401, {"message": "Bad credentials"}, {}),
        "auth",
        None,
        True,
        id="401-bad-credentials",
    ),
    pytest.param(
        GithubException(401, {"message": "Requires authentication"}, {}),
        "auth",
        None,
        True,
        id="401-no-token",
    ),
    pytest.param(
        RateLimitExceededException(403, {"message": SECONDARY}, {"Retry-After": "30"}),
        "rate_limited",
        30.0,
        False,
        id="403-secondary-retry-after",
    ),
    pytest.param(
        RateLimitExceededException(403, {"message": SECONDARY}, {}),
        "rate_limited",
        60.0,
        False,
        id="403-secondary-no-header",
    ),
    pytest.param(
        lambda: GithubException(  # built at test time: the reset is wall-clock based
            403,
            {"message": PRIMARY},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 600)},
        ),
        "rate_limited",
        600.0,
        False,
        id="403-primary-reset",
    ),
    pytest.param(
        GithubException(429, {"message": SECONDARY}, {"retry-after": "45"}),
        "rate_limited",
        45.0,
        False,
        id="429-retry-after",
    ),
    pytest.param(
        GithubException(429, {"message": "Too Many Requests"}, {}),
        "rate_limited",
        60.0,
        False,
        id="429-bare",
    ),
    pytest.param(
        GithubException(403, {"message": "Resource not accessible by integration"}, {}),
        "forbidden",
        None,
        True,
        id="403-forbidden",
    ),
    pytest.param(
        UnknownObjectException(404, {"message": "Not Found"}, {}),
        "not_found",
        None,
        True,
        id="404",
    ),
    pytest.param(
        GithubException(422, {"message": "Validation Failed"}, {}),
        "invalid",
        None,
        False,
        id="422",
    ),
    pytest.param(GithubException(500, None, {}), "server_error", None, False, id="500"),
    pytest.param(
        GithubException(502, {"message": "Bad Gateway"}, {}), "server_error", None, False, id="502"
    ),
    pytest.param(
        GithubException(400, {"message": "Problems parsing JSON"}, {}),
        "http_error",
        None,
        False,
        id="400",
    ),
    pytest.param(requests.ReadTimeout("read timed out"), "timeout", None, False, id="read-timeout"),
    pytest.param(
        requests.ConnectTimeout("connect timed out"), "timeout", None, False, id="connect-timeout"
    ),
    pytest.param(
        requests.ConnectionError("Connection aborted."), "network", None, False, id="connection"
    ),
    pytest.param(_json_error(), "malformed", None, False, id="json-decode"),
    pytest.param(
        requests.JSONDecodeError("Expecting value", "<html>", 0),
        "malformed",
        None,
        False,
        id="requests-json-decode",
    ),
    pytest.param(
        RuntimeError(
            "Requested https://api.github.com/repos/a/b/issues but server redirected to"
            " https://api.github.com/repos/a/b/issues, you may need to correct your Github"
            " server URL via base_url: Github(base_url=...)"
        ),
        "redirect",
        None,
        False,
        id="301-to-itself",
    ),
    pytest.param(
        RuntimeError("Github server redirected from host api.github.com to evil.example"),
        "redirect",
        None,
        False,
        id="301-other-host",
    ),
    pytest.param(_pygithub_parse_error(), "malformed", None, False, id="reply-not-understood"),
    pytest.param(_own_type_error(), "error", None, False, id="own-bug"),
    pytest.param(
        ChannelError("no_issue", "kept as it is"), "no_issue", None, False, id="sink-error"
    ),
]


@pytest.mark.parametrize(("exc", "reason", "retry_after_s", "auth"), TRANSLATIONS)
def test_translate(
    exc: BaseException | Callable[[], BaseException],
    reason: str,
    retry_after_s: float | None,
    auth: bool,
) -> None:
    """Each dependency error maps to one reason, with the wait hint and the needs-a-human flag."""
    translated = translate(exc if isinstance(exc, BaseException) else exc())

    assert translated.reason == reason
    assert translated.auth is auth
    if retry_after_s is None:
        assert translated.retry_after_s is None
    else:
        assert translated.retry_after_s == pytest.approx(retry_after_s, abs=2)
    assert str(translated)  # a message for health and logs, never empty


def test_translate_keeps_the_message_short() -> None:
    """A huge error body is cut: messages go to /healthz, logs and the outbox row."""
    exc = GithubException(500, {"message": "x" * 100_000}, {})

    assert len(str(translate(exc))) < 300


# ---- on the wire --------------------------------------------------------------------


@pytest.fixture
def sink(fake_github: FakeGitHub) -> Iterator[GithubIssues]:
    """A sink on the fake without PyGithub's throttling."""
    client = fake_github.client(timeout_s=1, per_page=100, lazy=True)
    settings = GithubSection(
        repository=DEFAULT_REPO, api_url=fake_github.url, token=DEFAULT_TOKEN, timeout=1
    )
    yield GithubIssues(settings, client=client)
    client.close()


def _seed(server: FakeGitHub) -> IssueRef:
    issue = server.add_issue(
        title="production is down",
        body=marker("production", "production-1"),
        labels=["incident", "monitor", "target:production"],
    )
    return IssueRef(issue["number"])


WRITES: list[tuple[str, str, str, Callable[[GithubIssues, IssueRef], object]]] = [
    (
        "POST",
        r"/repos/acme/web/issues",
        "open",
        lambda s, _: s.open_issue("t", "b", ["incident"], []),
    ),
    ("PATCH", r"/repos/acme/web/issues/\d+", "close", lambda s, i: s.close(i)),
    ("PATCH", r"/repos/acme/web/issues/\d+", "edit", lambda s, i: s.edit(i, "new body")),
    (
        "POST",
        r"/repos/acme/web/issues/\d+/comments",
        "comment",
        lambda s, i: s.comment(i, "hello", "k"),
    ),
]


@pytest.mark.parametrize("code", [302, 307])
@pytest.mark.parametrize(
    ("method", "path", "write"), [pytest.param(m, p, w, id=n) for m, p, n, w in WRITES]
)
def test_unfollowed_redirect_on_a_write_is_an_error(
    fake_github: FakeGitHub,
    sink: GithubIssues,
    code: int,
    method: str,
    path: str,
    write: Callable[[GithubIssues, IssueRef], object],
) -> None:
    """A 302/307 reply to a write did nothing: it must not pass for success."""
    issue = _seed(fake_github)
    before = fake_github.issues()
    fake_github.inject(method, path, fg.redirect("/repositories/1001/issues/1", code))

    with pytest.raises(ChannelError) as raised:
        write(sink, issue)

    assert raised.value.reason == "redirect"
    assert fake_github.issues() == before
    assert fake_github.comments(DEFAULT_REPO, 1) == []


def test_redirect_answering_a_list_is_malformed(
    fake_github: FakeGitHub, sink: GithubIssues
) -> None:
    """A redirect body where a list was expected is an unreadable reply, not 'no issue found'."""
    _seed(fake_github)
    fake_github.inject("GET", r"/repos/acme/web/issues", fg.redirect("/elsewhere", 302))

    with pytest.raises(ChannelError) as raised:
        sink.find_issue("production", "production-1")

    assert raised.value.reason == "malformed"
    assert sink.find_issue("production", "production-1") == IssueRef(
        1, f"{fake_github.url}/acme/web/issues/1"
    )


def test_301_to_the_same_path_is_a_redirect_error(
    fake_github: FakeGitHub, sink: GithubIssues
) -> None:
    """PyGithub's RuntimeError for a redirect loop is translated at the boundary."""
    fake_github.inject("POST", r"/repos/acme/web/issues", fg.redirect("/repos/acme/web/issues"))

    with pytest.raises(ChannelError) as raised:
        sink.open_issue("t", "b", [], [])

    assert raised.value.reason == "redirect"


def test_find_issue_uses_the_list_filtered_by_target_label(
    fake_github: FakeGitHub, sink: GithubIssues
) -> None:
    """Look-ups list open issues labelled for the target (never search) and match the marker."""
    fake_github.add_issue(title="other", body=marker("production", "production-0"))
    _seed(fake_github)

    found = sink.find_issue("production", "production-1")

    assert found is not None
    assert found.number == 2
    assert fake_github.request_count("GET", "/search") == 0
    assert sink.find_issue("staging", "production-1") is None


def test_marked_issues_skip_issues_without_marker(
    fake_github: FakeGitHub, sink: GithubIssues
) -> None:
    """Reconcile sees only open issues with our marker and our first label."""
    fake_github.add_issue(title="human", body="no marker", labels=["incident"])
    fake_github.add_issue(title="unlabelled", body=marker("production", "production-0"))
    fake_github.add_issue(
        title="closed",
        body=marker("production", "production-9"),
        labels=["incident"],
        state="closed",
    )
    _seed(fake_github)

    found = sink.open_marked_issues()

    assert [(m.number, m.target, m.incident_id) for m in found] == [
        (4, "production", "production-1")
    ]
