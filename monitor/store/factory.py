"""Which store a configuration asks for."""

from __future__ import annotations

from monitor.config import Settings
from monitor.store.base import Store


def open_store(settings: Settings) -> Store:
    """The configured store: SQLite at ``monitor.state_path``.

    Raises :class:`~monitor.store.base.StoreError` when it cannot be opened.
    """
    from monitor.store.sqlite import SqliteStore

    return SqliteStore(settings.monitor.state_path)
