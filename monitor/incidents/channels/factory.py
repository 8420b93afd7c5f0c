"""The channels a configuration asks for."""

from __future__ import annotations

from monitor.config import Settings
from monitor.incidents.channels.base import Channel
from monitor.incidents.channels.journal import JournalChannel


def configured_channels(settings: Settings) -> list[Channel]:
    """GitHub issues when a token and repository are configured, else the journal.

    The first channel is the incident tracker whose issues the status page links.
    """
    if settings.github.active:
        # PyGithub costs ~20 MB: imported only when used
        from monitor.incidents.channels.github import GithubChannel

        return [GithubChannel(settings.github)]
    return [JournalChannel()]
