"""Chaos soak: the real daemon against flapping targets, a faulty GitHub and kill -9.

    python bench/soak.py --seconds 60 --seed 1       # one minute of chaos, then the drain
    python bench/soak.py --seconds 300 --seed 2      # the five-minute run in docs/reliability.md

Everything is local (127.0.0.1), seeded and bounded:

* ``--targets`` (3) raw target servers answer ``/health`` by a scripted timeline of
  long outages (503, connection reset, or a hang past the probe timeout; long enough
  for ``open_after``) and short flaps (which must not open anything). Each server
  records every hit with its mode: that record, not the script, is the truth.
* the fake GitHub (``tests/fakegithub.py``) gets random one-shot faults: 5xx, a 502
  after GitHub acted, 403/429 with ``Retry-After: 1``, a delay past the client
  timeout (GitHub still acts), a reply cut after GitHub acted.
* the daemon (``python -m monitor run``) is killed with SIGKILL a few times a minute
  and restarted on the same state file after a short random downtime.

Then the targets stay healthy, faults are cleared and the daemon drains its outbox.
GitHub's final state is compared with the truth: outages that met ``open_after`` as
the probes saw them (an outage the daemon could not observe because it was dead is not
required), issues filed, duplicates (two issues for one incident, or two open at once
for a target, sampled every 0.2 s), incidents never opened, issues left open, false
opens from flaps, and the error of each recorded duration (state database and close
comment) against the span the probes saw at the target and against the scripted span.

The JSON summary is the last line of stdout (``--out`` also writes it); the exit code
is 0 when the bar is met (see ``Bar`` below), 1 otherwise. ``tests/test_soak.py`` runs
this for about a minute; ``docs/reliability.md`` has the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as c

from tests.daemon_process import DaemonProcess, Daemons, clean_env, sample_value, toml_value
from tests.fakegithub import (
    DEFAULT_REPO,
    DEFAULT_TOKEN,
    FakeGitHub,
    Fault,
    cut_after_commit,
    delay,
    secondary_rate_limit,
    status,
    too_many_requests,
)
from tests.targets import Connection, Request, TargetServer, respond

# ---- the configuration under test ----------------------------------------------------------

INTERVAL_S = 1.0
INCIDENT_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0
OPEN_AFTER = 3
CLOSE_AFTER = 2
REOPEN_WINDOW_S = 3.0
REMINDER_S = 4.0
GITHUB_TIMEOUT_S = 2
LABELS = ("incident", "monitor")

# ---- the chaos -------------------------------------------------------------------------------

LONG_OUTAGE_S = (2.5, 7.0)  # >= open_after probes even when the first lands a full interval late
HANG_OUTAGE_S = (4.5, 8.0)  # a hung probe takes the whole timeout: fewer probes per second
FLAP_S = (0.2, 0.7)  # at most two probes at the fast cadence: must never open
GAP_AFTER_LONG_S = (9.0, 14.0)  # > reopen_window + worst downtime + close_after probes
GAP_AFTER_FLAP_S = (3.0, 6.0)
LONG_SHARE = 0.6
OUTAGE_MODES = {"503": 0.5, "reset": 0.3, "hang": 0.2}
FLAP_MODES = {"503": 0.6, "reset": 0.4}
DOWNTIME_S = (0.3, 3.0)
KILLS_PER_MINUTE = 4
FAULT_EVERY_S = (1.5, 4.0)
MAX_PENDING_FAULTS = 2
QUIET_TAIL_S = 4.0  # no new outage starts this close to the end of the chaos phase
HANG_S = PROBE_TIMEOUT_S + 1.0

ISSUES = r"/repos/acme/web/issues"
ISSUE = r"/repos/acme/web/issues/\d+"
COMMENTS = r"/repos/acme/web/issues/\d+/comments"
ENDPOINTS = {  # name -> (method, path regex)
    "create": ("POST", ISSUES),
    "list": ("GET", ISSUES),
    "comment": ("POST", COMMENTS),
    "patch": ("PATCH", ISSUE),
}


def _fault_menu() -> dict[str, Callable[[], Fault]]:
    return {
        "500": lambda: status(500),
        "502": lambda: status(502),
        "503": lambda: status(503),
        "502-after-acting": lambda: status(502, commit=True),
        "403-retry-after": lambda: secondary_rate_limit(retry_after=1),
        "429-retry-after": lambda: too_many_requests(retry_after=1),
        "delay-past-timeout": lambda: delay(GITHUB_TIMEOUT_S + 1.0),
        "cut-after-commit": cut_after_commit,
    }


RESOLVED = re.compile(r"\*\*Resolved\.\*\* .*?\((\d+) s\)", re.S)
MARKER = re.compile(r"<!-- monitor:incident target=(\S+) id=(\S+) -->")


# ---- targets that record the truth ------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One probe as the target saw it: when it arrived and how it was answered."""

    at: float
    mode: str  # "ok", or the outage mode: "503", "reset", "hang"


