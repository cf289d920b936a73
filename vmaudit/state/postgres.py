"""The state database on PostgreSQL (psycopg 3): what differs from the SQLite file.

``StateDB`` speaks one SQL to both: ``?`` placeholders (turned into psycopg's ``%s`` here),
``ON CONFLICT``, ``RETURNING``; the schema's migrations carry a PostgreSQL text beside the
SQLite one (``schema.Migration.postgres``). The guarantees are SQLite's: a write is one
transaction that first takes a database-wide advisory lock, so writers queue one at a time
exactly as ``BEGIN IMMEDIATE`` makes them on the file, waiting at most the busy timeout per
attempt (``lock_timeout``) before the caller's retry; a read is one ``REPEATABLE READ``
snapshot. The schema version and the application id live in ``vmaudit_meta``; a database
with other tables and no such table is another program's and is never written to.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")
META = "vmaudit_meta"


def is_url(ref: str) -> bool:
    return ref.startswith(SCHEMES)


def display(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, ""))


_PLACEHOLDER = re.compile(r"\?")


def _to_psycopg(sql: str) -> str:
    # Our statements hold no '?' or '%' inside literals: every value is a parameter.
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class Cursor:
    """The part of ``sqlite3.Cursor`` that ``StateDB`` reads."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Connection:
    """A psycopg connection in autocommit mode, transactions begun and ended by ``StateDB``."""

    def __init__(self, url: str, busy_timeout: float) -> None:
        import psycopg

        self._psycopg = psycopg
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=int(busy_timeout))
        self._conn.execute(f"SET lock_timeout = {int(busy_timeout * 1000)}")
        self._conn.execute("SET client_min_messages = warning")

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return Cursor(self._conn.execute(_to_psycopg(sql), tuple(parameters)))

    @property
    def in_transaction(self) -> bool:
        status = self._conn.info.transaction_status
        return bool(status != self._psycopg.pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self._conn.close()


def classify(exc: Exception) -> str | None:
    """ "busy" for an error after which the same transaction may be tried again (a lock
    that timed out, a serialization failure, a deadlock), "error" for any other database
    error, None for an exception that is not psycopg's."""
    import psycopg
    import psycopg.errors as pg_errors

    busy = (pg_errors.LockNotAvailable, pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
    if isinstance(exc, busy):
        return "busy"
    return "error" if isinstance(exc, psycopg.Error) else None


AnyConnection = sqlite3.Connection | Connection
