"""The feeds database (SQLite): advisories, what they affect, and where each came from.

Rows are indexed the way matching asks: Linux by ``(ecosystem, package)``, Windows by
product. An import is one transaction: it commits whole or the database stays as it was.
A record replaces the stored one of the same key unless the stored copy is newer
(``modified``); a withdrawn OSV record deletes it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmaudit.errors import ConfigError
from vmaudit.feeds.records import Advisory
from vmaudit.xdg import xdg_folder

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    format TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    added INTEGER NOT NULL, updated INTEGER NOT NULL, unchanged INTEGER NOT NULL,
    withdrawn INTEGER NOT NULL, skipped INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS advisories (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    cves TEXT NOT NULL,
    published TEXT, modified TEXT, summary TEXT NOT NULL,
    cvss REAL, cvss_vector TEXT, rating TEXT,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS names (name TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS affected (
    key TEXT NOT NULL, ecosystem TEXT NOT NULL, package TEXT NOT NULL,
    ranges TEXT NOT NULL, versions TEXT NOT NULL, rating TEXT
);
CREATE TABLE IF NOT EXISTS windows_fixes (
    key TEXT NOT NULL, product TEXT NOT NULL, product_key TEXT NOT NULL, kb TEXT,
    fixed_build TEXT,
    supersedes TEXT, rating TEXT, cvss REAL
);
CREATE INDEX IF NOT EXISTS advisories_source ON advisories(source_id);
CREATE INDEX IF NOT EXISTS names_name ON names(name);
CREATE INDEX IF NOT EXISTS names_key ON names(key);
CREATE INDEX IF NOT EXISTS affected_match ON affected(ecosystem, package);
CREATE INDEX IF NOT EXISTS affected_key ON affected(key);
CREATE INDEX IF NOT EXISTS windows_match ON windows_fixes(product_key);
CREATE INDEX IF NOT EXISTS windows_key ON windows_fixes(key);
CREATE INDEX IF NOT EXISTS windows_kb ON windows_fixes(kb);
"""


def default_feeds_path() -> Path:
    """``$XDG_DATA_HOME/vmaudit/feeds.db``; XDG's default ``~/.local/share`` when unset.

    As for the state database, a relative ``XDG_DATA_HOME`` is invalid and ignored.
    """
    return xdg_folder("XDG_DATA_HOME", ".local", "share") / "feeds.db"


