"""Probing real local servers: every outcome and reason, bounds, and never an exception."""

from __future__ import annotations

import gzip
import socket
import ssl
import string
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.config import CheckConfig, MonitorSection, TargetConfig
from monitor.probing.judge import EXCERPT_CHARS
from monitor.probing.kinds import Request
from monitor.probing.prober import USER_AGENT, OutgoingRequests, Prober
from monitor.probing.results import CheckResult, Outcome, Reason
from tests.targets import (
    Handler,
    TargetServer,
    close_before_response,
    delay,
    huge_body,
    json_body,
    raw,
    redirect,
    redirect_loop,
    refused_port,
    reset_before_response,
    reset_mid_body,
    respond,
    slow_body,
    tls_identity,
    truncated_chunked,
    wrong_content_length,
)

MiB = 1024 * 1024
PATH = "/health"


def target_for(url: str, **check: Any) -> TargetConfig:
    """A target with one check ``health`` on :data:`PATH`."""
    return TargetConfig(name="t", url=url, checks=[CheckConfig(name="health", path=PATH, **check)])


async def probe(
    url: str,
    *,
    timeout_s: float = 2.0,
    verify: ssl.SSLContext | bool = True,
    **check: Any,
) -> CheckResult:
    """One probe of one check with a fresh :class:`Prober`."""
    target = target_for(url, **check)
    async with Prober(MonitorSection(timeout=timeout_s), verify=verify) as prober:
        return await prober.probe_check(target, target.checks[0])


def assert_readable(result: CheckResult) -> None:
    """``detail`` is one short, printable line."""
    assert result.detail, result
    assert result.detail.isprintable(), result.detail
    assert len(result.detail) <= 250, result.detail


@dataclass(frozen=True)
class Case:
    """A scripted answer and the result it must produce."""

    handler: Handler
    outcome: Outcome
    reason: Reason
    status: int | None
    detail: str  # a fragment the detail must contain
    check: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 2.0


CONDITION = "status == 'healthy'"

CASES = [
    pytest.param(
        Case(respond(200, b"ok"), Outcome.UP, Reason.OK, 200, "200 in"),
        id="up-200",
    ),
    pytest.param(
        Case(
            redirect("/elsewhere"),
            Outcome.UP,
            Reason.OK,
            302,
            "302 in",
            check={"expect_status": [200, 302]},
        ),
        id="up-302-expected-not-followed",
    ),
    pytest.param(
        Case(
            respond(200, b"x" * (5 * MiB)), Outcome.UP, Reason.OK, 200, "200 in", {"method": "HEAD"}
        ),
        id="up-head-of-large-resource",
    ),
    pytest.param(
        Case(
            respond(503, b"unavailable"), Outcome.DOWN, Reason.STATUS, 503, "expected 200, got 503"
        ),
        id="status-503",
    ),
    pytest.param(
        Case(redirect("/elsewhere"), Outcome.DOWN, Reason.STATUS, 302, "expected 200, got 302"),
        id="status-302-unexpected",
    ),
    pytest.param(
        Case(
            respond(503, b"x" * (2 * MiB)),
            Outcome.DOWN,
            Reason.STATUS,
            503,
            "expected 200, got 503",
        ),
        id="status-wins-over-too-large",
    ),
    pytest.param(
        Case(
            json_body({"status": "degraded"}),
            Outcome.DOWN,
            Reason.CONDITION,
            200,
            f"condition false: {CONDITION}",
            check={"conditions": [CONDITION]},
        ),
        id="condition-false",
    ),
    pytest.param(
        Case(
            respond(200, b"<html>fine</html>"),
            Outcome.DOWN,
            Reason.INVALID_JSON,
            200,
            "not JSON",
            check={"conditions": [CONDITION]},
        ),
        id="invalid-json",
    ),
    pytest.param(
        Case(huge_body(5 * MiB), Outcome.DOWN, Reason.TOO_LARGE, 200, "read cap"),
        id="too-large-content-length",
    ),
    pytest.param(
        Case(huge_body(5 * MiB, chunked=True), Outcome.DOWN, Reason.TOO_LARGE, 200, "read cap"),
        id="too-large-chunked",
    ),
    pytest.param(
        Case(delay(3), Outcome.DOWN, Reason.TIMEOUT, None, "within 0.5s", timeout_s=0.5),
        id="timeout-slow-headers",
    ),
    pytest.param(
        # Each byte comes well within the per-read timeout; the whole body does not.
        Case(
            slow_body(40, chunk=1, every_s=0.05),
            Outcome.DOWN,
            Reason.TIMEOUT,
            None,
            "within 0.5s",
            timeout_s=0.5,
        ),
        id="timeout-trickling-body",
    ),
    pytest.param(
        Case(reset_before_response(), Outcome.DOWN, Reason.CONNECT, None, "reset by peer"),
        id="connect-reset-before-response",
    ),
    pytest.param(
        Case(
            redirect_loop(),
            Outcome.DOWN,
            Reason.ERROR,
            None,
            "too many redirects",
            check={"follow_redirects": True},
        ),
        id="error-redirect-loop",
    ),
    pytest.param(
        Case(reset_mid_body(), Outcome.DOWN, Reason.ERROR, None, "reset by peer"),
        id="error-reset-mid-body",
    ),
    pytest.param(
        Case(close_before_response(), Outcome.DOWN, Reason.ERROR, None, "without sending"),
        id="error-closed-before-response",
    ),
    pytest.param(
        Case(truncated_chunked(), Outcome.DOWN, Reason.ERROR, None, "transfer length"),
        id="error-truncated-chunked",
    ),
    pytest.param(
        Case(
            wrong_content_length(100, b"abc"),
            Outcome.DOWN,
            Reason.ERROR,
            None,
            "received 3 of 100 bytes",
        ),
        id="error-content-length-beyond-body",
    ),
    pytest.param(
        Case(
            delay(0.3),
            Outcome.DEGRADED,
            Reason.SLOW,
            200,
            "budget 100 ms",
            check={"max_response_time": 0.1},
        ),
        id="degraded-slow",
    ),
]


