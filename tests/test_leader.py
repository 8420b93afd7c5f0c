"""Leadership: the sole instance leads; with PostgreSQL one lock holder leads, a deposed
leader stops acting before anyone else can start, and its late writes are refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.config import MonitorSection
from monitor.daemon.leader import STEP_DOWN_CHECKS, LeaderElection
from monitor.incidents.tracker import TrackerState
from monitor.store.base import NotLeader, PendingCycle, Store
from monitor.store.postgres import PostgresLeaderLock, PostgresStore
from monitor.store.sqlite import SqliteStore
from tests.builders import T0, down

CHECK_S = 0.05


def _decision(store: Store) -> None:
    """A decided cycle: refused unless this store's epoch is current."""
    store.commit_cycle(PendingCycle(down(T0), 60.0, TrackerState("production"), None, []))


class FakeLock:
    """A leader lock whose ``alive`` can hang, as on a connection the network swallowed."""

    def __init__(self) -> None:
        self.free = True
        self.hang = threading.Event()  # set: alive() blocks until ``answer`` is given
        self.answer = threading.Event()
        self.alive_result = True
        self.released = 0

    def try_acquire(self) -> bool:
        return self.free

    def alive(self) -> bool:
        if self.hang.is_set():
            self.answer.wait(10)
        return self.alive_result

    def release(self) -> None:
        self.released += 1


class FakeLockStore(SqliteStore):
    """A SQLite store that pretends to be shared, with a lock the test controls."""

    def __init__(self, path: Path, lock: FakeLock) -> None:
        super().__init__(path)
        self._fake_lock = lock

    def leader_lock(self) -> FakeLock:  # type: ignore[override]
        return self._fake_lock


def _monitor(region: str = "ams") -> MonitorSection:
    return MonitorSection(region=region, instance=f"i-{region}", leader_check=CHECK_S)


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_sole_instance_leads_from_the_start_and_a_second_one_fences_it(
    tmp_path: Path,
) -> None:
    """On SQLite the daemon leads at once, under a new epoch per start: a second daemon
    started on the same file by mistake fences the first one's decisions off."""
    first, second = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    try:
        one = LeaderElection(first, _monitor(), lambda: T0)
        assert one.acting
        assert one.role == "leader"
        assert not one.shared
        one.start(lambda epoch: True, lambda: None)
        assert one.epoch == 1
        _decision(first)
        two = LeaderElection(second, _monitor("ord"), lambda: T0)
        two.start(lambda epoch: True, lambda: None)
        assert two.epoch == 2
        with pytest.raises(NotLeader):
            _decision(first)
        _decision(second)
        assert first.leadership() is not None
        assert first.leadership().region == "ord"  # type: ignore[union-attr]
    finally:
        first.close()
        second.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeLockStore, FakeLock]]:
    lock = FakeLock()
    store = FakeLockStore(tmp_path / "s.db", lock)
    yield store, lock
    store.close()


async def test_a_shared_instance_follows_until_elected(
    fake: tuple[FakeLockStore, FakeLock],
) -> None:
    """A shared instance starts as a follower whose decisions are refused, and leads
    only once ``on_elected`` (state loaded) has run on the event loop."""
    store, lock = fake
    lock.free = False
    elected: list[int] = []
    election = LeaderElection(store, _monitor(), lambda: T0)
    assert election.shared
    assert not election.acting
    election.start(lambda epoch: elected.append(epoch) is None, lambda: None)
    try:
        with pytest.raises(NotLeader):
            _decision(store)
        await asyncio.sleep(5 * CHECK_S)
        assert not election.acting
        assert elected == []
        lock.free = True
        await _until(lambda: election.acting)
        assert elected == [1]
        assert election.epoch == 1
        _decision(store)
    finally:
        election.stop()


async def test_a_leader_whose_lock_hangs_stops_acting_while_the_proof_still_hangs(
    fake: tuple[FakeLockStore, FakeLock],
) -> None:
    """The step-down does not wait for the hung connection: after STEP_DOWN_CHECKS checks
    without proof the leader stops acting; once the proof fails it is deposed and fenced."""
    store, lock = fake
    deposed: list[bool] = []
    election = LeaderElection(store, _monitor(), lambda: T0)
    election.start(lambda epoch: True, lambda: deposed.append(True))
    try:
        await _until(lambda: election.acting)
        lock.hang.set()
        hung_at = time.monotonic()
        await _until(lambda: not election.acting)
        took = time.monotonic() - hung_at
        assert took <= (STEP_DOWN_CHECKS + 2) * CHECK_S + 0.2, took
        assert deposed == []  # the thread is still blocked in alive()
        lock.alive_result = False
        lock.answer.set()
        await _until(lambda: deposed == [True])
        assert election.role == "follower"
        assert lock.released >= 1
        with pytest.raises(NotLeader):
            _decision(store)
    finally:
        lock.hang.clear()
        lock.answer.set()
        election.stop()


