"""The outbox worker: performs stored GitHub actions exactly once, in its own thread.

Actions were written to SQLite in the same transaction as the tracker state
that implied them. The worker takes the oldest pending action of each
incident, performs it through the sink and marks it done. A failure is retried
with exponential backoff and jitter, honouring ``Retry-After`` and rate-limit
resets; nothing is dropped. A create is never repeated blindly: every attempt
first looks for an open issue carrying the incident's marker and adopts it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.clock import Clock, utcnow
from monitor.config import format_duration
from monitor.incidents.channels.base import IncidentSink, IssueRef, MarkedIssue, SinkError
from monitor.incidents.text import action_marker, payload_text, utc
from monitor.incidents.tracker import TrackerState
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import NewAction, OutboxAction, StoreError
from monitor.store.sqlite import Store

log = get_logger("monitor.outbox")

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 600.0
# GitHub abandons a request after 10 s. After a client timeout on a create, the first
# request may still be running there: a retry sooner could miss the marker it is
# about to write, and file a second issue (or comment).
CREATE_SETTLE_S = 15.0


def backoff_s(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with +-20 % jitter: 2, 4, 8 ... up to 10 minutes."""
    base = min(BACKOFF_MAX_S, BACKOFF_BASE_S * float(2 ** min(max(0, attempts), 20)))
    return base * (0.8 + 0.4 * rng())


@dataclass
class SinkHealth:
    """What ``/healthz`` reports about the sink."""

    last_error: str | None = None
    last_error_reason: str | None = None
    auth_problem: bool = False
    last_success_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "last_error": self.last_error,
            "last_error_reason": self.last_error_reason,
            "auth_problem": self.auth_problem,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
        }


