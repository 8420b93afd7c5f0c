"""A fast raw asyncio HTTP/1.1 server for benchmarks where nginx is not installed.

Answers every GET with ``200 ok`` (``/json`` and ``/api/...`` with a small JSON document), keep-alive,
on 127.0.0.1 only. Runs in its own process so it never shares the measured event loop.
Stops on SIGTERM, or by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
JSON_BODY = b'{"status":"ok","version":"1.0.0"}'
JSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(JSON_BODY)).encode()
    + b"\r\n\r\n"
    + JSON_BODY
)


class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 1 << 20:  # a head that never ends: not our client
            assert self.transport is not None
            self.transport.close()
            return
        replies = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            replies.append(JSON if head.startswith((b"GET /json ", b"GET /api/")) else OK)
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))


async def main(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=4096, reuse_address=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    server.close()


if __name__ == "__main__":
    args = argparse.ArgumentParser()
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--max-seconds", type=float, default=1800.0)
    ns = args.parse_args()
    asyncio.run(main(ns.port, ns.max_seconds))
