"""Shared fixtures: real local servers for targets and for the GitHub API, a real
PostgreSQL cluster for the store, and the daemon as a subprocess."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.daemon_process import Daemons
from tests.pgserver import MISSING, PostgresServer, postgres_binaries

pytest_plugins = ["tests.targets", "tests.fakegithub"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session: initdb costs seconds, a database
    does not. Skips without the binaries, except in CI (``CI=true``), which installs them."""
    bin_dir = postgres_binaries()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI must install it")
        pytest.skip(MISSING)
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database for this test alone, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.start()  # a test before may have stopped or killed it
    yield postgres_server.create_database(name)
    with contextlib.suppress(psycopg.Error, RuntimeError):
        postgres_server.start()  # likewise this test: the drop needs a server
        postgres_server.drop_database(name)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Daemon subprocesses (``python -m monitor run``), every one killed at teardown."""
    with Daemons.session(tmp_path) as started:
        yield started
