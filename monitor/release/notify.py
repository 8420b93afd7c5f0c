"""``monitor notify``: a one-off message to configured channels, for release workflows.

``monitor notify --channel NAME --title T --body B`` sends now, outside the outbox
(there is no incident to attach it to, and a workflow step wants the answer now): it
exits 0 only when every named service accepted the message, and names the ones that
did not. ``monitor notify test --channel NAME`` sends a clearly marked test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from monitor.config import Settings
from monitor.config.loading import channel_secret_problems
from monitor.incidents.channels.base import ChannelError, Notice
from monitor.incidents.channels.factory import paging_channel

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
TEST_TITLE = "Test notification from fly-monitor"
TEST_BODY = (
    "This is a test of the {name} channel, sent by `monitor notify test`. Nobody needs to act."
)


def run_notify(
    settings: Settings,
    names: Sequence[str],
    *,
    title: str | None,
    body: str | None,
    severity: str = "info",
    test: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """Send to each channel in ``names``; one line per channel on ``out``."""
    known = {c.name for c in settings.channels}
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none: add [[channels]] to the config"
        err.write(f"monitor: notify: unknown channel {', '.join(unknown)}; configured: {listed}\n")
        return EXIT_CONFIG
    problems = channel_secret_problems(settings, names)
    if problems:
        for problem in problems:
            err.write(f"monitor: notify: {problem}\n")
        return EXIT_CONFIG
    failed = 0
    for name in names:
        notice = _notice(name, title, body, severity, test)
        try:
            channel = paging_channel(settings.channel(name), settings)
        except ValueError as exc:  # a bad secret or setting: named, never quoted
            failed += 1
            out.write(f"{name}: NOT sent (config): {exc}\n")
            continue
        try:
            channel.send_notice(notice)
        except ChannelError as exc:
            failed += 1
            out.write(f"{name}: NOT sent ({exc.reason}): {exc}\n")
            continue
        out.write(f"{name}: sent\n")
    return EXIT_FAILED if failed else EXIT_OK


def _notice(name: str, title: str | None, body: str | None, severity: str, test: bool) -> Notice:
    if test:
        title, body, severity = TEST_TITLE, TEST_BODY.format(name=name), "info"
    text = f"{title}\n{body}"
    # stable for this message: a service that deduplicates sees a repeated step once
    minute = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    digest = hashlib.sha256(f"{name}\n{text}\n{minute}".encode()).hexdigest()[:16]
    return Notice(title or "", body or "", key=f"notice-{digest}", test=test, severity=severity)