@dataclass
class Counts:
    """What one import did to the database, per source path."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    skipped: int = 0  # records for no ecosystem or product a guest can have


def _digest(advisory: Advisory) -> str:
    # repr of frozen dataclasses of str, float and tuples: the same record, the same text
    return hashlib.sha256(repr(advisory).encode()).hexdigest()


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    try:
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a vmaudit feeds database ({exc})") from None
    if row is None or row[0] != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: feeds database schema {row[0] if row else '?'}, "
            f"this vmaudit reads {SCHEMA_VERSION}"
        )


def open_read(path: Path) -> sqlite3.Connection | None:
    """A read-only connection; None when the file does not exist or holds no feeds table."""
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the feeds database ({exc})") from None
    try:
        tables = {
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise ConfigError(f"{path}: not a vmaudit feeds database ({exc})") from None
    if "meta" not in tables:
        connection.close()
        if tables:
            raise ConfigError(f"{path}: not a vmaudit feeds database")
        return None
    _check_schema(connection, path)
    return connection


class Writer:
    """The write side of one import transaction (``transaction()`` makes one)."""

    def __init__(self, connection: sqlite3.Connection, imported_at: str) -> None:
        self.db = connection
        self.imported_at = imported_at

    def source(self, path: str, fmt: str) -> int:
        self.db.execute(
            "INSERT INTO sources (path, format, imported_at, added, updated, unchanged, "
            "withdrawn, skipped) VALUES (?, ?, ?, 0, 0, 0, 0, 0) ON CONFLICT(path) DO UPDATE "
            "SET format = excluded.format, imported_at = excluded.imported_at",
            (path, fmt, self.imported_at),
        )
        row = self.db.execute("SELECT id FROM sources WHERE path = ?", (path,)).fetchone()
        return int(row[0])

    def finish_source(self, source_id: int, fmt: str, counts: Counts) -> None:
        self.db.execute(
            "UPDATE sources SET format = ?, added = ?, updated = ?, unchanged = ?, "
            "withdrawn = ?, skipped = ? WHERE id = ?",
            (
                fmt,
                counts.added,
                counts.updated,
                counts.unchanged,
                counts.withdrawn,
                counts.skipped,
                source_id,
            ),
        )

    def _delete(self, key: str) -> None:
        for table in ("advisories", "names", "affected", "windows_fixes"):
            self.db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))

    def withdraw(self, key: str, counts: Counts) -> None:
        self._delete(key)
        counts.withdrawn += 1

    def put(self, advisory: Advisory, source_id: int, counts: Counts) -> None:
        digest = _digest(advisory)
        stored = self.db.execute(
            "SELECT modified, digest FROM advisories WHERE key = ?", (advisory.key,)
        ).fetchone()
        if stored is not None:
            older = (
                stored[0] is not None
                and advisory.modified is not None
                and advisory.modified < stored[0]
            )
            if older or stored[1] == digest:
                counts.unchanged += 1  # the stored copy is as new or newer
                self.db.execute(
                    "UPDATE advisories SET source_id = ? WHERE key = ? AND digest = ?",
                    (source_id, advisory.key, digest),
                )
                return
            self._delete(advisory.key)
            counts.updated += 1
        else:
            counts.added += 1
        self.db.execute(
            "INSERT INTO advisories (key, id, source_id, cves, published, modified, summary, "
            "cvss, cvss_vector, rating, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                advisory.key,
                advisory.id,
                source_id,
                json.dumps(list(advisory.cves)),
                advisory.published,
                advisory.modified,
                advisory.summary,
                advisory.cvss,
                advisory.cvss_vector,
                advisory.rating,
                digest,
            ),
        )
        names = {advisory.id.upper(), *advisory.cves}
        names.update(fix.kb for fix in advisory.windows if fix.kb)
        self.db.executemany(
            "INSERT INTO names (name, key) VALUES (?, ?)",
            [(name, advisory.key) for name in sorted(names)],
        )
        self.db.executemany(
            "INSERT INTO affected (key, ecosystem, package, ranges, versions, rating) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    advisory.key,
                    a.ecosystem,
                    a.package,
                    json.dumps(a.ranges),
                    json.dumps(a.versions),
                    a.rating,
                )
                for a in advisory.affected
            ],
        )
        self.db.executemany(
            "INSERT INTO windows_fixes (key, product, product_key, kb, fixed_build, supersedes, "
            "rating, cvss) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    advisory.key,
                    f.product,
                    f.product.lower(),
                    f.kb,
                    f.fixed_build,
                    f.supersedes,
                    f.rating,
                    f.cvss,
                )
                for f in advisory.windows
            ],
        )


@contextmanager
def transaction(path: Path, imported_at: str) -> Iterator[Writer]:
    """One import: everything written inside commits together, or nothing does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the feeds database ({exc})") from None
    with closing(connection):
        try:
            connection.execute("PRAGMA cache_size = -131072")  # 128 MiB: indexes stay in memory
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: not a vmaudit feeds database ({exc})") from None
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT(key) DO NOTHING",
                (SCHEMA_VERSION,),
            )
            _check_schema(connection, path)
            yield Writer(connection, imported_at)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def rows(connection: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """All rows of a query (a small helper so callers stay one line)."""
    return connection.execute(sql, args).fetchall()


@dataclass(frozen=True)
class SourceSummary:
    """One imported path as ``feeds list`` shows it."""

    path: str
    format: str
    imported_at: str
    records: int
    newest: str | None  # the newest record's modified (else published) date
    scope: tuple[str, ...]  # ecosystems, or Windows products
    counts: Counts


def list_sources(connection: sqlite3.Connection) -> list[SourceSummary]:
    """Every source, oldest import first."""
    summaries = []
    for source_id, path, fmt, imported_at, added, updated, unchanged, withdrawn, skipped in rows(
        connection,
        "SELECT id, path, format, imported_at, added, updated, "
        "unchanged, withdrawn, skipped FROM sources ORDER BY id",
    ):
        records, newest = connection.execute(
            "SELECT count(*), max(coalesce(modified, published)) FROM advisories "
            "WHERE source_id = ?",
            (source_id,),
        ).fetchone()
        scope = [
            r[0]
            for r in rows(
                connection,
                "SELECT DISTINCT t.ecosystem FROM affected t JOIN advisories a "
                "ON a.key = t.key WHERE a.source_id = ? UNION SELECT DISTINCT w.product FROM "
                "windows_fixes w JOIN advisories a ON a.key = w.key WHERE a.source_id = ? "
                "ORDER BY 1",
                (source_id, source_id),
            )
        ]
        summaries.append(
            SourceSummary(
                path,
                fmt,
                imported_at,
                int(records),
                newest,
                tuple(scope),
                Counts(added, updated, unchanged, withdrawn, skipped),
            )
        )
    return summaries


def show(connection: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    """Every stored advisory named ``name`` (its id, a CVE alias or a KB), as stored."""
    wanted = name.strip().upper()
    if wanted.isdigit():
        wanted = f"KB{wanted}"
    found = []
    for key, ident, cves, published, modified, summary, cvss, vector, rating, path, fmt in rows(
        connection,
        "SELECT a.key, a.id, a.cves, a.published, a.modified, a.summary, a.cvss, "
        "a.cvss_vector, a.rating, s.path, s.format FROM advisories a JOIN "
        "sources s ON s.id = a.source_id WHERE a.key IN (SELECT key FROM names "
        "WHERE name = ?) ORDER BY a.key",
        (wanted,),
    ):
        affected = [
            {
                "ecosystem": e,
                "package": p,
                "ranges": json.loads(r),
                "versions": json.loads(v),
                "rating": pr,
            }
            for e, p, r, v, pr in rows(
                connection,
                "SELECT ecosystem, package, ranges, versions, "
                "rating FROM affected WHERE key = ? ORDER BY ecosystem, "
                "package",
                (key,),
            )
        ]
        windows = [
            {"product": p, "kb": kb, "fixed_build": fb, "supersedes": sup, "rating": pr, "cvss": c}
            for p, kb, fb, sup, pr, c in rows(
                connection,
                "SELECT product, kb, fixed_build, "
                "supersedes, rating, cvss FROM windows_fixes "
                "WHERE key = ? ORDER BY product",
                (key,),
            )
        ]
        found.append(
            {
                "key": key,
                "id": ident,
                "cves": json.loads(cves),
                "published": published,
                "modified": modified,
                "summary": summary,
                "cvss": cvss,
                "cvss_vector": vector,
                "rating": rating,
                "source": path,
                "format": fmt,
                "affected": affected,
                "windows": windows,
            }
        )
    return found
