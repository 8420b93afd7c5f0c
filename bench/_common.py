"""Shared pieces of the benchmarks: local servers, a raw HTTP driver, statistics, output.

Every benchmark prints human progress on stderr and one JSON object (its result)
as the last line of stdout; ``--out PATH`` also writes that JSON to a file.
Network traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/x.py`: make `monitor` and `tests` importable
    sys.path.insert(0, str(REPO))

# the tests' ports: below the range outgoing sockets draw from, so a server started a
# moment later still finds its port free
from tests.ports import HOST, free_port  # noqa: E402

LIBRARIES = (
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "aiohttp",
    "httpx-aiohttp",
    "PyGithub",
    "APScheduler",
    "prometheus-client",
    "structlog",
    "pydantic",
    "starlette",
    "uvicorn",
    "pyinstrument",
)


# ---- output ------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """The common arguments: ``--quick`` (small sizes) and ``--out`` (also write the JSON)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--out", type=Path, help="also write the result JSON here")
    return p


def say(*parts: object) -> None:
    """Progress for the human, on stderr."""
    print(*parts, file=sys.stderr, flush=True)


def emit(result: dict[str, Any], out: Path | None) -> None:
    """The result as one JSON line on stdout (and in ``out``)."""
    result.setdefault("machine", machine())
    text = json.dumps(result, sort_keys=False, default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(text, flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "loadavg_at_end": os.getloadavg(),
        "libraries": versions,
    }


# ---- statistics ----------------------------------------------------------------------------


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median and spread of repeated measurements."""
    vals = sorted(values)
    if not vals:
        return {"n": 0}
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), digits),
        "min": round(vals[0], digits),
        "max": round(vals[-1], digits),
        "stdev": round(statistics.stdev(vals), digits) if len(vals) > 1 else 0.0,
        "values": [round(v, digits) for v in values],
    }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-repetition ratios of paired runs (measured side by side), summarised."""
    return summary([a / b for a, b in zip(numerators, denominators, strict=True) if b > 0], 3)


# ---- processes ------------------------------------------------------------------------------


def wait_port(
    port: int, timeout_s: float = 10.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout_s} s")


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: the process we started, by its own handle."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def proc_status_kb(pid: int, key: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` figure in kB (VmRSS, VmHWM ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


# ---- the local target ------------------------------------------------------------------------

_NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
user root;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    server {{
        listen {host}:{port} backlog=4096 reuseport;
        location = /json {{ default_type application/json; return 200 '{{"status":"ok","version":"1.0.0"}}'; }}
        location = /api/monitoring/health {{ default_type application/json; return 200 '{{"status":"ok","version":"1.0.0"}}'; }}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


@dataclass
class LocalTarget:
    """A fast HTTP server on 127.0.0.1 answering 200 ``ok`` on every path."""

    kind: str  # "nginx" or "raw-asyncio"
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def local_target(prefer: str = "auto", workers: int = 1) -> Iterator[LocalTarget]:
    """nginx when installed (``apt-get install nginx-light``), else a raw asyncio server process."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-target-") as tmp:
        if prefer in ("auto", "nginx") and nginx:
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(workers=workers, tmp=tmp, host=HOST, port=port))
            cmd = [nginx, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"]
            kind = "nginx"
        elif prefer == "nginx":
            raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")
        else:
            script = Path(__file__).with_name("_target_server.py")
            cmd = [sys.executable, str(script), "--port", str(port)]
            kind = "raw-asyncio"
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_port(port, proc=proc)
            yield LocalTarget(kind, port, proc)
        finally:
            stop_process(proc)


# ---- a lean HTTP/1.1 driver (keep-alive, one connection per worker) --------------------------


async def drive(
    port: int,
    paths: Sequence[str],
    concurrency: int,
    timeout_s: float = 60.0,
    accept: Callable[[bytes], bool] | None = None,
) -> tuple[float, list[int], list[float]]:
    """GET every path with ``concurrency`` keep-alive connections; (seconds, statuses, latencies).

    With ``accept``, a body it refuses counts as status 0 (e.g. ``probe_success 0``).

    Deliberately minimal (no pool, no parsing beyond Content-Length), so that what it
    measures is the server: it is the "as Prometheus drives it" client for the exporter
    and the load test of the target server.
    """
    queue = list(reversed(paths))
    statuses: list[int] = []
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while queue:
                path = queue.pop()
                start = time.perf_counter()
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                body = await _read_body(reader, head)
                latencies.append(time.perf_counter() - start)
                statuses.append(status if accept is None or accept(body) else 0)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    start = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(paths)))))
    return time.perf_counter() - start, statuses, latencies


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body after ``head``: Content-Length or chunked (Go servers chunk bigger answers)."""
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if match is not None:
        return await reader.readexactly(int(match.group(1)))
    if not re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        raise RuntimeError(f"neither Content-Length nor chunked in {head[:200]!r}")
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from the servers used here
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def wrk_rps(url: str, connections: int, seconds: float, threads: int = 1) -> float | None:
    """Requests/s from ``wrk`` (None when wrk is not installed)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    return float(match.group(1)) if match else None


def server_capacity(port: int, url: str, quick: bool) -> dict[str, Any]:
    """A short load test of the target server: it must not be the bottleneck."""
    rps = wrk_rps(url + "/health", 100, 1 if quick else 3)
    n = 2000 if quick else 20000
    seconds, statuses, _ = asyncio.run(drive(port, ["/health"] * n, 100))
    assert all(s == 200 for s in statuses), "target server answered non-200"
    return {
        "wrk_c100_rps": rps,
        "python_driver_c100_rps": round(n / seconds),
        "method": "wrk -t1 -c100 (when installed) and the bench's raw asyncio driver, keep-alive",
    }


# ---- the daemon's own work in a cycle -----------------------------------------------------------


class TimedRecord:
    """The time our own code spends recording results (log, store, export), summed over
    the calls: ``Daemon.record``, and the writer's flushes, which `monitor run` makes at
    the end of each turn of the event loop (the commit of the turn's cycles and their log
    lines; see :func:`time_recording`). A call made inside another is counted once."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call``, timed into this total."""

        def timed(*a: Any, **kw: Any) -> Any:
            if self._depth:
                return call(*a, **kw)
            self._depth += 1
            start = time.perf_counter()
            try:
                return call(*a, **kw)
            finally:
                self._depth -= 1
                self.seconds += time.perf_counter() - start

        return timed


def time_recording(daemon: Any, *, per_turn: bool = True) -> TimedRecord:
    """Time ``daemon``'s recording of results: its ``record`` and its writer's flushes.

    ``per_turn``: the daemon commits per turn of the running loop, as ``Daemon.run``
    makes it; otherwise each ``record`` commits before it returns (one transaction per
    target result, the most a cycle can cost).
    """
    if per_turn:
        daemon.commit_per_turn()
    timer = TimedRecord()
    daemon.record = timer.wrap(daemon.record)
    daemon.writer.flush = timer.wrap(daemon.writer.flush)
    return timer


class DaemonCycle:
    """``monitor run``'s path as production runs it: one long-lived daemon with a real
    SQLite store, the journal sink, metrics and JSON log lines (rendered to where
    :func:`null_logging` sends them), calling ``Daemon.probe`` for every target. Before
    each cycle its pool is emptied (at the 15-minute cadence every connection has
    expired by then), so each cycle connects anew while the daemon's own state is the
    steady one. The time it spends recording results is measured apart
    (:func:`time_recording`): the cycle minus it is the run's probe path."""

    def __init__(self, settings: Any, state_path: Path) -> None:
        from monitor.daemon.daemon import Daemon
        from monitor.heap import freeze_startup_objects
        from monitor.incidents.channels.journal import JournalChannel
        from monitor.metrics import Metrics
        from monitor.probing.prober import KEEPALIVE_S, Prober
        from monitor.probing.transport import AiohttpTransport
        from monitor.store.sqlite import SqliteStore

        conc = settings.monitor.concurrency
        self._targets = [target.name for target in settings.targets]
        self._transport = AiohttpTransport(True, max_connections=conc, keepalive_s=KEEPALIVE_S)
        self._store = SqliteStore(state_path)
        self._prober = Prober(settings.monitor, transport=self._transport)
        self.daemon = Daemon(
            settings,
            store=self._store,
            channels=[JournalChannel()],
            metrics=Metrics(),
            prober=self._prober,
        )
        # as `monitor run` does once its daemon is built
        freeze_startup_objects()
        self._recording = time_recording(self.daemon)

    async def cycle(self) -> tuple[float, float, list[Any]]:
        """One cycle: its seconds, the seconds of it spent recording, the results."""
        await self._transport.aclose()  # the pool empties; the session is made anew
        recorded_before = self._recording.seconds
        start = time.perf_counter()
        results = await asyncio.gather(*(self.daemon.probe(name) for name in self._targets))
        seconds = time.perf_counter() - start
        return seconds, self._recording.seconds - recorded_before, list(results)

    async def aclose(self) -> None:
        await self._prober.aclose()
        self._store.close()


# ---- the floor: bare aiohttp --------------------------------------------------------------------


async def aiohttp_gets(session: Any, urls: Sequence[str], concurrency: int) -> list[int]:
    """Each URL's status, GETs through ``session`` at most ``concurrency`` at a time, bodies
    read: what Python does at best, the bar's denominator."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> int:
        async with gate, session.get(url) as response:
            await response.read()
            return int(response.status)

    return list(await asyncio.gather(*(one(url) for url in urls)))


# ---- settings ----------------------------------------------------------------------------------


def target_settings(
    base_url: str, count: int, state_path: Path, per_target: int = 1, **monitor: object
) -> Any:  # -> monitor.config.Settings (imported late: import cost is measured elsewhere)
    """Settings with ``count`` checks on the local server, ``per_target`` to a target."""
    from monitor.config import load_settings

    targets = [
        {
            "name": f"t{t:05d}",
            "url": base_url,
            "checks": [
                {"name": "health" if per_target == 1 else f"h{i:05d}", "path": f"/t{i:05d}/health"}
                for i in range(t * per_target, min(count, (t + 1) * per_target))
            ],
        }
        for t in range(-(-count // per_target))
    ]
    base: dict[str, object] = {"state_path": str(state_path), "jitter": 0}
    base.update(monitor)
    return load_settings(None, monitor=base, targets=targets)


def null_logging() -> None:
    """The daemon's JSON log pipeline, writing to /dev/null (rendering cost kept, I/O not)."""
    from monitor.logs import configure

    configure("json", "INFO", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- profiles ------------------------------------------------------------------------------------

_CATEGORIES = (
    ("/monitor/store/", "monitor.store (+ sqlite3 calls)"),
    ("/monitor/", "monitor (our code, other)"),
    ("/httpcore/", "httpcore"),
    ("/httpx_aiohttp/", "httpx-aiohttp"),
    ("/httpx/", "httpx"),
    ("/anyio/", "anyio"),
    ("/sniffio/", "anyio"),
    ("/h11/", "h11"),
    ("/aiohttp/", "aiohttp"),
    ("/structlog/", "logging (structlog + stdlib)"),
    ("/logging/", "logging (structlog + stdlib)"),
    ("/prometheus_client/", "prometheus_client"),
    ("/pydantic", "pydantic"),
    ("/json/", "json"),
    ("/asyncio/", "asyncio event loop"),
    ("/selectors.py", "asyncio event loop"),
    ("/socket.py", "socket"),
    ("/ssl.py", "ssl"),
)


def _category(path: str | None) -> str | None:
    if not path or path.startswith("<"):
        return None  # built-in: charged to the caller's category
    for needle, name in _CATEGORIES:
        if needle in path:
            return name
    return "other"


def profile_shares(profiler: Any, top: int = 15) -> dict[str, Any]:
    """Self time of a pyinstrument session by package, and the hottest frames.

    Built-in functions (``sqlite3.Connection.execute``, ``socket.send``) are charged to
    the package that called them, so ``monitor.store`` includes SQLite's own time.
    """
    session = profiler.last_session
    root = session.root_frame()
    shares: dict[str, float] = {}
    frames: dict[str, float] = {}

    def walk(frame: Any, inherited: str, parent_key: str) -> None:
        category = _category(frame.file_path) or inherited
        if frame.function == "[self]" or frame.is_synthetic:
            key = parent_key  # pyinstrument's "[self]" child: its parent's own time
        elif frame.file_path and not frame.file_path.startswith("<"):
            key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        else:
            key = f"{frame.function} (built-in, called from {inherited})"
        shares[category] = shares.get(category, 0.0) + frame.total_self_time
        frames[key] = frames.get(key, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child, category, key)

    if root is not None:
        walk(root, "other", "root")
    total = sum(shares.values()) or 1.0
    return {
        "duration_s": round(session.duration, 3),
        "cpu_s": round(session.cpu_time, 3),
        "share_by_package": {
            k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])
        },
        "top_self_frames": [
            {"frame": k, "share": round(v / total, 3)}
            for k, v in sorted(frames.items(), key=lambda kv: -kv[1])[:top]
        ],
    }
