"""Commit time to a PostgreSQL in another region: round trips per probe cycle.

    python bench/remote_db.py                      # one-way delays 0, 10, 25 and 50 ms
    python bench/remote_db.py --delays-ms 40 --commits 50

An instance in ``sin`` writing to a database in ``ord`` pays a long round trip for
every statement it waits on, on its event loop. This starts a throwaway PostgreSQL
(tests/pgserver.py, loopback only) behind a proxy that delivers every chunk, in each
direction, a fixed delay after it arrived (a network, not a queue: reading never
waits), and measures ``commit_cycle`` for an observation cycle (a follower's: results
and its region's view) and a decided one (the leader's: with state and a channel
step, fenced by its epoch). Dividing by the round trip gives the round trips a cycle
costs; the PostgreSQL store sends a cycle as one pipeline, so the target is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import _common as c

from monitor.incidents.quorum import RegionView
from monitor.incidents.tracker import TrackerState
from monitor.store.base import NewAction, PendingCycle
from monitor.store.postgres import PostgresStore
from tests.builders import at, down
from tests.pgserver import PostgresServer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    except OSError:
        pass
    queue.put_nowait((0.0, b""))
    await task


@contextmanager
def delayed_proxy(upstream_port: int, delay_s: float) -> Iterator[int]:
    """A loopback port that reaches ``upstream_port`` with ``delay_s`` each way."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(c.HOST, upstream_port)
        # the client closes first and both pipes end on EOF; a cancel at shutdown is quiet
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                _pipe(reader, up_writer, delay_s), _pipe(up_reader, writer, delay_s)
            )

    async def open_server() -> asyncio.Server:
        return await asyncio.start_server(handle, c.HOST, 0)

    async def close(server: asyncio.Server) -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    server = asyncio.run_coroutine_threadsafe(open_server(), loop).result(10)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(close(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def measure(url: str, commits: int) -> dict[str, float]:
    """Median commit time of each kind of cycle, in seconds."""
    store = PostgresStore(url)
    observed, decided = [], []
    try:
        for i in range(commits):
            result = down(at(i))
            view = RegionView(
                "production", "sin", result.at, result.outcome, result.at, 1, 99, result
            )
            cycle = PendingCycle(result, 60.0, None, None, (), region="sin", view=view)
            started = time.perf_counter()
            store.commit_cycle(cycle)
            observed.append(time.perf_counter() - started)
            step = NewAction("github", "production-1", "production", "comment", {"body": "x"})
            cycle = PendingCycle(
                result, 60.0, TrackerState("production"), None, [step], region="sin", view=view
            )
            started = time.perf_counter()
            store.commit_cycle(cycle)
            decided.append(time.perf_counter() - started)
    finally:
        store.close()
    return {"observation_s": statistics.median(observed), "decided_s": statistics.median(decided)}


def main() -> None:
    parser = c.parser(__doc__ or "")
    parser.add_argument("--delays-ms", default="0,10,25,50", help="one-way delays to try")
    parser.add_argument("--commits", type=int, default=30, help="commits of each kind")
    args = parser.parse_args()
    rows = []
    with PostgresServer() as server:
        for delay_ms in (float(d) for d in args.delays_ms.split(",")):
            url = server.create_database(f"remote_{int(delay_ms * 10)}")
            with delayed_proxy(server.port, delay_ms / 1000) as port:
                times = measure(url.replace(f":{server.port}/", f":{port}/"), args.commits)
            rtt_ms = 2 * delay_ms
            row: dict[str, Any] = {"one_way_ms": delay_ms, "rtt_ms": rtt_ms}
            for kind, seconds in times.items():
                row[kind.replace("_s", "_ms")] = round(seconds * 1000, 1)
                if rtt_ms:
                    row[kind.replace("_s", "_round_trips")] = round(seconds * 1000 / rtt_ms, 2)
            c.say(row)
            rows.append(row)
    c.emit({"bench": "remote_db", "rows": rows}, args.out)


if __name__ == "__main__":
    main()
