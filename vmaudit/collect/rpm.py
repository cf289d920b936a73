"""RPM packages from the guest's rpm database, of any generation, decoded here (no librpm).

Three stores hold the same rpm header blobs: sqlite ``rpmdb.sqlite`` (RHEL 9, Fedora 33+),
ndb ``Packages.db`` (SUSE 15 SP3+, read by ``rpmdb_ndb``) and Berkeley DB hash ``Packages``
(RHEL/CentOS 5 to 8, older SUSE, read by ``rpmdb_bdb``). They are looked for in that order,
as rpm itself detects its backend, in ``/var/lib/rpm`` then ``/usr/lib/sysimage/rpm``.

A header blob is an rpm header without the magic: ``il`` and ``dl`` (big-endian 32-bit),
``il`` 16-byte index entries (tag, type, offset, count), then ``dl`` bytes of data. Every
offset is bounds-checked: a corrupt blob is a warning, the other packages still count.

The sqlite file is copied to a private host temp dir and opened read-only (immutable when
it has no WAL to replay). Its ``Packages`` must be a real table with plain ``hnum`` and
``blob`` columns, not a view or a virtual table a guest could make run forever, and every
query runs under a budget of sqlite VM steps and a cap on the length of one value.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from vmaudit.guest.base import GuestFS, is_file, read_bytes, safe_path
from vmaudit.models import Package

from . import rpmdb_bdb, rpmdb_ndb
from .common import from_epoch
from .rpmdb_damage import Damage

RPMDB_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
RPMDB_CAP = 1024 * 1024 * 1024
MAX_TAGS = 0xFFFF  # rpm's HEADER_TAGS_MAX
MAX_DATA = 0x0FFFFFFF  # rpm's HEADER_DATA_MAX
MAX_ROWS = 200_000
HEADER_MAX = 8 + 16 * MAX_TAGS + MAX_DATA  # the largest header blob rpm would load
MAX_VM_STEPS = 50_000_000  # ~60x what reading 200,000 packages takes; well under a minute
PROGRESS_EVERY = 1000  # VM steps between two checks of the budget
BDB_JOIN_KEY = b"\0\0\0\0"  # header number 0 holds rpm's next free number, not a header

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_INSTALLTIME, TAG_ARCH, TAG_SOURCERPM = 1008, 1022, 1044
TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 4, 6, 8, 9
WANTED_TAGS = frozenset(
    {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_INSTALLTIME, TAG_ARCH, TAG_SOURCERPM}
)


class CorruptHeader(ValueError):
    """An rpm header blob that does not hold together."""


class RpmDbError(ValueError):
    """A package database that cannot be read, or read further."""


@dataclass(frozen=True)
class RpmDb:
    packages: tuple[Package, ...]
    last_install: datetime | None


def decode_header(blob: bytes) -> dict[int, str | int]:
    """The tags we use from one header blob: strings for strings, the first int for ints."""
    if len(blob) < 8:
        raise CorruptHeader("shorter than its 8-byte preamble")
    il, dl = struct.unpack_from(">II", blob, 0)
    if il == 0 or il > MAX_TAGS or dl > MAX_DATA:
        raise CorruptHeader(f"implausible sizes il={il} dl={dl}")
    data_start = 8 + il * 16
    if data_start + dl > len(blob):
        raise CorruptHeader(f"declares {data_start + dl} bytes, blob has {len(blob)}")
    data = blob[data_start : data_start + dl]
    values: dict[int, str | int] = {}
    for index in range(il):
        tag, kind, offset, count = struct.unpack_from(">iIiI", blob, 8 + index * 16)
        if tag not in WANTED_TAGS:
            continue
        if offset < 0 or offset >= dl:
            raise CorruptHeader(f"tag {tag} offset {offset} outside data of {dl} bytes")
        if kind == TYPE_INT32:
            if count < 1 or offset + 4 > dl:
                raise CorruptHeader(f"tag {tag} int32 outside data")
            values[tag] = struct.unpack_from(">I", data, offset)[0]
        elif kind in (TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING):
            end = data.find(b"\0", offset)
            if end < 0:
                raise CorruptHeader(f"tag {tag} string not terminated")
            values[tag] = data[offset:end].decode("utf-8", "replace")
    return values


def source_name(sourcerpm: str) -> str | None:
    """``"openssl"`` from ``"openssl-3.0.7-25.el9.src.rpm"``."""
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if sourcerpm.endswith(suffix):
            parts = sourcerpm[: -len(suffix)].rsplit("-", 2)
            return parts[0] if len(parts) == 3 and parts[0] else None
    return None


def header_package(values: dict[int, str | int]) -> Package:
    name = str(values.get(TAG_NAME, ""))
    if not name:
        raise CorruptHeader("no NAME tag")
    version = f"{values.get(TAG_VERSION, '')}-{values.get(TAG_RELEASE, '')}"
    if TAG_EPOCH in values:
        version = f"{values[TAG_EPOCH]}:{version}"
    sourcerpm = values.get(TAG_SOURCERPM)
    arch = values.get(TAG_ARCH)
    return Package(
        name=name,
        version=version,
        arch=str(arch) if arch is not None else None,
        source=(source_name(sourcerpm) if isinstance(sourcerpm, str) else None) or name,
    )


def packages_from_blobs(blobs: Iterable[bytes], warnings: list[str], label: str) -> RpmDb:
    """Packages of a stream of header blobs; a corrupt blob is skipped and counted."""
    packages: list[Package] = []
    newest = 0
    corrupt = 0
    try:
        for count, blob in enumerate(blobs):
            if count >= MAX_ROWS:
                warnings.append(f"{label}: over {MAX_ROWS} packages, the rest ignored")
                break
            try:
                values = decode_header(blob)
                packages.append(header_package(values))
            except CorruptHeader:
                corrupt += 1
                continue
            installed = values.get(TAG_INSTALLTIME)
            if isinstance(installed, int):
                newest = max(newest, installed)
    except RpmDbError as exc:
        warnings.append(f"{label}: {exc}")
    if corrupt:
        warnings.append(f"{label}: {corrupt} corrupt package header(s) skipped")
    return RpmDb(tuple(packages), from_epoch(newest))


def _check_packages_table(conn: sqlite3.Connection) -> None:
    """``RpmDbError`` unless ``Packages`` is a stored table with plain hnum and blob columns."""
    rows = conn.execute(
        "SELECT type, rootpage FROM main.sqlite_master WHERE name = 'Packages' COLLATE NOCASE"
    ).fetchall()
    if not rows:
        raise RpmDbError("no Packages table")
    kind, rootpage = rows[0]
    if kind != "table" or not isinstance(rootpage, int) or rootpage <= 0:
        raise RpmDbError(f"Packages is a {kind} (root page {rootpage}), not rpm's table")
    # sqlite's own view of the schema it parsed; older sqlite ignores the pragma (no rows).
    for _schema, _name, listed_kind, *_ in conn.execute("PRAGMA main.table_list('Packages')"):
        if listed_kind != "table":
            raise RpmDbError(f"Packages is a {listed_kind}, not rpm's table")
    # hidden: 0 a stored column; 1 a virtual table's; 2 and 3 computed by an expression.
    plain = {name for _cid, name, *_, hidden in conn.execute(
        "PRAGMA main.table_xinfo('Packages')") if hidden == 0}  # fmt: skip
    if not {"hnum", "blob"} <= plain:
        raise RpmDbError("Packages has no plain hnum and blob columns")


class _StepBudget:
    """sqlite's progress handler: a nonzero answer stops the query after ``limit`` VM steps."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def __call__(self) -> int:
        self.left -= PROGRESS_EVERY
        return 1 if self.spent else 0

    @property
    def spent(self) -> bool:
        return self.left <= 0


