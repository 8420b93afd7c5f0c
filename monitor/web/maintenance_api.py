"""``/api/maintenance``: the deploy workflow opens and ends maintenance windows.

* ``GET`` lists the windows open now and those of the next day (public, like
  ``/status``, which shows them);
* ``POST`` ``{"targets": [...], "duration": "15m", "reason": "deploy abc123"}`` opens one;
* ``DELETE ?target=NAME`` ends the ad-hoc windows the target is in.

Writes need ``Authorization: Bearer $MONITOR_API_TOKEN``. Without a configured token
they do not exist (405); a wrong or missing token gets 401 and changes nothing. The
token is compared in constant time and never logged. The web never writes the store
itself: the daemon's :class:`MaintenanceControl` does.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.config import Settings, parse_duration
from monitor.figures.maintenance import Window
from monitor.logs import get_logger
from monitor.store.base import StoreError

log = get_logger("monitor.maintenance")
MAX_DURATION_S = 7 * 86400.0  # an ad-hoc window longer than a week is a typo
MAX_REASON = 200


class MaintenanceControl(Protocol):
    """What the API asks of the daemon."""

    settings: Settings

    def maintenance_windows(self) -> list[Window]:
        """Windows open now or starting within a day."""
        ...

    def start_maintenance(self, targets: Sequence[str], duration_s: float, reason: str) -> Window:
        """Open an ad-hoc window now."""
        ...

    def end_maintenance(self, target: str) -> int:
        """End the ad-hoc windows ``target`` is in; how many."""
        ...


def window_json(window: Window) -> dict[str, Any]:
    """A window as the API and the status page show it."""
    return {
        "id": window.id,
        "targets": None if window.targets is None else sorted(window.targets),
        "starts_at": window.start.isoformat(),
        "ends_at": window.end.isoformat(),
        "reason": window.reason,
        "source": window.source,
    }


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def maintenance_routes(control: MaintenanceControl) -> list[Route]:
    """The routes; the write methods only when ``api_token`` is configured."""
    token = control.settings.api_token
    known = [t.name for t in control.settings.targets]

    async def listing(_: Request) -> Response:
        windows = await run_in_threadpool(control.maintenance_windows)
        return JSONResponse({"windows": [window_json(w) for w in windows]})

    async def start(request: Request) -> Response:
        try:
            _authorise(request, token)
            targets, duration_s, reason = _parse_start(await request.body(), known)
            window = await run_in_threadpool(control.start_maintenance, targets, duration_s, reason)
        except _Refusal as exc:
            return _refuse(exc, request)
        except StoreError as exc:
            log.error("maintenance window not stored", error=str(exc))
            return JSONResponse({"error": "the state database refused the window"}, 503)
        return JSONResponse(window_json(window), 201)

    async def end(request: Request) -> Response:
        try:
            _authorise(request, token)
            target = request.query_params.get("target", "")
            if target not in known:
                raise _Refusal(400, f"target: expected one of {', '.join(known)}")
            ended = await run_in_threadpool(control.end_maintenance, target)
        except _Refusal as exc:
            return _refuse(exc, request)
        except StoreError as exc:
            log.error("maintenance window not ended", error=str(exc))
            return JSONResponse({"error": "the state database refused the change"}, 503)
        return JSONResponse({"target": target, "ended": ended})

    methods: list[Route] = [Route("/api/maintenance", listing, methods=["GET"])]
    if token is not None:
        methods += [
            Route("/api/maintenance", start, methods=["POST"]),
            Route("/api/maintenance", end, methods=["DELETE"]),
        ]
    return methods


def _authorise(request: Request, token: Any) -> None:
    expected = f"Bearer {token.get_secret_value()}".encode()
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise _Refusal(401, "a valid bearer token is required (MONITOR_API_TOKEN)")


def _parse_start(body: bytes, known: Sequence[str]) -> tuple[list[str], float, str]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _Refusal(400, "body: expected JSON") from None
    if not isinstance(data, dict):
        raise _Refusal(400, "body: expected a JSON object")
    targets = data.get("targets", [data["target"]] if "target" in data else None)
    if not isinstance(targets, list) or not targets or not all(t in known for t in targets):
        raise _Refusal(400, f"targets: expected a list of {', '.join(known)}")
    try:
        duration_s = parse_duration(data.get("duration"))
    except (TypeError, ValueError):
        raise _Refusal(400, "duration: expected a duration such as 15m or 900") from None
    if not 0 < duration_s <= MAX_DURATION_S:
        raise _Refusal(400, "duration: between 1 s and 7 days")
    reason = data.get("reason", "maintenance")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise _Refusal(400, f"reason: a text of 1 to {MAX_REASON} characters")
    return [str(t) for t in targets], duration_s, reason.strip()


def _refuse(exc: _Refusal, request: Request) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 401:
        log.warning(
            "maintenance API: refused", reason="bad or missing token", path=request.url.path
        )
    return JSONResponse({"error": str(exc)}, exc.status, headers=headers)
