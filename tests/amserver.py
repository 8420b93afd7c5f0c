"""A real Alertmanager for tests: Debian's ``prometheus-alertmanager`` on 127.0.0.1.

:class:`AlertmanagerServer` runs the binary with a configuration and a storage directory
of its own, on free ports, and waits until it answers ``/-/ready``: alone (no gossip) or
peered with others on 127.0.0.1 (an HA set, :func:`start_cluster`). :meth:`kill` is a
crash; :meth:`start` brings it back on the same port with the same storage.

Around it:

* :class:`Notifications` is the webhook receiver its route sends to, so a test sees what
  Alertmanager notifies (each payload checked against the webhook's documented shape);
* :class:`AlertmanagerProxy` stands in front of it as the authenticating proxy the
  channel's bearer token is for, records every request, and injects faults: a status
  (5xx, 429 with ``Retry-After``, 400), a delay longer than the client's time-out, or
  "pass the request on, then cut the connection without replying".

The binary comes from Debian's ``prometheus-alertmanager`` package. Without it the
fixtures skip, except in CI (``CI=true``), which installs it: there they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.ports import free_port

HOST = "127.0.0.1"
BINARY = Path("/usr/bin/prometheus-alertmanager")
MISSING = (
    "prometheus-alertmanager is not installed"
    " (Debian/Ubuntu: apt-get install prometheus-alertmanager)"
)
START_TIMEOUT_S = 10.0
POLL_S = 0.05
TAIL_CHARS = 4000
# A route that sends each alert on its own and at once: tests see notifications quickly.
HOOK_CONFIG = """\
route:
  receiver: hook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook_url}
        send_resolved: true
