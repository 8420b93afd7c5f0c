"""What the KPIs keep from GitHub, as plain values, and their stored form.

Each kind is one document per GitHub object in the store's ``github_records``
table, keyed by GitHub's own id, so a re-read replaces rather than duplicates: a
re-run workflow run keeps its id and the record holds its latest attempt. The
values here know their kind, key, time and payload; ``sync`` and ``table`` wrap
them into the store's records (the maths never sees the store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

DEPLOYMENT = "deployment"  # key: deployment id; at: when it was created
CHANGES = "changes"  # key: deployment id; at: its success; the commits it introduced
RUN = "run"  # key: workflow run id; at: when the run was created
PERFORMANCE = "performance"  # key: commit sha; at: when the lighthouse status was posted
ETAG = "etag"  # key: the URL read; at: when
SYNC = "sync"  # key: "state"; the last sync's outcome

# a deployment's state once nothing more will happen to it (GitHub's terminal states)
# a deployment with no final status after a day will not get one: stop asking
PENDING_GIVE_UP_S = 86400.0
KEEP_FOREVER = datetime(9999, 1, 1, tzinfo=UTC)

FINAL_STATES = frozenset({"success", "failure", "error", "inactive"})


class Stored(Protocol):
    """A stored document as the store hands it back (``store.base.GithubRecord``)."""

    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Document:
    """A value's stored form before the store wraps it."""

    kind: str
    key: str
    at: datetime
    payload: Mapping[str, Any]


def parse_time(text: object) -> datetime:
    """A GitHub timestamp (``...Z`` or with an offset, as commit dates carry) in UTC."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 time, got {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # GitHub always says; a bare time is read as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _opt_time(value: object) -> datetime | None:
    return None if value is None else parse_time(value)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True, slots=True)
class GhDeployment:
    """A deployment to the configured environment, with what its statuses said."""

    id: int
    sha: str
    ref: str
    environment: str
    created_at: datetime
    state: str = ""  # the latest status; "" before the first
    succeeded_at: datetime | None = None  # its first ``success`` status
    url: str | None = None  # the success status's log or target URL (the workflow run)
    updated_at: datetime | None = None  # as the list last said: a new status moves it

    @property
    def succeeded(self) -> bool:
        """It reached ``success`` and no failure followed (``inactive`` is a later
        deployment replacing it, not a failure)."""
        return self.succeeded_at is not None and self.state not in ("failure", "error")

    @property
    def final(self) -> bool:
        """Nothing more will change it: its statuses need no further reading."""
        return self.state in FINAL_STATES

    def stored(self) -> Document:
        """The stored form."""
        payload = {
            "id": self.id,
            "sha": self.sha,
            "ref": self.ref,
            "environment": self.environment,
            "created_at": _iso(self.created_at),
            "state": self.state,
            "succeeded_at": _iso(self.succeeded_at),
            "url": self.url,
            "updated_at": _iso(self.updated_at),
        }
        return Document(DEPLOYMENT, str(self.id), self.created_at, payload)

    @classmethod
    def from_record(cls, record: Stored) -> GhDeployment:
        """Back from the stored form."""
        p = record.payload
        return cls(
            int(p["id"]),
            str(p["sha"]),
            str(p["ref"]),
            str(p["environment"]),
            parse_time(p["created_at"]),
            str(p["state"]),
            _opt_time(p["succeeded_at"]),
            p.get("url"),
            _opt_time(p.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit a deployment introduced: its committer date is where lead time starts
    (the time it took its final form: a rebase or a squash merge sets it)."""

    sha: str
    committed_at: datetime


