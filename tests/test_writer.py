"""The cycle writer: cycles of one turn of the loop share a transaction, and nothing is lost.

Against a real SQLite store that counts its transactions; the database refuses writes
through ``PRAGMA query_only``, as a read-only file would.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog

from monitor.daemon.writer import BATCH_LIMIT, CycleWriter
from monitor.incidents.tracker import TrackerState
from monitor.metrics import Metrics
from monitor.store.base import NewAction, PendingCycle
from monitor.store.sqlite import SqliteStore
from tests.builders import at, down, up


class CountingStore(SqliteStore):
    """A real store that remembers the size of every transaction it tried, and of every
    one it committed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.tried: list[int] = []
        self.transactions: list[int] = []

    def commit_cycles(self, cycles: Sequence[PendingCycle]) -> None:
        self.tried.append(len(cycles))
        super().commit_cycles(cycles)
        self.transactions.append(len(cycles))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the database lives."""
    return tmp_path / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[CountingStore]:
    """The counting store on a fresh file, closed afterwards."""
    store = CountingStore(path)
    yield store
    store.close()


def cycle(minute: int, target: str = "production", action: str | None = None) -> PendingCycle:
    """A decided cycle of ``target``, with one journal step when ``action`` is given."""
    result = up(at(minute), target=target) if action is None else down(at(minute), target)
    actions = [] if action is None else [NewAction("journal", "i-1", target, action, {})]
    return PendingCycle(result, 120.0, TrackerState(target), None, actions)


def stored(path: Path) -> list[tuple[str, float]]:
    """(target, started_at) of every stored result, read by another connection."""
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT target, started_at FROM check_results ORDER BY id"))


async def test_the_cycles_of_one_turn_share_one_transaction(
    store: CountingStore, path: Path
) -> None:
    """Written in one turn, committed together at its end, in order; the next turn's
    cycle goes in a transaction of its own."""
    writer = CycleWriter(store, Metrics())
    writer.commit_per_turn(asyncio.get_running_loop())
    for minute, target in enumerate(["production", "staging", "api"]):
        writer.write(cycle(minute, target))
    assert stored(path) == []  # not before the turn ends
    assert writer.backlog == 3

    await asyncio.sleep(0)
    assert [target for target, _ in stored(path)] == ["production", "staging", "api"]
    assert store.transactions == [3]
    writer.write(cycle(5))
    await asyncio.sleep(0)
    assert store.transactions == [3, 1]
    assert writer.backlog == 0


def test_without_a_loop_each_write_commits_before_it_returns(
    store: CountingStore, path: Path
) -> None:
    """The default (tests, tools): a write is in the database when write() returns."""
    writer = CycleWriter(store, Metrics())
    writer.write(cycle(0))
    assert len(stored(path)) == 1
    writer.write(cycle(1))
    assert store.transactions == [1, 1]


async def test_commit_at_once_lands_what_the_turn_wrote(store: CountingStore, path: Path) -> None:
    """The stop: what waits for the end of the turn is committed now, and later writes
    commit at once."""
    writer = CycleWriter(store, Metrics())
    writer.commit_per_turn(asyncio.get_running_loop())
    writer.write(cycle(0))
    writer.write(cycle(1, "staging"))

    writer.commit_at_once()
    assert len(stored(path)) == 2
    writer.write(cycle(2))
    assert len(stored(path)) == 3
    await asyncio.sleep(0)  # the turn's own flush finds nothing left
    assert store.transactions == [2, 1]


async def test_the_outbox_is_woken_after_the_steps_are_committed(store: CountingStore) -> None:
    """The workers are told to look once the turn's steps can be read, and only then."""
    seen: list[list[str]] = []
    writer = CycleWriter(
        store, Metrics(), on_actions=lambda: seen.append([a.kind for a in store.pending_actions()])
    )
    writer.commit_per_turn(asyncio.get_running_loop())
    writer.write(cycle(0, action="opened"))
    writer.write(cycle(1, "staging"))
    writer.write(cycle(2, "api", action="opened"))
    assert seen == []

    await asyncio.sleep(0)
    assert seen == [["opened", "opened"]]
    writer.write(cycle(3, "staging"))
    await asyncio.sleep(0)
    assert seen == [["opened", "opened"]]  # no step, no wake


async def test_a_deposed_leaders_decisions_all_become_observations(
    store: CountingStore, path: Path
) -> None:
    """A batch refused for a passed epoch: every decision waiting is refused alike, so
    all of them become the observations they still are (results and views), which then
    land together; the election hears of it once."""
    store.claim_leadership("ams", "i-1", at(0))
    store.claim_leadership("ams", "i-1", at(1))
    store.fence(1)
    reasons: list[str] = []
    writer = CycleWriter(store, Metrics(), on_not_leader=reasons.append)
    writer.commit_per_turn(asyncio.get_running_loop())
    writer.write(cycle(0, action="opened"))
    writer.write(cycle(1, "staging"))
    writer.write(cycle(2, "api"))

    await asyncio.sleep(0)
    assert [target for target, _ in stored(path)] == ["production", "staging", "api"]
    assert store.pending_actions() == []  # a step is a decision: refused
    assert store.load_states() == {}
    # the batch, the oldest alone (refused), then the three observations together
    assert store.tried == [3, 1, 3]
    assert store.transactions == [3]
    assert len(reasons) == 1
    assert writer.problem is None