class OutboxWorker:
    """Drains the outbox through a sink; ``run_once`` is the whole logic, the thread loops it."""

    def __init__(
        self,
        store: Store,
        sink: IncidentSink,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.health = SinkHealth()
        self._clock = clock
        # Rate limits belong to the token, not to one action: while GitHub asks us to
        # wait, no action is attempted (more requests would only extend the limit).
        self._hold_until: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one pass -------------------------------------------------------------------

    def run_once(self) -> int:
        """Perform every due action once; return how many succeeded."""
        done = 0
        if self._held():
            self.refresh_metrics()
            return 0
        try:
            due = self.store.due_actions(self._clock())
        except StoreError as exc:
            log.error("outbox read failed", error=str(exc))
            return 0
        for action in due:
            if self._stop.is_set() or self._held():
                break
            if self._perform(action):
                done += 1
        self.refresh_metrics()
        return done

    def _held(self) -> bool:
        """True while GitHub's rate limit asks us to send nothing."""
        return self._hold_until is not None and self._clock() < self._hold_until

    def _perform(self, action: OutboxAction) -> bool:
        operation = action.kind
        self.metrics.github_requests.labels(operation).inc()
        if action.kind in ("open", "comment") and self.sink.name != "journal":
            # if this process dies mid-request, GitHub may still act on it: nobody
            # retries before the request has surely settled (then the marker shows)
            try:
                self.store.lease(action, self._clock() + timedelta(seconds=CREATE_SETTLE_S))
            except StoreError as exc:
                log.error(
                    "outbox lease not recorded; not sending", action=action.id, error=str(exc)
                )
                return False
        try:
            issue = self._execute(action)
        except SinkError as exc:
            if exc.reason == "issue_gone":
                # nothing left to comment on or close: done, or the target's queue stalls
                log.warning(
                    "issue gone; action dropped", action=action.id, kind=action.kind, error=str(exc)
                )
                issue = None
            else:
                self._failed(action, exc)
                return False
        except Exception as exc:  # a bug in a sink must not kill the worker or lose the action
            log.exception("outbox action crashed", action=action.id, kind=action.kind)
            self._failed(action, SinkError("error", f"{type(exc).__name__}: {exc}"))
            return False
        now = self._clock()
        try:
            self.store.complete(action, now, issue)
        except StoreError as exc:
            # GitHub acted but we could not record it: the retry finds the marker and adopts
            log.error("outbox completion not recorded", action=action.id, error=str(exc))
            return False
        self.health.last_success_at = now
        self.health.auth_problem = False
        log.info(
            "outbox action done",
            action=action.id,
            kind=action.kind,
            incident=action.incident_id,
            target=action.target,
            sink=self.sink.name,
            attempts=action.attempts + 1,
        )
        return True

    def _execute(self, action: OutboxAction) -> tuple[int, str | None] | None:
        """Perform one action; for an open, return the issue to record."""
        payload = action.payload
        if action.kind == "open":
            existing = self.sink.find_issue(
                action.target, action.incident_id, adoptable=self._unknown_incident
            )
            if existing is not None:
                log.warning(
                    "adopting existing issue instead of creating one",
                    incident=action.incident_id,
                    number=existing.number,
                )
                ref = existing
            else:
                ref = self.sink.open_issue(
                    payload_text(payload, "title"),
                    payload_text(payload, "body"),
                    list(payload.get("labels", [])),
                    list(payload.get("assignees", [])),
                )
            return (ref.number, ref.url) if ref.number is not None else None
        issue = self._issue_for(action)
        if issue is None:
            log.warning(
                "no issue for incident; action skipped",
                incident=action.incident_id,
                kind=action.kind,
            )
            return None
        if action.kind == "comment":
            # Always look for the comment's marker first: ``attempts`` cannot say whether
            # an earlier try got through (killed between the POST and ``complete``, or
            # ``complete`` itself failed), and a reminder posted twice is noise on a phone.
            self.sink.comment(
                issue,
                payload_text(payload, "body"),
                payload_text(payload, "key"),
                maybe_posted=True,
            )
        elif action.kind == "edit":
            self.sink.edit(
                issue, payload_text(payload, "body"), payload_text(payload, "title") or None
            )
        elif action.kind == "close":
            self.sink.close(issue, payload_text(payload, "body") or None)
        elif action.kind == "reopen":
            self.sink.reopen(issue)
        else:
            raise SinkError("invalid", f"unknown outbox action kind {action.kind!r}")
        return None

    def _unknown_incident(self, incident_id: str) -> bool:
        """An issue for an incident we never recorded may be adopted (see find_issue)."""
        return self.store.incident(incident_id) is None

    def _issue_for(self, action: OutboxAction) -> IssueRef | None:
        if isinstance(action.payload.get("number"), int):  # reconcile names the issue itself
            return IssueRef(int(action.payload["number"]))
        incident = self.store.incident(action.incident_id)
        if incident is not None and incident.issue_number is not None:
            return IssueRef(incident.issue_number, incident.issue_url)
        if self.sink.name == "journal":
            return IssueRef(None)
        # issue filed by an earlier store, or before a token was configured: find it by marker
        found = self.sink.find_issue(action.target, action.incident_id)
        if found is not None and found.number is not None:
            self.store.set_issue(action.incident_id, found.number, found.url)
        return found

    def _failed(self, action: OutboxAction, exc: SinkError) -> None:
        self.metrics.github_errors.labels(action.kind, exc.reason).inc()
        delay = backoff_s(action.attempts)
        if exc.reason == "timeout" and action.kind in ("open", "comment"):
            delay = max(delay, CREATE_SETTLE_S)
        if exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        next_at = self._clock() + timedelta(seconds=delay)
        if exc.retry_after_s is not None:
            self._hold_until = max(next_at, self._hold_until or next_at)
        self.health.last_error = str(exc)
        self.health.last_error_reason = exc.reason
        self.health.auth_problem = self.health.auth_problem or exc.auth
        level = log.error if exc.auth else log.warning
        level(
            "outbox action failed; will retry",
            action=action.id,
            kind=action.kind,
            incident=action.incident_id,
            reason=exc.reason,
            error=str(exc),
            attempts=action.attempts + 1,
            retry_in_s=round(delay, 1),
        )
        try:
            self.store.retry_later(action, f"{exc.reason}: {exc}", next_at)
        except StoreError as store_exc:
            log.error("outbox retry not recorded", action=action.id, error=str(store_exc))

    def refresh_metrics(self) -> None:
        """Pending count and oldest age for ``/metrics``."""
        try:
            pending, oldest = self.store.outbox_stats(self._clock())
        except StoreError:
            return
        self.metrics.outbox_pending.set(pending)
        self.metrics.outbox_oldest_age.set(oldest)

    # ---- start-up reconcile ---------------------------------------------------------------

    def reconcile(self, states: Mapping[str, TrackerState]) -> bool:
        """Adopt open issues with our marker; close those whose incident is over.

        Called once the first probe of every target is in, so ``states`` says who is
        healthy now. Returns False when GitHub could not be read (try again later).
        """
        if self._held():
            return False
        self.metrics.github_requests.labels("reconcile").inc()
        try:
            marked = self.sink.open_marked_issues()
        except SinkError as exc:
            self.metrics.github_errors.labels("reconcile", exc.reason).inc()
            self.health.last_error, self.health.last_error_reason = str(exc), exc.reason
            self.health.auth_problem = self.health.auth_problem or exc.auth
            if exc.retry_after_s is not None:
                hold = self._clock() + timedelta(seconds=exc.retry_after_s)
                self._hold_until = max(hold, self._hold_until or hold)
            log.warning("reconcile failed; will retry", reason=exc.reason, error=str(exc))
            return False
        now = self._clock()
        try:
            queued = self.store.pending_actions()
            pending = {a.incident_id for a in queued}
            # issues a queued action already names (an earlier reconcile that stopped half-way)
            named = {a.payload.get("number") for a in queued}
            for issue in marked:
                if issue.number not in named:
                    self._reconcile_one(issue, states.get(issue.target), pending, now)
        except StoreError as exc:
            # what was enqueued stays enqueued; the rest is found again on the next try
            log.error("reconcile could not use the state database", error=str(exc))
            return False
        log.info("reconciled", open_issues=len(marked), sink=self.sink.name)
        return True

    def _reconcile_one(
        self, issue: MarkedIssue, state: TrackerState | None, pending: set[str], now: datetime
    ) -> None:
        row = self.store.incident(issue.incident_id)
        if row is not None and row.issue_number not in (None, issue.number):
            # before the pending check: the queue only ever acts on the recorded issue,
            # so a second one would stay open however the queue drains
            self._close_issue(issue, f"Duplicate of #{row.issue_number}: closing.", now)
            return
        if issue.incident_id in pending:
            return  # the queue already knows what to do with it
        if row is not None and row.issue_number is None:
            log.warning("adopting issue", incident=row.id, number=issue.number)
            self.store.set_issue(row.id, issue.number, issue.url)
        current = state.incident if state is not None and state.in_incident else None
        if current is not None and current.id == issue.incident_id:
            return  # still open, rightly
        if row is not None and row.resolved_at is not None:
            duration = (row.resolved_at - row.started_at).total_seconds()
            text = (
                f"**Resolved.** {row.target} was down for **{format_duration(max(duration, 1))}**"
                f" ({duration:.0f} s), from {utc(row.started_at)} to {utc(row.resolved_at)}."
                " (Closed on start-up: the monitor recorded the recovery before it could close.)"
            )
            self._close_issue(issue, text, now)
        elif state is not None and not state.in_incident:
            self._close_issue(
                issue,
                f"{issue.target} is healthy and the monitor has no open incident for this issue:"
                " closing.",
                now,
            )

    def _close_issue(self, issue: MarkedIssue, text: str, now: datetime) -> None:
        key = f"{issue.incident_id}:reconcile:{now:%Y%m%dT%H%M%S}"
        actions = [
            NewAction(
                issue.incident_id,
                issue.target,
                "comment",
                {"body": f"{action_marker(key)}\n{text}", "key": key, "number": issue.number},
            ),
            NewAction(issue.incident_id, issue.target, "close", {"number": issue.number}),
        ]
        self.store.enqueue(actions, now)
        log.warning("reconcile: closing issue", number=issue.number, incident=issue.incident_id)

    # ---- the thread -------------------------------------------------------------------

    def wake(self) -> None:
        """New actions were enqueued: look now rather than at the next due time."""
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the current action and stop (pending actions stay stored)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.run_once():
                continue  # an incident's next action may be due right away
            self._wake.wait(timeout=self._sleep_s())
            self._wake.clear()

    def _sleep_s(self) -> float:
        try:
            due = self._next_due_at()
        except StoreError:
            return 5.0
        if due is None:
            return 30.0
        return min(30.0, max(0.05, (due - self._clock()).total_seconds()))

    def _next_due_at(self) -> datetime | None:
        """When the next action can run: only queue heads count, and never inside a hold.

        ``Store.next_due_at`` also counts actions queued behind a head that is backing
        off; those were due long ago, and the loop would spin at its 50 ms floor for as
        long as GitHub keeps failing.
        """
        heads: dict[str, datetime] = {}
        for action in self.store.pending_actions():
            heads.setdefault(action.target, action.next_attempt_at)
        due = min(heads.values(), default=None)
        if due is not None and self._hold_until is not None:
            due = max(due, self._hold_until)
        return due