@pytest.mark.parametrize("case", CASES)
async def test_outcome_and_reason(target_server: TargetServer, case: Case) -> None:
    """Each scripted answer ends as the pinned outcome, reason, status and detail."""
    target_server.route(PATH, case.handler)

    result = await probe(target_server.url, timeout_s=case.timeout_s, **case.check)

    assert (result.outcome, result.reason, result.status_code) == (
        case.outcome,
        case.reason,
        case.status,
    ), result.detail
    assert case.detail in result.detail
    assert_readable(result)
    assert result.url == target_server.url + PATH
    assert 0 <= result.duration_s < case.timeout_s + 0.5


async def test_bytes_beyond_the_content_length_are_a_broken_response(
    target_server: TargetServer,
) -> None:
    """A Content-Length below the body length: aiohttp parses the surplus as the next
    response's head and refuses the answer (httpcore read the declared bytes, up)."""
    target_server.route(PATH, wrong_content_length(2, b"abcdef"))

    result = await probe(target_server.url)

    assert (result.outcome, result.reason) == (Outcome.DOWN, Reason.ERROR)
    assert "Bad status line" in result.detail


async def test_connection_refused() -> None:
    """A port where nothing listens is down for ``connect``, with the system's words."""
    result = await probe(f"http://127.0.0.1:{refused_port()}")

    assert (result.outcome, result.reason, result.status_code) == (
        Outcome.DOWN,
        Reason.CONNECT,
        None,
    )
    assert result.detail == "cannot connect: Connection refused"


