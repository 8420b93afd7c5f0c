"""The status routes: ``/status``, ``/api/status``, the badges and the page's stylesheet.

Handlers read the live view on the event loop (where the daemon writes it) and
build the snapshot in a worker thread, so a page load never blocks a probe.

The page and the badges (Jinja2 and the templates, ~2 MB and ~15 ms) load on the
first request that renders one, in a worker thread too: Prometheus, ``/api/status``
and the release gates never ask for HTML, so a daemon nobody looks at never holds them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from monitor.logs import get_logger
from monitor.store.base import StoreError
from monitor.web.formats import percent
from monitor.web.snapshot import UPTIME_WINDOWS, SnapshotCache, State, visible_targets
from monitor.web.source import StatusSource

__all__ = ["BADGE_MAX_AGE_S", "STYLESHEET_HEADERS", "status_routes"]

BADGE_MAX_AGE_S = 60
STYLESHEET_HEADERS: Mapping[str, str] = {
    # the URL carries the file's hash: a new stylesheet is a new URL, so this one never changes
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}
"""The headers of the stylesheet at its current hash."""

log = get_logger("monitor.status")
PAGE = "monitor.web.page"
BADGES = "monitor.web.badges"


async def _load(module: str) -> None:
    """Import ``module`` in a worker thread the first time a request needs it, so the
    import never holds up the event loop (and a probe in flight)."""
    if module not in sys.modules:
        await run_in_threadpool(importlib.import_module, module)


def _error(status: int, message: str, request: Request) -> JSONResponse:
    return JSONResponse({"error": message, "path": request.url.path}, status)


def _render_page(snapshot: Mapping[str, Any]) -> str:
    from monitor.web.page import render_page  # loaded by _load before the worker runs this

    return render_page(snapshot)


async def _unavailable_page(message: str) -> HTMLResponse:
    await _load(PAGE)
    from monitor.web.page import PAGE_HEADERS, render_unavailable

    return HTMLResponse(
        render_unavailable(message), 503, headers={**PAGE_HEADERS, "Retry-After": "5"}
    )


async def stylesheet(request: Request) -> Response:
    """The page's stylesheet at its current hash; any other hash is a 404.

    A stale hash comes from a page rendered by another version of the monitor
    (one open across a deploy, or served by an instance not yet replaced).
    Answering it with this version's bytes would break the promise of the URL
    (these exact bytes, forever) and could leave an immutable mismatch in a
    cache; redirecting would hand that page a stylesheet written for other
    markup. The page reads fine unstyled, and it reloads itself within
    ``refresh_s``, getting the current URL. The 404 is not cached, so the
    right file is fetched as soon as that URL is current again.
    """
    await _load(PAGE)
    from monitor.web.page import STYLESHEET, STYLESHEET_DIGEST

    if request.path_params["digest"] != STYLESHEET_DIGEST:
        response = _error(404, "no such stylesheet", request)
        response.headers["Cache-Control"] = "no-store"
        return response
    return Response(STYLESHEET, media_type="text/css; charset=utf-8", headers=STYLESHEET_HEADERS)


def status_routes(source: StatusSource, *, cache: SnapshotCache | None = None) -> list[Route]:
    """``/status``, ``/api/status``, the badges and the stylesheet, for ``create_app(extra_routes=...)``.

    None at all when ``status_page.enabled`` is false: the paths then answer 404.
    """
    if not source.settings.status_page.enabled:
        return []
    cache = cache or SnapshotCache(source)
    shown = {t.name for t in visible_targets(source.settings)}

    async def fresh_snapshot() -> dict[str, Any]:
        # the live view is read here, on the event loop, where the daemon writes it
        return await run_in_threadpool(cache.snapshot, source.live_targets(), source.now())

    async def page(_: Request) -> Response:
        await _load(PAGE)
        from monitor.web.page import PAGE_HEADERS

        try:
            body = await run_in_threadpool(
                cache.page, source.live_targets(), source.now(), _render_page
            )
        except StoreError as exc:
            log.error("status page: cannot read the state database", error=str(exc))
            return await _unavailable_page("The monitor cannot read its state database right now.")
        return HTMLResponse(body, headers=dict(PAGE_HEADERS))

    async def api(request: Request) -> Response:
        try:
            snapshot = await fresh_snapshot()
        except StoreError as exc:
            log.error("status API: cannot read the state database", error=str(exc))
            return _error(503, "cannot read the state database", request)
        return JSONResponse(
            snapshot,
            headers={
                "Cache-Control": "no-cache",
                "Access-Control-Allow-Origin": "*",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def badge(
        request: Request, target: str, make: Callable[[Mapping[str, Any]], Response]
    ) -> Response:
        if target not in shown:  # only configured, shown names ever match: no path games
            return _error(404, "no such target", request)
        await _load(BADGES)
        try:
            snapshot = await fresh_snapshot()
        except StoreError:
            return _error(503, "cannot read the state database", request)
        entry = next(t for t in snapshot["targets"] if t["name"] == target)
        return make(entry)

    def svg(text: str) -> Response:
        return Response(
            text,
            media_type="image/svg+xml; charset=utf-8",
            headers={
                "Cache-Control": f"max-age={BADGE_MAX_AGE_S}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def state_badge(request: Request) -> Response:
        def make(t: Mapping[str, Any]) -> Response:
            from monitor.web.badges import badge_svg, state_colour  # loaded by badge() first

            text = t["state_text"].lower()
            return svg(badge_svg(t["name"], text, state_colour(State(t["state"]))))

        return await badge(request, request.path_params["target"], make)

    async def uptime_badge(request: Request) -> Response:
        target = request.path_params["target"]
        window = request.query_params.get("window", "30d")
        if target in shown and window not in UPTIME_WINDOWS:
            return _error(400, f"window must be one of {', '.join(UPTIME_WINDOWS)}", request)

        def make(t: Mapping[str, Any]) -> Response:
            from monitor.web.badges import badge_svg, uptime_colour  # loaded by badge() first

            ratio = t["uptime"][window]["ratio"]
            message = "no data" if ratio is None else percent(ratio)
            return svg(badge_svg(f"{t['name']} {window}", message, uptime_colour(ratio)))

        return await badge(request, target, make)

    return [
        Route("/status", page, methods=["GET"]),
        Route("/api/status", api, methods=["GET"]),
        Route("/badge/{target}.svg", state_badge, methods=["GET"]),
        Route("/badge/{target}/uptime.svg", uptime_badge, methods=["GET"]),
        Route("/static/status.{digest}.css", stylesheet, methods=["GET"]),
    ]
