"""Reading GitHub for the KPIs: conditional, paginated GETs through PyGithub's requester.

Every first page is asked for with the ETag of its last reading (``If-None-Match``):
a 304 costs no rate limit and says nothing changed, so nothing behind it is read
again. The ETags are handed back to the caller, which stores them with the records
they describe, in one transaction: a sync that dies half-way leaves the old ETags,
and the next one reads again what was not stored.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from github import Auth, Github

from monitor.config import GithubSection
from monitor.kpis.records import ETAG
from monitor.store.base import GithubRecord

_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="next"')
RATE_LIMIT_FALLBACK_S = 60.0  # a 403/429 that names no reset: wait this long


class GithubUnavailable(Exception):
    """GitHub did not answer usefully: the sync stops, and the figures say how old
    their data is. ``retry_at`` is when GitHub said to come back (a rate limit)."""

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class NotFound(Exception):
    """A 404: the object is not there (a commit lost to a force-push, an unknown id)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a reply: its data (None when unchanged, a 304) and the next page."""

    data: Any
    next_url: str | None
    not_modified: bool = False


class GithubApi:
    """GETs against one repository, counting requests and remembering ETags."""

    def __init__(
        self,
        settings: GithubSection,
        etags: Mapping[str, str],
        clock: Callable[[], datetime],
        *,
        client: Github | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        if settings.token is None or settings.repository is None:
            raise ValueError("reading GitHub needs github.token and github.repository")
        self.repository = settings.repository
        self._client = client or Github(
            auth=Auth.Token(settings.token.get_secret_value()),
            base_url=settings.api_url,
            timeout=max(1, int(settings.timeout)),  # PyGithub asserts an int
            retry=None,  # the next sync is the retry
            user_agent="fly-monitor",
            per_page=100,
            seconds_between_requests=None,
        )
        self._known = dict(etags)
        self._fresh: dict[str, str] = {}
        self._clock = clock
        self._stopping = stopping or threading.Event()  # set: no further request goes out
        self.requests = 0
        self.not_modified = 0

    @property
    def stopping(self) -> bool:
        """The monitor is shutting down: no further request goes out."""
        return self._stopping.is_set()

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def fresh_keys(self) -> set[str]:
        """The readings whose new ETag would be stored (see :meth:`forget`)."""
        return set(self._fresh)

    def forget(self, keys: set[str] | None = None, *, prefix: str | None = None) -> None:
        """Drop new ETags (``keys``, or those of ``prefix``): a reading whose consequences
        were not stored must be read in full again, not answered 304."""
        for key in list(self._fresh):
            if (keys is not None and key in keys) or (prefix and key.startswith(prefix)):
                del self._fresh[key]

    def new_etags(self, now: datetime) -> list[GithubRecord]:
        """The ETags read since this reader was made, to store with what they describe."""
        return [GithubRecord(ETAG, url, now, {"etag": tag}) for url, tag in self._fresh.items()]

    def get(
        self,
        path: str,
        params: Mapping[str, object] | None = None,
        *,
        conditional: bool = False,
        refresh: bool = False,
    ) -> Page:
        """One GET of ``path`` (``/repos/...`` or a ``next`` link); raises
        :class:`NotFound` or :class:`GithubUnavailable`.

        ``conditional`` sends the ETag of the last reading and keeps the new one;
        ``refresh`` reads in full all the same (keeping the new ETag)."""
        if self._stopping.is_set():  # a first sync is thousands of requests: stop between two
            raise GithubUnavailable("the monitor is stopping")
        query = {k: str(v) for k, v in (params or {}).items()}
        key = path + ("?" + "&".join(f"{k}={v}" for k, v in sorted(query.items())) if query else "")
        headers = {}
        if conditional and not refresh and key in self._known:
            headers["If-None-Match"] = self._known[key]
        self.requests += 1
        try:
            status, raw_headers, body = self._client.requester.requestJson(
                "GET", path, parameters=query or None, headers=headers
            )
        except Exception as exc:  # network, TLS, timeout: translated once, here
            raise GithubUnavailable(f"GitHub unreachable: {type(exc).__name__}") from exc
        reply_headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
        if status == 304:
            self.not_modified += 1
            return Page(None, None, not_modified=True)
        if status == 404:
            raise NotFound(_message(body) or f"{path}: not found")
        if status >= 400:
            raise GithubUnavailable(
                f"GitHub answered {status}: {_message(body)}"[:200],
                self._retry_at(status, reply_headers),
            )
        try:
            data = json.loads(body) if body else None
        except ValueError as exc:
            raise GithubUnavailable(f"GitHub sent malformed JSON for {path}") from exc
        etag = reply_headers.get("etag")
        if conditional and etag:
            self._fresh[key] = etag
        link = _NEXT_LINK.search(reply_headers.get("link", ""))
        return Page(data, link[1] if link else None)

    def _retry_at(self, status: int, headers: Mapping[str, str]) -> datetime | None:
        if status not in (403, 429):
            return None
        now = self._clock()
        if headers.get("retry-after", "").isdigit():
            return now + timedelta(seconds=int(headers["retry-after"]))
        if (
            headers.get("x-ratelimit-remaining") == "0"
            and headers.get("x-ratelimit-reset", "").isdigit()
        ):
            return datetime.fromtimestamp(int(headers["x-ratelimit-reset"]), UTC)
        return now + timedelta(seconds=RATE_LIMIT_FALLBACK_S) if status == 429 else None


def _message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""
