"""The incremental sync: what changed on GitHub since the last one, into the store.

One pass reads, in order: the environment's deployments (first page conditional;
a 304 ends it), the statuses of those not yet final, the commits each newly
successful deployment introduced (compare, paginated), the workflow runs of the
configured workflows (first page conditional; a daily deep re-read of the
lookback catches re-runs of old runs) and the ``lighthouse`` status of each
deployed commit. Everything read lands in one transaction with the ETags that
describe it and the sync's state; a pass GitHub interrupts stores only its state,
so the figures can say how old their data is. Probes never wait on any of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from github import Github

from monitor.config import Settings
from monitor.kpis.github import GithubApi, GithubUnavailable, NotFound, Page
from monitor.kpis.records import (
    CHANGES,
    DEPLOYMENT,
    ETAG,
    PENDING_GIVE_UP_S,
    PERFORMANCE,
    SYNC,
    Commit,
    DeploymentChanges,
    GhDeployment,
    PerformanceScore,
    SyncState,
    WorkflowRun,
    parse_time,
)
from monitor.logs import get_logger
from monitor.store.base import GithubRecord, Store

log = get_logger("monitor.kpis")

# a lighthouse status may be posted after the deployment: look for a day, then stop
STATUS_WAIT_S = 86400.0
# a re-run of a run older than the first page is found by re-reading the lookback daily
DEEP_SCAN_EVERY_S = 86400.0
LIGHTHOUSE = "lighthouse"
_SCORE = re.compile(r"\s*(?:performance\b\s*:?\s*)?(\d{1,3})(?!\d)", re.IGNORECASE)


def lighthouse_score(description: object) -> int | None:
    """The score a ``lighthouse`` status's description starts with ("performance 92")."""
    if not isinstance(description, str):
        return None
    match = _SCORE.match(description)
    if match is None or int(match[1]) > 100:
        return None
    return int(match[1])


class KpiSync:
    """Reads what changed on GitHub into the store; one instance per process."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        client: Github | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._kpis = settings.kpis
        self._clock = clock
        self._client = client

    @property
    def configured(self) -> bool:
        """True when there is a GitHub repository and token to read."""
        return self._kpis.enabled and self._settings.github.active

    def state(self) -> SyncState:
        """The last sync's outcome."""
        return SyncState.from_record(self._store.github_record(SYNC, "state"))

    def due(self, now: datetime) -> bool:
        """A sync interval has passed since the last attempt, and no rate limit holds."""
        state = self.state()
        if state.retry_at is not None and now < state.retry_at:
            return False
        last = state.attempted_at
        return last is None or (now - last).total_seconds() >= self._kpis.sync_interval

    def sync(self, now: datetime | None = None) -> SyncState:
        """One pass; returns the new state (its ``error`` says if GitHub interrupted it)."""
        now = now or self._clock()
        previous = self.state()
        etags = {r.key: str(r.payload["etag"]) for r in self._store.github_records(ETAG)}
        api = GithubApi(self._settings.github, etags, self._clock, client=self._client)
        try:
            pass_ = _Pass(self._store, self._settings, api, now, previous)
            try:
                records = pass_.run()
            except (KeyError, TypeError, ValueError) as exc:  # a reply of the wrong shape
                unreadable = GithubUnavailable(f"GitHub sent an unreadable reply: {exc!r}"[:200])
                return self._interrupted(previous, api, now, unreadable)
            except GithubUnavailable as exc:
                return self._interrupted(previous, api, now, exc)
            state = replace(
                pass_.state,
                succeeded_at=now,
                attempted_at=now,
                error=None,
                retry_at=None,
                requests=api.requests,
                not_modified=api.not_modified,
            )
            self._store.put_github_records([*records, *api.new_etags(now), _stored(state)])
        finally:
            if self._client is None:
                api.close()
        log.info(
            "KPI sync",
            requests=api.requests,
            not_modified=api.not_modified,
            stored=len(records),
        )
        return state

    def _interrupted(
        self, previous: SyncState, api: GithubApi, now: datetime, exc: GithubUnavailable
    ) -> SyncState:
        """Store only the state: the figures keep the data of the last complete sync."""
        state = replace(
            previous,
            attempted_at=now,
            error=str(exc),
            retry_at=exc.retry_at,
            requests=api.requests,
            not_modified=api.not_modified,
        )
        self._store.put_github_records([_stored(state)])
        log.warning("KPI sync interrupted", error=str(exc), requests=api.requests)
        return state


