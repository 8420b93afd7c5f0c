"""Which store a configuration asks for."""

from __future__ import annotations

from monitor.config import Settings
from monitor.store.base import Store


def open_store(settings: Settings) -> Store:
    """PostgreSQL when ``monitor.database_url`` (or ``DATABASE_URL``) names one; else
    SQLite at ``monitor.state_path``.

    Raises :class:`~monitor.store.base.StoreError` when it cannot be opened.
    """
    url = settings.monitor.database_url
    if url is not None:
        # imported here: a single instance on SQLite never loads the driver
        from monitor.store.postgres import PostgresStore

        return PostgresStore(url.get_secret_value())
    from monitor.store.sqlite import SqliteStore

    return SqliteStore(settings.monitor.state_path)