def _sqlite_blobs(conn: sqlite3.Connection, budget: _StepBudget) -> Iterator[bytes]:
    try:
        _check_packages_table(conn)
        rows = conn.execute("SELECT blob FROM main.Packages ORDER BY hnum LIMIT ?", (MAX_ROWS + 1,))
        for (blob,) in rows:
            yield blob if isinstance(blob, bytes) else b""
    except sqlite3.Error as exc:
        if budget.spent:
            raise RpmDbError(f"stopped at its budget of {budget.limit} sqlite steps") from exc
        raise RpmDbError(f"unreadable Packages table ({exc})") from exc


def read_sqlite_rpmdb(
    db_path: str, warnings: list[str], label: str, max_steps: int = MAX_VM_STEPS
) -> RpmDb:
    """Packages of an rpmdb.sqlite on the host (a private copy), opened read-only.

    Immutable (no locks, no journal) unless a WAL beside it is to be replayed.
    """
    immutable = "" if os.path.exists(db_path + "-wal") else "&immutable=1"
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro{immutable}", uri=True)
    except sqlite3.Error as exc:
        warnings.append(f"{label}: cannot open as sqlite ({exc})")
        return RpmDb((), None)
    budget = _StepBudget(max_steps)
    try:
        conn.set_progress_handler(budget, PROGRESS_EVERY)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, HEADER_MAX)
        # A guest-made schema must not run functions of ours (triggers, views).
        conn.execute("PRAGMA trusted_schema = OFF")
        return packages_from_blobs(_sqlite_blobs(conn, budget), warnings, label)
    except sqlite3.Error as exc:
        warnings.append(f"{label}: unreadable ({exc})")
        return RpmDb((), None)
    finally:
        conn.close()