async def test_unresolvable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve is down for ``dns``."""
    # Tests talk to loopback only, so the resolver is the one part we stand in for:
    # getaddrinfo fails exactly as it does for NXDOMAIN.
    real_getaddrinfo = socket.getaddrinfo

    def nxdomain(host: object, *args: object, **kwargs: object) -> object:
        if host == "nonexistent.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", nxdomain)
    result = await probe("http://nonexistent.invalid", timeout_s=2.0)

    assert (result.outcome, result.reason, result.status_code) == (Outcome.DOWN, Reason.DNS, None)
    assert result.detail.startswith("name resolution failed: ")
    assert_readable(result)


@pytest.mark.parametrize(
    ("identity", "trusted", "outcome", "reason", "detail"),
    [
        pytest.param(
            {}, False, Outcome.DOWN, Reason.TLS, "unable to get local issuer", id="self-signed"
        ),
        pytest.param({}, True, Outcome.UP, Reason.OK, "200 in", id="trusted-ca"),
        pytest.param(
            {"expired": True},
            True,
            Outcome.DOWN,
            Reason.TLS,
            "certificate has expired",
            id="expired",
        ),
        pytest.param(
            {"hostname": "other.example"},
            True,
            Outcome.DOWN,
            Reason.TLS,
            "mismatch",
            id="other-hostname",
        ),
    ],
)
async def test_tls(
    identity: dict[str, Any], trusted: bool, outcome: Outcome, reason: Reason, detail: str
) -> None:
    """Certificates are verified by default; a bad one is down for ``tls``."""
    with TargetServer(tls=tls_identity(**identity)) as server:
        server.route(PATH, respond(200, b"ok"))
        assert server.tls is not None
        verify = server.tls.client_context() if trusted else True

        result = await probe(server.url, verify=verify)

    assert (result.outcome, result.reason) == (outcome, reason)
    assert detail in result.detail
    assert_readable(result)


async def test_tls_fixture_serves_https(target_server_tls: TargetServer) -> None:
    """The ``target_server_tls`` fixture answers over HTTPS to a client trusting its CA."""
    target_server_tls.route(PATH, respond(200, b"ok"))
    assert target_server_tls.tls is not None

    result = await probe(target_server_tls.url, verify=target_server_tls.tls.client_context())

    assert result.url.startswith("https://")
    assert result.outcome is Outcome.UP


@pytest.mark.parametrize(
    ("version_expression", "document", "version"),
    [
        pytest.param("version", {"version": "1.2.3"}, "1.2.3", id="string"),
        pytest.param("build.number", {"build": {"number": 42}}, "42", id="number"),
        pytest.param(
            "join('+', [version, sha])",
            {"version": "1.2", "sha": "abc"},
            "1.2+abc",
            id="expression",
        ),
        pytest.param("version", {"version": True}, None, id="bool-is-no-version"),
        pytest.param("version", {"version": {"a": 1}}, None, id="object-is-no-version"),
        pytest.param("version", {}, None, id="missing"),
        pytest.param("version", {"version": "v" * 500}, "v" * 100, id="bounded"),
    ],
)
async def test_version(
    target_server: TargetServer,
    version_expression: str,
    document: dict[str, Any],
    version: str | None,
) -> None:
    """The ``version`` expression yields a short string from a scalar, else None."""
    target_server.route(PATH, json_body(document))

    result = await probe(target_server.url, version=version_expression)

    assert (result.outcome, result.version) == (Outcome.UP, version)


async def test_selected_fields(target_server: TargetServer) -> None:
    """The default health fields are picked from a JSON body; huge values are cut short."""
    document = {
        "status": "ok",
        "errorRate": 0,
        "activeAlerts": ["disk"],
        "alerts": "a" * 10_000,
        "unrelated": "not selected",
    }
    target_server.route(PATH, json_body(document))

    result = await probe(target_server.url)

    assert result.outcome is Outcome.UP
    assert set(result.fields) == {"status", "errorRate", "activeAlerts", "alerts"}
    assert result.fields["errorRate"] == 0
    assert len(result.fields["alerts"]) <= 500


async def test_fields_kept_when_a_condition_fails(target_server: TargetServer) -> None:
    """A failed condition still reports the selected fields, for the incident text."""
    target_server.route(PATH, json_body({"status": "degraded", "version": "2.0"}))

    result = await probe(target_server.url, conditions=[CONDITION], version="version")

    assert result.reason is Reason.CONDITION
    assert (dict(result.fields), result.version) == (
        {"status": "degraded", "version": "2.0"},
        "2.0",
    )


async def test_custom_headers_are_sent(target_server: TargetServer) -> None:
    """Configured headers reach the server next to the monitor's User-Agent."""
    target_server.route(PATH, respond(200, b"ok"))

    await probe(target_server.url, headers={"Authorization": "Bearer sekrit", "X-Probe": "monitor"})

    (request,) = target_server.requests(PATH)
    assert request.header("authorization") == "Bearer sekrit"
    assert request.header("x-probe") == "monitor"
    assert request.header("user-agent") == USER_AGENT


async def test_head_method(target_server: TargetServer) -> None:
    """``method = "HEAD"`` sends a HEAD request and reads no body."""
    target_server.route(PATH, respond(200, b"body a GET would get"))

    result = await probe(target_server.url, method="HEAD")

    assert [r.method for r in target_server.requests(PATH)] == ["HEAD"]
    assert (result.outcome, result.body_excerpt) == (Outcome.UP, "")


async def test_body_excerpt_bounded_and_utf8_replaced(target_server: TargetServer) -> None:
    """The excerpt is at most EXCERPT_CHARS long and invalid UTF-8 becomes U+FFFD."""
    target_server.route(PATH, respond(503, b"\xff\xfe oops " + "é".encode() * 5000))

    result = await probe(target_server.url)

    assert result.body_excerpt.startswith("\ufffd\ufffd oops éé")
    assert len(result.body_excerpt) == EXCERPT_CHARS


async def test_route_flips_between_healthy_and_failing(target_server: TargetServer) -> None:
    """``set`` changes a route at run time; one prober sees up, down, up."""
    target = target_for(target_server.url)
    outcomes = []
    async with Prober(MonitorSection(timeout=2.0)) as prober:
        for handler in (respond(200, b"ok"), respond(503), respond(200, b"ok")):
            target_server.set(PATH, handler)
            outcomes.append((await prober.probe_check(target, target.checks[0])).outcome)

    assert outcomes == [Outcome.UP, Outcome.DOWN, Outcome.UP]
    assert target_server.hits(PATH) == 3


async def test_concurrency_is_bounded(target_server: TargetServer) -> None:
    """No more than ``concurrency`` requests are in flight at once, across targets."""
    target_server.route(PATH, delay(0.2))
    targets = [
        TargetConfig(name=f"t{i}", url=target_server.url, checks=[CheckConfig(name="c", path=PATH)])
        for i in range(6)
    ]

    async with Prober(MonitorSection(timeout=5.0, concurrency=2)) as prober:
        results = await prober.probe_targets(targets)

    assert all(r.outcome is Outcome.UP for r in results)
    assert target_server.peak_in_flight == 2
    assert target_server.peak_connections <= 2