@dataclass(frozen=True, slots=True)
class DeploymentChanges:
    """The commits one successful deployment introduced, and how they were found."""

    deployment_id: int
    sha: str
    succeeded_at: datetime
    commits: tuple[Commit, ...]
    # compare: since the previous successful deployment; lookback: no previous one, so
    # every commit since the start of the lookback; head: compare failed (a force-push),
    # so the deployed commit alone
    basis: str
    note: str = ""

    def stored(self) -> Document:
        """The stored form."""
        payload = {
            "deployment_id": self.deployment_id,
            "sha": self.sha,
            "succeeded_at": _iso(self.succeeded_at),
            "commits": [[c.sha, _iso(c.committed_at)] for c in self.commits],
            "basis": self.basis,
            "note": self.note,
        }
        return Document(CHANGES, str(self.deployment_id), self.succeeded_at, payload)

    @classmethod
    def from_record(cls, record: Stored) -> DeploymentChanges:
        """Back from the stored form."""
        p = record.payload
        commits = tuple(Commit(str(sha), parse_time(at)) for sha, at in p["commits"])
        return cls(
            int(p["deployment_id"]),
            str(p["sha"]),
            parse_time(p["succeeded_at"]),
            commits,
            str(p["basis"]),
            str(p.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One workflow run, at its latest attempt; ``workflow`` is its file name."""

    id: int
    workflow: str  # e.g. ci.yml: the display name may change, the file stays
    name: str
    attempt: int
    status: str  # queued, in_progress, completed, ...
    conclusion: str | None  # success, failure, cancelled, skipped, ...; None until completed
    head_sha: str
    created_at: datetime
    updated_at: datetime
    url: str | None = None

    def stored(self) -> Document:
        """The stored form."""
        payload = {
            "id": self.id,
            "workflow": self.workflow,
            "name": self.name,
            "attempt": self.attempt,
            "status": self.status,
            "conclusion": self.conclusion,
            "head_sha": self.head_sha,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "url": self.url,
        }
        return Document(RUN, str(self.id), self.created_at, payload)

    @classmethod
    def from_record(cls, record: Stored) -> WorkflowRun:
        """Back from the stored form."""
        p = record.payload
        return cls(
            int(p["id"]),
            str(p["workflow"]),
            str(p["name"]),
            int(p["attempt"]),
            str(p["status"]),
            p["conclusion"],
            str(p["head_sha"]),
            parse_time(p["created_at"]),
            parse_time(p["updated_at"]),
            p.get("url"),
        )

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> WorkflowRun:
        """From GitHub's JSON (``GET /repos/{repo}/actions/runs``)."""
        return cls(
            int(item["id"]),
            str(item.get("path") or "").rsplit("/", 1)[-1],
            str(item.get("name") or ""),
            int(item.get("run_attempt") or 1),
            str(item.get("status") or ""),
            item.get("conclusion"),
            str(item.get("head_sha") or ""),
            parse_time(item["created_at"]),
            parse_time(item.get("updated_at") or item["created_at"]),
            item.get("html_url"),
        )


@dataclass(frozen=True, slots=True)
class PerformanceScore:
    """A Lighthouse performance score posted on a commit as a ``lighthouse`` status."""

    sha: str
    score: int
    at: datetime
    url: str | None = None

    def stored(self) -> Document:
        """The stored form."""
        payload = {"sha": self.sha, "score": self.score, "at": _iso(self.at), "url": self.url}
        return Document(PERFORMANCE, self.sha, self.at, payload)

    @classmethod
    def from_record(cls, record: Stored) -> PerformanceScore:
        """Back from the stored form."""
        p = record.payload
        return cls(str(p["sha"]), int(p["score"]), parse_time(p["at"]), p.get("url"))


@dataclass(frozen=True, slots=True)
class SyncState:
    """How fresh the GitHub data is: the figures say so when GitHub is unavailable."""

    succeeded_at: datetime | None = None  # the last complete sync
    attempted_at: datetime | None = None
    error: str | None = None  # why the last attempt failed; None when it succeeded
    requests: int = 0  # requests the last attempt made
    not_modified: int = 0  # of those, answered 304 (no rate limit spent)
    deep_scan_at: datetime | None = None  # the last re-read of the whole lookback's runs
    retry_at: datetime | None = None  # GitHub's rate-limit reset, when it said
    covers_from: datetime | None = None  # the earliest time any complete sync read from
    warning: str | None = None  # reads the last sync skipped (retried at the next one)
    missing_workflows: tuple[str, ...] = ()  # configured files GitHub does not know

    def stored(self) -> Document:
        """The stored form."""
        payload = {
            "succeeded_at": _iso(self.succeeded_at),
            "attempted_at": _iso(self.attempted_at),
            "error": self.error,
            "requests": self.requests,
            "not_modified": self.not_modified,
            "deep_scan_at": _iso(self.deep_scan_at),
            "retry_at": _iso(self.retry_at),
            "covers_from": _iso(self.covers_from),
            "warning": self.warning,
            "missing_workflows": list(self.missing_workflows),
        }
        # dated far ahead: retention never drops the sync's own state
        return Document(SYNC, "state", KEEP_FOREVER, payload)

    @classmethod
    def from_record(cls, record: Stored | None) -> SyncState:
        """Back from the stored form (the empty state before the first sync)."""
        if record is None:
            return cls()
        p = record.payload
        return cls(
            _opt_time(p.get("succeeded_at")),
            _opt_time(p.get("attempted_at")),
            p.get("error"),
            int(p.get("requests") or 0),
            int(p.get("not_modified") or 0),
            _opt_time(p.get("deep_scan_at")),
            _opt_time(p.get("retry_at")),
            _opt_time(p.get("covers_from")),
            p.get("warning"),
            tuple(p.get("missing_workflows") or ()),
        )
