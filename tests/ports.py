"""Ports for the servers a test starts, outside the range the kernel gives outgoing sockets.

A port the kernel picks for ``bind(0)`` comes from the ephemeral range (32768-60999 on
Linux), the one every outgoing connection draws its local port from too. Between taking
such a port and the daemon binding it (a second or so, the time a process takes to
start), one of the many probes and GitHub calls the suite makes could take it as its
local port, and the daemon would fail with "address already in use" (seen once in a
full run). A port below the range is never handed to an outgoing socket.
"""

from __future__ import annotations

import random
import socket

HOST = "127.0.0.1"
LOW, HIGH = 20_000, 32_000  # below Linux's default ip_local_port_range
_given: set[int] = set()  # never the same port twice in one test run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, and that no outgoing
    connection will take."""
    for _ in range(200):
        port = random.randint(LOW, HIGH)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue  # someone listens there, or a socket still lingers on it
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {LOW} and {HIGH} after 200 tries")