async def test_checks_of_a_target_run_concurrently(target_server: TargetServer) -> None:
    """Two 0.5 s checks of one target take well under their sum."""
    target_server.route("/a", delay(0.5))
    target_server.route("/b", delay(0.5))
    target = TargetConfig(
        name="t",
        url=target_server.url,
        checks=[CheckConfig(name="a", path="/a"), CheckConfig(name="b", path="/b")],
    )

    started = time.perf_counter()
    async with Prober(MonitorSection(timeout=5.0)) as prober:
        result = await prober.probe_target(target)
    elapsed = time.perf_counter() - started

    assert [c.outcome for c in result.checks] == [Outcome.UP, Outcome.UP]
    assert elapsed < 0.9
    assert result.at == min(c.started_at for c in result.checks)


_GZIP_BOMB = gzip.compress(b"\0" * (20 * MiB))

HOSTILE = [
    pytest.param(raw(b"\x00\x01\x02 not http\r\n\r\n"), {}, Reason.ERROR, id="garbage"),
    pytest.param(raw(b"HTTP/1.1 abc Nope\r\n\r\n"), {}, Reason.ERROR, id="bad-status-line"),
    pytest.param(
        raw(b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok"), {}, Reason.STATUS, id="status-999"
    ),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n"),
        {},
        Reason.ERROR,
        id="header-without-colon",
    ),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nok"),
        {},
        Reason.ERROR,
        id="negative-length",
    ),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
        {},
        Reason.ERROR,
        id="conflicting-lengths",
    ),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"),
        {},
        Reason.ERROR,
        id="huge-header",
    ),
    pytest.param(raw(b"a body without a head"), {}, Reason.ERROR, id="no-head"),
    pytest.param(raw(b"HTTP/1.1 200 OK\r\n"), {}, Reason.ERROR, id="head-cut-short"),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        {},
        Reason.ERROR,
        id="bad-chunk-size",
    ),
    pytest.param(
        raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"),
        {},
        Reason.ERROR,
        id="bad-gzip",
    ),
    pytest.param(
        respond(200, _GZIP_BOMB, {"Content-Encoding": "gzip"}), {}, Reason.TOO_LARGE, id="gzip-bomb"
    ),
    pytest.param(
        respond(200, b"[" * 100_000),
        {"conditions": [CONDITION]},
        Reason.INVALID_JSON,
        id="deep-json",
    ),
    pytest.param(
        respond(200, b'{"latency": 1e999}'),
        {"conditions": ["ceil(latency) < `5`"]},
        Reason.CONDITION,
        id="infinite-number",
    ),
    pytest.param(
        respond(200, b'{"latency": NaN}'),
        {"conditions": ["floor(latency) < `5`"], "version": "floor(latency)"},
        Reason.CONDITION,
        id="nan",
    ),
    pytest.param(
        json_body({"status": "healthy"}),
        {"conditions": ["status\n  == 'sick'"]},
        Reason.CONDITION,
        id="multi-line-condition",
    ),
]


@pytest.mark.parametrize(("handler", "check", "reason"), HOSTILE)
async def test_probe_never_raises(
    target_server: TargetServer, handler: Handler, check: dict[str, Any], reason: Reason
) -> None:
    """Whatever bytes come back, the probe returns a down result with a readable detail."""
    target_server.route(PATH, handler)

    result = await probe(target_server.url, **check)

    assert (result.outcome, result.reason) == (Outcome.DOWN, reason)
    assert_readable(result)
    assert target_server.errors == []


# --- the region in every request -----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "region"),
    [(MonitorSection(), "local"), (MonitorSection(region="ams"), "ams")],
    ids=["default-local", "ams"],
)
async def test_every_request_names_the_region(
    target_server: TargetServer, settings: MonitorSection, region: str
) -> None:
    """Every probe request, of every check and every redirect followed, carries
    ``X-Monitor-Region`` and a User-Agent naming fly-monitor, its version and the region:
    the app's logs can tell the regions' probes apart."""
    from monitor import __version__
    from monitor.probing.prober import REGION_HEADER, user_agent

    target_server.route(PATH, respond(200, b"ok"))
    target_server.route("/moved", redirect(PATH))
    target = TargetConfig(
        name="t",
        url=target_server.url,
        checks=[
            CheckConfig(name="health", path=PATH),
            CheckConfig(name="head", path=PATH, method="HEAD"),
            CheckConfig(name="moved", path="/moved", follow_redirects=True),
            CheckConfig(name="auth", path=PATH, headers={"Authorization": "Bearer x"}),
        ],
    )

    async with Prober(settings) as prober:
        result = await prober.probe_target(target)

    assert result.ok, result
    requests = target_server.requests(PATH) + target_server.requests("/moved")
    assert len(requests) == 5  # four checks and one redirect hop
    for request in requests:
        assert request.header(REGION_HEADER) == region
        agent = request.header("user-agent")
        assert agent == user_agent(region)
        assert agent is not None
        assert agent.startswith(f"fly-monitor/{__version__} ")
        assert f"region {region}" in agent
    assert REGION_HEADER == "X-Monitor-Region"


