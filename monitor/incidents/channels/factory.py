"""The channels a configuration asks for."""

from __future__ import annotations

from monitor.config import Settings
from monitor.config.schema import ChannelConfig
from monitor.incidents.channels.base import Channel, NoticeChannel
from monitor.incidents.channels.journal import JournalChannel


def configured_channels(settings: Settings) -> list[Channel]:
    """GitHub issues when a token and repository are configured, else the journal; then
    every ``[[channels]]`` entry.

    The first channel is the incident tracker whose issues the status page links.
    """
    primary: Channel
    if settings.github.active:
        # PyGithub costs ~20 MB: imported only when used
        from monitor.incidents.channels.github import GithubChannel

        primary = GithubChannel(settings.github)
    else:
        primary = JournalChannel()
    return [primary, *(paging_channel(c, settings) for c in settings.channels)]


def paging_channel(config: ChannelConfig, settings: Settings) -> NoticeChannel:
    """The channel one ``[[channels]]`` entry describes (each type imported when used)."""
    public = settings.status_page.public_url
    status_url = f"{public}/status" if public else None
    if config.type == "pagerduty":
        from monitor.incidents.channels.pagerduty import PagerDutyChannel

        return PagerDutyChannel(config, status_url=status_url)
    if config.type == "slack":
        from monitor.incidents.channels.slack import SlackChannel

        return SlackChannel(config, status_url=status_url)
    if config.type == "webhook":
        from monitor.incidents.channels.webhook import WebhookChannel

        return WebhookChannel(config, status_url=status_url)
    if config.type == "email":
        from monitor.incidents.channels.email import EmailChannel

        return EmailChannel(config, status_url=status_url)
    from monitor.incidents.channels.alertmanager import AlertmanagerChannel

    return AlertmanagerChannel(config, status_url=status_url)
