"""``monitor maintenance start|end``: the deploy workflow's window, through the daemon's API.

The daemon decides who is paged, so the window goes to it: ``POST`` or ``DELETE``
``/api/maintenance`` on ``--monitor-url`` (default ``$MONITOR_URL``, else the local
``monitor.listen``), with the bearer token from ``MONITOR_API_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

import httpx

from monitor.config import Settings, split_listen

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
TIMEOUT_S = 15.0


def monitor_url(given: str | None, settings: Settings, environ: Mapping[str, str]) -> str:
    """``--monitor-url``, else ``$MONITOR_URL``, else the local listener."""
    if given:
        return given.rstrip("/")
    if environ.get("MONITOR_URL"):
        return environ["MONITOR_URL"].rstrip("/")
    host, port = split_listen(settings.monitor.listen)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listener on every address: ask locally
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def run_maintenance(
    action: str,
    base_url: str,
    *,
    target: str,
    duration_s: float | None,
    reason: str | None,
    token: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Start or end a window; print what the daemon answered."""
    if not token:
        err.write("monitor: maintenance: set MONITOR_API_TOKEN (the daemon's API token)\n")
        return EXIT_CONFIG
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/api/maintenance"
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            if action == "start":
                body = {"targets": [target], "duration": duration_s, "reason": reason}
                response = client.post(url, json=body, headers=headers)
            else:
                response = client.delete(url, params={"target": target}, headers=headers)
    except httpx.HTTPError as exc:
        err.write(f"monitor: maintenance: cannot reach {base_url}: {type(exc).__name__}\n")
        return EXIT_FAILED
    return _answer(action, target, response, out, err)


def _answer(action: str, target: str, response: httpx.Response, out: TextIO, err: TextIO) -> int:
    data = _json(response)
    if response.status_code == 405:
        err.write("monitor: maintenance: the daemon has no API token configured (405)\n")
        return EXIT_FAILED
    if response.status_code >= 400:
        message = data.get("error") if isinstance(data.get("error"), str) else response.text[:200]
        err.write(f"monitor: maintenance: {response.status_code}: {message}\n")
        return EXIT_FAILED
    if action == "start":
        out.write(
            f"maintenance window for {target} until {data.get('ends_at')}: {data.get('reason')}\n"
        )
    else:
        out.write(f"maintenance ended for {target} ({data.get('ended', 0)} window(s))\n")
    return EXIT_OK


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