async def test_a_check_that_follows_no_redirect_sends_what_the_client_would(
    target_server: TargetServer,
) -> None:
    """Such a check skips httpx's client loop and goes straight to the transport; the
    request is the same on the wire as one sent through the client (a check that
    follows redirects), headers in order, values and all."""
    target_server.route(PATH, respond(200, b"ok"))
    headers = {"X-Probe": "1"}
    direct = target_for(target_server.url, headers=headers)
    through_client = target_for(target_server.url, headers=headers, follow_redirects=True)
    async with Prober(MonitorSection(timeout=2)) as prober:
        for target in (direct, through_client):
            result = await prober.probe_check(target, target.checks[0])
            assert result.outcome is Outcome.UP, result.detail

    first, second = target_server.requests(PATH)
    assert (first.method, first.target, first.version) == ("GET", PATH, "HTTP/1.1")
    assert first.headers == second.headers
    names = [name for name, _ in first.headers]
    assert names == [
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "user-agent",
        "x-monitor-region",
        "x-probe",
    ]


# ---- requests built from their shape's template ----------------------------------------------


class CountingClient(httpx.AsyncClient):
    """An httpx client that counts the requests it builds."""

    built = 0

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        self.built += 1
        return super().build_request(*args, **kwargs)


ORIGINS = [
    "http://example.com",
    "http://EXAMPLE.com:80",
    "https://example.com:443",
    "https://example.com:8443",
    "https://user:p%40ss@example.com",
    "http://127.0.0.1:8080",
    "http://[::1]:9000",
    "http://bücher.example",
]
PATH_TEXT = st.text(alphabet=string.printable.strip() + " üé/%?#", max_size=24)
PARAM_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
PARAMS = st.lists(st.tuples(PARAM_TEXT, PARAM_TEXT), max_size=3)


HEADERS = st.dictionaries(
    st.sampled_from(["X-Probe", "Authorization", "Host", "Accept", "Content-Length"]),
    st.text(alphabet=string.ascii_letters + string.digits + " -=/", max_size=12),
    max_size=3,
)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "PUT"]),
    origins=st.tuples(st.sampled_from(ORIGINS), st.sampled_from(ORIGINS)),
    paths=st.tuples(PATH_TEXT, PATH_TEXT),
    params=st.tuples(PARAMS, PARAMS),
    # the second's headers: the first's (None) or its own, equal to them or not
    headers=st.tuples(HEADERS, st.none() | HEADERS),
    timeouts=st.tuples(st.sampled_from([1.0, 2.5]), st.sampled_from([1.0, 2.5])),
)
@settings(max_examples=400, deadline=None)
def test_a_request_built_from_its_shapes_template_is_the_one_the_client_builds(
    method: str,
    origins: tuple[str, str],
    paths: tuple[str, str],
    params: tuple[list[tuple[str, str]], list[tuple[str, str]]],
    headers: tuple[dict[str, str], dict[str, str] | None],
    timeouts: tuple[float, float],
) -> None:
    """The second request of a shape (method, scheme and authority, headers, time-out)
    is built from the first's headers, body and time-out, with only its URL parsed: it
    is the request httpx's client builds for it, header for header, or the same
    refusal. Another scheme, authority, header or time-out is another shape."""
    shape_headers = (headers[0], headers[0] if headers[1] is None else headers[1])
    first, second = (
        Request(method=method, url=f"{origin}/{path}", params=query, headers=fields)
        for origin, path, query, fields in zip(origins, paths, params, shape_headers, strict=True)
    )

    def built(client: httpx.AsyncClient, wanted: Request, timeout_s: float) -> object:
        try:
            return client.build_request(
                wanted.method,
                wanted.url,
                params=list(wanted.params) or None,
                headers=dict(wanted.headers),
                timeout=httpx.Timeout(timeout_s),
            )
        except Exception as exc:
            return type(exc), str(exc)

    client = CountingClient(headers={"User-Agent": "probe", "X-Monitor-Region": "ams"})
    assume(isinstance(built(client, first, timeouts[0]), httpx.Request))  # a template
    expected = built(client, second, timeouts[1])
    requests = OutgoingRequests(client)
    client.built = 0

    requests.get(first, timeouts[0])
    try:
        got: object = requests.get(second, timeouts[1])
    except Exception as exc:
        got = type(exc), str(exc)

    if not isinstance(expected, httpx.Request) or not isinstance(got, httpx.Request):
        assert got == expected
        return
    # the first's; the second came from its template unless its shape differs
    same_shape = (origins[0], *shape_headers[0].items(), timeouts[0]) == (
        origins[1],
        *shape_headers[1].items(),
        timeouts[1],
    )
    assert client.built == (1 if same_shape else 2)
    assert (got.method, got.url, got.url.raw_path) == (
        expected.method,
        expected.url,
        expected.url.raw_path,
    )
    assert got.headers.raw == expected.headers.raw
    assert got.extensions == expected.extensions
    assert b"".join(got.stream) == b"".join(expected.stream) == b""  # type: ignore[arg-type]