async def test_a_refused_write_deposes_the_leader(fake: tuple[FakeLockStore, FakeLock]) -> None:
    """A fenced write refused (another instance began an epoch) makes it step down."""
    store, lock = fake
    election = LeaderElection(store, _monitor(), lambda: T0)
    election.start(lambda epoch: True, lambda: None)
    try:
        await _until(lambda: election.acting)
        lock.free = False
        store.claim_leadership("ord", "i-ord", T0)  # a successor's epoch
        election.lost("refused")
        await _until(lambda: not election.is_leader)
        assert lock.released >= 1
    finally:
        election.stop()


async def test_postgres_one_leader_and_a_handover_on_stop(postgres_url: str) -> None:
    """Two instances on one database: one leads; when it stops, the other takes over at
    its next check under a newer epoch, and the database names it."""
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    elections = [
        LeaderElection(store, _monitor(region), lambda: T0)
        for store, region in zip(stores, ("ams", "ord"), strict=True)
    ]
    try:
        for election in elections:
            election.start(lambda epoch: True, lambda: None)
        await _until(lambda: sum(e.acting for e in elections) == 1)
        await asyncio.sleep(5 * CHECK_S)
        assert sum(e.acting for e in elections) == 1
        leader = next(e for e in elections if e.acting)
        other = next(e for e in elections if e is not leader)
        first_epoch = leader.epoch
        leader.stop()
        await _until(lambda: other.acting)
        assert other.epoch is not None
        assert first_epoch is not None
        assert other.epoch > first_epoch
        holder = stores[0].leadership()
        assert holder is not None
        assert holder.region == other.region
        with pytest.raises(NotLeader):
            _decision(stores[elections.index(leader)])
    finally:
        for election in elections:
            election.stop()
        for store in stores:
            store.close()


def test_postgres_lock_session_is_dropped_by_the_server_within_its_keepalive(
    postgres_url: str,
) -> None:
    """The lock's session asks the server to notice a silent peer within 11 s (longer than
    the leader's own step-down), so a cut-off leader's lock is released for a successor."""
    lock = PostgresLeaderLock(postgres_url)
    try:
        assert lock.try_acquire()
        assert lock.alive()
        conn = lock._conn
        assert conn is not None
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert settings == {
            "tcp_keepalives_idle": "5",
            "tcp_keepalives_interval": "2",
            "tcp_keepalives_count": "3",
        }
        other = PostgresLeaderLock(postgres_url)
        try:
            assert not other.try_acquire()
            lock.release()
            assert other.try_acquire()
        finally:
            other.release()
    finally:
        lock.release()


async def test_a_retiring_instance_takes_no_lead(fake: tuple[FakeLockStore, FakeLock]) -> None:
    """Stopping instances all at once: a follower that is stopping must not take the lock
    the stopping leader just released (it would decide, then fail on a closed store)."""
    store, lock = fake
    lock.free = False
    elected: list[int] = []
    election = LeaderElection(store, _monitor(), lambda: T0)
    election.start(lambda epoch: elected.append(epoch) is None, lambda: None)
    try:
        election.retire()
        lock.free = True
        await asyncio.sleep(6 * CHECK_S)
        assert elected == []
        assert not election.acting
        assert store.leadership() is None  # no epoch was even claimed
    finally:
        election.stop()


async def test_elected_while_stopping_hands_the_lead_straight_on(
    fake: tuple[FakeLockStore, FakeLock],
) -> None:
    """The lock taken just before the stop began: the election is dropped on the loop,
    never acted on."""
    store, lock = fake
    elected: list[int] = []
    election = LeaderElection(store, _monitor(), lambda: T0)
    loop = asyncio.get_running_loop()
    election._loop = loop  # as start() sets it, without the thread
    election._lock = lock
    election._on_elected = lambda epoch: elected.append(epoch) is None
    election._take(store.claim_leadership("ams", "i-ams", T0))
    election._holding = True
    election.retire()
    election._elected(election.epoch or 0)
    assert elected == []
    assert not election.acting
    assert lock.released == 1
    with pytest.raises(NotLeader):
        _decision(store)