class _Pass:
    """One sync pass's reading; ``run`` returns the records to store."""

    def __init__(
        self, store: Store, settings: Settings, api: GithubApi, now: datetime, state: SyncState
    ) -> None:
        self._store = store
        self._kpis = settings.kpis
        self._api = api
        self._now = now
        self.state = state
        self._repo = f"/repos/{api.repository}"
        self._since = now - timedelta(seconds=self._kpis.lookback)
        # the lookback's deployments as stored before this pass (read once, in _deployments)
        self._stored: dict[int, GhDeployment] = {}

    def run(self) -> list[GithubRecord]:
        deployments = self._deployments()
        values: list[_Storable] = [*deployments.values()]
        values += self._changes(deployments)
        values += self._scores(deployments)
        values += self._runs()
        return [_stored(v) for v in values]

    # ---- deployments and their statuses ------------------------------------------------

    def _deployments(self) -> dict[int, GhDeployment]:
        """The deployments new or changed in this pass, by id."""
        known = self._stored = {
            d.id: d
            for d in map(
                GhDeployment.from_record, self._store.github_records(DEPLOYMENT, since=self._since)
            )
        }
        fresh = {d.id: d for d in self._new_deployments(known)}
        changed: dict[int, GhDeployment] = {}
        for deployment in [*fresh.values(), *known.values()]:
            age_s = (self._now - deployment.created_at).total_seconds()
            if deployment.final or (deployment.id in known and age_s > PENDING_GIVE_UP_S):
                continue
            updated = self._with_statuses(deployment)
            if updated is not None and (updated != deployment or deployment.id in fresh):
                changed[deployment.id] = updated
            elif deployment.id in fresh:
                changed[deployment.id] = deployment
        return changed

    def _new_deployments(self, known: Mapping[int, GhDeployment]) -> Iterator[GhDeployment]:
        params = {"environment": self._kpis.environment, "per_page": 100}
        page = self._api.get(f"{self._repo}/deployments", params, conditional=True)
        while not page.not_modified:
            unknown = 0
            for item in _list(page.data):
                created = parse_time(item["created_at"])
                if created < self._since:
                    return
                if int(item["id"]) in known:
                    continue
                unknown += 1
                yield GhDeployment(
                    int(item["id"]),
                    str(item["sha"]),
                    str(item.get("ref") or ""),
                    str(item.get("environment") or self._kpis.environment),
                    created,
                )
            # newest first: a page with nothing new means everything older is known too
            if unknown == 0 or page.next_url is None:
                return
            page = self._api.get(page.next_url)

    def _with_statuses(self, deployment: GhDeployment) -> GhDeployment | None:
        """The deployment as its statuses tell it; None when they did not change."""
        path = f"{self._repo}/deployments/{deployment.id}/statuses"
        try:
            page = self._api.get(path, {"per_page": 100}, conditional=True)
            if page.not_modified:
                return None
            statuses = list(self._items(page))
        except NotFound:
            log.warning("deployment vanished from GitHub", deployment=deployment.id)
            return None
        if not statuses:
            return deployment
        # newest first: the first is the state now, the last success is the first one
        successes = [s for s in statuses if s.get("state") == "success"]
        first = successes[-1] if successes else None
        return replace(
            deployment,
            state=str(statuses[0].get("state") or ""),
            succeeded_at=parse_time(first["created_at"]) if first else None,
            url=(first.get("log_url") or first.get("target_url") or None) if first else None,
        )

    def _items(self, page: Page) -> Iterator[dict[str, Any]]:
        """Every item of a list from ``page`` on, following the ``next`` links."""
        while True:
            yield from _list(page.data)
            if page.next_url is None:
                return
            page = self._api.get(page.next_url)

    # ---- lead time: the commits each successful deployment introduced -------------------

    def _changes(self, changed: Mapping[int, GhDeployment]) -> list[DeploymentChanges]:
        every = {**self._stored, **changed}
        succeeded = sorted(
            (d for d in every.values() if d.succeeded and d.succeeded_at is not None),
            key=lambda d: (d.succeeded_at, d.id),
        )
        measured = {int(r.key) for r in self._store.github_records(CHANGES, since=self._since)}
        found = []
        previous: GhDeployment | None = None
        for deployment in succeeded:
            if deployment.id not in measured:
                found.append(self._introduced(deployment, previous))
            previous = deployment
        return found

    def _introduced(
        self, deployment: GhDeployment, previous: GhDeployment | None
    ) -> DeploymentChanges:
        assert deployment.succeeded_at is not None
        made = DeploymentChanges(deployment.id, deployment.sha, deployment.succeeded_at, (), "")
        if previous is None:
            params = {"sha": deployment.sha, "since": _z(self._since), "per_page": 100}
            note = (
                "no earlier successful deployment in the lookback: every commit since "
                f"{_z(self._since)}, the lookback's first"
            )
            try:
                since_start = self._commits(self._api.get(f"{self._repo}/commits", params))
            except NotFound:
                note += ", but GitHub no longer knows the deployed commit"
                return replace(made, basis="lookback", note=note)
            return replace(made, commits=since_start, basis="lookback", note=note)
        if previous.sha == deployment.sha:
            return replace(made, basis="compare", note="the same commit deployed again")
        span = f"{previous.sha}...{deployment.sha}"
        try:
            page = self._api.get(f"{self._repo}/compare/{span}", {"per_page": 100})
            introduced: list[Commit] = []
            while True:  # paginated: past 250 commits an unpaginated compare stops short
                introduced += _commits(_dict(page.data).get("commits"))
                if page.next_url is None:
                    break
                page = self._api.get(page.next_url)
            return replace(made, commits=tuple(introduced), basis="compare")
        except NotFound as exc:
            note = (
                f"compare {previous.sha[:7]}...{deployment.sha[:7]} failed ({exc}; a "
                "force-push?): the deployed commit alone"
            )
        try:
            head = self._api.get(f"{self._repo}/commits/{deployment.sha}")
            return replace(made, commits=_commits([head.data]), basis="head", note=note)
        except NotFound:
            return replace(made, basis="head", note=note + ", which GitHub does not know either")

    def _commits(self, page: Page) -> tuple[Commit, ...]:
        return _commits(list(self._items(page)))

    # ---- performance: the lighthouse status of each deployed commit ----------------------

    def _scores(self, changed: Mapping[int, GhDeployment]) -> list[PerformanceScore]:
        recent = self._now - timedelta(seconds=STATUS_WAIT_S)
        wanted: dict[str, GhDeployment] = {}
        stored = map(GhDeployment.from_record, self._store.github_records(DEPLOYMENT, since=recent))
        for deployment in [*stored, *changed.values()]:
            if deployment.succeeded_at is None or not deployment.succeeded:
                continue
            if deployment.id in changed or deployment.succeeded_at >= recent:
                wanted[deployment.sha] = deployment
        found = []
        for sha in wanted:
            if self._store.github_record(PERFORMANCE, sha) is not None:
                continue
            path = f"{self._repo}/commits/{sha}/statuses"
            try:
                page = self._api.get(path, {"per_page": 100}, conditional=True)
            except NotFound:
                continue
            if page.not_modified:
                continue
            score = _latest_score(sha, self._items(page))
            if score is not None:
                found.append(score)
        return found

    # ---- workflow runs ---------------------------------------------------------------------

    def _runs(self) -> list[WorkflowRun]:
        kpis = self._kpis
        wanted = {*kpis.test_workflows, *kpis.security_workflows, *kpis.rollback_workflows}
        if not wanted:
            return []
        path = f"{self._repo}/actions/runs"
        last_deep = self.state.deep_scan_at
        deep = last_deep is None or (self._now - last_deep).total_seconds() >= DEEP_SCAN_EVERY_S
        # the deep read starts like any other (keeping the ETag) but reads to the lookback
        page = self._api.get(path, {"per_page": 100}, conditional=True, refresh=deep)
        found: dict[int, WorkflowRun] = {}
        newest = self.state.runs_until
        until = None if deep else self.state.runs_until
        while not page.not_modified:
            items = _dict(page.data).get("workflow_runs")
            runs = [WorkflowRun.from_api(item) for item in _list(items)]
            for run in runs:
                if run.created_at >= self._since and run.workflow in wanted:
                    found[run.id] = run
                if newest is None or run.created_at > newest:
                    newest = run.created_at
            # newest first: once a page reaches runs read before, the rest is older
            older = [r for r in runs if until is not None and r.created_at <= until]
            past = [r for r in runs if r.created_at < self._since]
            if not runs or older or past or page.next_url is None:
                break
            page = self._api.get(page.next_url)
        self.state = replace(
            self.state, runs_until=newest, deep_scan_at=self._now if deep else last_deep
        )
        return list(found.values())