async def test_checks_built_from_a_template_send_what_each_sends_alone(
    target_server: TargetServer,
) -> None:
    """One prober probing targets' checks together builds most of them from the first
    of their shape's template; each probed alone by a fresh prober is built by httpx's
    client. The server sees the same requests either way: method, target and headers
    in order, basic auth from a URL's userinfo included, also for a check built from a
    template that was already sent with it."""
    for path in (PATH, "/a%20b", "/caf%C3%A9"):
        target_server.route(path, respond(200, b"ok"))
    headers = {"X-Probe": "1"}
    plain = TargetConfig(
        name="plain",
        url=target_server.url,
        checks=[
            CheckConfig(name="health", path=PATH, headers=headers),
            CheckConfig(name="space", path="/a%20b", headers=headers),
            CheckConfig(name="accent", path="/café", headers=headers),
            CheckConfig(name="query", path=f"{PATH}?verbose=1", headers=headers),
            CheckConfig(name="other-header", path="/a%20b", headers={"X-Probe": "2"}),
            CheckConfig(name="post", path=PATH, method="POST", headers=headers),
            CheckConfig(name="post-too", path="/a%20b", method="POST", headers=headers),
        ],
    )
    auth = TargetConfig(
        name="auth",
        url=target_server.url.replace("http://", "http://probe:word@"),
        checks=[CheckConfig(name="health", path=PATH), CheckConfig(name="space", path="/a%20b")],
    )
    late = CheckConfig(name="late", path="/caf%C3%A9")  # after its template was sent

    def sent() -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
        return sorted(
            (r.method, r.target, r.headers)
            for path in (PATH, "/a%20b", "/caf%C3%A9")
            for r in target_server.requests(path)
        )

    async with Prober(MonitorSection(timeout=2)) as prober:
        results = await prober.probe_targets([plain, auth])
        assert all(r.ok for r in results), results
        assert (await prober.probe_check(auth, late)).outcome is Outcome.UP
    sent_together = sent()
    lone = [(t, c) for t in (plain, auth) for c in t.checks] + [(auth, late)]
    for target, check in lone:
        async with Prober(MonitorSection(timeout=2)) as prober:
            assert (await prober.probe_check(target, check)).outcome is Outcome.UP
    sent_alone = sent()
    for request in sent_together:  # what is left is what the lone probes sent
        sent_alone.remove(request)

    assert sent_alone == sent_together
    assert [r[:2] for r in sent_together] == [
        ("GET", "/a%20b"),
        ("GET", "/a%20b"),
        ("GET", "/a%20b"),
        ("GET", "/caf%C3%A9"),
        ("GET", "/caf%C3%A9"),
        ("GET", "/health"),
        ("GET", "/health"),
        ("GET", "/health?verbose=1"),
        ("POST", "/a%20b"),
        ("POST", "/health"),
    ]
    basic = [dict(r[2]).get("authorization") for r in sent_together]
    assert basic.count("Basic cHJvYmU6d29yZA==") == 3  # probe:word, on the three of auth
    assert sorted(dict(r[2]).get("x-probe", "-") for r in sent_together) == [
        *["-"] * 3,
        *["1"] * 6,
        "2",
    ]


async def test_a_redirects_url_is_converted_for_each_probe_not_kept(
    target_server: TargetServer,
) -> None:
    """The transport keeps the aiohttp form of each check's own URL, converted once
    when its request is built; a redirect's URL is a new object at every probe, so
    keeping it would only grow memory (it grew up to a bound before)."""
    from monitor.probing.prober import KEEPALIVE_S
    from monitor.probing.transport import AiohttpTransport

    target_server.route(PATH, respond(200, b"ok"))
    target_server.route("/moved", redirect(PATH))
    target = TargetConfig(
        name="t",
        url=target_server.url,
        checks=[CheckConfig(name="moved", path="/moved", follow_redirects=True)],
    )
    transport = AiohttpTransport(True, max_connections=4, keepalive_s=KEEPALIVE_S)
    async with Prober(MonitorSection(timeout=2), transport=transport) as prober:
        for _ in range(20):
            assert (await prober.probe_target(target)).ok

    assert target_server.hits(PATH) == 20
    assert len(transport._urls) == 1  # the check's /moved, not twenty redirects' /health


@pytest.mark.parametrize(
    "url", ["http://xn--a.example", f"http://é{'x' * 70}.example"], ids=["idna-codepoint", "idna"]
)
async def test_a_url_httpx_refuses_to_build_is_a_result_and_the_cycle_goes_on(
    target_server: TargetServer, url: str
) -> None:
    """A cycle builds its requests before the first goes out. A URL the config takes
    but httpx refuses to build is not an exception there: its check is probed like any
    other and reports why, and the cycle's other checks are probed."""
    target_server.route(PATH, respond(200, b"ok"))
    targets = [target_for(url), target_for(target_server.url)]
    async with Prober(MonitorSection(timeout=2)) as prober:
        refused, fine = await prober.probe_targets(targets)

    assert fine.ok, fine
    (check,) = refused.checks
    # as before the requests were built ahead: httpx's refusal, in its words
    assert (check.outcome, check.reason) == (Outcome.DOWN, Reason.ERROR), check
    assert "not allowed" in check.detail or "Invalid IDNA hostname" in check.detail
    assert_readable(check)


