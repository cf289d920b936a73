"""``StateDB``: the database that holds the facts cache and the scan history.

An SQLite file by default, or a PostgreSQL database (``postgresql://USER@HOST/DB``,
vmaudit.state.postgres) that gates and scans on many hosts share. One connection per
process, every write in a short transaction that takes the write lock first (``BEGIN
IMMEDIATE`` on the file, an advisory lock on PostgreSQL) and is retried while another
writer holds it, so two scans in two processes can share one database. A database that is
not a healthy vmaudit database is reported (``ErrorKind.CONFIG``, naming it) and never
overwritten.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from vmaudit.discover.identity import Identity, changed_files
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.judge.risk import FORMULA
from vmaudit.models import (
    SECTIONS,
    AuditedImage,
    Facts,
    FailedImage,
    HistoryEntry,
    HistoryEvent,
    ImageError,
    ImageResult,
    PowerOn,
    ScanReport,
    image_ref_from_dict,
)
from vmaudit.state import codec, postgres, schema
from vmaudit.state.diff import diff_facts
from vmaudit.state.postgres import AnyConnection
from vmaudit.xdg import xdg_folder

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class StateError(VmauditError):
    """The state database cannot be used (corrupt, foreign, newer, unwritable): exit 2."""

    def __init__(self, path: Path | str, problem: str) -> None:
        where = postgres.display(path) if isinstance(path, str) else path
        super().__init__(ErrorKind.CONFIG, f"state database {where}: {problem}")
        self.path = path


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/vmaudit/state.db``, XDG's default ``~/.local/state`` when unset.

    The XDG spec says a relative ``XDG_STATE_HOME`` is invalid and must be ignored.
    """
    return xdg_folder("XDG_STATE_HOME", ".local", "state") / "state.db"


def open_state(ref: str | None) -> StateDB:
    """The state database ``--state`` (or a policy's ``state:``) names: a
    ``postgresql://USER@HOST/DB`` URL, a file path, or vmaudit's default file for None."""
    if ref is not None and postgres.is_url(ref):
        return StateDB(ref)
    return StateDB(Path(ref) if ref else default_state_path())


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _as_aware(moment: datetime) -> datetime:
    # A naive ``--since`` is the user's local time.
    return moment if moment.tzinfo is not None else moment.astimezone()


def _parse_time(text: str) -> datetime:
    return _as_aware(datetime.fromisoformat(text))


def _store_facts(conn: AnyConnection, facts: Facts | None) -> str | None:
    """The facts stored once by their digest (shared by every image that has them)."""
    if facts is None:
        return None
    facts_json, facts_digest = codec.facts_text(facts)
    conn.execute(
        "INSERT INTO facts (digest, facts_json) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
        (facts_digest, facts_json),
    )
    return facts_digest


def _store_image(
    conn: AnyConnection,
    key: bytes,
    scan_id: int,
    identity: Identity | None,
    facts_digest: str | None,
    known: bool,
) -> None:
    """The image's row: created, or brought to this scan with its identity and facts."""
    identity_digest = identity.digest if identity is not None else None
    identity_json = codec.dumps(identity.to_dict()) if identity is not None else None
    if not known:
        conn.execute(
            "INSERT INTO images (key, first_scan, last_scan, identity_digest, identity_json,"
            " facts_digest, facts_identity_digest, gone) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (
                key,
                scan_id,
                scan_id,
                identity_digest,
                identity_json,
                facts_digest,
                identity_digest if facts_digest is not None else None,
            ),
        )
        return
    # An image in error keeps its last facts; the cache is keyed by the identity those
    # facts were read from, so they are never served for changed files.
    conn.execute(
        "UPDATE images SET last_scan = ?, gone = 0,"
        " identity_digest = coalesce(?, identity_digest),"
        " identity_json = coalesce(?, identity_json),"
        " facts_identity_digest = CASE WHEN CAST(? AS TEXT) IS NULL"
        "   THEN facts_identity_digest"
        "   ELSE ? END,"
        " facts_digest = coalesce(?, facts_digest)"
        " WHERE key = ?",
        (scan_id, identity_digest, identity_json, facts_digest, identity_digest, facts_digest, key),
    )


