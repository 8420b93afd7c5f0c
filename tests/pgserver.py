"""A real, throwaway PostgreSQL cluster for tests: initdb, pg_ctl, a free port on 127.0.0.1.

A :class:`PostgresServer` creates a cluster in a temporary directory, serves it on
127.0.0.1 only (its unix socket sits in that directory too, never in /var/run), and
removes everything at :meth:`PostgresServer.close`. Tests get a real server, not a
mock, so SQL, transactions and connection failures behave as in production.

Usage::

    with PostgresServer() as server:
        url = server.create_database("t_example")
        ...  # connect to url
        server.restart()  # same port, same data: the URL works again
        server.kill()  # an immediate stop, for fault tests; start() brings it back

The binaries come from Debian's ``postgresql`` package (:func:`postgres_binaries`).
PostgreSQL refuses to run as root, so under root every binary runs as the
``postgres`` system user through ``runuser``; otherwise as the current user.
Durability against power loss is off (``fsync``, ``full_page_writes``): it is speed
a test needs. ``synchronous_commit`` stays on, so a commit that returned survives
:meth:`PostgresServer.kill` (a server crash), as it does in production.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from tests.ports import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
SYSTEM_USER = "postgres"  # the account Debian's package creates, for running as root
DEBIAN_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
TAIL_CHARS = 4000  # how much of the server log an error message carries
MISSING = "PostgreSQL is not installed (Debian package postgresql)"


def postgres_binaries() -> Path | None:
    """The bin directory holding initdb, pg_ctl and postgres, or None if not installed.

    Debian keeps them off PATH under /usr/lib/postgresql/<version>/bin, possibly for
    several versions at once: the newest wins, then whatever ``initdb`` PATH finds.
    """

    def version(bin_dir: Path) -> tuple[int, ...]:
        name = bin_dir.parent.name
        return (
            tuple(int(part) for part in name.split("."))
            if re.fullmatch(r"\d+(\.\d+)*", name)
            else ()
        )

    installed = [d for d in DEBIAN_ROOT.glob("*/bin") if (d / "initdb").is_file() and version(d)]
    if installed:
        return max(installed, key=version)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """One throwaway cluster; :meth:`start` creates it, :meth:`close` removes it.

    :meth:`stop`, :meth:`restart` and :meth:`kill` keep the cluster and its port, so
    a URL taken before them works again after :meth:`start`.
    """

    def __init__(self, bin_dir: Path | None = None, *, timeout_s: float = START_TIMEOUT_S) -> None:
        found = bin_dir or postgres_binaries()
        if found is None:
            raise RuntimeError(MISSING)
        self.bin_dir = found
        self.timeout_s = timeout_s
        self._as_root = os.geteuid() == 0
        self._base: Path | None = None  # temp dir: data/, the unix socket, the log
        self._port = 0
        self._running = False

    # -- lifecycle

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> PostgresServer:
        """Create the cluster on first call, then start it and wait until it takes
        connections; a no-op while running. Returns self."""
        if self._running:
            return self
        if self._base is None:
            self._init_cluster()
        options = [
            "-c", f"listen_addresses={HOST}",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self._base}",
            "-c", "max_connections=100",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        # pg_ctl hands -o to a shell, hence the quoting; running is set first so that a
        # start interrupted half-way (a signal) still gets stopped by close()
        self._running = True
        try:
            self._pg_ctl("start", "-w", "-l", str(self.log_path), "-o", shlex.join(options))
        except BaseException:
            with contextlib.suppress(Exception):
                self.kill()
            self._running = False
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (disconnect clients, checkpoint); the cluster stays for start()."""
        if self._running:
            self._pg_ctl("stop", "-w", "-m", "fast")
            self._running = False

    def restart(self) -> None:
        """Stop fast and start again on the same port, with the same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Immediate stop, as a crash: no checkpoint, clients cut off. start() recovers
        every commit that returned."""
        if self._running:
            self._pg_ctl("stop", "-w", "-m", "immediate")
            self._running = False

    def close(self) -> None:
        """Stop the server if it runs and remove the cluster; idempotent."""
        try:
            self.kill()  # the data goes away anyway: no point in a checkpoint
        finally:
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None
                atexit.unregister(self.close)

    # -- addresses and databases

    @property
    def port(self) -> int:
        """The TCP port, fixed at the first start and kept across restarts."""
        if not self._port:
            raise RuntimeError("PostgresServer has not been started")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped or killed since."""
        return self._running

    @property
    def log_path(self) -> Path:
        """The server's log file, for assertion and error messages."""
        if self._base is None:
            raise RuntimeError("PostgresServer has not been started")
        return self._base / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` as the superuser (trust auth: no password)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its URL."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting whoever still uses it."""
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self) -> str:
        """The end of the server log, or a note that there is none."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except (OSError, RuntimeError) as exc:
            return f"(no server log: {exc})"
        return text[-TAIL_CHARS:]

    # -- internals

    def _admin(self, statement: sql.Composed) -> None:
        """Run one statement that cannot run in a transaction (CREATE/DROP DATABASE)."""
        with psycopg.connect(
            self.url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            conn.execute(statement)

    def _init_cluster(self) -> None:
        """Make the temp dir (the postgres user's, under root), pick the port, run initdb."""
        # Under root, /tmp: every ancestor must be traversable by the postgres user,
        # which a TMPDIR under /root is not.
        base = Path(tempfile.mkdtemp(prefix="pgserver-", dir="/tmp" if self._as_root else None))
        self._base = base
        atexit.register(self.close)  # an interrupted session must not leave a server behind
        if self._as_root:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(base, user.pw_uid, user.pw_gid)
        self._port = free_port()
        self._run(
            "initdb",
            "-D", str(base / "data"),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # the cluster is thrown away: no need to flush it to disk
        )  # fmt: skip

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl on this cluster, bounded by the timeout, both pg_ctl's and ours."""
        assert self._base is not None
        self._run("pg_ctl", "-D", str(self._base / "data"), "-t", str(int(self.timeout_s)), *args)

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL binary (as the postgres user under root); raise with its
        output and the server log's tail when it fails or hangs."""
        assert self._base is not None
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.timeout_s + 10,
                cwd=self._base,  # a directory the postgres user may enter
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{program} {' '.join(args)} did not finish within {self.timeout_s + 10:.0f} s\n"
                f"--- server log ---\n{self.log_tail()}"
            ) from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {done.returncode}\n"
                f"--- output ---\n{(done.stdout + done.stderr)[-TAIL_CHARS:]}\n"
                f"--- server log ---\n{self.log_tail()}"
            )