# ---- the keep-alive race (encode/httpx#2983) ---------------------------------------------------


def closes_reused_connections(closed: list[int]) -> Handler:
    """Answers a connection's first request; closes it (FIN, no answer) at the next.

    What a server's idle time-out does when it crosses a request on a pooled connection:
    the request goes out on a connection the server has just given up. Deterministic,
    so the race is provoked on every reuse rather than now and then.
    """
    answered: list[Any] = []  # the connections themselves: an id() is reused once freed
    ok = respond(200, b"ok")

    async def handler(request: Any, conn: Any) -> None:
        if any(conn is seen for seen in answered):
            closed.append(id(conn))
            await conn.close()
            return
        answered.append(conn)
        await ok(request, conn)

    return handler


@pytest.mark.parametrize("engine", ["aiohttp", "httpcore"])
async def test_a_pooled_connection_the_server_closed_is_not_a_failure(
    target_server: TargetServer, engine: str
) -> None:
    """Probes at a sub-second cadence over a pool whose connections the server drops as
    they are reused: the engine resends once on a fresh connection (GET is idempotent),
    so no probe fails. httpx's own transport, the engine before, fails them."""
    import asyncio

    import httpx

    closed: list[int] = []
    target_server.route(PATH, closes_reused_connections(closed))
    target = target_for(target_server.url)
    transport = httpx.AsyncHTTPTransport() if engine == "httpcore" else None
    async with Prober(MonitorSection(timeout=2), transport=transport) as prober:
        results = []
        for _ in range(12):
            results.append(await prober.probe_check(target, target.checks[0]))
            await asyncio.sleep(0.05)

    assert closed, "no pooled connection was reused: the race was never provoked"
    failed = [r.detail for r in results if r.outcome is not Outcome.UP]
    if engine == "aiohttp":
        assert failed == []
        assert len(closed) == 11  # every probe after the first met a dropped connection
    else:
        assert failed
        assert all("without sending" in d for d in failed), failed


async def test_probes_are_stateless_no_cookie_is_kept(target_server: TargetServer) -> None:
    """A cookie the target sets is sent neither with the next probe nor along a redirect,
    and the request a check reuses goes out the same every time (its own headers, no
    Cookie), as blackbox_exporter's probes do."""
    cookie = {"Set-Cookie": "session=abc; Path=/"}
    target_server.route(PATH, respond(302, b"", {"Location": "/next", **cookie}))
    target_server.route("/next", respond(200, b"ok", cookie))
    target = target_for(target_server.url, follow_redirects=True, headers={"X-Probe": "1"})
    async with Prober(MonitorSection(timeout=2)) as prober:
        results = [await prober.probe_check(target, target.checks[0]) for _ in range(3)]

    assert [r.outcome for r in results] == [Outcome.UP] * 3
    sent = target_server.requests(PATH) + target_server.requests("/next")
    assert len(sent) == 6
    assert [r.header("cookie") for r in sent] == [None] * 6
    assert {r.header("x-probe") for r in sent} == {"1"}