def _packages_of_database(
    items: Callable[[Damage], Iterator[bytes]],
    fault: type[Exception],
    kind: str,
    units: str,
    warnings: list[str],
    label: str,
) -> RpmDb:
    """Packages of the header blobs ``items`` yields, its damage counted in ``units``."""
    damage = Damage()

    def blobs() -> Iterator[bytes]:
        try:
            yield from items(damage)
        except fault as exc:
            raise RpmDbError(f"not a readable {kind} ({exc})") from exc

    db = packages_from_blobs(blobs(), warnings, label)
    if summary := damage.summary(units):
        warnings.append(f"{label}: {summary}")
    return db


def read_ndb_rpmdb(data: bytes, warnings: list[str], label: str) -> RpmDb:
    """Packages of an ndb ``Packages.db``."""

    def items(damage: Damage) -> Iterator[bytes]:
        return rpmdb_ndb.package_blobs(data, damage, HEADER_MAX)

    return _packages_of_database(
        items, rpmdb_ndb.NdbError, "ndb package database", "slot(s) or blob(s)", warnings, label
    )


def read_bdb_rpmdb(data: bytes, warnings: list[str], label: str) -> RpmDb:
    """Packages of a Berkeley DB hash ``Packages``."""

    def items(damage: Damage) -> Iterator[bytes]:
        for key, value in rpmdb_bdb.hash_items(data, damage, HEADER_MAX):
            if key != BDB_JOIN_KEY:
                yield value

    return _packages_of_database(
        items,
        rpmdb_bdb.BdbError,
        "Berkeley DB hash database",
        "item(s) or page chain(s)",
        warnings,
        label,
    )


def _read_sqlite_copy(fs: GuestFS, path: str, warnings: list[str]) -> RpmDb:
    data = read_bytes(fs, path, warnings, cap=RPMDB_CAP, missing_ok=False)
    if data is None:
        return RpmDb((), None)
    # Uncheckpointed transactions live in the WAL: copy it too, sqlite replays it.
    wal = read_bytes(fs, path + "-wal", warnings, cap=RPMDB_CAP)
    with tempfile.TemporaryDirectory(prefix="vmaudit-rpmdb-") as tmp:
        host = os.path.join(tmp, "rpmdb.sqlite")
        with open(host, "wb") as out:
            out.write(data)
        if wal:
            with open(host + "-wal", "wb") as out:
                out.write(wal)
        return read_sqlite_rpmdb(host, warnings, safe_path(path))


def collect_rpm(fs: GuestFS, warnings: list[str]) -> RpmDb:
    """Installed packages and the newest install time of an rpm-based guest."""
    for name in ("rpmdb.sqlite", "Packages.db", "Packages"):
        for directory in RPMDB_DIRS:
            path = f"{directory}/{name}"
            if not is_file(fs, path):
                continue
            if name == "rpmdb.sqlite":
                return _read_sqlite_copy(fs, path, warnings)
            data = read_bytes(fs, path, warnings, cap=RPMDB_CAP, missing_ok=False)
            if data is None:
                return RpmDb((), None)
            read = read_ndb_rpmdb if name == "Packages.db" else read_bdb_rpmdb
            return read(data, warnings, safe_path(path))
    warnings.append("rpm: no rpm database found, packages unknown")
    return RpmDb((), None)