class RecordingTarget:
    """A target server whose ``/health`` answers by the current mode and records every hit."""

    def __init__(self, name: str) -> None:
        self.name = name
        # no time limit a keep-alive connection could hit mid-request: an abort there
        # would be a failure the hit record never saw (handlers are bounded themselves)
        self.server = TargetServer(connection_limit_s=3600)
        self.mode = "ok"
        self.hits: list[Hit] = []
        self.flips: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.server.route("/health", self._handle)

    async def _handle(self, request: Request, conn: Connection) -> None:
        with self._lock:
            mode = self.mode
            self.hits.append(Hit(time.time(), mode))
        if mode == "ok":
            await respond(200, b'{"status": "ok"}', {"Content-Type": "application/json"})(
                request, conn
            )
        elif mode == "503":
            await respond(503, b'{"status": "error"}', {"Content-Type": "application/json"})(
                request, conn
            )
        elif mode == "reset":
            conn.reset()
        else:  # hang past the probe timeout, then answer to nobody
            await asyncio.sleep(HANG_S)
            await respond(503, b"late")(request, conn)

    def set(self, mode: str) -> float:
        """Answer in ``mode`` from now on; the flip time is returned and recorded."""
        with self._lock:
            self.mode = mode
            at = time.time()
            self.flips.append((at, mode))
            return at

    def snapshot(self) -> list[Hit]:
        """Every hit so far, oldest first."""
        with self._lock:
            return list(self.hits)


# ---- the plan ----------------------------------------------------------------------------------


@dataclass
class Segment:
    """One scripted fault of one target (offsets from the chaos start)."""

    target: str
    start_s: float
    length_s: float
    kind: str  # "long" or "flap"
    mode: str
    began_at: float | None = None  # wall clock of the flips, once they happened
    ended_at: float | None = None


@dataclass
class Plan:
    """Everything random about a run, drawn up front from the seed."""

    segments: list[Segment]
    kills: list[tuple[float, float]]  # (offset, downtime)
    faults: list[tuple[float, str, str]]  # (offset, endpoint, fault)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def make_plan(
    rng: random.Random, targets: list[str], seconds: float, kills_per_minute: float
) -> Plan:
    """The scripted timeline: outages and flaps per target, kills, GitHub faults."""
    segments = []
    for name in targets:
        t = rng.uniform(1.0, 5.0)
        while True:
            kind = "long" if rng.random() < LONG_SHARE else "flap"
            mode = _pick(rng, OUTAGE_MODES if kind == "long" else FLAP_MODES)
            span = FLAP_S if kind == "flap" else HANG_OUTAGE_S if mode == "hang" else LONG_OUTAGE_S
            length = rng.uniform(*span)
            if t + length > seconds - QUIET_TAIL_S:
                break
            segments.append(Segment(name, t, length, kind, mode))
            t += length + rng.uniform(*(GAP_AFTER_LONG_S if kind == "long" else GAP_AFTER_FLAP_S))
    kills = []
    count = round(seconds / 60 * kills_per_minute)
    if count:
        slot = (seconds - 2.0) / count
        for index in range(count):  # one kill somewhere in each slot: spread, not bunched
            offset = 2.0 + index * slot + rng.uniform(0.1, 0.7) * slot
            kills.append((offset, rng.uniform(*DOWNTIME_S)))
    faults = []
    menu = list(_fault_menu())
    t = rng.uniform(*FAULT_EVERY_S)
    while t < seconds - QUIET_TAIL_S:
        faults.append((t, rng.choice(list(ENDPOINTS)), rng.choice(menu)))
        t += rng.uniform(*FAULT_EVERY_S)
    return Plan(sorted(segments, key=lambda s: s.start_s), kills, faults)


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Life:
    """One daemon process: when it started, was ready, and how it ended."""

    name: str
    started_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    how: str = "running"  # "killed", "exited <code>", "terminated"