async def test_probes_go_through_the_proxy_the_environment_names(
    target_server: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTP_PROXY`` is honoured as httpx's own transport honoured it: the probe of a
    name that does not resolve reaches the proxy, in absolute form, and is answered."""
    url = "http://monitor-target.invalid"
    target_server.route(url + PATH, respond(200, b"via proxy"))
    monkeypatch.setenv("HTTP_PROXY", target_server.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)

    result = await probe(url)

    assert (result.outcome, result.body_excerpt) == (Outcome.UP, "via proxy"), result.detail
    assert target_server.hits(url + PATH) == 1


async def test_no_proxy_sends_a_probe_direct(
    target_server: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that ``NO_PROXY`` names is probed directly, not through ``HTTP_PROXY``."""
    target_server.route(PATH, respond(200, b"direct"))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{refused_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for name in ("no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)

    result = await probe(target_server.url)

    assert (result.outcome, result.body_excerpt) == (Outcome.UP, "direct"), result.detail


async def test_a_reset_on_a_fresh_connection_is_not_resent(target_server: TargetServer) -> None:
    """Only a pooled connection closed under a request is resent: a target resetting a
    fresh connection is down for it, with one request, not quietly asked twice."""
    served: list[int] = []
    ok = respond(200, b"ok")

    async def reset_the_first(request: Any, conn: Any) -> None:
        served.append(1)
        if len(served) == 1:
            conn.reset()
        else:
            await ok(request, conn)

    target_server.route(PATH, reset_the_first)

    result = await probe(target_server.url)

    assert (result.outcome, result.reason) == (Outcome.DOWN, Reason.CONNECT), result.detail
    assert target_server.hits(PATH) == 1


async def test_a_long_header_line_is_served(target_server: TargetServer) -> None:
    """A 12 KiB header line (a large Content-Security-Policy) is a normal answer."""
    target_server.route(PATH, respond(200, b"ok", {"Content-Security-Policy": "a" * 12_000}))

    result = await probe(target_server.url)

    assert result.outcome is Outcome.UP, result.detail


async def test_the_request_goes_out_as_written(target_server: TargetServer) -> None:
    """The path is sent as the config encodes it (``%2e%2e`` stays, never becomes ``..``,
    another resource), and a POST without a body carries no Content-Type."""
    target = TargetConfig(
        name="t",
        url=target_server.url,
        checks=[
            CheckConfig(name="dots", path="/a/%2e%2e/b"),
            CheckConfig(name="post", path=PATH, method="POST"),
        ],
    )
    async with Prober(MonitorSection(timeout=2)) as prober:
        await prober.probe_target(target)

    assert target_server.hits("/a/%2e%2e/b") == 1
    [post] = target_server.requests(PATH)
    assert post.method == "POST"
    assert post.header("content-type") is None


async def test_a_proxy_is_named_as_httpx_named_it(
    target_server: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ALL_PROXY`` counts, a proxy without a scheme is an http:// one, and the proxy's
    password never reaches a result's detail."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "http://monitor-target.invalid"
    target_server.route(url + PATH, respond(200, b"via proxy"))
    monkeypatch.setenv("ALL_PROXY", target_server.url.removeprefix("http://"))

    result = await probe(url)

    assert (result.outcome, result.body_excerpt) == (Outcome.UP, "via proxy"), result.detail
    monkeypatch.setenv("ALL_PROXY", f"probe:s3cret-pw@127.0.0.1:{refused_port()}")
    refused = await probe(url)
    assert refused.outcome is Outcome.DOWN
    assert "s3cret-pw" not in refused.detail, refused.detail


async def test_a_host_name_idna_refuses_is_a_dns_failure() -> None:
    """A host label over 63 characters cannot be encoded, hence not resolved: ``dns``."""
    result = await probe(f"http://{'a' * 64}.example")

    assert (result.outcome, result.reason) == (Outcome.DOWN, Reason.DNS), result.detail


async def test_a_close_during_the_tls_handshake_says_so() -> None:
    """A server that accepts and closes before the TLS handshake: a readable detail."""
    import asyncio

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe(f"https://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()

    assert result.outcome is Outcome.DOWN
    assert "[None]" not in result.detail, result.detail
    assert_readable(result)


# ---- the transport's shortcuts keep the prober's guarantees ------------------------------------


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "gzip"])
async def test_a_body_that_came_whole_is_bytes_unless_encoded(
    target_server: TargetServer, encoded: bool
) -> None:
    """A plain body that arrived with the head is handed over as bytes; an encoded one
    is still read by chunks, so httpx never decodes a whole (small) gzip bomb in one
    piece before the body cap can stop it. Both are judged the same."""
    import httpx

    from monitor.probing.transport import AiohttpTransport

    body = gzip.compress(b"0" * 3_000_000) if encoded else b"ok"
    headers = {"Content-Encoding": "gzip"} if encoded else {}
    target_server.route(PATH, respond(200, body, headers))
    transport = AiohttpTransport(True, max_connections=1, keepalive_s=5)
    try:
        request = httpx.Request("GET", target_server.url + PATH)
        response = await transport.handle_async_request(request)
        assert isinstance(response.stream, httpx.ByteStream) is not encoded
        await response.aclose()
    finally:
        await transport.aclose()

    result = await probe(target_server.url)
    assert (result.outcome, result.reason) == (
        (Outcome.DOWN, Reason.TOO_LARGE) if encoded else (Outcome.UP, Reason.OK)
    )


async def test_a_redirect_not_followed_is_judged_by_its_status_whatever_its_location(
    target_server: TargetServer,
) -> None:
    """A check that follows no redirect never reads the Location, so one httpx could not
    parse does not make the answer broken: the status is judged, as configured."""
    target_server.route(PATH, respond(302, b"", {"Location": "https://[::1"}))
    result = await probe(target_server.url, expect_status=[302])
    assert (result.outcome, result.reason) == (Outcome.UP, Reason.OK), result.detail


async def test_a_closed_prober_sends_nothing(target_server: TargetServer) -> None:
    """After ``aclose`` (the daemon's shutdown) a late probe is refused as httpx's client
    refuses it, instead of opening a pool nobody would close."""
    target_server.route(PATH, respond(200, b"ok"))
    target = target_for(target_server.url)
    prober = Prober(MonitorSection(timeout=2))
    await prober.aclose()

    result = await prober.probe_check(target, target.checks[0])

    assert result.outcome is Outcome.DOWN
    assert "closed" in result.detail
    assert target_server.requests(PATH) == []