"""
NULL_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def alertmanager_binary() -> Path | None:
    """The installed binary, or None."""
    found = shutil.which("prometheus-alertmanager")
    if found:
        return Path(found)
    return BINARY if BINARY.is_file() else None


def require_binary() -> Path:
    """The binary; skip without it, except in CI where it must exist."""
    binary = alertmanager_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI must install it")
        pytest.skip(MISSING)
    return binary


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what or condition}")
        time.sleep(POLL_S)


class AlertmanagerServer:
    """One Alertmanager process; :meth:`start` runs it, :meth:`close` removes its files."""

    def __init__(
        self,
        base: Path,
        config: str = NULL_CONFIG,
        *,
        binary: Path | None = None,
        cluster_port: int | None = None,
        peers: Sequence[str] = (),
    ) -> None:
        self.binary = binary or require_binary()
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        (base / "alertmanager.yml").write_text(config, encoding="utf-8")
        self.port = free_port()
        self.cluster_port = cluster_port  # None: gossip off
        self.peers = list(peers)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.http = httpx.Client(base_url=self.url, timeout=5.0)

    @property
    def url(self) -> str:
        """The base URL the channel is given."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process runs."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle

    def __enter__(self) -> AlertmanagerServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def command(self) -> list[str]:
        """The command line: loopback only, our config and storage."""
        cluster = f"{HOST}:{self.cluster_port}" if self.cluster_port else ""
        command = [
            str(self.binary),
            f"--config.file={self.base / 'alertmanager.yml'}",
            f"--storage.path={self.base / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--cluster.listen-address={cluster}",
        ]
        if self.cluster_port:
            command += [f"--cluster.peer={peer}" for peer in self.peers]
            # notifications wait for the gossip to settle: not a minute in a test
            command += ["--cluster.settle-timeout=0s", "--cluster.reconnect-interval=1s"]
        return command

    def start(self) -> AlertmanagerServer:
        """Run the process and wait until it is ready; a no-op while it runs."""
        if self.running:
            return self
        self._log = (self.base / "alertmanager.log").open("ab")
        self._process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.base
        )
        wait_for(self._ready, START_TIMEOUT_S, f"alertmanager ready\n{self.log_tail()}")
        return self

    def _ready(self) -> bool:
        if not self.running:
            pytest.fail(f"alertmanager exited\n{self.log_tail()}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """Stop at once, as a crash; :meth:`start` brings it back with its storage."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Kill the process and remove its files; idempotent."""
        self.kill()  # a graceful stop waits for the cluster to let go: nothing to keep
        self.http.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self) -> str:
        """The end of the process's output, for failure messages."""
        try:
            return (self.base / "alertmanager.log").read_text("utf-8", "replace")[-TAIL_CHARS:]
        except OSError as exc:
            return f"(no log: {exc})"

    # -- the API, as a person or a script would use it

    def alerts(self, *matchers: str, active: bool = True) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` filtered by ``matchers`` (``target="x"``)."""
        params = httpx.QueryParams([("filter", m) for m in matchers])
        params = params.add("active", "true" if active else "false")
        response = self.http.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def create_silence(self, matchers: dict[str, str], minutes: float = 60) -> str:
        """``POST /api/v2/silences`` (equality matchers); the silence's id."""
        now = time.time()
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": _iso(now - 1),
            "endsAt": _iso(now + minutes * 60),
            "createdBy": "test",
            "comment": "a person silenced it",
        }
        response = self.http.post("/api/v2/silences", json=body)
        assert response.status_code == 200, response.text
        silence_id: str = response.json()["silenceID"]
        return silence_id

    def silence(self, silence_id: str) -> dict[str, Any]:
        """``GET /api/v2/silence/{id}``."""
        response = self.http.get(f"/api/v2/silence/{silence_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def cluster_size(self) -> int:
        """How many members this one sees in its cluster, itself included."""
        status = self.http.get("/api/v2/status").json()
        return len(status["cluster"].get("peers") or [])


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch_s))


def start_cluster(base: Path, size: int = 2, config: str = NULL_CONFIG) -> list[AlertmanagerServer]:
    """``size`` members peered on 127.0.0.1, started and seeing each other."""
    binary = require_binary()
    ports = [free_port() for _ in range(size)]
    members = [
        AlertmanagerServer(
            base / f"am{index}",
            config,
            binary=binary,
            cluster_port=port,
            peers=[f"{HOST}:{p}" for p in ports if p != port],
        )
        for index, port in enumerate(ports)
    ]
    try:
        for server in members:
            server.start()
        wait_for(
            lambda: all(s.cluster_size() == size for s in members),
            START_TIMEOUT_S,
            "the members peered",
        )
    except BaseException:
        for server in members:
            server.close()
        raise
    return members


# ---- what Alertmanager notifies --------------------------------------------------------

# the webhook payload, version 4 (Alertmanager's docs, configuration.md, <webhook_config>)
_WEBHOOK_FIELDS = {"version", "groupKey", "status", "receiver", "groupLabels", "alerts"}
_ALERT_FIELDS = {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"}


class Notifications:
    """The webhook receiver of :data:`HOOK_CONFIG`: every alert Alertmanager notified."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                problem = owner._take(body)
                self.send_response(400 if problem else 200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_S,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Where Alertmanager posts."""
        return f"http://{HOST}:{self._server.server_address[1]}/hook"

    def _take(self, body: bytes) -> str | None:
        try:
            payload = json.loads(body)
            missing = _WEBHOOK_FIELDS - payload.keys()
            missing |= {f for alert in payload["alerts"] for f in _ALERT_FIELDS - alert.keys()}
            problem = f"missing {sorted(missing)}" if missing else None
            if payload.get("version") != "4":
                problem = f"version {payload.get('version')!r}"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problem = f"unreadable: {exc}"
        with self._lock:
            if problem:
                self.problems.append(problem)
            else:
                self.alerts.extend(payload["alerts"])
        return problem

    def of(self, alertname: str, status: str | None = None) -> list[dict[str, Any]]:
        """The notified alerts of that name (and status: firing, resolved)."""
        with self._lock:
            return [
                a
                for a in self.alerts
                if a["labels"].get("alertname") == alertname
                and (status is None or a["status"] == status)
            ]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


# ---- the authenticating proxy, with faults ----------------------------------------------


@dataclass
class Fault:
    """What the proxy does instead of (or besides) passing a request on."""

    status: int | None = None  # answer this, without passing on
    retry_after: str | None = None  # with this Retry-After
    body: str = "injected fault"
    delay_s: float = 0.0  # wait this long, then pass on (the client has given up)
    cut_after_forwarding: bool = False  # pass on, then close without replying


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    authorized: bool
    content_type: str | None
    body: bytes = field(repr=False)


class AlertmanagerProxy:
    """A reverse proxy to one Alertmanager that wants ``Authorization: Bearer <token>``.

    Answers 401 without the right token, and quotes the ``Authorization`` header it got
    in that refusal (a careless proxy would: the channel must not repeat it). ``faults`` are
    taken one per request, first in first out.
    """

    def __init__(self, upstream: str, token: str | None = None) -> None:
        self.upstream = upstream
        self.token = token
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.forwarded = 0  # requests Alertmanager answered (whether the client heard it)
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=5.0)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self)

            def do_POST(self) -> None:
                owner._handle(self)

            def do_DELETE(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a delayed request may outlive the test
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_S,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The URL the channel is given instead of Alertmanager's."""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next requests."""
        with self._lock:
            self.faults.extend(faults)

    def requests(self) -> list[Seen]:
        """Every request so far."""
        with self._lock:
            return list(self.seen)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0") or 0))
        authorization = handler.headers.get("Authorization")
        authorized = self.token is None or authorization == f"Bearer {self.token}"
        with self._lock:
            self.seen.append(
                Seen(
                    handler.command,
                    handler.path,
                    authorized,
                    handler.headers.get("Content-Type"),
                    body,
                )
            )
            fault = self.faults.pop(0) if self.faults else None
        if not authorized:
            return _reply(handler, 401, f"unauthorized: you sent {authorization!r}")
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return _reply(handler, fault.status, json.dumps(fault.body), headers)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        # passed on as sent: Alertmanager itself refuses a body that is not application/json
        content_type = handler.headers.get("Content-Type")
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            answer = self._client.request(
                handler.command, handler.path, content=body, headers=headers
            )
        except httpx.HTTPError:
            return _reply(handler, 502, "upstream unreachable")
        with self._lock:
            self.forwarded += 1
        if fault is not None and fault.cut_after_forwarding:
            handler.close_connection = True  # Alertmanager acted; the client hears nothing
            return None
        return _reply(handler, answer.status_code, answer.text)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def _reply(
    handler: BaseHTTPRequestHandler, status: int, text: str, headers: dict[str, str] | None = None
) -> None:
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):  # the client may have given up
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    """A webhook receiver for what Alertmanager notifies."""
    receiver = Notifications()
    yield receiver
    receiver.close()


@pytest.fixture
def alertmanager(tmp_path: Path, notifications: Notifications) -> Iterator[AlertmanagerServer]:
    """One Alertmanager, gossip off, notifying :func:`notifications` of every alert."""
    config = HOOK_CONFIG.format(hook_url=notifications.url)
    with AlertmanagerServer(tmp_path / "alertmanager", config) as server:
        yield server


@pytest.fixture
def alertmanager_pair(tmp_path: Path) -> Iterator[list[AlertmanagerServer]]:
    """Two Alertmanagers peered on 127.0.0.1: an HA set."""
    members = start_cluster(tmp_path / "cluster", 2)
    yield members
    for server in members:
        server.close()