def _store_result(
    conn: AnyConnection,
    key: bytes,
    scan_id: int,
    now: str,
    result: ImageResult,
    identity: Identity | None,
    facts_digest: str | None,
) -> None:
    """The image's row in this scan's results (written again if the scan records it twice)."""
    conn.execute(
        "INSERT INTO results (scan_id, image_key, recorded_at, status, image_json,"
        " identity_digest, identity_json, facts_digest, findings_json, findings_count,"
        " risk_score, risk_level, risk_exposure, risk_formula, business_json, error_json,"
        " from_cache, rules_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (scan_id, image_key) DO UPDATE SET"
        " recorded_at = excluded.recorded_at, status = excluded.status,"
        " image_json = excluded.image_json, identity_digest = excluded.identity_digest,"
        " identity_json = excluded.identity_json, facts_digest = excluded.facts_digest,"
        " findings_json = excluded.findings_json, findings_count = excluded.findings_count,"
        " risk_score = excluded.risk_score, risk_level = excluded.risk_level,"
        " risk_exposure = excluded.risk_exposure, risk_formula = excluded.risk_formula,"
        " business_json = excluded.business_json, error_json = excluded.error_json,"
        " from_cache = excluded.from_cache, rules_json = excluded.rules_json",
        (
            scan_id,
            key,
            now,
            result.status,
            codec.dumps(result.image),
            identity.digest if identity is not None else None,
            codec.dumps(identity.to_dict()) if identity is not None else None,
            facts_digest,
            codec.dumps(result.findings),
            len(result.findings),
            result.risk.score,
            result.risk.level,
            result.risk.exposure,
            FORMULA if result.risk.exposure is not None else schema.CAPPED_FORMULA,
            codec.dumps(result.business),
            codec.dumps(result.error) if result.error is not None else None,
            int(result.from_cache),
            codec.dumps(result.rules_evaluated),
        ),
    )