def write_soak_config(
    path: Path, targets: dict[str, str], listen_port: int, state_path: Path, github_url: str
) -> Path:
    """The daemon's config: the fast cadence of the e2e tests, several targets."""
    monitor = {
        "interval": INTERVAL_S,
        "incident_interval": INCIDENT_INTERVAL_S,
        "timeout": PROBE_TIMEOUT_S,
        "open_after": OPEN_AFTER,
        "close_after": CLOSE_AFTER,
        "reopen_window": f"{REOPEN_WINDOW_S:g}s",
        "reminder_interval": f"{REMINDER_S:g}s",
        "jitter": 0,
        "listen": f"127.0.0.1:{listen_port}",
        "state_path": state_path,
        "metrics_refresh": 1,
        "shutdown_grace": 2,
    }
    lines = ["[monitor]", *(f"{k} = {toml_value(v)}" for k, v in monitor.items())]
    lines += [
        "",
        "[github]",
        f"repository = {toml_value(DEFAULT_REPO)}",
        f"api_url = {toml_value(github_url)}",
        f"timeout = {GITHUB_TIMEOUT_S}",
        f"labels = {toml_value(list(LABELS))}",
    ]
    for name, url in targets.items():
        lines += [
            "",
            "[[targets]]",
            f"name = {toml_value(name)}",
            f"url = {toml_value(url)}",
            "",
            "[[targets.checks]]",
            'name = "health"',
            'path = "/health"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Soak:
    """One seeded run; use as a context manager so every process and server is stopped."""

    def __init__(
        self,
        *,
        seconds: float,
        seed: int,
        targets: int,
        workdir: Path,
        kills_per_minute: float = KILLS_PER_MINUTE,
        drain_timeout_s: float = 120.0,
        exclude_faults: tuple[str, ...] = (),
    ) -> None:
        self.seconds = seconds
        self.seed = seed
        self.workdir = workdir
        self.drain_timeout_s = drain_timeout_s
        self.exclude_faults = exclude_faults
        self.rng = random.Random(seed)
        self.names = [f"t{i + 1}" for i in range(targets)]
        self.plan = make_plan(self.rng, self.names, seconds, kills_per_minute)
        self.github = FakeGitHub()
        self.targets = {name: RecordingTarget(name) for name in self.names}
        self.daemons = Daemons(workdir)
        self.lives: list[Life] = []
        self.helpers: list[threading.Thread] = []
        self.current: DaemonProcess | None = None
        self.stop = threading.Event()
        self.lifecycle_lock = threading.Lock()
        self.max_open: Counter[str] = Counter()
        self.open_samples = 0
        self.open_episodes: dict[tuple[str, tuple[int, ...]], list[float]] = {}
        self.faults_injected: Counter[str] = Counter()
        self.kill_times: list[float] = []
        self.t0 = 0.0
        self.state_path = workdir / "state" / "monitor.db"
        self.config: Path | None = None
        self.env: dict[str, str] = {}

    # -- lifecycle

    def __enter__(self) -> Soak:
        self.github.start()
        for label in (*LABELS, *(f"target:{n}" for n in self.names)):
            self.github.add_label(DEFAULT_REPO, label)  # a repository in use: labels exist
        for target in self.targets.values():
            target.server.start()
        self.config = write_soak_config(
            self.workdir / "config.toml",
            {n: t.server.url for n, t in self.targets.items()},
            c.free_port(),
            self.state_path,
            self.github.url,
        )
        self.env = clean_env(GITHUB_TOKEN=DEFAULT_TOKEN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.helpers:  # a restart in progress must not outlive the close
            thread.join(timeout=40)
        self.daemons.close()
        for target in self.targets.values():
            target.server.stop()
        self.github.close()

    # -- the daemon

    def _start_daemon(self) -> None:
        assert self.config is not None
        daemon = self.daemons.start(self.config, self.env)
        life = Life(daemon.name, time.time())
        self.lives.append(life)
        self.current = daemon
        try:
            daemon.wait_healthy(timeout_s=30)
            life.ready_at = time.time()
        except AssertionError as exc:
            c.say(f"soak: {daemon.name} did not become healthy: {str(exc)[:300]}")

    def _note_exit(self) -> bool:
        """Record an exit we did not cause; True if the current daemon is gone."""
        daemon = self.current
        if daemon is None or daemon.running:
            return False
        life = self.lives[-1]
        if life.ended_at is None:
            life.ended_at = time.time()
            assert daemon.proc is not None
            life.how = f"exited {daemon.proc.returncode}"
            c.say(f"soak: {daemon.name} exited by itself ({daemon.proc.returncode})")
        return True

    def _lifecycle(self) -> None:
        """Kill -9 at the planned moments; restart after the downtime; revive crashes."""
        kills = list(self.plan.kills)
        while not self.stop.is_set():
            now = time.time() - self.t0
            with self.lifecycle_lock:
                if kills and now >= kills[0][0]:
                    _, downtime = kills.pop(0)
                    daemon = self.current
                    if daemon is not None and daemon.running:
                        daemon.kill()
                        self.kill_times.append(time.time())
                        self.lives[-1].ended_at = time.time()
                        self.lives[-1].how = "killed"
                    self.stop.wait(downtime)
                    self._start_daemon()  # also after a stop: the drain needs a daemon
                elif self._note_exit():
                    self._start_daemon()
            self.stop.wait(0.05)

    def _sample_open_issues(self) -> None:
        """Every 0.2 s: how many issues are open per target (two at once is a duplicate)."""
        while not self.stop.wait(0.2):
            self._sample_once()

    def _sample_once(self) -> None:
        per_target: dict[str, list[int]] = {}
        for issue in self.github.issues(DEFAULT_REPO):
            found = MARKER.search(issue["body"] or "")
            if issue["state"] == "open" and found:
                per_target.setdefault(found[1], []).append(issue["number"])
        now = round(time.time() - self.t0, 2)
        for target, numbers in per_target.items():
            self.max_open[target] = max(self.max_open[target], len(numbers))
            if len(numbers) > 1:  # one episode per set of issues open together
                self.open_samples += 1
                span = self.open_episodes.setdefault((target, tuple(sorted(numbers))), [now, now])
                span[1] = now

    # -- the script

    def run(self) -> dict[str, Any]:
        """Chaos, drain, analysis: the summary."""
        self.t0 = time.time()
        self._start_daemon()
        self.t0 = time.time()  # the plan counts from a running daemon
        self.helpers = [
            threading.Thread(target=self._lifecycle, name="soak-lifecycle", daemon=True),
            threading.Thread(target=self._sample_open_issues, name="soak-sampler", daemon=True),
        ]
        for thread in self.helpers:
            thread.start()
        self._script()
        chaos_end = time.time()
        self.stop.set()
        for thread in self.helpers:
            thread.join(timeout=40)
        self.stop.clear()
        for target in self.targets.values():
            if target.mode != "ok":
                target.set("ok")
        self._clear_faults()
        drain_s, drained = self._drain()
        self._sample_once()
        if self.current is not None and self.current.running:
            self.current.terminate()
            code = self.current.wait(15)
            self.lives[-1].ended_at = time.time()
            self.lives[-1].how = f"terminated ({code})"
        return self._summary(chaos_end, drain_s, drained)

    def _script(self) -> None:
        menu = _fault_menu()
        events: list[tuple[float, int, Callable[[], None]]] = []
        for segment in self.plan.segments:
            target = self.targets[segment.target]

            def begin(s: Segment = segment, t: RecordingTarget = target) -> None:
                s.began_at = t.set(s.mode)

            def end(s: Segment = segment, t: RecordingTarget = target) -> None:
                s.ended_at = t.set("ok")

            events.append((segment.start_s, 0, begin))
            events.append((segment.start_s + segment.length_s, 0, end))
        for offset, endpoint, fault in self.plan.faults:
            if fault in self.exclude_faults or f"{fault}@{endpoint}" in self.exclude_faults:
                continue

            def inject(endpoint: str = endpoint, fault: str = fault) -> None:
                if self.github.pending_faults >= MAX_PENDING_FAULTS:
                    return
                method, path = ENDPOINTS[endpoint]
                self.github.inject(method, path, menu[fault]())
                self.faults_injected[f"{fault}@{endpoint}"] += 1

            events.append((offset, 1, inject))
        events.sort(key=lambda e: (e[0], e[1]))
        for offset, _, action in events:
            delay_s = self.t0 + offset - time.time()
            if delay_s > 0:
                time.sleep(delay_s)
            action()
        rest = self.t0 + self.seconds - time.time()
        if rest > 0:
            time.sleep(rest)

    def _clear_faults(self) -> None:
        # FakeGitHub has no public "clear faults" (only reset(), which forgets the issues).
        with self.github._lock:
            self.github._injections.clear()

    def _drain(self) -> tuple[float, bool]:
        """Wait until the daemon has nothing pending and no incident or issue is open."""
        start = time.time()
        deadline = start + self.drain_timeout_s
        calm = 0
        while time.time() < deadline:
            if self._note_exit():
                self._start_daemon()
            if self._drained():
                calm += 1
                if calm >= 3:
                    return time.time() - start, True
            else:
                calm = 0
            time.sleep(0.5)
        return time.time() - start, False

    def _drained(self) -> bool:
        daemon = self.current
        if daemon is None or not daemon.running:
            return False
        try:
            samples = daemon.samples()
        except (OSError, AssertionError, ValueError):
            return False
        if sample_value(samples, "monitor_outbox_pending") != 0:
            return False
        if any(sample_value(samples, "monitor_incident_open", target=n) for n in self.names):
            return False
        return not any(i["state"] == "open" for i in self.github.issues(DEFAULT_REPO))

    # -- the verdict

    def _dead_spans(self) -> list[tuple[float, float]]:
        spans = []
        for before, after in zip(self.lives, self.lives[1:], strict=False):
            if before.ended_at is not None:
                spans.append((before.ended_at, after.ready_at or after.started_at))
        return spans

    def _summary(self, chaos_end: float, drain_s: float, drained: bool) -> dict[str, Any]:
        incidents = _read_incidents(self.state_path)
        issues = self.github.issues(DEFAULT_REPO)
        comments = {i["number"]: self.github.comments(DEFAULT_REPO, i["number"]) for i in issues}
        dead = self._dead_spans()
        outages = [self._judge(s, dead) for s in self.plan.segments if s.began_at is not None]
        failures: list[str] = []

        issue_by_incident: dict[str, list[dict[str, Any]]] = {}
        for issue in issues:
            found = MARKER.search(issue["body"] or "")
            if found:
                issue_by_incident.setdefault(found[2], []).append(issue)
        duplicate_ids = {
            k: [i["number"] for i in v] for k, v in issue_by_incident.items() if len(v) > 1
        }

        matched: dict[str, list[str]] = {}  # incident id -> outage keys
        missed, false_opens, multi = [], [], []
        duration_rows = []
        for outage in outages:
            found = [row for row in incidents if _covers(row, outage)]
            for row in found:
                matched.setdefault(row["id"], []).append(outage["key"])
            if outage["verdict"] == "must_open":
                if not found:
                    missed.append({**_short(outage), "why": "no incident recorded"})
                elif not any(row["id"] in issue_by_incident for row in found):
                    missed.append({**_short(outage), "why": "incident without a GitHub issue"})
                if len(found) > 1:
                    multi.append({**_short(outage), "incidents": [r["id"] for r in found]})
            elif outage["verdict"] == "must_not_open" and found:
                false_opens.append({**_short(outage), "incidents": [r["id"] for r in found]})
            if found and outage["verdict"] != "must_not_open":
                duration_rows.append(
                    self._duration(outage, found[0], issue_by_incident, comments, dead)
                )
        never_opened = [r["id"] for r in incidents if r["id"] not in issue_by_incident]
        unexplained = [r["id"] for r in incidents if r["id"] not in matched]
        merged = {k: v for k, v in matched.items() if len(v) > 1}
        left_open = [i["number"] for i in issues if i["state"] == "open"]
        unresolved = [r["id"] for r in incidents if r["resolved_at"] is None]
        resolve_comments = Counter(
            number for number, cs in comments.items() for cm in cs if RESOLVED.search(cm["body"])
        )
        reopened = sum(1 for r in incidents if r["reopened"])
        extra_resolves = sum(
            max(0, n - 1 - _reopens(incidents, issues, number))
            for number, n in resolve_comments.items()
        )

        worst_probe = max(duration_rows, key=lambda r: r["excess_vs_probes_s"], default=None)
        worst_flip = max(duration_rows, key=lambda r: r["excess_vs_flips_s"], default=None)
        duration_violations = [r for r in duration_rows if r["excess_vs_probes_s"] > 0]
        comment_mismatch = [
            r
            for r in duration_rows
            if r["comment_error_s"] is not None and r["comment_error_s"] > 1.0
        ]

        duplicates = len(duplicate_ids) + len(multi) + len(self.open_episodes)
        checks = {
            "never two issues for one incident": not duplicate_ids and not multi,
            "never two open at once for a target": not self.open_episodes,
            "zero missed": not missed,
            "zero left open": not left_open and not unresolved,
            "zero never opened": not never_opened,
            "no false open from a flap": not false_opens,
            "durations within one incident_interval plus downtime": not duration_violations,
            "close comments agree with the database": not comment_mismatch,
            "drained": drained,
            "fake GitHub had no internal error": not self.github.errors,
        }
        failures = [name for name, ok in checks.items() if not ok]
        logs = self._log_problems()
        verdicts = Counter(o["verdict"] for o in outages)
        requests = self.github.requests
        return {
            "bench": "soak",
            "seed": self.seed,
            "chaos_s": round(chaos_end - self.t0, 1),
            "drain_s": round(drain_s, 1),
            "passed": not failures,
            "failures": failures,
            "checks": checks,
            "config": {
                "targets": len(self.names),
                "interval_s": INTERVAL_S,
                "incident_interval_s": INCIDENT_INTERVAL_S,
                "timeout_s": PROBE_TIMEOUT_S,
                "open_after": OPEN_AFTER,
                "close_after": CLOSE_AFTER,
                "reopen_window_s": REOPEN_WINDOW_S,
                "reminder_interval_s": REMINDER_S,
                "github_timeout_s": GITHUB_TIMEOUT_S,
                "excluded_faults": list(self.exclude_faults),
            },
            "chaos": {
                "long_outages": sum(1 for o in outages if o["kind"] == "long"),
                "flaps": sum(1 for o in outages if o["kind"] == "flap"),
                "outage_modes": dict(Counter(o["mode"] for o in outages)),
                "probes_seen_by_targets": sum(len(t.snapshot()) for t in self.targets.values()),
                "kills": len(self.kill_times),
                "unexpected_exits": [
                    life.how for life in self.lives if life.how.startswith("exited")
                ],
                "daemon_downtime_s": round(sum(b - a for a, b in dead), 1),
                "max_restart_to_ready_s": round(max((b - a for a, b in dead), default=0.0), 2),
                "faults_injected": sum(self.faults_injected.values()),
                "faults_by_kind": dict(sorted(self.faults_injected.items())),
                "github_requests": len(requests),
                "github_error_replies": sum(
                    1 for r in requests if r.status == 0 or r.status >= 400
                ),
            },
            "truth": {
                "must_open": verdicts["must_open"],
                "must_not_open": verdicts["must_not_open"],
                "ambiguous": verdicts["ambiguous"],
                "unobserved": verdicts["unobserved"],
            },
            "github": {
                "issues_filed": len(issues),
                "incidents_recorded": len(incidents),
                "duplicates": duplicates,
                "duplicate_issues_for_one_incident": duplicate_ids,
                "outages_split_into_several_incidents": multi,
                "two_open_at_once": {
                    "episodes": len(self.open_episodes),
                    "samples": self.open_samples,
                    "longest_s": round(
                        max((b - a for a, b in self.open_episodes.values()), default=0.0), 2
                    ),
                    "first": [
                        {"target": t, "issues": list(n), "from_s": a, "to_s": b}
                        for (t, n), (a, b) in sorted(
                            self.open_episodes.items(), key=lambda kv: kv[1][0]
                        )[:5]
                    ],
                },
                "max_open_per_target": dict(sorted(self.max_open.items())),
                "missed": missed,
                "never_opened": never_opened,
                "left_open": left_open,
                "unresolved_incidents": unresolved,
                "false_opens": false_opens,
                "unexplained_incidents": unexplained,
                "incidents_spanning_several_outages": merged,
                "reopened_incidents": reopened,
                "extra_close_comments": extra_resolves,
            },
            "duration": {
                "measured": len(duration_rows),
                "max_error_vs_probes_s": worst_probe["error_vs_probes_s"] if worst_probe else None,
                "max_excess_over_bar_s": worst_probe["excess_vs_probes_s"] if worst_probe else None,
                "worst_vs_probes": worst_probe,
                "max_error_vs_flips_s": worst_flip["error_vs_flips_s"] if worst_flip else None,
                "worst_vs_flips": worst_flip,
                "violations": duration_violations,
                "close_comment_mismatches": comment_mismatch,
            },
            "logs": logs,
            "lives": [
                {
                    "name": life.name,
                    "started_s": round(life.started_at - self.t0, 2),
                    "ready_s": None if life.ready_at is None else round(life.ready_at - self.t0, 2),
                    "ended_s": None if life.ended_at is None else round(life.ended_at - self.t0, 2),
                    "how": life.how,
                }
                for life in self.lives
            ],
            "workdir": str(self.workdir),
        }

    def _judge(self, segment: Segment, dead: list[tuple[float, float]]) -> dict[str, Any]:
        """What the probes saw of one scripted outage, and what the daemon owed it."""
        assert segment.began_at is not None
        ended = segment.ended_at or segment.began_at + segment.length_s
        hits = self.targets[segment.target].snapshot()
        failed = [h for h in hits if segment.began_at <= h.at < ended and h.mode == segment.mode]
        latency = PROBE_TIMEOUT_S if segment.mode == "hang" else 0.05
        # a hit whose probe was still in flight (or not yet committed) at a kill may be lost
        uncertain = [
            h
            for h in failed
            if any(h.at - 0.05 <= k <= h.at + latency + 0.3 for k in self.kill_times)
        ]
        certain = len(failed) - len(uncertain)
        if not failed:
            verdict = "unobserved"
        elif certain >= OPEN_AFTER:
            verdict = "must_open"
        elif len(failed) < OPEN_AFTER:
            verdict = "must_not_open"
        else:
            verdict = "ambiguous"
        first_ok = next((h.at for h in hits if h.at >= ended and h.mode == "ok"), None)
        window_end = first_ok or ended
        downtime = sum(
            max(0.0, min(b, window_end) - max(a, segment.began_at - INTERVAL_S)) for a, b in dead
        )
        return {
            "key": f"{segment.target}@{segment.start_s:.1f}",
            "target": segment.target,
            "kind": segment.kind,
            "mode": segment.mode,
            "began_at": segment.began_at,
            "ended_at": ended,
            "failed_probes": len(failed),
            "uncertain_probes": len(uncertain),
            "first_failed_hit": failed[0].at if failed else None,
            "first_ok_hit": first_ok,
            "downtime_s": downtime,
            "verdict": verdict,
        }

    def _duration(
        self,
        outage: dict[str, Any],
        row: dict[str, Any],
        issues: dict[str, list[dict[str, Any]]],
        comments: dict[int, list[dict[str, Any]]],
        dead: list[tuple[float, float]],
    ) -> dict[str, Any]:
        recorded = (row["resolved_at"] or time.time()) - row["started_at"]
        # the daemon's own downtime from the incident's start (or one healthy interval
        # before the outage) to the first good probe: the slack the bar allows
        window_start = min(row["started_at"], outage["began_at"] - INTERVAL_S)
        # up to the recovery the daemon recorded: a kill can lose the first good probe
        window_end = max(outage["first_ok_hit"] or outage["ended_at"], row["resolved_at"] or 0.0)
        downtime = sum(max(0.0, min(b, window_end) - max(a, window_start)) for a, b in dead)
        seen = None
        if outage["first_failed_hit"] is not None and outage["first_ok_hit"] is not None:
            seen = outage["first_ok_hit"] - outage["first_failed_hit"]
        scripted = outage["ended_at"] - outage["began_at"]
        error_probes = abs(recorded - seen) if seen is not None else None
        bar_probes = INCIDENT_INTERVAL_S + downtime + 0.05
        # against the script the start is sampled at the healthy cadence and a hung probe
        # must time out before the next one can see the recovery
        end_lag = INCIDENT_INTERVAL_S + (PROBE_TIMEOUT_S if outage["mode"] == "hang" else 0.0)
        bar_flips = max(INTERVAL_S, end_lag) + downtime + 0.05
        stated = None
        for issue in issues.get(row["id"], []):
            for comment in comments.get(issue["number"], []):
                found = RESOLVED.search(comment["body"])
                if found:
                    stated = float(found[1])
        return {
            "outage": outage["key"],
            "mode": outage["mode"],
            "incident": row["id"],
            "recorded_s": round(recorded, 3),
            "seen_by_probes_s": None if seen is None else round(seen, 3),
            "scripted_s": round(scripted, 3),
            "daemon_downtime_s": round(downtime, 2),
            "error_vs_probes_s": None if error_probes is None else round(error_probes, 3),
            "bar_vs_probes_s": round(bar_probes, 3),
            "excess_vs_probes_s": round(max(0.0, (error_probes or 0.0) - bar_probes), 3),
            "error_vs_flips_s": round(abs(recorded - scripted), 3),
            "bar_vs_flips_s": round(bar_flips, 3),
            "excess_vs_flips_s": round(max(0.0, abs(recorded - scripted) - bar_flips), 3),
            "comment_s": stated,
            "comment_error_s": None if stated is None else round(abs(stated - recorded), 3),
        }

    def _log_problems(self) -> dict[str, Any]:
        non_json, tracebacks, stderr = 0, 0, 0
        crashes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for daemon in self.daemons.started:
            for line in daemon.stdout().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    non_json += 1  # a kill -9 can cut the last line short
                    continue
                if "exception" in record:
                    tracebacks += 1
                if record.get("level") in ("error", "critical"):
                    errors[str(record.get("event"))[:80]] += 1
                if record.get("event") in (
                    "probe cycle failed",
                    "outbox action crashed",
                    "reconcile crashed",
                ):
                    crashes[record["event"]] += 1
            stderr += len(daemon.stderr().strip().splitlines())
        return {
            "non_json_lines": non_json,
            "tracebacks": tracebacks,
            "crashes": dict(crashes),
            "error_lines": dict(errors),
            "stderr_lines": stderr,
        }


def _covers(row: dict[str, Any], outage: dict[str, Any]) -> bool:
    """The incident began during the outage, or was already open at its first failed probe.

    The second case is a streak carried across a restart: failures recorded before a
    kill and failures after it make one incident, since the daemon cannot know what
    happened while it was down.
    """
    if row["target"] != outage["target"]:
        return False
    if outage["began_at"] - 0.3 <= row["started_at"] <= outage["ended_at"] + 0.3:
        return True
    first = outage["first_failed_hit"]
    end = row["resolved_at"] if row["resolved_at"] is not None else float("inf")
    return first is not None and row["started_at"] <= first <= end


def _reopens(incidents: list[dict[str, Any]], issues: list[dict[str, Any]], number: int) -> int:
    for issue in issues:
        if issue["number"] == number:
            found = MARKER.search(issue["body"] or "")
            for row in incidents:
                if found and row["id"] == found[2]:
                    return int(row["reopened"])
    return 0


def _short(outage: dict[str, Any]) -> dict[str, Any]:
    return {
        "outage": outage["key"],
        "mode": outage["mode"],
        "failed_probes": outage["failed_probes"],
        "uncertain_probes": outage["uncertain_probes"],
    }


def _read_incidents(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, target, started_at, resolved_at, issue_number, reopened FROM incidents"
            " ORDER BY started_at"
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        db.close()


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    """Run one soak and print its JSON summary; exit 1 when the bar is not met."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the chaos phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", type=int, default=3, choices=range(1, 9), metavar="N")
    p.add_argument("--kills-per-minute", type=float, default=KILLS_PER_MINUTE)
    p.add_argument("--drain-timeout", type=float, default=120.0, metavar="SECONDS")
    p.add_argument(
        "--exclude-fault",
        action="append",
        default=[],
        metavar="FAULT[@ENDPOINT]",
        help=f"leave out a fault ({', '.join(_fault_menu())}), optionally only on one of"
        f" {', '.join(ENDPOINTS)}",
    )
    p.add_argument("--workdir", type=Path, help="keep logs and the state file here")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = p.parse_args(argv)

    def stop_on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through Soak.__exit__: daemons are killed

    signal.signal(signal.SIGTERM, stop_on_term)
    with _workdir(args.workdir) as workdir:
        with Soak(
            seconds=args.seconds,
            seed=args.seed,
            targets=args.targets,
            workdir=workdir,
            kills_per_minute=args.kills_per_minute,
            drain_timeout_s=args.drain_timeout,
            exclude_faults=tuple(args.exclude_fault),
        ) as soak:
            c.say(
                f"soak: seed {args.seed}, {args.seconds:g} s of chaos, {len(soak.names)} targets,"
                f" {len(soak.plan.segments)} scripted outages, {len(soak.plan.kills)} kills,"
                f" {len(soak.plan.faults)} GitHub faults; workdir {workdir}"
            )
            summary = soak.run()
        summary["plan"] = {
            "segments": [asdict(s) for s in soak.plan.segments],
            "kills": soak.plan.kills,
        }
        c.emit(summary, args.out)
    status_line = "PASSED" if summary["passed"] else f"FAILED: {', '.join(summary['failures'])}"
    c.say(f"soak: {status_line}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
