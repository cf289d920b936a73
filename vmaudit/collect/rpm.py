"""RPM packages from the sqlite rpmdb, header blobs decoded here (no librpm on the host).

The database is copied to a private host temp dir and opened read-only; each row of its
``Packages`` table is an rpm header without the magic: ``il`` and ``dl`` (big-endian 32-bit),
``il`` 16-byte index entries (tag, type, offset, count), then ``dl`` bytes of data. Every
offset is bounds-checked: a corrupt blob is a warning, the other packages still count.
Berkeley DB (RHEL <= 8, SLES <= 15) and ndb databases are reported, not read.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from dataclasses import dataclass
from datetime import datetime

from vmaudit.guest.base import GuestFS, is_file, safe_path
from vmaudit.models import Package

from .common import from_epoch, read_bytes

RPMDB_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
RPMDB_CAP = 1024 * 1024 * 1024
MAX_TAGS = 0xFFFF  # rpm's HEADER_TAGS_MAX
MAX_DATA = 0x0FFFFFFF  # rpm's HEADER_DATA_MAX
MAX_ROWS = 200_000

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_INSTALLTIME, TAG_ARCH, TAG_SOURCERPM = 1008, 1022, 1044
TYPE_INT32, TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 4, 6, 8, 9
WANTED_TAGS = frozenset(
    {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_INSTALLTIME, TAG_ARCH, TAG_SOURCERPM}
)


class CorruptHeader(ValueError):
    """An rpm header blob that does not hold together."""


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


def read_sqlite_rpmdb(db_path: str, warnings: list[str], label: str) -> RpmDb:
    """Packages of an rpmdb.sqlite on the host (a private copy), opened read-only."""
    packages: list[Package] = []
    newest = 0
    corrupt = 0
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        warnings.append(f"{label}: cannot open as sqlite ({exc})")
        return RpmDb((), None)
    try:
        # A guest-made schema must not run functions of ours (triggers, views).
        conn.execute("PRAGMA trusted_schema = OFF")
        rows = conn.execute("SELECT blob FROM Packages ORDER BY hnum LIMIT ?", (MAX_ROWS + 1,))
        for count, (blob,) in enumerate(rows):
            if count >= MAX_ROWS:
                warnings.append(f"{label}: over {MAX_ROWS} packages, the rest ignored")
                break
            try:
                if not isinstance(blob, bytes):
                    raise CorruptHeader("not a blob")
                values = decode_header(blob)
                packages.append(header_package(values))
            except CorruptHeader:
                corrupt += 1
                continue
            installed = values.get(TAG_INSTALLTIME)
            if isinstance(installed, int):
                newest = max(newest, installed)
    except sqlite3.Error as exc:
        warnings.append(f"{label}: unreadable Packages table ({exc})")
    finally:
        conn.close()
    if corrupt:
        warnings.append(f"{label}: {corrupt} corrupt package header(s) skipped")
    return RpmDb(tuple(packages), from_epoch(newest))


def collect_rpm(fs: GuestFS, warnings: list[str]) -> RpmDb:
    """Installed packages and the newest install time of an rpm-based guest."""
    for directory in RPMDB_DIRS:
        path = f"{directory}/rpmdb.sqlite"
        if not is_file(fs, path):
            continue
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
    for directory in RPMDB_DIRS:
        for legacy in ("Packages", "Packages.db"):
            if is_file(fs, f"{directory}/{legacy}"):
                kind = "Berkeley DB" if legacy == "Packages" else "ndb"
                warnings.append(
                    f"{directory}/{legacy}: {kind} rpm database not supported, packages unknown"
                )
                return RpmDb((), None)
    warnings.append("rpm: no rpm database found, packages unknown")
    return RpmDb((), None)
