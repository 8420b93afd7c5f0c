"""Chaos across three regions: three daemons on one PostgreSQL, regional outages, leader kills.

    python bench/chaos.py --seconds 60 --seed 1       # one minute of chaos, then the drain
    python bench/chaos.py --seconds 300 --seed 2      # the five-minute run in docs/reliability.md

The soak (``bench/soak.py``) with the daemon as a cluster: instances in the regions
``ams``, ``ord`` and ``sin`` (``FLY_REGION``) share a throwaway PostgreSQL
(``tests/pgserver.py``, ``DATABASE_URL``); one leads (advisory lock, fenced epochs)
and decides from a majority of fresh regions. Everything is local, seeded and bounded:

* ``--targets`` (2) target servers answer ``/health`` per region (``X-Monitor-Region``)
  by a scripted timeline: long outages seen by all three regions or by two of them
  (each must open exactly one issue), long outages seen by one region only (must open
  nothing: the quorum), and short flaps seen by all (must open nothing). Modes as in
  the soak: 503, connection reset, or a hang past the probe timeout. Each server
  records every hit with its region and mode: that record, not the script, is the truth.
* the fake GitHub gets the soak's random one-shot faults (``Soak._script``).
* ``kill -9`` of an instance several times a minute, every other one the current leader
  (found through ``/healthz``, whose ``role`` says it), each restarted on the same
  config after a short random downtime.
* ``/healthz`` of every instance is read every 0.2 s: who leads, with which epoch; the
  time from a leader's kill to another instance saying ``leader`` is its takeover.

Then the targets stay healthy, faults are cleared, every instance runs, and the
cluster drains: no incident or issue open, nothing left in the outbox (PostgreSQL:
``SELECT COUNT(*) FROM outbox WHERE done_at IS NULL``). The drain may take as long as
the longest retry the outbox can have scheduled (``BACKOFF_MAX_S`` with its jitter), so
an issue that is only late is reported as late (``issue_delay_s``), not as missed.

**The truth.** A region votes with its latest result while that is fresh (``hold_s``:
two cadences and the timeout, 2 to 3 s here). From a region's hits its vote is *surely
down* from the latest a failed result can have been written (the hit's arrival, plus
the probe timeout for a hang, plus slack) until the earliest it can go stale or that
region's next good hit arrives; it *may be down* from the failed hit's arrival until
the latest it can go stale or the next good result has surely been written. With
``min_regions`` 2 the verdict is down only when two fresh regions say so, and the
leader counts one verdict per probe of its own. So a fault is *owed an issue* when one
stretch in which two regions were surely down holds ``open_after`` of the leader's
probes whose whole result window (earliest result to latest read) lies inside it, each
surely the leader's (its ``/healthz`` said ``leader`` with one epoch just before and
just after, and it was not killed meanwhile). It is owed *nothing* when, counting every
probe that may have been a leader's and touches a stretch in which two regions may
have been down, there are fewer than ``open_after``; a one-region outage has no such
stretch. In between it is *ambiguous*: either outcome is right. A fault while too few
instances were alive is thus not required to open anything.

The JSON summary is the last line of stdout (``--out`` also writes it); the exit code
is 0 when the bar is met: no duplicate, nothing missed, nothing left open, no false
open, every leader kill taken over within 30 s. ``tests/test_chaos.py`` runs this
for 45 s; ``docs/reliability.md`` has the figures.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _common as c
import psycopg
from soak import (
    FLAP_MODES,
    FLAP_S,
    GAP_AFTER_LONG_S,
    INCIDENT_INTERVAL_S,
    INTERVAL_S,
    MARKER,
    OPEN_AFTER,
    OUTAGE_MODES,
    PROBE_TIMEOUT_S,
    QUIET_TAIL_S,
    Hit,
    Life,
    RecordingTarget,
    Segment,
    Soak,
    _covers,
    _pick,
    _workdir,
    write_soak_config,
)

from monitor.incidents.channels.github import CREATE_SETTLE_S
from monitor.incidents.outbox import BACKOFF_MAX_S
from tests.daemon_process import DaemonProcess, clean_env, http_get
from tests.fakegithub import DEFAULT_REPO, DEFAULT_TOKEN
from tests.pgserver import MISSING, PostgresServer, postgres_binaries
from tests.targets import Connection, Request

REGIONS = ("ams", "ord", "sin")
LEADER_CHECK_S = 0.5  # scaled to the fast cadence, as the e2e tests do (default 2 s)
MIN_REGIONS = 2  # with one fresh region left the state is unknown, never one region's alone

# one deck of fault kinds, reshuffled when used up: every eight faults hold two of each
KINDS = ("all", "two", "one", "flap") * 2
REGIONS_OF_KIND = {"all": 3, "two": 2, "one": 1, "flap": 3}
LONG_S = (3.5, 7.0)  # two regions' first failures, then open_after verdicts at 0.5 s
HANG_LONG_S = (5.5, 9.0)  # each hung probe takes the timeout: fewer votes per second
GAP_AFTER_QUIET_S = (4.5, 7.0)  # after what opens nothing: longer than a stale vote lives
KILLS_PER_MINUTE = 8  # every other one the leader's
KILL_DEFER_S = 10.0  # a kill waits this long for two live instances or a leader, then lapses
TAKEOVER_BAR_S = 30.0
# the drain outwaits the longest retry the outbox may have scheduled (backoff, jitter, a
# create's settle): a step that is late is not a step that is missed
DRAIN_TIMEOUT_S = BACKOFF_MAX_S * 1.2 + CREATE_SETTLE_S + 30
SAMPLE_S = 0.2

# when a region's vote can change (see the module docstring)
ANSWER_S = 0.05  # a 503 or a reset is answered at once
SLACK_S = 0.3  # commit, read and scheduling slack
HOLD_MIN_S = 2 * INCIDENT_INTERVAL_S + PROBE_TIMEOUT_S  # a vote is fresh at least this long
HOLD_MAX_S = 2 * INTERVAL_S + PROBE_TIMEOUT_S  # and at most this long

Span = tuple[float, float]
BRIEF = (
    "key",
    "kind",
    "mode",
    "regions",
    "failed_probes",
    "sure_leader_votes",
    "possible_leader_votes",
)


# ---- targets that answer per region -----------------------------------------------------------


@dataclass(frozen=True)
class RegionHit(Hit):
    """One probe as the target saw it, with the region that sent it."""

    region: str


class RegionalTarget(RecordingTarget):
    """A recording target whose ``/health`` answers each region by that region's mode."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.modes: dict[str, str] = {}  # region -> mode; a region not named is "ok"
        self.region_hits: list[RegionHit] = []

    async def _handle(self, request: Request, conn: Connection) -> None:
        region = request.header("x-monitor-region") or "?"
        with self._lock:
            mode = self.modes.get(region, "ok")
            self.region_hits.append(RegionHit(time.time(), mode, region))
            # RecordingTarget answers in self.mode, read before its first await: the server
            # runs one event loop, so no other request comes in between
            self.mode = mode
        await super()._handle(request, conn)

    def set_regions(self, mode: str, regions: tuple[str, ...]) -> float:
        """Answer ``regions`` in ``mode`` from now on; the flip time is returned and recorded."""
        with self._lock:
            for region in regions:
                self.modes[region] = mode
            at = time.time()
            self.flips.append((at, f"{mode}@{'+'.join(regions)}"))
            return at

    def hits_of(self, region: str) -> list[RegionHit]:
        """Every hit from ``region`` so far, oldest first."""
        with self._lock:
            return [h for h in self.region_hits if h.region == region]