async def test_a_cycle_the_database_refuses_in_a_batch_holds_back_only_itself_and_later(
    store: CountingStore, path: Path
) -> None:
    """A refused batch is tried again one cycle at a time: the cycles before the refused
    one land, it and those after wait (in order) with the problem reported, and all of
    them land once the database takes it."""
    store._db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON check_results WHEN NEW.target = 'api'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    metrics = Metrics()
    writer = CycleWriter(store, metrics)
    writer.commit_per_turn(asyncio.get_running_loop())
    for minute, target in enumerate(["production", "staging", "api", "web"]):
        writer.write(cycle(minute, target))

    await asyncio.sleep(0)
    assert [target for target, _ in stored(path)] == ["production", "staging"]
    assert writer.backlog == 2
    assert writer.problem is not None
    assert "refused" in writer.problem
    assert metrics.store_errors.labels("commit_cycle")._value.get() == 1

    store._db.execute("DROP TRIGGER refuse")
    writer.write(cycle(5, "staging"))
    await asyncio.sleep(0)
    assert [target for target, _ in stored(path)][2:] == ["api", "web", "staging"]
    assert writer.problem is None


async def test_a_cycle_that_cannot_be_written_is_dropped_and_the_rest_land(
    store: CountingStore, path: Path
) -> None:
    """Not the database: a cycle whose step cannot be encoded (a bug of ours) would hold
    back every later cycle for good. It is logged with its target and dropped; the
    cycles around it land, and every cycle's log lines are still written."""
    bad = cycle(1, "staging", action="opened")
    bad = PendingCycle(
        bad.result,
        bad.hold_s,
        bad.state,
        None,
        [NewAction("journal", "i-1", "staging", "opened", {"x": object()})],
    )
    logged: list[str] = []
    metrics = Metrics()
    writer = CycleWriter(store, metrics)
    writer.commit_per_turn(asyncio.get_running_loop())
    with structlog.testing.capture_logs() as events:
        for pending in (cycle(0), bad, cycle(2, "api")):
            writer.write(pending, then=lambda p=pending: logged.append(p.result.target))
        await asyncio.sleep(0)

    assert [target for target, _ in stored(path)] == ["production", "api"]
    assert writer.backlog == 0
    assert logged == ["production", "staging", "api"]
    assert metrics.store_errors.labels("commit_cycle")._value.get() == 1
    [error] = [e for e in events if e["log_level"] == "error"]
    assert error["event"] == "a cycle cannot be written; dropped"
    assert error["target"] == "staging"
    assert error["exc_info"] is True  # the traceback goes with it
    assert writer.problem is None
    writer.write(cycle(3))
    await asyncio.sleep(0)
    assert len(stored(path)) == 3


async def test_a_database_that_refuses_gets_one_cycle_per_flush_and_loses_nothing(
    store: CountingStore, path: Path
) -> None:
    """While writes fail, each turn tries the oldest cycle only (no batch of the whole
    backlog sent again and again); on recovery the backlog lands in order, in slices of
    at most BATCH_LIMIT, and the problem clears."""
    metrics = Metrics()
    writer = CycleWriter(store, metrics)
    writer.commit_per_turn(asyncio.get_running_loop())
    writer.write(cycle(0))
    await asyncio.sleep(0)
    store._db.execute("PRAGMA query_only = 1")
    store.tried.clear()
    for minute in range(1, BATCH_LIMIT + 11):
        writer.write(cycle(minute))
        await asyncio.sleep(0)
    assert writer.problem is not None
    assert "state database write failed" in writer.problem
    # each turn tried the oldest cycle, once
    assert store.tried == [1] * (BATCH_LIMIT + 10)
    assert metrics.store_errors.labels("commit_cycle")._value.get() == BATCH_LIMIT + 10
    assert writer.backlog == BATCH_LIMIT + 10

    store._db.execute("PRAGMA query_only = 0")
    writer.write(cycle(BATCH_LIMIT + 11))
    await asyncio.sleep(0)
    assert writer.problem is None
    assert writer.backlog == 0
    assert [started for _, started in stored(path)] == sorted(s for _, s in stored(path))
    assert len(stored(path)) == BATCH_LIMIT + 12
    # the oldest alone (the database still looked down), then the rest together
    assert store.transactions[1:] == [1, BATCH_LIMIT, 10]


async def test_a_cycle_is_logged_once_its_commit_was_tried(
    store: CountingStore, path: Path
) -> None:
    """A cycle's ``then`` (its log lines) runs after the flush that tried it: the result
    is in the database by then, or the database refused it (and that is logged too)."""
    found: list[int] = []
    writer = CycleWriter(store, Metrics())
    writer.commit_per_turn(asyncio.get_running_loop())
    writer.write(cycle(0), then=lambda: found.append(len(stored(path))))
    writer.write(cycle(1, "staging"), then=lambda: found.append(len(stored(path))))
    assert found == []

    await asyncio.sleep(0)
    assert found == [2, 2]
    store._db.execute("PRAGMA query_only = 1")
    writer.write(cycle(2), then=lambda: found.append(len(stored(path))))
    await asyncio.sleep(0)
    assert found == [2, 2, 2]
    assert writer.backlog == 1
