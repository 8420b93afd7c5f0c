"""The Slack channel against a local Slack: with a bot token, one message per incident
whatever fails, rewritten in place, its events threaded under it; with an incoming
webhook, one plain message per event. Probe text never mentions anyone; the token and
the webhook URL never leak."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.config import format_duration
from monitor.config.schema import ChannelConfig
from monitor.incidents.channels.base import ChannelError, Notice
from monitor.incidents.channels.slack import SETTLE_S, Parent, SlackChannel
from monitor.incidents.events import EventKind, IncidentEvent
from monitor.incidents.outbox import PERMANENT_RETRY_S, OutboxWorker
from monitor.incidents.tracker import Incident, incident_id
from monitor.metrics import Metrics
from monitor.probing.results import Outcome, Reason, TargetResult
from monitor.store.sqlite import SqliteStore
from tests import receivers_pagerduty_slack as rx
from tests.builders import ManualClock, check, down, up
from tests.outbox_kit import channel_errors, commit_event, drain
from tests.receivers_pagerduty_slack import (
    SLACK_CHANNEL_ID,
    SLACK_CHANNEL_NAME,
    SLACK_TOKEN,
    SLACK_WEBHOOK_PATH,
    FakeSlack,
)

STATUS_URL = "https://status.example.com/status"
ISSUE_URL = "https://github.com/acme/web/issues/7"
TIMEOUT_S = 0.5  # the client's; a delayed request outlasts it
HOSTILE = "<!channel> & <@U012AB3CD|boss> @here <https://evil.example|click>"


@pytest.fixture
def clock() -> ManualClock:
    """Frozen until a test moves it; Slack's message timestamps follow it too."""
    return ManualClock()


@pytest.fixture
def slack(clock: ManualClock) -> Iterator[FakeSlack]:
    """Slack on 127.0.0.1; the channel must never breach its contract."""
    with FakeSlack(clock=clock) as server:
        yield server
        assert server.violations == []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real SQLite file."""
    db = SqliteStore(tmp_path / "state.db")
    yield db
    db.close()


ChannelFactory = Callable[..., SlackChannel]


@pytest.fixture
def make_channel(slack: FakeSlack) -> Iterator[ChannelFactory]:
    """Slack channels on the receiver: a bot by default, ``webhook=True`` for the other
    kind; ``config`` changes as keywords. Closed afterwards."""
    built: list[SlackChannel] = []

    def build(*, webhook: bool = False, **changes: object) -> SlackChannel:
        fields: dict[str, object] = {
            "name": "chat",
            "type": "slack",
            "secret_env": "SLACK_SECRET",
            "timeout": TIMEOUT_S,
        }
        if webhook:
            fields["secret"] = slack.webhook_url
        else:
            fields |= {"url": slack.api_url, "secret": SLACK_TOKEN, "channel": SLACK_CHANNEL_ID}
        channel = SlackChannel(
            ChannelConfig.model_validate(fields | changes), status_url=STATUS_URL
        )
        built.append(channel)
        return channel

    yield build
    for channel in built:
        channel.close()


@pytest.fixture
def channel(make_channel: ChannelFactory) -> SlackChannel:
    """A bot-token channel."""
    return make_channel()


def worker_for(store: SqliteStore, channel: SlackChannel, clock: ManualClock) -> OutboxWorker:
    """An outbox worker for ``channel`` on the frozen clock."""
    return OutboxWorker(store, channel, Metrics(), clock=clock)


@pytest.fixture
def worker(store: SqliteStore, channel: SlackChannel, clock: ManualClock) -> OutboxWorker:
    """The bot channel's worker."""
    return worker_for(store, channel, clock)


# ---- events as the daemon decides them ------------------------------------------------------


def opened(clock: ManualClock, target: str = "production", detail: str = "") -> IncidentEvent:
    """A confirmed failure of ``target`` now."""
    incident = Incident(
        id=incident_id(target, clock()),
        target=target,
        started_at=clock(),
        probes_total=3,
        probes_failed=3,
        last_notice_at=clock(),
    )
    failing = check(Outcome.DOWN, target=target, when=clock(), status=503, detail=detail)
    return IncidentEvent(
        EventKind.OPENED,
        incident,
        TargetResult(target, clock(), (failing,)),
        clock(),
        key=f"{incident.id}:opened",
        status_url=STATUS_URL,
    )


