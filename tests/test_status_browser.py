"""The status page in a real browser: headless Chromium driven over the DevTools protocol.

Chromium talks CDP over a pair of pipes (``--remote-debugging-pipe``: it reads
commands on fd 3 and writes replies and events on fd 4, each message a JSON
text ending in NUL), so no websocket library is needed. Each test opens
``/status`` at phone size, reads the rendered page back (text, element counts,
layout boxes), fails on any console message, CSP refusal or uncaught error,
and saves screenshots under ``test-output/status-page/``.

The outage test runs the real daemon (``python -m monitor run``) against a
local target and the fake GitHub; the others drive a real :class:`Daemon`
in-process behind its own uvicorn, so the page is exercised even where the
daemon does not mount the status routes.

Without ``/usr/bin/chromium`` (or ``$CHROMIUM``) the tests skip, except under
``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Settings
from monitor.daemon.daemon import Daemon
from monitor.figures.maintenance import active
from monitor.figures.slo import Span
from monitor.probing.prober import Prober
from monitor.web.routes import status_routes
from monitor.web.server import HttpServer, create_app
from monitor.web.source import LiveTarget, StatusSource
from tests.daemon_process import (
    HOST,
    Daemons,
    clean_env,
    http_get,
    wait_for,
    write_config,
)
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN, FakeGitHub
from tests.ports import free_port
from tests.targets import Connection, RegionalHealth, Request, TargetServer, delay, respond

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parents[1] / "test-output" / "status-page"
CDP_TIMEOUT_S = 20.0
PHONE = (390, 844)  # a common phone viewport, CSS pixels
NARROWEST = 360  # the width the layout must fit without sideways scrolling

# What the page looks like to a reader, gathered in the page (returned as JSON).
READ_PAGE = """(() => {
  const all = (s, root) => Array.from((root || document).querySelectorAll(s));
  const box = e => e ? (({top, bottom, left, right}) => ({top, bottom, left, right}))(
      e.getBoundingClientRect()) : null;
  const issue = document.querySelector('.banner a[href*="/issues/"]');
  return {
    title: document.title,
    h1: document.querySelector('h1').innerText,
    banner: document.querySelector('.banner').innerText,
    text: document.body.innerText,
    pills: all('section.target h2 .pill').map(e => e.innerText.trim()),
    sections: all('section.target').map(s => ({
      id: s.id, name: s.querySelector('h2 span').innerText,
      bars: s.querySelectorAll('.bars li').length,
      labelled: all('.bars li[aria-label]', s).length,
      charts: s.querySelectorAll('figure.chart svg[role=img]').length})),
    issue: issue ? {href: issue.href, box: box(issue)} : null,
    bannerBox: box(document.querySelector('.banner')),
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    innerHeight: window.innerHeight,
    scrollHeight: document.documentElement.scrollHeight,
    scripts: document.scripts.length,
  };
})()"""

# The rendered size of every chart axis label and of the caption under its chart. A
# label's height is that of its text's box on screen (a Range over it), so text that an
# SVG scales with its width counts at the size it is drawn, not at its CSS font-size.
MEASURE_CHART_LABELS = """(() => {
  const height = node => {
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = range.getClientRects();
    return rects.length ? rects[0].height : 0;
  };
  const fig = document.querySelector('figure.chart');
  const caption = fig.querySelector('figcaption');
  const words = Array.from(caption.childNodes).find(n => n.nodeType === 3 && n.textContent.trim());
  const svg = fig.querySelector('svg');
  return {
    caption: {px: parseFloat(getComputedStyle(caption).fontSize), height: height(words)},
    labels: Array.from(fig.querySelectorAll('svg text, .plot span')).map(label => ({
      text: label.textContent,
      px: parseFloat(getComputedStyle(label).fontSize),
      height: height(label),
      inside: label.getBoundingClientRect().left >= fig.getBoundingClientRect().left - 0.5
          && label.getBoundingClientRect().right <= fig.getBoundingClientRect().right + 0.5,
    })),
    plot: (({width, height}) => ({width, height}))(svg.getBoundingClientRect()),
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  };
})()"""

FOCUS_FIRST_BAR = """(() => {
  const bar = document.querySelector('.bars li');
  bar.focus();
  return {focused: document.activeElement === bar, label: bar.getAttribute('aria-label'),
          tooltip: getComputedStyle(bar, '::after').content};
})()"""


def chromium_or_skip() -> Path:
    """The browser binary; skip without it, but fail under CI, which installs it."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (install Debian's chromium or set $CHROMIUM)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: the browser test must run in CI")
    pytest.skip(message)