def _check_file(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not a whole SQLite database."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(path, f"cannot be read: {exc.strerror}") from exc
    if not path.is_file():
        raise StateError(path, "is not a regular file")
    if info.st_size == 0:
        return  # SQLite's own representation of an empty database
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StateError(path, f"cannot be read: {exc.strerror}") from exc
    if not header.startswith(SQLITE_MAGIC):
        raise StateError(path, "is not an SQLite database (bad header); it was left untouched")
    if len(header) < 100:
        raise StateError(path, "is truncated (incomplete header); it was left untouched")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StateError(path, "is corrupt (invalid page size); it was left untouched")
    change_counter = header[24:28]
    page_count = int.from_bytes(header[28:32], "big")
    header_count_valid = change_counter == header[92:96]
    wal = path.with_name(path.name + "-wal")
    try:
        wal_has_frames = wal.stat().st_size > 32  # a WAL header alone holds no page
    except OSError:
        wal_has_frames = False
    truncated = info.st_size % page_size != 0 or (
        header_count_valid and not wal_has_frames and info.st_size < page_count * page_size
    )
    if truncated:
        raise StateError(path, "is truncated; it was left untouched")


class StateDB:
    """The facts cache and scan history of one state database.

    ``path`` is the SQLite file, or a ``postgresql://`` URL given as a string.
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self._busy_timeout = busy_timeout
        self._conn: AnyConnection
        if isinstance(path, str) and postgres.is_url(path):
            self.url: str | None = path
            self.where: Path | str = path
            self._open_postgres(path)
            return
        self.url = None
        self.path = Path(path)
        self.where = self.path
        _check_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(self.path, f"cannot create its folder: {exc.strerror}") from exc
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise StateError(self.path, f"cannot be opened: {exc}") from exc
        try:
            self._retry(self._configure)
            self._retry(lambda: self._write(self._migrate))
        except BaseException:
            self._conn.close()
            raise

    def _open_postgres(self, url: str) -> None:
        try:
            self._conn = postgres.Connection(url, self._busy_timeout)
        except ImportError as exc:
            raise StateError(url, "needs psycopg 3 (pip install 'psycopg[binary]')") from exc
        except Exception as exc:
            if postgres.classify(exc) is None:
                raise
            raise StateError(url, f"cannot be opened: {str(exc).strip()}") from exc
        try:
            # Identified under the write lock only: PostgreSQL reads its catalog outside the
            # transaction's snapshot, so a database another process is creating right now
            # could look half made to a plain read. Nothing is written to a foreign one.
            self._retry(lambda: self._write(self._migrate))
        except BaseException:
            self._conn.close()
            raise

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _configure(self) -> None:
        assert isinstance(self._conn, sqlite3.Connection)
        self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        # Identify the file before anything writes to it: switching to WAL alone would
        # change the header of another program's database.
        self._read(self._identify)
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateError(self.where, f"cannot switch to WAL journal (got {mode})")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _retry(self, work: Callable[[], T]) -> T:
        """Run ``work``, again after a short random pause while the file is busy."""
        deadline = time.monotonic() + self._busy_timeout * 4
        pause = 0.01
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY_CODES
                if not busy:
                    raise self._fail(exc) from exc
                if time.monotonic() > deadline:
                    raise StateError(self.where, "stayed locked by another process") from exc
                time.sleep(pause * (1 + random.random()))
                pause = min(pause * 2, 0.5)
            except sqlite3.DatabaseError as exc:
                raise self._fail(exc) from exc
            except VmauditError:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                # a stored row that does not decode (written by hand, by another program,
                # or damaged): refused, never served and never overwritten
                raise StateError(
                    self.where, f"holds a row that cannot be read ({type(exc).__name__}: {exc})"
                ) from exc
            except Exception as exc:
                kind = postgres.classify(exc) if self.url is not None else None
                if kind is None:
                    raise
                if kind == "error":
                    raise StateError(self.where, f"{str(exc).strip()}; left as it is") from exc
                if time.monotonic() > deadline:
                    raise StateError(self.where, "stayed locked by another process") from exc
                time.sleep(pause * (1 + random.random()))
                pause = min(pause * 2, 0.5)

    def _fail(self, exc: sqlite3.Error) -> StateError:
        return StateError(self.where, f"{exc}; the file was left as it is")

    def _write(self, work: Callable[[AnyConnection], T]) -> T:
        """One transaction that takes the write lock before any read: ``BEGIN IMMEDIATE``
        on SQLite, the database's advisory lock on PostgreSQL (one writer at a time)."""
        if self.url is None:
            self._conn.execute("BEGIN IMMEDIATE")
        else:
            self._conn.execute("BEGIN")
        try:
            if self.url is not None:
                self._conn.execute("SELECT pg_advisory_xact_lock(?)", (schema.APPLICATION_ID,))
            result = work(self._conn)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return result

    def _read(self, work: Callable[[AnyConnection], T]) -> T:
        """One read transaction: a consistent snapshot while other processes write."""
        self._conn.execute("BEGIN" if self.url is None else "BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            return work(self._conn)
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def _identify(self, conn: AnyConnection) -> int:
        """The database's schema version; ``StateError`` when it is not ours to migrate."""
        if self.url is not None:
            return self._identify_postgres(conn)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        application = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if application not in (0, schema.APPLICATION_ID):
            raise StateError(self.where, "is an SQLite database of another program")
        if version == 0:
            existing = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if existing:
                raise StateError(self.where, "is an SQLite database but not vmaudit's")
        return self._not_newer(version)

    def _not_newer(self, version: int) -> int:
        if version > schema.LATEST:
            raise StateError(
                self.where,
                f"has schema version {version}, newer than this vmaudit ({schema.LATEST})",
            )
        return version

    def _identify_postgres(self, conn: AnyConnection) -> int:
        meta = conn.execute("SELECT to_regclass(?)", (postgres.META,)).fetchone()[0]
        if meta is None:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            ).fetchone()[0]
            if tables:
                raise StateError(self.where, "is a PostgreSQL database but not vmaudit's")
            return 0
        rows = conn.execute(
            f"SELECT application_id, schema_version FROM {postgres.META}"
        ).fetchall()
        if len(rows) != 1 or int(rows[0][0]) != schema.APPLICATION_ID:
            raise StateError(self.where, "is a PostgreSQL database of another program")
        return self._not_newer(int(rows[0][1]))

    def _migrate(self, conn: AnyConnection) -> None:
        # Read again inside the write transaction: another process may have migrated
        # the database since ``_identify``.
        version = self._identify(conn)
        for number in range(version + 1, schema.LATEST + 1):
            migration = schema.MIGRATIONS[number - 1]
            text = migration.sql if self.url is None else migration.postgres
            for statement in schema.statements(text):
                conn.execute(statement)
            if migration.then is not None:
                migration.then(conn)
        if version >= schema.LATEST:
            return
        if self.url is None:
            conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {schema.LATEST}")
        elif version == 0:
            conn.execute(
                f"CREATE TABLE {postgres.META} (application_id BIGINT NOT NULL,"
                " schema_version INTEGER NOT NULL)"
            )
            conn.execute(
                f"INSERT INTO {postgres.META} (application_id, schema_version) VALUES (?, ?)",
                (schema.APPLICATION_ID, schema.LATEST),
            )
        else:
            conn.execute(f"UPDATE {postgres.META} SET schema_version = ?", (schema.LATEST,))

    def check(self) -> None:
        """``PRAGMA quick_check`` over the whole file: ``StateError`` when a page is damaged.

        Opening only reads the header and the schema; a scan that wants to fail before its
        first image rather than at its first write calls this (it reads every page).
        """

        def work(conn: AnyConnection) -> list[str]:
            if self.url is not None:  # every row of every table read: a damaged page fails
                for table in ("scans", "facts", "images", "results", "events", "decisions"):
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                return ["ok"]
            return [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]

        problems = self._retry(lambda: self._read(work))
        if problems != ["ok"]:
            raise StateError(self.where, "is corrupt: " + "; ".join(problems))

    def schema_version(self) -> int:
        if self.url is not None:
            return self._retry(lambda: self._read(self._identify))
        return self._retry(lambda: int(self._conn.execute("PRAGMA user_version").fetchone()[0]))

    # ------------------------------------------------------------ cache

    def lookup_facts(self, identity: Identity) -> Facts | None:
        """The stored facts of this very image when its files are unchanged, else None."""

        def work(conn: AnyConnection) -> str | None:
            row = conn.execute(
                "SELECT f.facts_json FROM images AS i JOIN facts AS f ON f.digest = i.facts_digest"
                " WHERE i.key = ? AND i.facts_identity_digest = ?",
                (codec.path_key(identity.primary), identity.digest),
            ).fetchone()
            return None if row is None else str(row[0])

        text = self._retry(lambda: self._read(work))
        if text is None:
            return None
        try:
            facts = codec.facts_from_text(text)
        except (ValueError, KeyError, TypeError):
            # facts this vmaudit cannot read (damaged, or of a facts schema it does not
            # know) are never served: the image is read again and its new facts replace them
            return None
        recorded = {coverage.section for coverage in facts.coverage}
        if recorded and not recorded.issuperset(SECTIONS):
            return None  # read by a vmaudit that knew fewer sections (no config): read again
        return facts

    # ------------------------------------------------------------ history: writing

    def begin_scan(self, baselines: Sequence[str], started_at: str | datetime) -> int:
        """A new scan; returns its id for ``record_result`` and ``finish_scan``."""
        started = started_at.isoformat() if isinstance(started_at, datetime) else started_at

        def work(conn: AnyConnection) -> int:
            row = conn.execute(
                "INSERT INTO scans (started_at, baselines_json) VALUES (?, ?) RETURNING id",
                (started, codec.dumps(list(baselines))),
            ).fetchone()
            return int(row[0])

        return self._retry(lambda: self._write(work))

    def record_result(
        self, scan_id: int, result: ImageResult, identity: Identity | None
    ) -> tuple[HistoryEvent, ...]:
        """Store one image's outcome in its own short transaction; returns the events it raised."""
        return self._retry(
            lambda: self._write(lambda conn: self._record(conn, scan_id, result, identity))
        )

    def _record(
        self,
        conn: AnyConnection,
        scan_id: int,
        result: ImageResult,
        identity: Identity | None,
    ) -> tuple[HistoryEvent, ...]:
        """One image's result in one scan: its facts, the image row, the result row, events."""
        key = codec.path_key(os.path.abspath(result.image.path))
        now = now_utc()
        facts_digest = _store_facts(conn, result.facts)
        previous = conn.execute(
            "SELECT i.identity_digest, i.identity_json, i.facts_digest, i.facts_identity_digest,"
            " i.gone, f.facts_json FROM images AS i LEFT JOIN facts AS f"
            " ON f.digest = i.facts_digest WHERE i.key = ?",
            (key,),
        ).fetchone()
        events = self._events_for(previous, result, identity, facts_digest, now)
        _store_image(conn, key, scan_id, identity, facts_digest, known=previous is not None)
        _store_result(conn, key, scan_id, now, result, identity, facts_digest)
        for event in events:
            conn.execute(
                "INSERT INTO events (scan_id, image_key, kind, at, changes_json)"
                " VALUES (?, ?, ?, ?, ?)",
                (scan_id, key, event.kind, event.at, codec.dumps(event.changes)),
            )
        return events

    @staticmethod
    def _events_for(
        previous: tuple[Any, ...] | None,
        result: ImageResult,
        identity: Identity | None,
        facts_digest: str | None,
        now: str,
    ) -> tuple[HistoryEvent, ...]:
        if previous is None or previous[4]:
            return (HistoryEvent("appeared", now, {"status": result.status}),)
        old_identity_digest, old_identity_json, old_facts_digest, old_facts_identity = previous[:4]
        old_facts_json: str | None = previous[5]
        identity_changed = (
            identity is not None
            and old_identity_digest is not None
            and identity.digest != old_identity_digest
        )
        fresh_facts = facts_digest is not None and not result.from_cache
        if identity_changed:
            changes: dict[str, Any] = {}
        elif (
            fresh_facts
            and old_facts_digest is not None
            and facts_digest != old_facts_digest
            and (identity is None or old_facts_identity != identity.digest)
        ):
            # The files changed in an earlier scan that could not read the guest (or no
            # identity was known then or now): the facts diff is told now, once.
            files_known = identity is not None and old_identity_digest is not None
            changes = {"files": [] if files_known else None, "files_changed_earlier": files_known}
        else:
            return ()
        if identity_changed and identity is not None and old_identity_json is not None:
            old_identity = Identity.from_dict(codec.loads(old_identity_json))
            changes["files"] = changed_files(old_identity, identity)
        if fresh_facts and old_facts_json is not None and result.facts is not None:
            changes["facts"] = diff_facts(codec.facts_from_text(old_facts_json), result.facts)
        else:
            changes["facts"] = None  # not known: the image is in error now or was never read
        changes["status"] = result.status
        return (HistoryEvent("modified", now, changes),)

    def finish_scan(self, scan_id: int, report: ScanReport, scanned_roots: list[str]) -> None:
        """Close the scan: its report's header, any result not yet recorded, disappearances.

        An image recorded under one of ``scanned_roots`` by an earlier scan, absent from
        this one and no longer on disk gets a ``disappeared`` event. One still on disk was
        excluded or skipped this time, not gone.
        """
        roots = [os.path.normpath(os.path.abspath(root)) for root in scanned_roots]

        def under_roots(path: str) -> bool:
            return any(
                path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots
            )

        def work(conn: AnyConnection) -> None:
            recorded = {
                bytes(row[0])
                for row in conn.execute(
                    "SELECT image_key FROM results WHERE scan_id = ?", (scan_id,)
                )
            }
            for result in report.results:
                if codec.path_key(os.path.abspath(result.image.path)) not in recorded:
                    self._record(conn, scan_id, result, None)
            updated = conn.execute(
                "UPDATE scans SET finished_at = ?, baselines_json = ?, fail_on = ?,"
                " exit_code = ?, roots_json = ?,"
                " finished_rank = (SELECT coalesce(max(finished_rank), 0) + 1 FROM scans)"
                " WHERE id = ?",
                (
                    report.finished_at,
                    codec.dumps(report.baselines),
                    report.fail_on,
                    report.exit_code,
                    codec.dumps(roots),
                    scan_id,
                ),
            )
            if updated.rowcount != 1:
                raise StateError(self.where, f"no scan with id {scan_id}")
            now = now_utc()
            candidates = conn.execute(
                "SELECT key, last_scan FROM images WHERE gone = 0 AND key NOT IN"
                " (SELECT image_key FROM results WHERE scan_id = ?)",
                (scan_id,),
            ).fetchall()
            for raw_key, last_scan in candidates:
                path = codec.key_path(bytes(raw_key))
                if not under_roots(path) or os.path.lexists(path):
                    continue
                conn.execute(
                    "INSERT INTO events (scan_id, image_key, kind, at, changes_json)"
                    " VALUES (?, ?, 'disappeared', ?, ?)",
                    (scan_id, raw_key, now, codec.dumps({"last_scan": last_scan})),
                )
                conn.execute("UPDATE images SET gone = 1 WHERE key = ?", (raw_key,))

        self._retry(lambda: self._write(work))

    # ------------------------------------------------------------ power-on decisions

    def record_power_on(
        self,
        decision: PowerOn,
        result: ImageResult | None,
        identity: Identity | None,
        baselines: Sequence[str],
        fail_on: str,
    ) -> None:
        """Store a gate's decision in one transaction: a ``decisions`` row, and for a guest
        the result it was judged on (its facts cached when read afresh) with a ``power-on``
        event, in a scan row of its own that never becomes "the last report"."""

        def work(conn: AnyConnection) -> None:
            scan_id: int | None = None
            key: bytes | None = None
            if result is not None:
                cursor = conn.execute(
                    "INSERT INTO scans (started_at, finished_at, baselines_json, fail_on,"
                    " exit_code, roots_json) VALUES (?, ?, ?, ?, ?, '[]') RETURNING id",
                    (
                        decision.at,
                        decision.at,
                        codec.dumps(list(baselines)),
                        fail_on,
                        0 if decision.decision == "allow" else 1,
                    ),
                )
                scan_id = int(cursor.fetchone()[0])
                self._record(conn, scan_id, result, identity)
                key = codec.path_key(os.path.abspath(result.image.path))
                conn.execute(
                    "INSERT INTO events (scan_id, image_key, kind, at, changes_json)"
                    " VALUES (?, ?, 'power-on', ?, ?)",
                    (
                        scan_id,
                        key,
                        decision.at,
                        codec.dumps(
                            {
                                "decision": decision.decision,
                                "reason": decision.reason,
                                "domain": decision.domain,
                                "source": decision.source,
                            }
                        ),
                    ),
                )
            conn.execute(
                "INSERT INTO decisions (at, source, domain, decision, reason, image_key,"
                " scan_id, details_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision.at,
                    decision.source,
                    decision.domain,
                    decision.decision,
                    decision.reason,
                    key,
                    scan_id,
                    codec.dumps(decision.details),
                ),
            )

        self._retry(lambda: self._write(work))

    def power_ons(self, since: datetime | None = None) -> list[PowerOn]:
        """The gate's decisions, oldest first; with ``since``, those at or after it."""

        def work(conn: AnyConnection) -> list[PowerOn]:
            rows = conn.execute(
                "SELECT at, source, domain, decision, reason, image_key, details_json"
                " FROM decisions ORDER BY id"
            ).fetchall()
            return [
                PowerOn(
                    at=at,
                    source=source,
                    domain=domain,
                    decision=decision,
                    reason=reason,
                    image=codec.key_path(bytes(key)) if key is not None else None,
                    details=codec.loads(details_json),
                )
                for at, source, domain, decision, reason, key, details_json in rows
                if since is None or _parse_time(at) >= _as_aware(since)
            ]

        return self._retry(lambda: self._read(work))

    # ------------------------------------------------------------ history: reading

    def last_report(self, since: datetime | None = None) -> ScanReport | None:
        """The last finished scan's report, rebuilt from the database.

        With ``since``, only the images read afresh (not from the cache) or with an
        event (appeared, modified) at or after that moment; a naive ``since`` is local time.
        """
        return self._retry(lambda: self._read(lambda conn: self._last_report(conn, since)))

    def _last_report(self, conn: AnyConnection, since: datetime | None) -> ScanReport | None:
        scan = conn.execute(
            "SELECT id, started_at, finished_at, baselines_json, fail_on, exit_code FROM scans"
            " WHERE finished_rank IS NOT NULL ORDER BY finished_rank DESC LIMIT 1"
        ).fetchone()
        if scan is None:
            return None
        scan_id, started_at, finished_at, baselines_json, fail_on, exit_code = scan
        rows = conn.execute(
            "SELECT r.image_key, r.recorded_at, r.image_json, f.facts_json, r.findings_json,"
            " r.risk_score, r.risk_level, r.risk_exposure, r.business_json, r.error_json,"
            " r.from_cache, r.rules_json"
            " FROM results AS r LEFT JOIN facts AS f ON f.digest = r.facts_digest"
            " WHERE r.scan_id = ? ORDER BY r.id",
            (scan_id,),
        ).fetchall()
        changed_keys: set[bytes] = set()
        if since is not None:
            since = _as_aware(since)
            changed_keys = {
                bytes(key)
                for key, at in conn.execute(
                    "SELECT image_key, at FROM events WHERE kind IN ('appeared', 'modified')"
                    " AND image_key IN (SELECT image_key FROM results WHERE scan_id = ?)",
                    (scan_id,),
                )
                if _parse_time(at) >= since
            }
        results: list[ImageResult] = []
        for (
            key,
            recorded_at,
            image_json,
            facts_json,
            findings_json,
            score,
            level,
            exposure,
            business_json,
            error_json,
            from_cache,
            rules_json,
        ) in rows:
            if (
                since is not None
                and bytes(key) not in changed_keys
                and (from_cache or _parse_time(recorded_at) < since)
            ):
                continue
            image = image_ref_from_dict(codec.loads(image_json))
            business = codec.business_from_dict(codec.loads(business_json))
            error = codec.error_from_text(error_json)
            if error is None and facts_json is None:
                error = ImageError(ErrorKind.INTERNAL, "its facts are missing from the state")
            if error is not None:
                results.append(FailedImage(image, error, business, bool(from_cache)))
                continue
            results.append(
                AuditedImage(
                    image=image,
                    facts=codec.facts_from_text(facts_json),
                    findings=codec.findings_from_text(findings_json),
                    risk=codec.risk_from_columns(score, level, exposure),
                    business=business,
                    from_cache=bool(from_cache),
                    rules_evaluated=tuple(codec.loads(rules_json)),
                )
            )
        return ScanReport(
            started_at=started_at,
            finished_at=finished_at,
            baselines=tuple(codec.loads(baselines_json)),
            fail_on=fail_on or "",
            results=tuple(results),
            exit_code=int(exit_code or 0),
        )

    def history(self, image_path: str) -> list[HistoryEntry]:
        """Every scan that recorded the image or its disappearance, oldest first."""
        key = codec.path_key(os.path.abspath(image_path))

        def work(conn: AnyConnection) -> list[HistoryEntry]:
            entries: dict[int, HistoryEntry] = {}
            for (
                scan_id,
                started_at,
                recorded_at,
                status,
                score,
                level,
                exposure,
                count,
                from_cache,
                error_json,
            ) in conn.execute(
                "SELECT r.scan_id, s.started_at, r.recorded_at, r.status, r.risk_score,"
                " r.risk_level, r.risk_exposure, r.findings_count, r.from_cache, r.error_json"
                " FROM results AS r JOIN scans AS s ON s.id = r.scan_id"
                " WHERE r.image_key = ? ORDER BY r.scan_id",
                (key,),
            ):
                entries[scan_id] = HistoryEntry(
                    scan_id=scan_id,
                    scan_started_at=started_at,
                    recorded_at=recorded_at,
                    status=status,
                    risk=codec.risk_from_columns(score, level, exposure),
                    findings_count=int(count),
                    from_cache=bool(from_cache),
                    error=codec.error_from_text(error_json),
                    events=(),
                )
            for scan_id, started_at, kind, at, changes_json in conn.execute(
                "SELECT e.scan_id, s.started_at, e.kind, e.at, e.changes_json"
                " FROM events AS e JOIN scans AS s ON s.id = e.scan_id"
                " WHERE e.image_key = ? ORDER BY e.id",
                (key,),
            ):
                entry = entries.get(scan_id) or HistoryEntry(
                    scan_id=scan_id,
                    scan_started_at=started_at,
                    recorded_at=None,
                    status="absent",
                    risk=None,
                    findings_count=0,
                    from_cache=False,
                    error=None,
                    events=(),
                )
                event = HistoryEvent(kind, at, codec.loads(changes_json))
                entries[scan_id] = replace(entry, events=(*entry.events, event))
            return [entries[scan_id] for scan_id in sorted(entries)]

        return self._retry(lambda: self._read(work))