def later(
    first: IncidentEvent, kind: EventKind, clock: ManualClock, **changes: object
) -> IncidentEvent:
    """Another event of the same incident, decided now."""
    incident = replace(first.incident, probes_total=first.incident.probes_total + 1)
    result = down(clock(), first.target)
    if kind is EventKind.RESOLVED:
        incident = replace(incident, resolved_at=clock() - timedelta(seconds=30))
        result = up(clock(), first.target)
    event = replace(
        first,
        kind=kind,
        incident=incident,
        result=result,
        decided_at=clock(),
        key=f"{incident.id}:{kind}:{clock():%H%M%S}",
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def shown(message: dict[str, Any]) -> str:
    """Everything a message shows: its text and every block's text."""
    return json.dumps([message.get("text"), message.get("blocks")], ensure_ascii=False)


def calls(slack: FakeSlack, method: str) -> int:
    """How many requests reached a method."""
    return sum(1 for r in slack.requests if r.route == method)


# ---- planning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "steps"),
    [
        pytest.param(EventKind.OPENED, ["post"], id="opened"),
        pytest.param(EventKind.UPDATED, ["reply", "update"], id="updated"),
        pytest.param(EventKind.REMINDER, ["reply", "update"], id="reminder"),
        pytest.param(EventKind.REOPENED, ["reply", "update"], id="reopened"),
        pytest.param(EventKind.ACKNOWLEDGED, ["reply", "update"], id="acknowledged"),
        pytest.param(EventKind.RESOLVED, ["reply", "update"], id="resolved"),
    ],
)
def test_bot_posts_once_then_replies_and_rewrites(
    channel: SlackChannel, clock: ManualClock, kind: EventKind, steps: list[str]
) -> None:
    """An opening posts; every later event is a thread reply and an update that
    supersedes older ones; no step holds the token."""
    first = opened(clock)
    event = first if kind is EventKind.OPENED else later(first, kind, clock)

    planned = channel.plan(event)

    assert [s.kind for s in planned] == steps
    assert [s.supersede for s in planned] == [k == "update" for k in steps]
    assert all(SLACK_TOKEN not in json.dumps(dict(s.payload)) for s in planned)