# ---- the plan ----------------------------------------------------------------------------------


@dataclass
class RegionSegment(Segment):
    """A scripted fault of one target as some regions see it."""

    regions: tuple[str, ...] = REGIONS


def regional_segments(
    rng: random.Random, targets: list[str], seconds: float
) -> list[RegionSegment]:
    """Outages seen by all, two or one of the regions, and flaps, per target."""
    deck: list[str] = []
    segments = []
    for name in targets:
        at = rng.uniform(1.0, 5.0)
        while True:
            if not deck:
                deck = list(KINDS)
                rng.shuffle(deck)
            kind = deck.pop()
            modes, spans = (
                (FLAP_MODES, {"503": FLAP_S, "reset": FLAP_S})
                if kind == "flap"
                else (OUTAGE_MODES, {"503": LONG_S, "reset": LONG_S, "hang": HANG_LONG_S})
            )
            mode = _pick(rng, modes)
            length = rng.uniform(*spans[mode])
            if at + length > seconds - QUIET_TAIL_S:
                break
            regions = tuple(sorted(rng.sample(REGIONS, REGIONS_OF_KIND[kind])))
            segments.append(RegionSegment(name, at, length, kind, mode, regions=regions))
            owed = kind in ("all", "two")
            at += length + rng.uniform(*(GAP_AFTER_LONG_S if owed else GAP_AFTER_QUIET_S))
    return sorted(segments, key=lambda s: s.start_s)


# ---- the instances -------------------------------------------------------------------------------


@dataclass
class Instance:
    """One region's daemon: its config, the process now, and every life so far."""

    region: str
    config: Path
    env: dict[str, str]
    daemon: DaemonProcess | None = None
    lives: list[Life] = field(default_factory=list)
    restart_at: float | None = None

    @property
    def up(self) -> bool:
        """The process runs."""
        return self.daemon is not None and self.daemon.running

    @property
    def ready(self) -> bool:
        """The process runs and has answered ``/healthz``."""
        return self.up and self.lives[-1].ready_at is not None

    def deaths(self) -> list[float]:
        """When each life ended other than by the final SIGTERM."""
        return [
            life.ended_at
            for life in self.lives
            if life.ended_at is not None and not life.how.startswith("terminated")
        ]


