"""The incremental sync: what changed on GitHub since the last one, into the store.

One pass reads, in order: the environment's deployments (first page conditional;
a 304 ends it), the statuses of those not yet final, the commits each newly
successful deployment introduced (compare, paginated), the ``lighthouse`` status
of each deployed commit, and each configured workflow's runs (its own list, first
page conditional; a daily deep re-read of the lookback catches re-runs of old
runs). Everything read lands in one transaction with the ETags that describe it
and the sync's state. A failed read about one object skips that object until the
next pass; a pass GitHub interrupts as a whole stores only its state, so the
figures can say how old their data is. Probes never wait on any of it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from github import Github

from monitor.config import Settings
from monitor.kpis.github import GithubApi, GithubUnavailable, NotFound, Page
from monitor.kpis.records import (
    CHANGES,
    DEPLOYMENT,
    ETAG,
    PENDING_GIVE_UP_S,
    PERFORMANCE,
    RUN,
    SYNC,
    Commit,
    DeploymentChanges,
    GhDeployment,
    PerformanceScore,
    SyncState,
    WorkflowRun,
    parse_time,
)
from monitor.kpis.weeks import week_span
from monitor.logs import get_logger
from monitor.store.base import GithubRecord, Store, StoreError

log = get_logger("monitor.kpis")
_T = TypeVar("_T")

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
        stopping: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._kpis = settings.kpis
        self._clock = clock
        self._client = client
        self._stopping = stopping

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
        api = GithubApi(
            self._settings.github, etags, self._clock, client=self._client, stopping=self._stopping
        )
        try:
            pass_ = _Pass(self._store, self._settings, api, now, previous)
            try:
                records = pass_.run()
            except GithubUnavailable as exc:
                return self._interrupted(previous, api, now, exc)
            except StoreError:
                raise
            except Exception as exc:  # a reply of a shape nobody expected: classified, not a crash
                unreadable = GithubUnavailable(f"GitHub sent an unreadable reply: {exc!r}"[:200])
                return self._interrupted(previous, api, now, unreadable)
            since = pass_.since
            state = replace(
                pass_.state,
                succeeded_at=now,
                attempted_at=now,
                error=None,
                retry_at=None,
                requests=api.requests,
                not_modified=api.not_modified,
                covers_from=min(previous.covers_from or since, since),
                warning="; ".join(pass_.skipped)[:500] or None,
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
            skipped=len(pass_.skipped),
        )
        if state.warning:
            log.warning("KPI sync skipped reads; the next sync retries them", skipped=state.warning)
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
        self.now = now
        self.state = state
        self._repo = f"/repos/{api.repository}"
        self.since = now - timedelta(seconds=self._kpis.lookback)
        # the lookback's deployments as stored before this pass (read once, in _deployments)
        self._stored: dict[int, GhDeployment] = {}
        self.skipped: list[str] = []  # reads about one object that failed: retried next pass

    def _optional(self, what: str, read: Callable[[], _T]) -> _T | None:
        """A read about one object. Its failure skips that object for this pass (the
        next retries it) instead of stopping the rest; a rate limit still stops all."""
        before = self._api.fresh_keys()
        try:
            return read()
        except GithubUnavailable as exc:
            if exc.retry_at is not None or self._api.stopping:
                raise
            # a first page read before a later one failed must not answer 304 next time
            self._api.forget(self._api.fresh_keys() - before)
            self.skipped.append(f"{what}: {exc}")
            return None

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
                GhDeployment.from_record, self._store.github_records(DEPLOYMENT, since=self.since)
            )
        }
        listed = self._listed_deployments(known)
        changed: dict[int, GhDeployment] = {}
        for deployment in {**known, **listed}.values():
            if deployment.final:
                continue
            age_s = (self.now - deployment.created_at).total_seconds()
            # a new status moves the list's updated_at; a pending one is also polled for a
            # day, in case GitHub did not move it
            if deployment.id not in listed and age_s > PENDING_GIVE_UP_S:
                continue
            updated = self._optional(
                f"statuses of deployment {deployment.id}",
                lambda d=deployment: self._with_statuses(d),  # type: ignore[misc]
            )
            if updated is not None:
                changed[deployment.id] = updated
                continue
            # skipped: the list is read in full next time, to come back to this one
            self._api.forget(prefix=f"{self._repo}/deployments?")
            if deployment.id not in known:  # kept, without the list's word that it was read
                changed[deployment.id] = replace(deployment, updated_at=None)
        return changed

    def _listed_deployments(self, known: Mapping[int, GhDeployment]) -> dict[int, GhDeployment]:
        """Deployments the list shows as new, or as changed since it was last read."""
        params = {"environment": self._kpis.environment, "per_page": 100}
        page = self._api.get(f"{self._repo}/deployments", params, conditional=True)
        found: dict[int, GhDeployment] = {}
        while not page.not_modified:
            news = 0
            for item in _list(page.data):
                created = parse_time(item["created_at"])
                if created < self.since:
                    return found
                updated = parse_time(item.get("updated_at") or item["created_at"])
                old = known.get(int(item["id"]))
                if old is not None and (old.final or old.updated_at == updated):
                    continue
                news += 1
                found[int(item["id"])] = (
                    replace(old, updated_at=updated)
                    if old
                    else GhDeployment(
                        int(item["id"]),
                        str(item["sha"]),
                        str(item.get("ref") or ""),
                        str(item.get("environment") or self._kpis.environment),
                        created,
                        updated_at=updated,
                    )
                )
            # newest first: a page with nothing new means everything older is known too
            if news == 0 or page.next_url is None:
                return found
            page = self._api.get(page.next_url)
        return found

    def _with_statuses(self, deployment: GhDeployment) -> GhDeployment:
        """The deployment as its statuses tell it (itself when they did not change)."""
        path = f"{self._repo}/deployments/{deployment.id}/statuses"
        try:
            page = self._api.get(path, {"per_page": 100}, conditional=True)
            if page.not_modified:
                return deployment
            statuses = list(self._items(page))
        except NotFound:
            log.warning("deployment vanished from GitHub", deployment=deployment.id)
            return replace(deployment, state="error")  # final: never asked about again
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
        measured = {int(r.key) for r in self._store.github_records(CHANGES, since=self.since)}
        found = []
        previous: GhDeployment | None = None
        for deployment in succeeded:
            if deployment.id not in measured:
                change = self._optional(
                    f"commits of deployment {deployment.id}",
                    lambda d=deployment, p=previous: self._introduced(d, p),  # type: ignore[misc]
                )
                if change is None:
                    change = self._given_up(deployment)
                if change is not None:
                    found.append(change)
            previous = deployment
        return found

    def _given_up(self, deployment: GhDeployment) -> DeploymentChanges | None:
        """After a day of failed reads, the deployment is measured by nothing, and says so
        (a compare GitHub cannot render must not stop every later one)."""
        assert deployment.succeeded_at is not None
        if (self.now - deployment.succeeded_at).total_seconds() <= STATUS_WAIT_S:
            return None
        note = f"GitHub failed to list its commits for a day ({self.skipped[-1]}): none measured"
        return DeploymentChanges(
            deployment.id, deployment.sha, deployment.succeeded_at, (), "head", note
        )

    def _introduced(
        self, deployment: GhDeployment, previous: GhDeployment | None
    ) -> DeploymentChanges:
        assert deployment.succeeded_at is not None
        made = DeploymentChanges(deployment.id, deployment.sha, deployment.succeeded_at, (), "")
        if previous is None:
            params = {"sha": deployment.sha, "since": _z(self.since), "per_page": 100}
            note = (
                "no earlier successful deployment in the lookback: every commit since "
                f"{_z(self.since)}, the lookback's first"
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
        recent = self.now - timedelta(seconds=STATUS_WAIT_S)
        wanted: dict[str, GhDeployment] = {}
        for deployment in {**self._stored, **changed}.values():
            if deployment.succeeded_at is None or not deployment.succeeded:
                continue
            if deployment.id in changed or deployment.succeeded_at >= recent:
                wanted[deployment.sha] = deployment
        found = []
        for sha in wanted:
            if self._store.github_record(PERFORMANCE, sha) is not None:
                continue
            score = self._optional(
                f"statuses of commit {sha[:7]}",
                lambda sha=sha: self._score(sha),  # type: ignore[misc]
            )
            if score is not None:
                found.append(score)
        return found

    def _score(self, sha: str) -> PerformanceScore | None:
        path = f"{self._repo}/commits/{sha}/statuses"
        try:
            page = self._api.get(path, {"per_page": 100}, conditional=True)
        except NotFound:
            return None
        return None if page.not_modified else _latest_score(sha, self._items(page))

    # ---- workflow runs ---------------------------------------------------------------------

    def _runs(self) -> list[WorkflowRun]:
        """The configured workflows' runs, each workflow by its own list (so a busy
        repository's other workflows cost nothing), from the newest down to known ones.

        Once a day, and at the first sync of each ISO week (so a week's report stands on
        them), each list is read back to the lookback: a re-run of an old run is found.
        """
        kpis = self._kpis
        wanted = sorted({*kpis.test_workflows, *kpis.security_workflows, *kpis.rollback_workflows})
        if not wanted:
            return []
        last_deep = self.state.deep_scan_at
        deep = (
            last_deep is None
            or (self.now - last_deep).total_seconds() >= DEEP_SCAN_EVERY_S
            or last_deep < week_span(self.now).start
        )
        newest: dict[str, datetime] = {}
        for run in map(WorkflowRun.from_record, self._store.github_records(RUN, since=self.since)):
            newest[run.workflow] = max(run.created_at, newest.get(run.workflow, run.created_at))
        found: list[WorkflowRun] = []
        missing: list[str] = []
        for workflow in wanted:
            if workflow in self.state.missing_workflows and not deep:
                missing.append(workflow)  # asked again at the daily deep read, not every pass
                continue
            until = None if deep else newest.get(workflow)
            try:
                found += (
                    self._optional(
                        f"runs of {workflow}",
                        lambda w=workflow, u=until: self._workflow_runs(w, u, deep),  # type: ignore[misc]
                    )
                    or []
                )
            except NotFound:
                missing.append(workflow)
        if missing:
            self.skipped.append(f"no workflow {', '.join(missing)} in {self._api.repository}")
        self.state = replace(
            self.state,
            deep_scan_at=self.now if deep else last_deep,
            missing_workflows=tuple(missing),
        )
        return found

    def _workflow_runs(
        self, workflow: str, until: datetime | None, deep: bool
    ) -> list[WorkflowRun]:
        path = f"{self._repo}/actions/workflows/{workflow}/runs"
        page = self._api.get(path, {"per_page": 100}, conditional=True, refresh=deep)
        found: list[WorkflowRun] = []
        while not page.not_modified:
            runs = [
                WorkflowRun.from_api(item) for item in _list(_dict(page.data).get("workflow_runs"))
            ]
            found += [r for r in runs if r.created_at >= self.since]
            # newest first: once a page reaches runs read before, the rest is older
            older = [r for r in runs if until is not None and r.created_at <= until]
            if not runs or older or runs[-1].created_at < self.since or page.next_url is None:
                break
            page = self._api.get(page.next_url)
        return found


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