def test_webhook_plans_one_message_per_event(
    make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """No threads, no edits: one message for every event, carrying its state."""
    hook = make_channel(webhook=True)
    first = opened(clock)

    for kind in (EventKind.OPENED, EventKind.ACKNOWLEDGED, EventKind.RESOLVED):
        event = first if kind is EventKind.OPENED else later(first, kind, clock)
        [step] = hook.plan(event)
        assert step.kind == "message"
        assert rx.SLACK_WEBHOOK_PATH not in json.dumps(dict(step.payload))


def test_unsubscribed_events_and_targets_plan_nothing(
    make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """The channel's targets and events decide what it hears."""
    first = opened(clock)

    assert make_channel(targets=["staging"]).plan(first) == []
    assert make_channel(events=["resolved"]).plan(later(first, EventKind.REMINDER, clock)) == []


def test_text_from_a_probe_is_escaped_and_mentions_nobody(
    channel: SlackChannel, clock: ManualClock
) -> None:
    """``& < >`` become entities and ``@`` is broken, so a response cannot ping the
    channel, a person or forge a link."""
    first = opened(clock, detail=HOSTILE)
    event = later(first, EventKind.UPDATED, clock, detail=HOSTILE, result=first.result)

    words = json.dumps([dict(s.payload) for s in [*channel.plan(first), *channel.plan(event)]])

    for forbidden in ("<!channel>", "<@U012AB3CD", "<https://evil", "@here"):
        assert forbidden not in words
    assert "&lt;!channel&gt; &amp; &lt;@\\u200bU012AB3CD|boss&gt;" in words


# ---- a bot token: one message per incident ---------------------------------------------------


def test_incident_is_one_message_rewritten_with_its_story_in_the_thread(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Opened, acknowledged, reminded, resolved: one message that ends up saying
    resolved with its duration, and three replies under it."""
    first = opened(clock)
    commit_event(store, channel, first)
    store.set_issue(first.incident.id, 7, ISSUE_URL)
    drain(worker, clock, rounds=30)
    [parent] = slack.parents()
    assert parent["metadata"] == {
        "event_type": "monitor_incident",
        "event_payload": {"incident_id": first.incident.id, "key": first.key},
    }
    assert "[CRITICAL] production is down" in shown(parent)
    assert f"<{ISSUE_URL}|GitHub issue #7>" in shown(parent)
    assert f"<{STATUS_URL}|Status page>" in shown(parent)
    assert (
        store.handle("chat", first.incident.id) == Parent(SLACK_CHANNEL_ID, parent["ts"]).handle()
    )

    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.ACKNOWLEDGED, clock, actor="alice"))
    drain(worker, clock, rounds=30)
    assert "Acknowledged by alice" in shown(slack.parents()[0])
    clock.advance(600)
    commit_event(store, channel, later(first, EventKind.REMINDER, clock))
    drain(worker, clock, rounds=30)
    assert "Acknowledged by alice" in shown(slack.parents()[0])  # still acknowledged
    clock.advance(300)
    resolved = later(first, EventKind.RESOLVED, clock)
    commit_event(store, channel, resolved)
    drain(worker, clock, rounds=30)

    [parent] = slack.parents()
    duration = format_duration(resolved.incident.duration_s or 0)
    assert f"[RESOLVED] production was down for {duration}" in shown(parent)
    assert "Acknowledged" not in shown(parent)
    replies = slack.replies(parent["ts"])
    assert ["Acknowledged" in shown(r) for r in replies] == [True, False, False]
    assert "Still open" in shown(replies[1])
    assert "Resolved." in shown(replies[2])
    assert {r["metadata"]["event_payload"]["incident_id"] for r in replies} == {first.incident.id}
    assert len(slack.updates) == 3
    assert store.pending_actions() == []


POST_FAULTS = [
    pytest.param(rx.status(503), "server_error", id="503"),
    pytest.param(rx.slack_error("internal_error"), "server_error", id="internal_error"),
    pytest.param(
        rx.status(429, {"ok": False, "error": "ratelimited"}, "30"), "rate_limited", id="429"
    ),
    pytest.param(rx.slack_error("ratelimited", 30), "rate_limited", id="ok-false-ratelimited"),
    pytest.param(rx.delay(TIMEOUT_S * 2), "timeout", id="delay-past-timeout"),
    pytest.param(rx.cut_after_act(), "network", id="act-then-cut"),
]


@pytest.mark.parametrize(("fault", "reason"), POST_FAULTS)
def test_faults_on_the_post_end_in_one_message(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
    fault: rx.Fault,
    reason: str,
) -> None:
    """Whether or not Slack posted before failing, the incident has one message, found
    again by its metadata, and later events thread under it."""
    first = opened(clock)
    commit_event(store, channel, first)
    slack.inject(fault, route="chat.postMessage")

    assert worker.run_once() == 0
    assert channel_errors(worker, reason) == 1
    slack.settled()  # a delayed post lands now, after the client gave up
    drain(worker, clock, rounds=30)
    clock.advance(600)
    commit_event(store, channel, later(first, EventKind.REMINDER, clock))
    drain(worker, clock, rounds=30)

    [parent] = slack.parents()
    assert len(slack.replies(parent["ts"])) == 1
    handle = Parent.of(store.handle("chat", first.incident.id))
    assert handle == Parent(SLACK_CHANNEL_ID, parent["ts"])


def test_post_timing_out_is_not_looked_for_before_it_settled(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """After a time-out the post may still be running at Slack: no retry (and no look)
    before the lease is over."""
    commit_event(store, channel, opened(clock))
    slack.inject(rx.delay(TIMEOUT_S * 2), route="chat.postMessage")

    worker.run_once()

    [held] = store.pending_actions()
    assert held.next_attempt_at >= clock() + timedelta(seconds=SETTLE_S)
    slack.settled()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(rx.cut_after_act(), id="act-then-cut"),
        pytest.param(rx.delay(TIMEOUT_S * 2), id="delay"),
    ],
)
def test_reply_that_landed_unanswered_is_not_posted_again(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
    fault: rx.Fault,
) -> None:
    """A reply Slack posted without our hearing of it is found in the thread."""
    first = opened(clock)
    commit_event(store, channel, first)
    drain(worker, clock, rounds=30)
    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.ACKNOWLEDGED, clock, actor="bob"))
    slack.inject(fault, route="chat.postMessage")

    worker.run_once()
    slack.settled()
    drain(worker, clock, rounds=30)

    [parent] = slack.parents()
    [reply] = slack.replies(parent["ts"])
    assert "Acknowledged" in shown(reply)
    assert calls(slack, "conversations.replies") == 1
    assert "Acknowledged by bob" in shown(parent)


def test_post_sent_by_a_process_that_died_is_adopted(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Killed after Slack posted and before the record (no attempt counted, only the
    lease): the next leader finds the message and posts nothing."""
    first = opened(clock)
    commit_event(store, channel, first)
    [step] = store.pending_actions()
    store.lease(step, clock() + timedelta(seconds=SETTLE_S))  # the dead process's claim
    clock.advance(5)
    metadata = {
        "event_type": "monitor_incident",
        "event_payload": {"incident_id": first.incident.id, "key": first.key},
    }
    ts = slack.add_message(SLACK_CHANNEL_ID, "production is down", metadata)
    clock.advance(SETTLE_S)

    assert worker.run_once() == 1

    assert len(slack.parents()) == 1
    assert calls(slack, "chat.postMessage") == 0
    assert Parent.of(store.handle("chat", first.incident.id)) == Parent(SLACK_CHANNEL_ID, ts)


def test_first_attempt_posts_without_looking(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """A post nobody tried before costs one request: no look-up."""
    commit_event(store, channel, opened(clock))

    worker.run_once()

    assert [r.route for r in slack.requests] == ["chat.postMessage"]


def test_named_channel_is_found_for_the_look_up(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """Given ``#incidents``, the look-up after an unanswered post finds its ID first."""
    named = make_channel(channel=f"#{SLACK_CHANNEL_NAME}")
    worker = worker_for(store, named, clock)
    commit_event(store, named, opened(clock))
    slack.inject(rx.cut_after_act(), route="chat.postMessage")

    worker.run_once()
    drain(worker, clock, rounds=30)

    assert len(slack.parents()) == 1
    assert calls(slack, "conversations.list") == 1


def test_events_before_any_message_post_one_that_becomes_the_incident_message(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """A channel added while an incident was open: its first event posts a message,
    which the update rewrites and later replies thread under."""
    first = opened(clock)
    clock.advance(60)
    commit_event(store, channel, later(first, EventKind.ACKNOWLEDGED, clock, actor="carol"))
    drain(worker, clock, rounds=30)
    [parent] = slack.parents()
    assert slack.replies(parent["ts"]) == []
    assert "Acknowledged by carol" in shown(parent)
    assert parent.get("edited") is not None  # rewritten to the incident's state

    clock.advance(300)
    commit_event(store, channel, later(first, EventKind.RESOLVED, clock))
    drain(worker, clock, rounds=30)

    [parent] = slack.parents()
    assert "[RESOLVED]" in shown(parent)
    assert len(slack.replies(parent["ts"])) == 1


def test_deleted_message_drops_its_update_and_the_queue_goes_on(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Someone deleted the incident's message: its update is dropped, not retried for ever."""
    first = opened(clock)
    commit_event(store, channel, first)
    drain(worker, clock, rounds=30)
    clock.advance(600)
    commit_event(store, channel, later(first, EventKind.REMINDER, clock))
    slack.inject(rx.slack_error("message_not_found"), route="chat.update")

    drain(worker, clock, rounds=30)

    assert store.pending_actions() == []
    assert worker.health.stopped is None


def test_channel_not_found_stops_the_channel(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """A permanent refusal: the channel stops, says why, and sends nothing more until
    the head step is accepted."""
    lost = make_channel(channel="C0NOSUCHCHAN")
    worker = worker_for(store, lost, clock)
    commit_event(store, lost, opened(clock, "production"))
    commit_event(store, lost, opened(clock, "staging"))

    assert worker.run_once() == 0
    clock.advance(PERMANENT_RETRY_S - 1)
    assert worker.run_once() == 0

    assert worker.health.stopped is not None
    assert "channel_not_found" in worker.health.stopped
    assert calls(slack, "chat.postMessage") == 1
    assert [a.attempts for a in store.pending_actions()] == [1, 0]


def test_rate_limit_holds_every_incident_until_retry_after(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """``ratelimited`` with Retry-After: nothing is sent for any target until it passes."""
    commit_event(store, channel, opened(clock, "production"))
    commit_event(store, channel, opened(clock, "staging"))
    slack.inject(rx.slack_error("ratelimited", 120))

    assert worker.run_once() == 0
    clock.advance(100)
    assert worker.run_once() == 0
    assert len(slack.requests) == 1

    clock.advance(21)
    drain(worker, clock, rounds=30)
    assert len(slack.parents()) == 2


@pytest.mark.parametrize(
    ("fault", "reason", "permanent", "retry_after_s"),
    [
        pytest.param(rx.slack_error("ratelimited", 7), "rate_limited", False, 7, id="ratelimited"),
        pytest.param(
            rx.slack_error("ratelimited"), "rate_limited", False, 60, id="ratelimited-unsaid"
        ),
        pytest.param(rx.status(429, None, "9"), "rate_limited", False, 9, id="http-429"),
        pytest.param(
            rx.slack_error("internal_error"), "server_error", False, None, id="internal_error"
        ),
        pytest.param(rx.slack_error("fatal_error"), "server_error", False, None, id="fatal_error"),
        pytest.param(
            rx.slack_error("service_unavailable"), "server_error", False, None, id="unavailable"
        ),
        pytest.param(rx.status(502), "server_error", False, None, id="http-502"),
        pytest.param(rx.slack_error("invalid_auth"), "auth", True, None, id="invalid_auth"),
        pytest.param(rx.slack_error("token_revoked"), "auth", True, None, id="token_revoked"),
        pytest.param(
            rx.slack_error("channel_not_found"),
            "channel_not_found",
            True,
            None,
            id="channel_not_found",
        ),
        pytest.param(
            rx.slack_error("not_in_channel"), "not_in_channel", True, None, id="not_in_channel"
        ),
        pytest.param(rx.slack_error("is_archived"), "is_archived", True, None, id="is_archived"),
        pytest.param(rx.slack_error("msg_too_long"), "rejected", True, None, id="msg_too_long"),
        pytest.param(
            rx.slack_error("invalid_arguments"), "rejected", True, None, id="invalid_arguments"
        ),
    ],
)
def test_slack_answers_become_the_outbox_categories(
    slack: FakeSlack,
    channel: SlackChannel,
    fault: rx.Fault,
    reason: str,
    permanent: bool,
    retry_after_s: float | None,
) -> None:
    """Slack's ``ok: false`` errors and HTTP statuses: held, retried, or permanent."""
    slack.inject(fault)

    with pytest.raises(ChannelError) as raised:
        channel.send_notice(Notice("t", "b", key="k"))

    assert raised.value.reason == reason
    assert raised.value.permanent == permanent
    assert raised.value.retry_after_s == retry_after_s


def test_unknown_token_is_an_auth_problem(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """invalid_auth: the channel stops and flags credentials."""
    revoked = make_channel(secret="xoxb-0000000000-0000000000-revokedRevoked")
    worker = worker_for(store, revoked, clock)
    commit_event(store, revoked, opened(clock))

    worker.run_once()

    assert worker.health.auth_problem
    assert worker.health.stopped is not None
    assert slack.parents() == []


# ---- an incoming webhook: plain messages ---------------------------------------------------------


def test_webhook_posts_one_plain_message_per_event(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """Opened, acknowledged, resolved: three messages, none threaded or edited, each
    saying the incident's state; the Web API is never called."""
    hook = make_channel(webhook=True)
    worker = worker_for(store, hook, clock)
    first = opened(clock)
    commit_event(store, hook, first)
    store.set_issue(first.incident.id, 7, ISSUE_URL)
    clock.advance(60)
    commit_event(store, hook, later(first, EventKind.ACKNOWLEDGED, clock, actor="dave"))
    clock.advance(240)
    resolved = later(first, EventKind.RESOLVED, clock)
    commit_event(store, hook, resolved)
    drain(worker, clock, rounds=30)

    opening, acknowledged, resolved_message = slack.webhook_messages
    assert "[CRITICAL] production is down" in shown(opening)
    assert f"<{ISSUE_URL}|GitHub issue #7>" in shown(opening)
    assert "Acknowledged* by dave" in shown(acknowledged)
    duration = format_duration(resolved.incident.duration_s or 0)
    assert f"[RESOLVED] production was down for {duration}" in shown(resolved_message)
    assert all(r.route == "webhook" for r in slack.requests)
    assert store.handle("chat", first.incident.id) is None


def test_webhook_repeats_after_an_unanswered_post(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """At-least-once: a webhook cannot be asked what it posted, so a post Slack took
    without answering is sent again (a 5xx, which did nothing, is not repeated)."""
    hook = make_channel(webhook=True)
    worker = worker_for(store, hook, clock)
    commit_event(store, hook, opened(clock, "production"))
    commit_event(store, hook, opened(clock, "staging"))
    slack.inject(rx.cut_after_act(), route="webhook")
    slack.inject(rx.status(500, b"rollup_error"), route="webhook")

    drain(worker, clock, rounds=30)

    targets = [m["text"].split()[1] for m in slack.webhook_messages]
    assert sorted(targets) == ["production", "production", "staging"]


def test_webhook_archived_channel_stops_the_channel(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """410 channel_is_archived: permanent (the channel stops, and asks again later in
    case someone unarchives it), not disabled until a restart."""
    hook = make_channel(webhook=True)
    worker = worker_for(store, hook, clock)
    commit_event(store, hook, opened(clock))
    slack.inject(rx.status(410, b"channel_is_archived"), route="webhook")

    worker.run_once()

    assert worker.health.stopped is not None
    assert not worker.health.disabled
    clock.advance(PERMANENT_RETRY_S + 1)
    assert worker.run_once() == 1
    assert worker.health.stopped is None


@pytest.mark.parametrize(
    ("code", "body", "auth"),
    [
        pytest.param(400, b"invalid_payload", False, id="400"),
        pytest.param(403, b"action_prohibited", True, id="403"),
        pytest.param(404, b"channel_not_found", False, id="404"),
    ],
)
def test_webhook_refusals_are_permanent(
    slack: FakeSlack, make_channel: ChannelFactory, code: int, body: bytes, auth: bool
) -> None:
    """The webhook's 4xx answers stop the channel; 403 needs a human with access."""
    slack.inject(rx.status(code, body), route="webhook")

    with pytest.raises(ChannelError) as raised:
        make_channel(webhook=True).send_notice(Notice("t", "b", key="k"))

    assert raised.value.permanent
    assert raised.value.auth == auth


# ---- secrets and notices ----------------------------------------------------------------------


def test_token_never_appears_in_steps_logs_or_errors(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """Even an answer echoing the token (whole, or where a quoted piece would cut it)
    leaves it out of /healthz, the log, the stored error and the exception."""
    commit_event(store, channel, opened(clock))
    slack.inject(rx.slack_error("e" * 70 + SLACK_TOKEN))
    slack.inject(rx.status(400, ("x" * 185 + SLACK_TOKEN).encode()))

    with capture_logs() as logs:
        worker.run_once()
        with pytest.raises(ChannelError) as raised:
            channel.send_notice(Notice("t", "b", key="k"))

    [step] = store.pending_actions()
    texts = [str(raised.value), worker.health.last_error, repr(logs), step.last_error]
    for text in [*texts, json.dumps(dict(step.payload))]:
        assert SLACK_TOKEN[:12] not in (text or "")


def test_webhook_url_never_appears_in_steps_logs_or_errors(
    slack: FakeSlack, store: SqliteStore, make_channel: ChannelFactory, clock: ManualClock
) -> None:
    """The webhook URL is the secret: not in a step, a log line, /healthz or an error,
    even when an answer echoes it."""
    hook = make_channel(webhook=True)
    worker = worker_for(store, hook, clock)
    commit_event(store, hook, opened(clock))
    padding = "n" * (200 - len(slack.url) - 15)  # the quoted excerpt ends inside the path
    slack.inject(rx.status(404, (padding + slack.webhook_url).encode()), route="webhook")
    slack.inject(rx.delay(TIMEOUT_S * 2), route="webhook")

    with capture_logs() as logs:
        worker.run_once()
        with pytest.raises(ChannelError) as raised:
            hook.send_notice(Notice("t", "b", key="k"))
    slack.settled()

    [step] = store.pending_actions()
    texts = [str(raised.value), worker.health.last_error, repr(logs), step.last_error]
    for text in [*texts, json.dumps(dict(step.payload))]:
        assert SLACK_WEBHOOK_PATH[:15] not in (text or "")


@pytest.mark.parametrize("webhook", [False, True], ids=["bot", "webhook"])
def test_test_notice_says_nobody_needs_to_act(
    slack: FakeSlack, make_channel: ChannelFactory, webhook: bool
) -> None:
    """``monitor notify test``: one message, marked as a test."""
    make_channel(webhook=webhook).send_notice(
        Notice("Channel check", "hello", key="t-1", test=True)
    )

    [message] = slack.webhook_messages if webhook else slack.parents()
    assert "[TEST] Channel check" in shown(message)
    assert "nobody needs to act" in shown(message)


def test_notice_carries_its_severity(slack: FakeSlack, channel: SlackChannel) -> None:
    """``monitor notify --severity warning``: the marker says so, in words."""
    channel.send_notice(Notice("Deploy failed", "rolled back", key="n-1", severity="warning"))

    [message] = slack.parents()
    assert message["text"].startswith("[WARNING] Deploy failed")


def test_channel_needs_a_token_or_a_webhook_url(make_channel: ChannelFactory) -> None:
    """Anything else is refused at start-up, naming the variable and not the value."""
    with pytest.raises(ValueError, match="SLACK_SECRET") as raised:
        make_channel(secret="not-a-token-at-all")
    assert "not-a-token-at-all" not in str(raised.value)


# ---- the receiver itself -------------------------------------------------------------------------


def _post(slack: FakeSlack, method: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(
        f"{slack.api_url}/{method}", content=json.dumps(body), headers=headers, timeout=5
    )
    data: dict[str, Any] = response.json()
    return data


AUTH = {"Authorization": f"Bearer {SLACK_TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json; charset=utf-8"}


@pytest.mark.parametrize(
    ("method", "body", "headers", "error"),
    [
        pytest.param(
            "chat.postMessage", {"channel": SLACK_CHANNEL_ID}, JSON, "no_text", id="no-text"
        ),
        pytest.param(
            "chat.postMessage",
            {"channel": SLACK_CHANNEL_ID, "text": "hi"},
            {**AUTH, "Content-Type": "application/json"},
            "invalid_charset",
            id="no-charset",
        ),
        pytest.param(
            "chat.postMessage",
            {"channel": SLACK_CHANNEL_ID, "text": "hi", "thread_ts": "12.3"},
            JSON,
            "invalid_thread_ts",
            id="bad-thread-ts",
        ),
        pytest.param(
            "chat.postMessage",
            {"channel": SLACK_CHANNEL_ID, "text": "hi", "metadata": {"event_type": "x"}},
            JSON,
            "invalid_metadata_format",
            id="bad-metadata",
        ),
        pytest.param(
            "chat.update",
            {"channel": SLACK_CHANNEL_ID, "text": "hi"},
            JSON,
            "invalid_arguments",
            id="update-without-ts",
        ),
        pytest.param(
            "chat.postMessage",
            {"channel": SLACK_CHANNEL_ID, "text": "hi"},
            {"Content-Type": "application/json; charset=utf-8"},
            "not_authed",
            id="no-token",
        ),
        pytest.param(
            "conversations.history",
            {"channel": SLACK_CHANNEL_ID},
            JSON,
            "invalid_arguments",
            id="json-to-a-read",
        ),
    ],
)
def test_receiver_refuses_what_slack_refuses(
    slack: FakeSlack, method: str, body: Any, headers: dict[str, str], error: str
) -> None:
    """The receiver answers ``ok: false`` to calls outside the published contract (so the
    other tests would notice the channel making one)."""
    assert _post(slack, method, body, headers) == {"ok": False, "error": error}
    assert slack.violations
    slack.violations.clear()


def test_receiver_flags_a_mention(slack: FakeSlack) -> None:
    """A message that would ping the channel is a violation the tests would see."""
    _post(slack, "chat.postMessage", {"channel": SLACK_CHANNEL_ID, "text": "<!channel> hi"}, JSON)

    assert any("mention" in v for v in slack.violations)
    slack.violations.clear()


def test_probe_text_reaches_slack_without_a_mention(
    slack: FakeSlack,
    store: SqliteStore,
    channel: SlackChannel,
    worker: OutboxWorker,
    clock: ManualClock,
) -> None:
    """The hostile detail travels escaped through the real wire (the receiver checks)."""
    commit_event(store, channel, opened(clock, detail=HOSTILE))

    drain(worker, clock, rounds=30)

    [parent] = slack.parents()
    assert "&lt;!channel&gt;" in shown(parent)


def test_checks_failing_for_a_reason_without_a_status_read_well(
    channel: SlackChannel, clock: ManualClock
) -> None:
    """A time-out has no status code: the message says what happened."""
    event = opened(clock)
    timeout = check(
        Outcome.DOWN, Reason.TIMEOUT, when=clock(), status=None, detail="no answer in 5s"
    )
    event = replace(event, result=TargetResult("production", clock(), (timeout,)))

    [step] = channel.plan(event)

    assert (
        step.payload["text"] == "[CRITICAL] production is down: /health timed out (no answer in 5s)"
    )