@dataclass(frozen=True)
class Seen:
    """One ``/healthz`` answer: the instance's role and the leadership it last read."""

    at: float  # the middle of the request
    region: str
    daemon: str
    role: str
    epoch: int | None
    leader_region: str | None


@dataclass
class Kill:
    """One kill -9."""

    at: float
    region: str
    planned: str  # "leader" or a region
    was_leader: bool
    epoch: int | None
    downtime_s: float


# ---- the run ---------------------------------------------------------------------------------


class Chaos(Soak):
    """A soak of three instances on PostgreSQL; use as a context manager.

    From the soak it takes the GitHub fault schedule and its injection
    (``Soak._script``), the kill times, the sampler of open issues, the log review
    and the clean-up; the regional outages, the instances and the verdict are its own.
    """

    def __init__(
        self, *, targets: int, kills_per_minute: float = KILLS_PER_MINUTE, **soak: Any
    ) -> None:
        # no targets for the soak: its plan holds the kill times and the GitHub faults only
        super().__init__(targets=0, kills_per_minute=kills_per_minute, **soak)
        self.names = [f"t{i + 1}" for i in range(targets)]
        self.regional = {name: RegionalTarget(name) for name in self.names}
        self.targets = dict(self.regional)
        self.segments = regional_segments(self.rng, self.names, self.seconds)
        self.victims = [
            "leader" if index % 2 == 0 else self.rng.choice(REGIONS)
            for index in range(len(self.plan.kills))
        ]
        self.runtime_rng = random.Random(self.seed + 1)  # a substitute victim, drawn as it happens
        self.pg: PostgresServer | None = None
        self.database_url = ""
        self.instances: dict[str, Instance] = {}
        self.seen: dict[str, list[Seen]] = {region: [] for region in REGIONS}
        self.overlaps: list[list[Seen]] = []
        self.kills: list[Kill] = []
        self.lapsed_kills: list[str] = []
        self.chaos_over = threading.Event()

    # -- lifecycle

    def __enter__(self) -> Chaos:
        self.pg = PostgresServer()
        try:
            # a SIGTERM inside pg_ctl start would leave a server that close() does not know
            # runs: hold it until start() has returned
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                self.pg.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self.database_url = self.pg.create_database("chaos")
            super().__enter__()  # the fake GitHub with its labels, the target servers
            urls = {name: target.server.url for name, target in self.regional.items()}
            for region in REGIONS:
                config = write_soak_config(
                    self.workdir / f"{region}.toml",
                    urls,
                    c.free_port(),
                    self.state_path,  # unused: DATABASE_URL wins
                    self.github.url,
                )
                env = clean_env(
                    GITHUB_TOKEN=DEFAULT_TOKEN,
                    DATABASE_URL=self.database_url,
                    FLY_REGION=region,
                    FLY_MACHINE_ID=f"machine-{region}",
                    MONITOR_MONITOR__LEADER_CHECK=f"{LEADER_CHECK_S:g}",
                    MONITOR_MONITOR__MIN_REGIONS=str(MIN_REGIONS),
                )
                self.instances[region] = Instance(region, config, env)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.chaos_over.set()
        try:
            super().__exit__(*exc)
        finally:
            if self.pg is not None:
                self.pg.close()

    # -- the instances

    def _start(self, instance: Instance) -> None:
        daemon = self.daemons.start(instance.config, instance.env)
        instance.daemon = daemon
        instance.lives.append(Life(f"{instance.region}/{daemon.name}", time.time()))
        instance.restart_at = None

    def _revive(self, instance: Instance, at_once: bool = False) -> None:
        """Note an exit nobody caused; start a dead instance whose downtime is over."""
        if instance.up:
            return
        life = instance.lives[-1] if instance.lives else None
        if life is not None and life.ended_at is None and instance.daemon is not None:
            assert instance.daemon.proc is not None
            life.ended_at = time.time()
            life.how = f"exited {instance.daemon.proc.returncode}"
            instance.restart_at = time.time()
            c.say(f"chaos: {life.name} exited by itself ({instance.daemon.proc.returncode})")
        if at_once or (instance.restart_at is not None and time.time() >= instance.restart_at):
            self._start(instance)

    def _healthz(self, instance: Instance) -> Seen | None:
        daemon = instance.daemon
        if daemon is None or not daemon.running:
            return None
        sent = time.time()
        try:
            body = json.loads(http_get(daemon.base_url + "/healthz", timeout_s=0.5)[1])
        except (OSError, ValueError):
            return None
        leader = body.get("leader") or {}
        return Seen(
            (sent + time.time()) / 2,
            instance.region,
            daemon.name,
            str(body.get("role")),
            leader.get("epoch"),
            leader.get("region"),
        )

    def _sample_leaders(self) -> None:
        """Every 0.2 s: each instance's role; two saying ``leader`` at once is noted."""
        while not self.stop.wait(SAMPLE_S):
            self._sample_leaders_once()

    def _sample_leaders_once(self) -> None:
        leaders = []
        for instance in self.instances.values():
            life = instance.lives[-1] if instance.lives else None
            seen = self._healthz(instance)
            if seen is None or life is None:
                continue
            self.seen[instance.region].append(seen)
            if life.ready_at is None and life.name.endswith(seen.daemon):
                life.ready_at = seen.at
            if seen.role == "leader":
                leaders.append(seen)
        if len(leaders) > 1:
            self.overlaps.append(leaders)

    def _lifecycle(self) -> None:
        """Kill -9 at the planned moments (the leader every other time); restart after
        the downtime; revive an instance that exited by itself."""
        kills = list(zip(self.plan.kills, self.victims, strict=True))
        while not self.chaos_over.is_set():
            for instance in self.instances.values():
                self._revive(instance)
            if kills and time.time() - self.t0 >= kills[0][0][0]:
                (offset, downtime), victim = kills[0]
                if self._kill(victim, downtime):
                    kills.pop(0)
                elif time.time() - self.t0 > offset + KILL_DEFER_S:
                    kills.pop(0)
                    self.lapsed_kills.append(f"{victim}@{offset:.1f}")
            self.chaos_over.wait(0.05)

    def _kill(self, victim: str, downtime: float) -> bool:
        """Kill ``victim`` (a region, or whoever leads); False to try again a little later."""
        ready = [i for i in self.instances.values() if i.ready]
        if len(ready) < 2:  # one must stay to take over
            return False
        seen = {i.region: self._healthz(i) for i in ready}
        if victim == "leader":
            chosen = [i for i in ready if (s := seen[i.region]) and s.role == "leader"]
        else:
            chosen = [self.instances[victim]] if self.instances[victim] in ready else []
            chosen = chosen or [self.runtime_rng.choice(ready)]
        if not chosen:
            return False  # nobody leads right now (a takeover under way)
        instance = chosen[0]
        before = seen[instance.region]
        assert instance.daemon is not None
        instance.daemon.kill()
        at = time.time()
        instance.lives[-1].ended_at = at
        instance.lives[-1].how = "killed"
        instance.restart_at = at + downtime
        was_leader = before is not None and before.role == "leader"
        epoch = before.epoch if before is not None and was_leader else None
        self.kills.append(Kill(at, instance.region, victim, was_leader, epoch, downtime))
        return True

    def _regional_script(self) -> None:
        """The outages and flaps, flipped at their offsets."""
        events = []
        for segment in self.segments:
            events.append((segment.start_s, True, segment))
            events.append((segment.start_s + segment.length_s, False, segment))
        events.sort(key=lambda e: (e[0], e[1]))
        for offset, begin, segment in events:
            if self.chaos_over.wait(max(0.0, self.t0 + offset - time.time())):
                return
            target = self.regional[segment.target]
            if begin:
                segment.began_at = target.set_regions(segment.mode, segment.regions)
            else:
                segment.ended_at = target.set_regions("ok", segment.regions)

    # -- the script

    def run(self) -> dict[str, Any]:
        """Start three instances, chaos, drain, analysis: the summary."""
        self.t0 = time.time()
        for instance in self.instances.values():
            self._start(instance)
        deadline = time.time() + 60
        while time.time() < deadline:
            self._sample_leaders_once()
            if all(i.ready for i in self.instances.values()) and self._leader_now():
                break
            time.sleep(0.1)
        self.t0 = time.time()  # the plan counts from a running cluster
        helpers = [
            (self._lifecycle, "chaos-lifecycle"),
            (self._regional_script, "chaos-targets"),
            (self._sample_leaders, "chaos-leaders"),
            (self._sample_open_issues, "chaos-issues"),
        ]
        self.helpers = [threading.Thread(target=f, name=n, daemon=True) for f, n in helpers]
        for thread in self.helpers:
            thread.start()
        self._script()  # the soak's: GitHub faults at their offsets, to the end of the chaos
        chaos_end = time.time()
        self.chaos_over.set()
        for thread in self.helpers[:2]:
            thread.join(timeout=40)
        for target in self.regional.values():
            target.set_regions("ok", REGIONS)
        self._clear_faults()
        drain_s, drained = self._drain()  # the soak's: three calm checks in a row
        self._sample_once()
        running = [i for i in self.instances.values() if i.up]
        for instance in running:
            assert instance.daemon is not None
            instance.daemon.terminate()
        for instance in running:
            assert instance.daemon is not None
            code = instance.daemon.wait(15)
            instance.lives[-1].ended_at = time.time()
            instance.lives[-1].how = f"terminated ({code})"
        self.stop.set()
        for thread in self.helpers[2:]:
            thread.join(timeout=10)
        return self._summary(chaos_end, drain_s, drained)

    def _leader_now(self) -> bool:
        latest = [s[-1] for s in self.seen.values() if s]
        return any(s.role == "leader" and s.at > time.time() - 1.0 for s in latest)

    def _note_exit(self) -> bool:
        """What ``Soak._drain`` asks first: here every dead instance starts at once."""
        for instance in self.instances.values():
            self._revive(instance, at_once=True)
        return False

    def _drained(self) -> bool:
        """``Soak._drain``'s test: a leader, nothing pending in PostgreSQL, no issue open."""
        return self._leader_now() and self._settled()

    def _settled(self) -> bool:
        counts = self._pending()
        if counts is None or any(counts.values()):
            return False
        return not any(i["state"] == "open" for i in self.github.issues(DEFAULT_REPO))

    def _pending(self) -> dict[str, int] | None:
        """What the cluster still owes, from PostgreSQL; None when it cannot be read."""
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as db:
                outbox = db.execute("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
                (actions,) = outbox.fetchone() or (0,)
                unresolved = db.execute("SELECT COUNT(*) FROM incidents WHERE resolved_at IS NULL")
                (incidents,) = unresolved.fetchone() or (0,)
        except psycopg.Error:
            return None
        return {"outbox": int(actions), "incidents": int(incidents)}

    def _incidents(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as db:
            cursor = db.execute(
                "SELECT id, target, started_at, resolved_at, issue_number, reopened"
                " FROM incidents ORDER BY started_at"
            )
            names = [d.name for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- the verdict

    def _verdict_of(self, segment: RegionSegment) -> dict[str, Any]:
        """What the regions saw of one scripted fault, and what the cluster owed it."""
        assert segment.began_at is not None
        began = segment.began_at
        ended = segment.ended_at or began + segment.length_s
        target = self.regional[segment.target]
        hits = {region: target.hits_of(region) for region in REGIONS}
        deaths = {region: self.instances[region].deaths() for region in REGIONS}
        failed = {
            region: [h for h in hits[region] if began <= h.at < ended and h.mode != "ok"]
            for region in REGIONS
        }
        spans = [vote_spans(hits[r], failed[r], deaths[r]) for r in REGIONS]
        surely_down = two_or_more([sure for sure, _ in spans])
        maybe_down = two_or_more([may for _, may in spans])
        decisions = [d for r in REGIONS for d in _decisions(hits[r], self.seen[r], deaths[r])]
        # a sure vote: the whole result window inside one stretch; a possible one: any part
        most = max(
            (
                sum(1 for (lo, hi), sure, _ in decisions if sure and a <= lo and hi < b)
                for a, b in surely_down
            ),
            default=0,
        )
        upper = sum(
            1
            for (lo, hi), _, may in decisions
            if may and any(lo < b and a < hi for a, b in maybe_down)
        )
        owed = "must_open" if most >= OPEN_AFTER else None
        verdict = owed or ("must_not_open" if upper < OPEN_AFTER else "ambiguous")
        return {
            "key": f"{segment.target}@{segment.start_s:.1f}",
            "target": segment.target,
            "kind": segment.kind,
            "mode": segment.mode,
            "regions": list(segment.regions),
            "began_at": began,
            "ended_at": ended,
            "window_end": max([ended, *(b for _, b in maybe_down)]),
            "failed_probes": {r: len(failed[r]) for r in REGIONS},
            "first_failed_hit": min((h.at for f in failed.values() for h in f), default=None),
            "sure_leader_votes": most,
            "possible_leader_votes": upper,
            "verdict": verdict,
        }

    def _summary(self, chaos_end: float, drain_s: float, drained: bool) -> dict[str, Any]:
        incidents = self._incidents()
        issues = self.github.issues(DEFAULT_REPO)
        ledger = self._ledger(incidents, issues)
        filed = ledger.pop("issues_by_incident")
        outages = [self._verdict_of(s) for s in self.segments if s.began_at is not None]
        matched: set[str] = set()
        missed, false_opens, split = [], [], []
        for outage in outages:
            widened = {**outage, "ended_at": outage["window_end"]}
            covering = [row["id"] for row in incidents if _covers(row, widened)]
            opened = [row["id"] for row in incidents if _began_during(row, widened)]
            matched.update(covering, opened)
            outage["incidents"] = covering
            outage["issues"] = [number for i in covering for number in filed.get(i, [])]
            brief = {key: outage[key] for key in BRIEF}
            if outage["verdict"] == "must_open":
                if not outage["issues"]:
                    why = "incident without a GitHub issue" if covering else "no incident recorded"
                    missed.append({**brief, "why": why})
                if len(covering) > 1:
                    split.append({**brief, "incidents": covering})
            elif outage["verdict"] == "must_not_open" and opened:
                false_opens.append({**brief, "incidents": opened})
        false_opens += [
            {"incident": row["id"], "why": "matches no scripted fault"}
            for row in incidents
            if row["id"] not in matched
        ]
        leadership = self._leadership()
        checks = {
            "never two issues for one incident": not ledger["duplicate_issues"] and not split,
            "never two open at once for a target": not self.open_episodes,
            "zero missed": not missed,
            "zero left open": not ledger["left_open"] and not ledger["unresolved_incidents"],
            "zero never opened": not ledger["never_opened"],
            "no false open (one region, a flap, or nothing scripted)": not false_opens,
            "every leader kill taken over within 30 s": not leadership["kills_without_takeover"]
            and all(t < TAKEOVER_BAR_S for t in leadership["takeover_s"]),
            "drained": drained,
            "fake GitHub had no internal error": not self.github.errors,
        }
        failures = [name for name, ok in checks.items() if not ok]
        return {
            "bench": "chaos",
            "seed": self.seed,
            "chaos_s": round(chaos_end - self.t0, 1),
            "drain_s": round(drain_s, 1),
            "passed": not failures,
            "failures": failures,
            "checks": checks,
            "config": {
                "regions": list(REGIONS),
                "targets": len(self.names),
                "quorum": "majority",
                "min_regions": MIN_REGIONS,
                "leader_check_s": LEADER_CHECK_S,
                "interval_s": INTERVAL_S,
                "incident_interval_s": INCIDENT_INTERVAL_S,
                "timeout_s": PROBE_TIMEOUT_S,
                "open_after": OPEN_AFTER,
                "excluded_faults": list(self.exclude_faults),
            },
            "chaos": self._chaos_figures(outages),
            "truth": _truth(outages),
            "github": {
                **ledger,
                "duplicates": len(ledger["duplicate_issues"])
                + len(split)
                + len(self.open_episodes),
                "outages_split_into_several_incidents": split,
                "missed": missed,
                "false_opens": false_opens,
            },
            "leadership": leadership,
            "logs": self._log_problems(),
            "outages": [
                {k: v for k, v in o.items() if not k.endswith(("_at", "_hit", "_end"))}
                | {"began_s": round(o["began_at"] - self.t0, 2)}
                for o in outages
            ],
            "lives": [self._life(life) for i in self.instances.values() for life in i.lives],
            "workdir": str(self.workdir),
        }

    def _ledger(
        self, incidents: list[dict[str, Any]], issues: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """GitHub against the incidents table: an issue per incident and one only, none
        left open, one resolve comment per resolve (a reopened incident has more)."""
        by_incident: dict[str, list[int]] = defaultdict(list)
        for issue in issues:
            if found := MARKER.search(issue["body"] or ""):
                by_incident[found[2]].append(issue["number"])
        reopened = {row["id"]: int(row["reopened"]) for row in incidents}
        resolves = {
            number: sum(
                "**Resolved.**" in cm["body"] for cm in self.github.comments(DEFAULT_REPO, number)
            )
            for numbers in by_incident.values()
            for number in numbers
        }
        episodes = sorted(self.open_episodes.items(), key=lambda kv: kv[1][0])
        created = {i["number"]: datetime.fromisoformat(i["created_at"]).timestamp() for i in issues}
        delays = {
            row["id"]: round(min(created[n] for n in by_incident[row["id"]]) - row["started_at"], 1)
            for row in incidents
            if row["id"] in by_incident
        }
        latest = max(delays, key=lambda k: delays[k], default=None)
        return {
            "issues_filed": len(issues),
            "incidents_recorded": len(incidents),
            "issues_by_incident": dict(by_incident),
            "duplicate_issues": {k: v for k, v in by_incident.items() if len(v) > 1},
            "two_open_at_once": {
                "episodes": len(episodes),
                "samples": self.open_samples,
                "first": [f"{t}: #{n} from {a} s to {b} s" for (t, n), (a, b) in episodes[:5]],
            },
            "max_open_per_target": dict(sorted(self.max_open.items())),
            # from the incident's start to its issue at GitHub (whole seconds at GitHub)
            "issue_delay_s": {
                "median": round(statistics.median(delays.values()), 1) if delays else None,
                "max": delays[latest] if latest else None,
                "latest_incident": latest,
            },
            "never_opened": [row["id"] for row in incidents if row["id"] not in by_incident],
            "left_open": [i["number"] for i in issues if i["state"] == "open"],
            "unresolved_incidents": [row["id"] for row in incidents if row["resolved_at"] is None],
            "extra_close_comments": sum(
                max(0, resolves[number] - 1 - reopened.get(incident, 0))
                for incident, numbers in by_incident.items()
                for number in numbers
            ),
        }

    def _chaos_figures(self, outages: list[dict[str, Any]]) -> dict[str, Any]:
        """What was done to the cluster."""
        lives = [life for i in self.instances.values() for life in i.lives]
        requests = self.github.requests
        hits = [h for t in self.regional.values() for h in t.region_hits]
        return {
            "faults_by_kind": dict(Counter(o["kind"] for o in outages)),
            "fault_modes": dict(Counter(o["mode"] for o in outages)),
            "probes_seen_by_targets": dict(Counter(h.region for h in hits)),
            "kills": len(self.kills),
            "leader_kills": sum(1 for k in self.kills if k.was_leader),
            "kills_by_region": dict(Counter(k.region for k in self.kills)),
            "lapsed_kills": self.lapsed_kills,
            "unexpected_exits": [life.how for life in lives if life.how.startswith("exited")],
            "max_start_to_ready_s": round(
                max(
                    (life.ready_at - life.started_at for life in lives if life.ready_at), default=0
                ),
                2,
            ),
            "github_faults_injected": sum(self.faults_injected.values()),
            "github_faults_by_kind": dict(sorted(self.faults_injected.items())),
            "github_requests": len(requests),
            "github_error_replies": sum(1 for r in requests if r.status == 0 or r.status >= 400),
        }

    def _life(self, life: Life) -> dict[str, Any]:
        """One process, its times as offsets from the chaos start."""
        times = {
            key.replace("_at", "_s"): None if at is None else round(at - self.t0, 2)
            for key, at in asdict(life).items()
            if key.endswith("_at")
        }
        return {"name": life.name, **times, "how": life.how}

    def _leadership(self) -> dict[str, Any]:
        """Takeover after each leader kill, epochs seen, and two leaders at once."""
        leading = sorted(
            (s for seen in self.seen.values() for s in seen if s.role == "leader"),
            key=lambda s: s.at,
        )
        takeovers, without = [], []
        for kill in (k for k in self.kills if k.was_leader):
            successor = next((s for s in leading if s.at > kill.at), None)
            if successor is None:
                without.append(round(kill.at - self.t0, 2))
                continue
            takeovers.append(
                {
                    "killed_s": round(kill.at - self.t0, 2),
                    "killed": kill.region,
                    "epoch": kill.epoch,
                    "successor": successor.region,
                    "successor_epoch": successor.epoch,
                    "takeover_s": round(successor.at - kill.at, 2),
                }
            )
        times = [t["takeover_s"] for t in takeovers]
        return {
            "leader_kills": len(takeovers) + len(without),
            "takeover_s": times,
            "takeover_max_s": max(times, default=None),
            "takeover_median_s": round(statistics.median(times), 2) if times else None,
            "kills_without_takeover": without,
            "takeovers": takeovers,
            "epochs_seen": sorted({s.epoch for s in leading if s.epoch is not None}),
            "healthz_samples": sum(len(s) for s in self.seen.values()),
            "two_leaders_at_once": {
                "rounds": len(self.overlaps),
                "first": [
                    [
                        {
                            "at_s": round(s.at - self.t0, 2),
                            "region": s.region,
                            "epoch_it_reads": s.epoch,
                            "leader_it_reads": s.leader_region,
                        }
                        for s in round_
                    ]
                    for round_ in self.overlaps[:5]
                ],
            },
        }


# ---- when a region's vote was down ----------------------------------------------------------------


def _result_window(hit: Hit) -> Span:
    """From the earliest the probe behind ``hit`` can have had its result (the answer, or
    the probe timeout for a hang) to the latest it has surely been written and read."""
    wait = PROBE_TIMEOUT_S if hit.mode == "hang" else 0.0
    return hit.at + max(0.0, wait - ANSWER_S), hit.at + wait + ANSWER_S + SLACK_S


def _survived(hit: Hit, deaths: list[float]) -> bool:
    """The instance lived until the probe's result was surely written."""
    return not any(hit.at - ANSWER_S <= d <= _result_window(hit)[1] for d in deaths)


def _decisions(
    hits: list[RegionHit], seen: list[Seen], deaths: list[float]
) -> list[tuple[Span, bool, bool]]:
    """(result window, surely a leader's, maybe a leader's) for each probe of one region:
    its ``/healthz`` just before and just after that window, from one process."""
    times = [s.at for s in seen]
    out = []
    for hit in hits:
        lo, hi = _result_window(hit)
        before, after = bisect.bisect_right(times, lo) - 1, bisect.bisect_left(times, hi)
        pair = [seen[before], seen[after]] if before >= 0 and after < len(seen) else []
        if pair and (pair[0].daemon != pair[1].daemon or pair[1].at - pair[0].at > 1.5):
            pair = []
        roles = {s.role for s in seen[before : after + 1]} if pair else set()
        sure = roles == {"leader"} and pair[0].epoch == pair[1].epoch and _survived(hit, deaths)
        out.append(((lo, hi), sure, roles != {"follower"}))
    return out


def vote_spans(
    hits: list[RegionHit], failed: list[RegionHit], deaths: list[float]
) -> tuple[list[Span], list[Span]]:
    """When one region's vote was surely down, and when it may have been, from its hits
    (``failed`` those of the fault judged; see the module docstring).

    Surely: from the latest a failed result is written until the earliest it can go
    stale (``hold_s`` after the earliest it can have been written) or be replaced by a
    good result (that good hit's arrival). Maybe: from the failed hit's arrival until
    the latest it can go stale, or until the next good result has surely been written.
    """
    sure: list[Span] = []
    may: list[Span] = []
    good = [h for h in hits if h.mode == "ok"]
    good_at = [h.at for h in good]
    for hit in failed:
        lo, hi = _result_window(hit)
        index = bisect.bisect_right(good_at, hit.at)
        later_good = good[index] if index < len(good) else None
        if _survived(hit, deaths):
            replaced = later_good.at if later_good else math.inf
            sure.append((hi, min(lo + HOLD_MIN_S, replaced)))
        up_by = math.inf
        if later_good is not None and _survived(later_good, deaths):
            up_by = _result_window(later_good)[1]
        may.append((hit.at, min(hi + HOLD_MAX_S, up_by)))
    return _merge(sure), _merge(may)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def two_or_more(per_region: list[list[Span]]) -> list[Span]:
    """The stretches in which at least two regions' spans overlap."""
    edges = sorted(
        [(a, 1) for spans in per_region for a, _ in spans]
        + [(b, -1) for spans in per_region for _, b in spans],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    out: list[Span] = []
    count, since = 0, 0.0
    for at, step in edges:
        if count < 2 <= count + step:
            since = at
        elif count + step < 2 <= count:
            out.append((since, at))
        count += step
    return _merge(out)


def _began_during(row: dict[str, Any], outage: dict[str, Any]) -> bool:
    """The incident started during the fault (or while its last votes were still down)."""
    return (
        row["target"] == outage["target"]
        and outage["began_at"] - SLACK_S <= row["started_at"] <= outage["ended_at"] + SLACK_S
    )


def _truth(outages: list[dict[str, Any]]) -> dict[str, Any]:
    """What the cluster owed, by kind of fault, and how the quiet ones went."""
    of = {kind: [o for o in outages if o["kind"] == kind] for kind in ("all", "two", "one", "flap")}
    owed = [o for o in outages if o["verdict"] == "must_open"]
    return {
        "verdicts_by_kind": {k: dict(Counter(o["verdict"] for o in v)) for k, v in of.items()},
        "incidents_scripted": len(of["all"]) + len(of["two"]),
        "must_open": len(owed),
        "opened": sum(1 for o in owed if o["issues"]),
        "single_region_outages": len(of["one"]),
        "single_region_ignored": sum(1 for o in of["one"] if not o["incidents"]),
        "flaps": len(of["flap"]),
        "flaps_ignored": sum(1 for o in of["flap"] if not o["incidents"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chaos once and print its JSON summary; exit 1 when the bar is not met."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the chaos phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", type=int, default=2, choices=range(1, 9), metavar="N")
    p.add_argument("--kills-per-minute", type=float, default=KILLS_PER_MINUTE)
    p.add_argument("--drain-timeout", type=float, default=DRAIN_TIMEOUT_S, metavar="SECONDS")
    p.add_argument("--exclude-fault", action="append", default=[], metavar="FAULT[@ENDPOINT]")
    p.add_argument("--workdir", type=Path, help="keep the daemons' logs here")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = p.parse_args(argv)
    if postgres_binaries() is None:
        c.say(f"chaos: {MISSING}")
        return 2
    # SIGTERM unwinds through Chaos.__exit__, which stops the daemons and PostgreSQL
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    options = {
        "seconds": args.seconds,
        "seed": args.seed,
        "kills_per_minute": args.kills_per_minute,
        "drain_timeout_s": args.drain_timeout,
        "exclude_faults": tuple(args.exclude_fault),
    }
    with (
        _workdir(args.workdir) as workdir,
        Chaos(targets=args.targets, workdir=workdir, **options) as chaos,
    ):
        kinds = dict(Counter(s.kind for s in chaos.segments))
        c.say(
            f"chaos: seed {args.seed}, {args.seconds:g} s, faults {kinds},"
            f" {len(chaos.plan.kills)} kills, {len(chaos.plan.faults)} GitHub faults; {workdir}"
        )
        summary = chaos.run()
        summary["plan"] = {
            "faults": [asdict(s) for s in chaos.segments],
            "kills": [[*k, v] for k, v in zip(chaos.plan.kills, chaos.victims, strict=True)],
            "done_kills": [asdict(k) for k in chaos.kills],
        }
    c.emit(summary, args.out)
    c.say("chaos: " + ("PASSED" if summary["passed"] else f"FAILED: {summary['failures']}"))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
