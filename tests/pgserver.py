"""A real PostgreSQL server for the state tests: Debian's ``postgresql`` binaries, a data
folder made by ``initdb`` in a temporary folder, run by pg_ctl as the unprivileged
``postgres`` user and reached over a Unix socket only (no TCP port is opened)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


def available() -> str | None:
    """Why a server cannot be run here, or None."""
    if not (PG_BIN / "initdb").exists():
        return "Debian's postgresql (15) is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"no {USER!r} user to run PostgreSQL as (it refuses to run as root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket = root / "socket"
        self._names = itertools.count(1)

    def _as_postgres(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """As the ``postgres`` user when we are root (PostgreSQL refuses root), else as we are."""
        prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> None:
        self.socket.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, USER)
            shutil.chown(self.socket, USER)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "vmaudit",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.root / "server.log"),
            "-o",
            f"-c listen_addresses='' -k {self.socket} -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "immediate",
            "-w",
            "stop",
            check=False,
        )

    def url(self, database: str) -> str:
        return f"postgresql://vmaudit@{quote(str(self.socket), safe='')}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        name = f"state{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="vmaudit-pg-"))
    server = Server(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def query(ref: Path | str, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` with the backend's own client (not through StateDB); rows back."""
    if isinstance(ref, str):
        import psycopg

        with psycopg.connect(ref, autocommit=True) as conn:
            cursor = conn.execute(sql)  # type: ignore[call-overload]
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    import sqlite3

    conn = sqlite3.connect(ref, isolation_level=None)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()
