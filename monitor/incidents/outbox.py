"""The outbox worker: performs one channel's stored steps exactly once, in its own thread.

Steps were written to the store in the same transaction as the tracker state
that implied them. Each channel has its own worker and its own queue; within
it, the oldest pending step of each target runs first and later ones wait
behind it. The worker performs a step through its channel and marks it done.
A failure is retried with exponential backoff and jitter, honouring
``Retry-After`` and rate-limit resets; nothing is dropped. A step that may
land after a crash (a create, a comment) is leased before it is sent, and the
channel looks for it before sending it again.
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
from monitor.incidents.channels.base import (
    ACKNOWLEDGED,
    CLOSED,
    GONE,
    Channel,
    ChannelError,
    IssueChannel,
    MarkedIssue,
    PersonAction,
    RefreshingChannel,
    WatchingChannel,
)
from monitor.incidents.text import utc
from monitor.incidents.tracker import TrackerState
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.store.base import (
    HELD,
    TRANSIENT,
    ChannelHandle,
    NotLeader,
    OutboxAction,
    Store,
    StoreError,
)

log = get_logger("monitor.outbox")

BACKOFF_BASE_S = 2.0
# Trouble belongs to the service, not to one step: a transient backoff is short, and the
# service's next success releases every step waiting one out (Store.release_backoff).
TRANSIENT_MAX_S = 120.0
BACKOFF_MAX_S = TRANSIENT_MAX_S  # the longest backoff any step can be given
# a permanent refusal (a 4xx: a bad key, a removed channel) stops the queue; its head
# is tried again this often, in case someone fixed the credentials or access meanwhile
PERMANENT_RETRY_S = 600.0
# while every step backs off, one goes early this often: recovery is noticed this soon
CANARY_S = 30.0
CANARY = timedelta(seconds=CANARY_S)
REFRESH_FAILURE_RETRY_S = 15.0


def backoff_s(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with +-20 % jitter: 2, 4, 8 ... up to two minutes."""
    base = min(TRANSIENT_MAX_S, BACKOFF_BASE_S * float(2 ** min(max(0, attempts), 20)))
    return base * (0.8 + 0.4 * rng())