class CdpError(AssertionError):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """Headless Chromium speaking the DevTools protocol over two pipes."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "chromium.log"
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def place_pipes() -> None:  # in the child: fd 3 = commands, fd 4 = replies
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={workdir / 'profile'}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(3, 4),
            preexec_fn=place_pipes,  # only fcntl/dup2 in the child: safe after fork
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._inbox.put(None)  # the browser went away
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and wait for its reply (events seen meanwhile are kept)."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + CDP_TIMEOUT_S
        while True:
            reply = self._next(deadline, f"reply to {method}")
            if reply.get("id") == ident:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """The first event ``method`` of ``session`` (already seen, or arriving in time)."""
        deadline = time.monotonic() + CDP_TIMEOUT_S
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            seen = len(self.events)
            self.events.append(self._next(deadline, f"event {method}"))

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            message = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise CdpError(f"no {what} within {CDP_TIMEOUT_S} s\n{self.log()}") from None
        if message is None:
            raise CdpError(f"the browser exited while waiting for {what}\n{self.log()}")
        return message

    def log(self) -> str:
        """The tail of Chromium's own output, for assertion messages."""
        self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")[-4000:]

    def close(self) -> None:
        """Ask the browser to quit; kill it if it does not."""
        with contextlib.suppress(CdpError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.join(timeout=5)
        self._log.close()


class Tab:
    """One page in the browser, at a phone-sized viewport."""

    def __init__(self, browser: Browser, width: int, height: int) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session: str = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.resize(width, height)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command in this tab's session."""
        return self.browser.call(method, params, self.session)

    def resize(self, width: int, height: int, *, mobile: bool = True) -> None:
        """Emulate a phone (or, with ``mobile=False``, a desktop window) of ``width`` x ``height``."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        reply = self.call("Page.navigate", {"url": url})
        assert "errorText" not in reply, f"navigation to {url} failed: {reply}"
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the viewport (what a reader sees first), or of the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot: {path}")
        return path

    def problems(self) -> list[str]:
        """Console messages, uncaught exceptions and log errors (CSP refusals, failed loads)."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                args = [a.get("value", a.get("description")) for a in params.get("args", [])]
                found.append(f"console.{params.get('type')}: {args}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"uncaught: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") in ("error", "warning"):
                    found.append(
                        f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}"
                    )
        return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium for one test, always shut down."""
    started = Browser(chromium_or_skip(), tmp_path / "chromium")
    try:
        yield started
    finally:
        started.close()


def assert_fits(tab: Tab, facts: dict[str, Any], width: int) -> None:
    """No sideways scrolling at ``width``: the content is no wider than the viewport."""
    assert facts["innerWidth"] == width
    assert facts["scrollWidth"] <= width, f"page is {facts['scrollWidth']} px wide at {width} px"


# -- the real daemon during an outage --------------------------------------------------------


class Flip:
    """A ``/health`` handler whose status the test sets."""

    def __init__(self) -> None:
        self.status = 200

    async def __call__(self, request: Request, conn: Connection) -> None:
        body = b'{"status": "ok"}' if self.status == 200 else b'{"status": "error"}'
        await respond(self.status, body, {"Content-Type": "application/json"})(request, conn)


def _status(base_url: str) -> dict[str, Any] | None:
    try:
        code, body = http_get(base_url + "/api/status")
    except OSError:
        return None
    return json.loads(body) if code == 200 else None


def test_outage_page_on_the_real_daemon_at_phone_width(
    tmp_path: Path, target_server: TargetServer, fake_github: FakeGitHub, browser: Browser
) -> None:
    """Pins what a phone shows during an outage: what is down, since when, the issue link."""
    flip = Flip()
    target_server.route("/health", flip)
    target_server.route("/ok", respond(200, b"ok"))
    for label in ("incident", "monitor", "target:web"):
        fake_github.add_label(DEFAULT_REPO, label)
    config = write_config(
        tmp_path / "config.toml",
        target_url=target_server.url,
        listen_port=free_port(),
        state_path=tmp_path / "state" / "monitor.db",
        github_url=fake_github.url,
    )
    with config.open("a", encoding="utf-8") as extra:
        extra.write(
            f'\n[[targets]]\nname = "api"\nurl = "{target_server.url}"\n\n'
            '[[targets.checks]]\nname = "health"\npath = "/ok"\n\n'
            '[status_page]\ntitle = "Acme <status> & co"\n'
        )
    with Daemons.session(tmp_path) as daemons:
        daemon = daemons.start(config, clean_env(GITHUB_TOKEN=DEFAULT_TOKEN))
        daemon.wait_healthy()
        code, _ = http_get(daemon.base_url + "/status")
        assert code == 200, daemon.logs()
        wait_for(
            lambda: (
                (s := _status(daemon.base_url)) and all(t["state"] == "up" for t in s["targets"])
            ),
            20,
            "both targets up on /api/status",
            daemon.logs,
        )
        flip.status = 503

        def issue_linked() -> dict[str, Any] | None:
            snapshot = _status(daemon.base_url)
            if snapshot is None:
                return None
            web = snapshot["targets"][0]
            incident = web["open_incident"]
            return snapshot if incident and incident["issue_url"] else None

        snapshot = wait_for(issue_linked, 30, "an open incident with its issue", daemon.logs)
        issue_url = snapshot["targets"][0]["open_incident"]["issue_url"]
        assert issue_url.endswith(f"/{DEFAULT_REPO}/issues/1")

        tab = Tab(browser, *PHONE)
        tab.open(daemon.base_url + "/status")
        facts = tab.evaluate(READ_PAGE)
        first_screen = tab.screenshot(OUTPUT / "outage-390-first-screen.png")
        tab.screenshot(OUTPUT / "outage-390-full.png", full_page=True)
        (OUTPUT / "outage-dom.txt").write_text(facts["text"], encoding="utf-8")

        assert facts["h1"] == "Acme <status> & co"  # escaped in the HTML, literal on screen
        assert facts["title"] == "Partial outage · Acme <status> & co"
        assert facts["banner"].startswith("Partial outage")
        assert "web is down since" in facts["banner"]
        assert "Tracked in GitHub issue #1." in facts["banner"]
        assert facts["pills"] == ["Down", "Up"]
        assert [s["name"] for s in facts["sections"]] == ["web", "api"]
        for section in facts["sections"]:
            assert section["bars"] == 90, section
            assert section["labelled"] == 90, section
            assert section["charts"] == 1, section
        # within the first screen: the link to the incident issue, whole
        assert facts["issue"]["href"] == issue_url
        assert facts["issue"]["box"]["bottom"] <= facts["innerHeight"], facts["issue"]
        assert "Open incident" in facts["text"]
        assert facts["scripts"] == 1
        assert_fits(tab, facts, PHONE[0])
        tab.resize(NARROWEST, 740)
        assert_fits(tab, tab.evaluate(READ_PAGE), NARROWEST)
        assert tab.problems() == [], tab.problems()
        assert first_screen.stat().st_size > 10_000

        code, badge = http_get(daemon.base_url + "/badge/web.svg")
        assert code == 200
        assert ">down</text>" in badge


# -- an in-process daemon behind its own server --------------------------------------------------


def fast_monitor(tmp_path: Path) -> dict[str, Any]:
    """``[monitor]`` for an in-process daemon: second-long cadences, an ephemeral port."""
    return {
        "interval": 1,
        "incident_interval": 0.5,
        "timeout": 2,
        "jitter": 0,
        "state_path": tmp_path / "monitor.db",
        "listen": f"{HOST}:0",
    }


class LiveDaemon:
    """A real :class:`Daemon` probing real targets, with the status routes on real uvicorn
    (reading the daemon itself, or what ``source`` makes of it)."""

    def __init__(
        self,
        settings: Settings,
        probes: int,
        source: Callable[[Daemon], StatusSource] | None = None,
    ) -> None:
        self.settings = settings
        self.probes = probes
        self.source = source
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-daemon", daemon=True)

    def __enter__(self) -> LiveDaemon:
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._failed is not None:
            raise AssertionError(f"in-process daemon did not start: {self._failed!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "in-process daemon did not stop"
        if self._failed is not None:
            raise self._failed

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__/__exit__
            self._failed = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        prober = Prober(self.settings.monitor)
        daemon = Daemon(self.settings, prober=prober)
        try:
            daemon.store.start_session(daemon.now() - timedelta(seconds=1))
            for _ in range(self.probes):
                for name in daemon.targets:
                    await daemon.probe(name)
            source = daemon if self.source is None else self.source(daemon)
            app = create_app(daemon.metrics, daemon, extra_routes=status_routes(source))
            server = HttpServer(app, f"{HOST}:{self.port}")
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
                await asyncio.sleep(0.02)
            self._ready.set()
            await self._stop.wait()
            server.stop()
            await asyncio.wait_for(serving, timeout=5)
        finally:
            await prober.aclose()
            daemon.store.close()


def test_degraded_page_in_process_fits_360px_and_bars_take_focus(
    tmp_path: Path, target_server: TargetServer, browser: Browser
) -> None:
    """Pins a degraded target on a live daemon: header, states, 90 bars, focus tooltip, 360 px."""
    target_server.route("/health", respond(200, b"ok"))
    target_server.route("/slow", delay(0.12, respond(200, b"ok")))
    settings = Settings(
        monitor=fast_monitor(tmp_path),
        status_page={"title": "In-process status"},
        targets=[
            {
                "name": "web",
                "url": target_server.url,
                "checks": [{"name": "health", "path": "/health"}],
            },
            {
                "name": "api",
                "url": target_server.url,
                "slo": 0.999,
                "checks": [{"name": "slow", "path": "/slow", "max_response_time": "50ms"}],
            },
        ],
    )
    with LiveDaemon(settings, probes=2) as live:
        tab = Tab(browser, NARROWEST, 740)
        tab.open(live.base_url + "/status")
        facts = tab.evaluate(READ_PAGE)
        tab.screenshot(OUTPUT / "degraded-360-first-screen.png")
        focus = tab.evaluate(FOCUS_FIRST_BAR)
        problems = tab.problems()

    assert facts["banner"].startswith("Degraded performance"), facts["banner"]
    assert "api is degraded (slow) since" in facts["banner"]
    assert facts["pills"] == ["Up", "Degraded"]
    assert [s["bars"] for s in facts["sections"]] == [90, 90]
    assert "Objective\n99.9% uptime over 30 d" in facts["text"]
    assert_fits(tab, facts, NARROWEST)
    assert focus["focused"] is True
    assert focus["label"] in focus["tooltip"], focus  # the label shows on keyboard focus
    assert problems == [], problems


def test_chart_axis_labels_stay_the_size_of_the_caption_from_320_to_1920_px(
    tmp_path: Path, target_server: TargetServer, browser: Browser
) -> None:
    """Pins chart axis labels at the caption's size on a phone, at 1280 px and at 1920 px."""
    target_server.route("/health", respond(200, b"ok"))
    settings = Settings(
        monitor=fast_monitor(tmp_path),
        targets=[
            {
                "name": "web",
                "url": target_server.url,
                "checks": [{"name": "health", "path": "/health"}],
            }
        ],
    )
    measured = {}
    with LiveDaemon(settings, probes=3) as live:
        tab = Tab(browser, 1280, 800)
        tab.resize(1280, 800, mobile=False)
        tab.open(live.base_url + "/status")
        for width, mobile in ((1280, False), (320, True), (1920, False)):
            tab.resize(width, 800, mobile=mobile)
            measured[width] = tab.evaluate(MEASURE_CHART_LABELS)
            tab.screenshot(OUTPUT / f"chart-{width}.png")
        problems = tab.problems()

    for width, facts in measured.items():
        print(width, "px:", facts["caption"], [(x["text"], x["height"]) for x in facts["labels"]])
        caption = facts["caption"]
        texts = [label["text"] for label in facts["labels"]]
        assert len(texts) == 6, texts  # three times, three response times (the top one varies)
        assert {"0 ms", "24 h ago", "12 h ago", "now"} <= set(texts), texts
        for label in facts["labels"]:
            assert label["height"] == pytest.approx(caption["height"], rel=0.1), (width, label)
            assert label["px"] == pytest.approx(caption["px"], abs=0.5), (width, label)
            assert label["inside"], (width, label)  # not pushed out of the figure
        assert facts["plot"]["height"] > 3 * caption["height"], facts["plot"]
        assert facts["scrollWidth"] <= facts["innerWidth"], (width, facts["scrollWidth"])
    assert problems == [], problems


# -- several regions: the same page from a follower ------------------------------------------


def test_regions_section_on_a_follower_at_phone_width(
    tmp_path: Path, postgres_url: str, target_server: TargetServer, browser: Browser
) -> None:
    """Three real daemons on PostgreSQL, the target failing for ams only: a follower's page
    says it is up, that 1 of 3 regions sees it down (not counted as an outage), and
    lists each region, fitting a phone without console errors."""
    health = RegionalHealth()
    health.fail("ams")
    target_server.route("/health", health)
    with Daemons.session(tmp_path) as daemons:
        started = {}
        for region in ("ams", "ord", "sin"):
            config = write_config(
                tmp_path / f"{region}.toml",
                target_url=target_server.url,
                listen_port=free_port(),
                state_path=tmp_path / f"{region}.db",
                leader_check=0.3,
            )
            env = clean_env(DATABASE_URL=postgres_url, FLY_REGION=region, FLY_MACHINE_ID=region)
            started[region] = daemons.start(config, env)
        for daemon in started.values():
            daemon.wait_healthy(20)
        follower = wait_for(
            lambda: next(
                (d for d in started.values() if d.healthz()[1].get("role") == "follower"), None
            ),
            15,
            "a follower",
            daemons.logs,
        )

        def three_regions() -> dict[str, Any] | None:
            snapshot = _status(follower.base_url)
            web = snapshot["targets"][0] if snapshot else None
            return web if web and web["quorum"] and web["quorum"]["fresh"] == 3 else None

        web = wait_for(three_regions, 20, "three fresh regions on the page", daemons.logs)
        assert web["state"] == "up", web
        assert [(r["region"], r["state"]) for r in web["regions"]] == [
            ("ams", "down"),
            ("ord", "up"),
            ("sin", "up"),
        ]
        tab = Tab(browser, *PHONE)
        tab.open(follower.base_url + "/status")
        facts = tab.evaluate(READ_PAGE)
        tab.screenshot(OUTPUT / "regions-390-full.png", full_page=True)
        assert facts["pills"] == ["Up"]
        assert "1 of 3 reporting regions see it down; 2 must agree" in facts["text"]
        assert "ams: down since" in facts["text"]
        assert "health status (HTTP 503)" in facts["text"]
        assert "ord: up since" in facts["text"]
        assert_fits(tab, facts, PHONE[0])
        tab.resize(NARROWEST, 740)
        assert_fits(tab, tab.evaluate(READ_PAGE), NARROWEST)
        assert tab.problems() == [], tab.problems()


# -- a target in a maintenance window ------------------------------------------------------------


class WindowsFilled:
    """The daemon as the page's source, with each target's current window in its live view
    where the daemon left none: what the daemon's maintenance watch puts in
    ``LiveTarget.maintenance``, read from the same configuration and store."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.settings, self.store, self.history = daemon.settings, daemon.store, daemon.history

    def live_targets(self) -> dict[str, LiveTarget]:
        """The daemon's live view, each target with the window it is in now."""
        now = self.now()
        windows = self.history.maintenance_windows(Span(now, now + timedelta(microseconds=1)))
        return {
            name: live
            if live.maintenance
            else replace(live, maintenance=active(windows, name, now))
            for name, live in self.daemon.live_targets().items()
        }

    def now(self) -> datetime:
        """The daemon's clock."""
        return self.daemon.now()


# The colours the page gives each state, the api section's pill, and its last bar (today)
# once it has keyboard focus: its class, colour, label and tooltip.
READ_MAINTENANCE = """(() => {
  const colour = cls => {
    const probe = document.createElement('span');
    probe.className = cls;
    document.body.appendChild(probe);
    const found = getComputedStyle(probe).backgroundColor;
    probe.remove();
    return found;
  };
  const api = document.querySelector('#t-api');
  const bar = api.querySelector('.bars li:last-child');
  bar.focus();
  return {
    states: Object.fromEntries(['up', 'degraded', 'down', 'unknown', 'maintenance']
        .map(state => [state, colour('c-' + state)])),
    pill: getComputedStyle(api.querySelector('h2 .pill')).backgroundColor,
    since: api.querySelector('.since').innerText,
    legend: api.querySelector('.legend').innerText,
    bar: {className: bar.className, colour: getComputedStyle(bar).backgroundColor,
          label: bar.getAttribute('aria-label'), tooltip: getComputedStyle(bar, '::after').content,
          focused: document.activeElement === bar},
  };
})()"""


def test_maintenance_page_at_phone_width_reads_the_window_in_its_own_colour(
    tmp_path: Path, target_server: TargetServer, browser: Browser
) -> None:
    """Pins a failing target inside a configured window on a live daemon, at 390 px: the
    header and its pill read maintenance with the reason and the end, in a colour of its
    own (not up's, not down's), and today's bar is a maintenance bar whose tooltip says why."""
    target_server.route("/health", respond(200, b"ok"))
    target_server.route("/broken", respond(503, b"upgrading"))
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    settings = Settings(
        monitor=fast_monitor(tmp_path),
        status_page={"title": "Maintenance status"},
        targets=[
            {
                "name": "web",
                "url": target_server.url,
                "checks": [{"name": "health", "path": "/health"}],
            },
            {
                "name": "api",
                "url": target_server.url,
                "slo": 0.999,
                "checks": [{"name": "health", "path": "/broken"}],
            },
        ],
        maintenance=[
            {
                "targets": ["api"],
                "start": f"{midnight:%Y-%m-%dT%H:%M}",
                "duration": int((now - midnight).total_seconds()) + 3600,
                "reason": "database upgrade",
            }
        ],
    )
    with LiveDaemon(settings, probes=2, source=WindowsFilled) as live:
        tab = Tab(browser, *PHONE)
        tab.open(live.base_url + "/status")
        facts = tab.evaluate(READ_PAGE)
        tab.screenshot(OUTPUT / "maintenance-390-first-screen.png")
        tab.screenshot(OUTPUT / "maintenance-390-full.png", full_page=True)
        (OUTPUT / "maintenance-dom.txt").write_text(facts["text"], encoding="utf-8")
        seen = tab.evaluate(READ_MAINTENANCE)
        tab.resize(NARROWEST, 740)
        narrow = tab.evaluate(READ_PAGE)
        problems = tab.problems()

    assert facts["title"] == "Under maintenance · Maintenance status"
    assert facts["banner"].startswith("Under maintenance"), facts["banner"]
    assert re.search(
        r"api is in maintenance until \d\d:\d\d UTC: database upgrade\.", facts["banner"]
    )
    assert facts["pills"] == ["Up", "Maintenance"]
    assert seen["since"].startswith("In maintenance since 00:00 UTC, until "), seen["since"]
    assert "database upgrade. Nobody is paged" in seen["since"]
    assert "health: down" in facts["text"]  # the probe itself is still shown as it is

    states = seen["states"]
    assert seen["pill"] == states["maintenance"]
    others = {state: c for state, c in states.items() if state != "maintenance"}
    assert states["maintenance"] not in others.values(), states  # up and down above all
    bar = seen["bar"]
    assert (bar["className"], bar["colour"], bar["focused"]) == ("m", states["maintenance"], True)
    assert bar["label"].startswith("Today so far: maintenance "), bar
    assert "(database upgrade)" in bar["label"]
    assert bar["label"] in bar["tooltip"], bar  # the reason shows on keyboard focus
    assert "Mostly maintenance" in seen["legend"]
    assert_fits(tab, facts, PHONE[0])
    assert_fits(tab, narrow, NARROWEST)
    assert problems == [], problems