_Storable = GhDeployment | DeploymentChanges | PerformanceScore | WorkflowRun | SyncState


def _stored(value: _Storable) -> GithubRecord:
    doc = value.stored()
    return GithubRecord(doc.kind, doc.key, doc.at, doc.payload)


def _latest_score(sha: str, statuses: Iterator[dict[str, Any]]) -> PerformanceScore | None:
    """The newest ``lighthouse`` status's score (statuses come newest first)."""
    for status in statuses:
        if status.get("context") != LIGHTHOUSE:
            continue
        score = lighthouse_score(status.get("description"))
        if score is None:
            log.warning(
                "lighthouse status without a score",
                sha=sha,
                description=str(status.get("description"))[:80],
            )
            return None
        return PerformanceScore(
            sha, score, parse_time(status["created_at"]), status.get("target_url")
        )
    return None


def _commits(items: object) -> tuple[Commit, ...]:
    commits = []
    for item in _list(items):
        detail = _dict(item.get("commit"))
        committer = _dict(detail.get("committer")) or _dict(detail.get("author"))
        commits.append(Commit(str(item["sha"]), parse_time(committer["date"])))
    return tuple(commits)


def _list(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise GithubUnavailable(f"GitHub sent {type(data).__name__} where a list belongs")
    return [item for item in data if isinstance(item, dict)]


def _dict(data: object) -> dict[str, Any]:
    return data if isinstance(data, dict) else {}


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