@dataclass
class SinkHealth:
    """What ``/healthz`` reports about a channel."""

    last_error: str | None = None
    last_error_reason: str | None = None
    auth_problem: bool = False
    last_success_at: datetime | None = None
    # a permanent refusal stopped the queue (until a success, or the next start if disabled)
    stopped: str | None = None
    disabled: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "last_error": self.last_error,
            "last_error_reason": self.last_error_reason,
            "auth_problem": self.auth_problem,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "stopped": self.stopped,
            "disabled": self.disabled,
        }

    @property
    def problem(self) -> str | None:
        """What ``/healthz`` lists for this channel, if anything."""
        if self.disabled:
            return f"disabled until the next start: {self.stopped}"
        if self.stopped:
            return f"stopped by a permanent refusal: {self.stopped}"
        return None


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What the worker tells the channel about one step (see ``channels.base.Delivery``)."""

    handle: ChannelHandle | None
    store: Store

    def is_recorded(self, incident_id: str) -> bool:
        return self.store.incident(incident_id) is not None

    def issue(self, incident_id: str) -> ChannelHandle | None:
        row = self.store.incident(incident_id)
        if row is None or row.issue_number is None:
            return None
        return ChannelHandle(row.issue_number, row.issue_url)


class OutboxWorker:
    """Drains one channel's queue; ``run_once`` is the whole logic, the thread loops it."""

    def __init__(
        self,
        store: Store,
        channel: Channel,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        # False on a follower: only the leader performs steps (and the store fences it)
        self._may_act = may_act
        self.channel = channel
        self.metrics = metrics
        self.health = SinkHealth()
        self._clock = clock
        # Rate limits belong to the token, not to one action: while GitHub asks us to
        # wait, no action is attempted (more requests would only extend the limit).
        self._hold_until: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_at: datetime | None = None  # a RefreshingChannel's next repeat
        self._watch_at: datetime | None = None  # a WatchingChannel's next look
        self._last_attempt_at: datetime | None = None  # when a step was last sent

    # ---- one pass -------------------------------------------------------------------

    def run_once(self) -> int:
        """Perform every due action once; return how many succeeded."""
        done = 0
        if not self._may_act() or self.health.disabled:
            return 0
        self._maybe_refresh()
        self._maybe_watch()
        if self._held():
            self.refresh_metrics()
            return 0
        try:
            due = self.store.due_actions(self.channel.name, self._clock()) or self._canary()
        except StoreError as exc:
            log.error("outbox read failed", error=str(exc))
            return 0
        for action in due:
            if self._stop.is_set() or self._held() or not self._may_act():
                break
            if self._perform(action):
                done += 1
        self.refresh_metrics()
        return done

    def _canary(self) -> list[OutboxAction]:
        """While every step waits out a transient backoff, one of them goes early, every
        :data:`CANARY_S`: the service's recovery is then noticed within that, and its
        success releases the rest (backoffs of up to two minutes would otherwise keep
        on-call waiting after the service is back)."""
        now = self._clock()
        if self._last_attempt_at is not None and now - self._last_attempt_at < CANARY:
            return []
        waiting = [a for a in self._heads() if a.retry_class == TRANSIENT]
        return [min(waiting, key=lambda a: a.next_attempt_at)] if waiting else []

    def _heads(self) -> list[OutboxAction]:
        """The oldest pending step of each target: the only ones that can run."""
        heads: dict[str, OutboxAction] = {}
        for action in self.store.pending_actions(self.channel.name):
            heads.setdefault(action.target, action)
        return list(heads.values())

    def _held(self) -> bool:
        """True while the service's rate limit asks us to send nothing."""
        return self._hold_until is not None and self._clock() < self._hold_until

    def _count(self, operation: str, reason: str | None = None) -> None:
        # every channel's series; GitHub's own keep their names; the journal sends nothing
        if self.channel.kind == "journal":
            return
        if reason is None:
            self.metrics.channel_requests.labels(self.channel.name, operation).inc()
        else:
            self.metrics.channel_errors.labels(self.channel.name, reason).inc()
        if self.channel.kind != "github":
            return
        if reason is None:
            self.metrics.github_requests.labels(operation).inc()
        else:
            self.metrics.github_errors.labels(operation, reason).inc()

    def _perform(self, action: OutboxAction) -> bool:
        self._last_attempt_at = self._clock()
        self._count(action.kind)
        settle_s = self.channel.settle_s(action)
        # The claim: if this process dies mid-request, the service may still act on it, so
        # nobody retries before the request has surely settled (then the channel finds
        # it). Claiming is fenced: a deposed leader's claim fails and it sends nothing.
        try:
            self.store.lease(action, self._clock() + timedelta(seconds=settle_s))
        except NotLeader as exc:
            log.warning("not the leader; step left to the leader", action=action.id, error=str(exc))
            return False
        except StoreError as exc:
            log.error("outbox lease not recorded; not sending", action=action.id, error=str(exc))
            return False
        try:
            handle = self.channel.deliver(action, self._delivery(action))
        except ChannelError as exc:
            if exc.reason != GONE:
                self._failed(action, exc)
                return False
            # nothing left to act on: done, or the target's queue stalls
            log.warning(
                "issue gone; action dropped", action=action.id, kind=action.kind, error=str(exc)
            )
            handle = None
        except StoreError as exc:
            log.error("outbox read failed", action=action.id, error=str(exc))
            return False
        except Exception as exc:  # a bug in a channel must not kill the worker or lose the step
            log.exception("outbox action crashed", action=action.id, kind=action.kind)
            self._failed(action, ChannelError("error", f"{type(exc).__name__}: {exc}"))
            return False
        now = self._clock()
        try:
            self.store.complete(action, now, handle)
        except StoreError as exc:
            # the service acted but we could not record it: the retry finds it and adopts
            log.error("outbox completion not recorded", action=action.id, error=str(exc))
            return False
        self._succeeded(now)
        log.info(
            "outbox action done",
            action=action.id,
            kind=action.kind,
            incident=action.incident_id,
            target=action.target,
            sink=self.channel.name,
            attempts=action.attempts + 1,
        )
        return True

    def _delivery(self, action: OutboxAction) -> _Delivery:
        return _Delivery(self.store.handle(self.channel.name, action.incident_id), self.store)

    def _succeeded(self, now: datetime) -> None:
        """The service answered: its trouble is over, for every queue of this channel."""
        self.health.last_success_at = now
        self.health.auth_problem = False
        if self.health.stopped:
            log.warning("channel accepts steps again", sink=self.channel.name)
        self.health.stopped = None
        self.metrics.channel_stopped.labels(self.channel.name).set(0)
        try:
            released = self.store.release_backoff(self.channel.name, now)
        except StoreError as exc:
            log.error("outbox release not recorded", sink=self.channel.name, error=str(exc))
            return
        if released:
            log.info(
                "backoff released: the service answers", sink=self.channel.name, steps=released
            )

    def _failed(self, action: OutboxAction, exc: ChannelError) -> None:
        self._count(action.kind, exc.reason)
        delay, retry_class = self._retry_delay(action, exc)
        next_at = self._clock() + timedelta(seconds=delay)
        if exc.retry_after_s is not None or exc.permanent:
            # a rate limit or a refusal belongs to the service: nothing is sent meanwhile
            self._hold_until = max(next_at, self._hold_until or next_at)
        self.health.last_error = str(exc)
        self.health.last_error_reason = exc.reason
        self.health.auth_problem = self.health.auth_problem or exc.auth
        if exc.permanent:
            self.health.stopped = str(exc)
            self.health.disabled = self.health.disabled or exc.disable
            self.metrics.channel_stopped.labels(self.channel.name).set(1)
        level = log.error if exc.permanent else log.warning
        level(
            _failure_headline(exc),
            action=action.id,
            sink=self.channel.name,
            kind=action.kind,
            incident=action.incident_id,
            reason=exc.reason,
            error=str(exc),
            attempts=action.attempts + 1,
            retry_in_s=None if exc.disable else round(delay, 1),
        )
        try:
            self.store.retry_later(action, f"{exc.reason}: {exc}", next_at, retry_class)
        except StoreError as store_exc:
            log.error("outbox retry not recorded", action=action.id, error=str(store_exc))

    def _retry_delay(self, action: OutboxAction, exc: ChannelError) -> tuple[float, str]:
        """How long until the step is tried again, and whether a success may cut it short."""
        if exc.permanent:
            return PERMANENT_RETRY_S, HELD
        delay = backoff_s(action.attempts)
        retry_class = TRANSIENT
        if exc.reason == "timeout" and self.channel.settle_s(action) > 0:
            # the request may still be running there: never retry before it settled
            delay, retry_class = max(delay, self.channel.settle_s(action)), HELD
        if exc.in_flight_s > 0:
            # the first attempt may still land: its retry, and the steps queued behind it,
            # wait until it surely has (or never will), so nothing lands out of order
            delay, retry_class = max(delay, exc.in_flight_s), HELD
        if exc.retry_after_s is not None:
            delay, retry_class = max(delay, exc.retry_after_s), HELD
        return delay, retry_class

    def refresh_metrics(self) -> None:
        """The outbox gauges for ``/metrics``: this channel's pending steps, and the totals."""
        try:
            counts = self.store.pending_counts()
            pending, oldest = self.store.outbox_stats(self._clock())
        except StoreError:
            return
        self.metrics.channel_pending.labels(self.channel.name).set(counts.get(self.channel.name, 0))
        self.metrics.outbox_pending.set(pending)
        self.metrics.outbox_oldest_age.set(oldest)

    # ---- what people do (GitHub issues) -----------------------------------------------

    def _maybe_watch(self) -> None:
        channel = self.channel
        if not isinstance(channel, WatchingChannel) or self._held():
            return
        now = self._clock()
        if self._watch_at is not None and now < self._watch_at:
            return
        self._watch_at = now + timedelta(seconds=channel.watch_interval_s)
        try:
            # an incident with steps still queued here is read after they ran: the issue
            # may be closed only until our own reopen step goes out
            queued = {a.incident_id for a in self.store.pending_actions(channel.name)}
            handles = [h for h in self.store.open_handles(channel.name) if h[0] not in queued]
            found = channel.watch(handles) if handles else []
            for action in found:
                self._record_person(action)
        except StoreError as exc:
            log.error("could not record what people did", sink=channel.name, error=str(exc))
        except ChannelError as exc:
            self._count("watch", exc.reason)
            if exc.retry_after_s is not None:
                hold = now + timedelta(seconds=exc.retry_after_s)
                self._hold_until = max(hold, self._hold_until or hold)
            log.warning("could not read the open issues", sink=channel.name, error=str(exc))

    def _record_person(self, action: PersonAction) -> None:
        row = self.store.incident(action.incident_id)
        if row is None:
            return
        if action.kind == CLOSED and row.closed_at is None:
            self.store.record_closed(action.incident_id, action.by, action.at)
            log.warning(
                "incident issue closed by a person while open",
                incident=action.incident_id,
                by=action.by,
            )
        if action.kind == ACKNOWLEDGED and row.acknowledged_at is None:
            self.store.record_acknowledged(action.incident_id, action.by, action.at)
            log.warning("incident acknowledged", incident=action.incident_id, by=action.by)

    # ---- repeats for services that forget (Alertmanager) --------------------------------

    def _maybe_refresh(self) -> None:
        channel = self.channel
        if not isinstance(channel, RefreshingChannel) or self._held():
            return
        now = self._clock()
        if self._refresh_at is not None and now < self._refresh_at:
            return
        self._refresh_at = now + timedelta(seconds=channel.refresh_interval_s)
        try:
            handles = self.store.open_handles(channel.name)
            if handles:
                self._count("refresh")
                channel.refresh(handles, _Delivery(None, self.store))
        except StoreError as exc:
            log.error("outbox read failed", sink=channel.name, error=str(exc))
        except ChannelError as exc:
            self._count("refresh", exc.reason)
            self.health.last_error, self.health.last_error_reason = str(exc), exc.reason
            # sooner than the interval: the alert must not lapse at the other end
            self._refresh_at = now + timedelta(
                seconds=min(channel.refresh_interval_s, REFRESH_FAILURE_RETRY_S)
            )
            if exc.in_flight_s > 0:
                # a repeat still in flight must not land after a resolve sent meanwhile
                hold = now + timedelta(seconds=exc.in_flight_s)
                self._hold_until = max(hold, self._hold_until or hold)
            log.warning("refresh failed; will retry", sink=channel.name, error=str(exc))
        else:
            if handles:
                self.health.last_success_at = now

    # ---- start-up reconcile ---------------------------------------------------------------

    def reconcile(self, states: Mapping[str, TrackerState]) -> bool:
        """Adopt open issues with our marker; close those whose incident is over.

        Called once the first probe of every target is in, so ``states`` says who is
        healthy now. Returns False when GitHub could not be read (try again later).
        """
        channel = self.channel
        if not isinstance(channel, IssueChannel):
            return True  # nothing outlives the monitor on this channel
        if self._held():
            return False
        self._count("reconcile")
        try:
            marked = channel.open_marked_issues()
        except ChannelError as exc:
            self._count("reconcile", exc.reason)
            self.health.last_error, self.health.last_error_reason = str(exc), exc.reason
            self.health.auth_problem = self.health.auth_problem or exc.auth
            if exc.retry_after_s is not None:
                hold = self._clock() + timedelta(seconds=exc.retry_after_s)
                self._hold_until = max(hold, self._hold_until or hold)
            log.warning("reconcile failed; will retry", reason=exc.reason, error=str(exc))
            return False
        now = self._clock()
        try:
            queued = self.store.pending_actions(channel.name)
            pending = {a.incident_id for a in queued}
            # issues a queued action already names (an earlier reconcile that stopped half-way)
            named = {a.payload.get("number") for a in queued}
            for issue in marked:
                if issue.number not in named:
                    self._reconcile_one(channel, issue, states.get(issue.target), pending, now)
        except StoreError as exc:
            # what was enqueued stays enqueued; the rest is found again on the next try
            log.error("reconcile could not use the state database", error=str(exc))
            return False
        log.info("reconciled", open_issues=len(marked), sink=channel.name)
        return True

    def _reconcile_one(
        self,
        channel: IssueChannel,
        issue: MarkedIssue,
        state: TrackerState | None,
        pending: set[str],
        now: datetime,
    ) -> None:
        row = self.store.incident(issue.incident_id)
        if row is not None and row.issue_number not in (None, issue.number):
            # before the pending check: the queue only ever acts on the recorded issue,
            # so a second one would stay open however the queue drains
            self._close_issue(channel, issue, f"Duplicate of #{row.issue_number}: closing.", now)
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
            self._close_issue(channel, issue, text, now)
        elif state is not None and not state.in_incident:
            self._close_issue(
                channel,
                issue,
                f"{issue.target} is healthy and the monitor has no open incident for this issue:"
                " closing.",
                now,
            )

    def _close_issue(
        self, channel: IssueChannel, issue: MarkedIssue, text: str, now: datetime
    ) -> None:
        key = f"{issue.incident_id}:reconcile:{now:%Y%m%dT%H%M%S}"
        self.store.enqueue(channel.close_steps(issue, text, key), now)
        log.warning("reconcile: closing issue", number=issue.number, incident=issue.incident_id)

    # ---- the thread -------------------------------------------------------------------

    def wake(self) -> None:
        """New actions were enqueued: look now rather than at the next due time."""
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(
            target=self._loop, name=f"outbox-{self.channel.name}", daemon=True
        )
        self._thread.start()

    def request_stop(self) -> None:
        """Stop after the current step, without waiting for it."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the current action and stop (pending actions stay stored)."""
        self.request_stop()
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
        for extra in (self._refresh_at, self._watch_at):
            if extra is not None:
                due = extra if due is None else min(due, extra)
        if due is None:
            return 30.0
        return min(30.0, max(0.05, (due - self._clock()).total_seconds()))

    def _next_due_at(self) -> datetime | None:
        """When the next action can run: only queue heads count, and never inside a hold.

        ``Store.next_due_at`` also counts actions queued behind a head that is backing
        off; those were due long ago, and the loop would spin at its 50 ms floor for as
        long as GitHub keeps failing.
        """
        heads = self._heads()
        due = min((a.next_attempt_at for a in heads), default=None)
        if self._last_attempt_at is not None and any(a.retry_class == TRANSIENT for a in heads):
            canary = self._last_attempt_at + CANARY  # one step goes early (see _canary)
            due = canary if due is None else min(due, canary)
        if due is not None and self._hold_until is not None:
            due = max(due, self._hold_until)
        return due


def _failure_headline(exc: ChannelError) -> str:
    if exc.disable:
        return "channel disabled until the next start: the endpoint asked us to stop"
    if exc.permanent:
        return "outbox action refused; channel stopped until it is accepted again"
    return "outbox action failed; will retry"
