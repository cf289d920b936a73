"""Debian packages from dpkg's database (``/var/lib/dpkg/status``) and dpkg's log.

A package counts as installed when its files may be on disk: every state dpkg-query lists
except ``config-files`` (only conffiles remain: no program to patch, none to forbid) and
``not-installed``. So the list equals ``dpkg-query -W`` minus the config-files packages.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from datetime import datetime, tzinfo

from vmaudit.guest.base import GuestFS, read_bytes, safe_path
from vmaudit.models import Package

STATUS_PATH = "/var/lib/dpkg/status"
STATUS_CAP = 256 * 1024 * 1024  # a 10,000-package system has a ~30 MiB status file
FIELD_CAP = 4096  # characters of a field we keep (names, versions); longer = corrupt
LOG_CAP = 64 * 1024 * 1024
LOG_INFLATED_CAP = 128 * 1024 * 1024

# Status (third word) of packages whose files are, at least partly, on disk.
ON_DISK_STATES = frozenset(
    {"installed", "half-configured", "unpacked", "half-installed", "triggers-awaited",
     "triggers-pending"}
)  # fmt: skip
WANTED_FIELDS = frozenset({"package", "status", "version", "architecture", "source"})
LOG_LINE = re.compile(
    rb"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:status installed |upgrade |install )"
)


def _finish(stanza: dict[str, str], path: str, warnings: list[str]) -> Package | None:
    if "_broken" in stanza:
        return None  # counted in the caller's overlong-field warning
    name = stanza.get("package")
    status = stanza.get("status", "").split()
    if not name or len(status) != 3:
        if name or stanza:
            warnings.append(f"{safe_path(path)}: a stanza without Package or Status skipped")
        return None
    if status[2] not in ON_DISK_STATES:
        return None
    source = stanza.get("source", "").split(" ", 1)[0] or name
    return Package(
        name=name,
        version=stanza.get("version", ""),
        arch=stanza.get("architecture") or None,
        source=source,
    )


# What the parse stops at, in one pass over the file: a run of blank lines (the end of a
# stanza) or the first line of a field we keep. Everything else (continuation lines, other
# fields) is stepped over inside the regex engine, never copied. No part can match across
# a line it has not consumed, so the scan is linear in the file's size.
_EVENT = re.compile(
    rb"^(?:(?P<blank>[ \t\r\v\f\n]*\n)"
    rb"|(?P<key>(?i:" + "|".join(sorted(WANTED_FIELDS)).encode() + rb")):(?P<value>[^\n]*))",
    re.MULTILINE,
)


def parse_status(data: bytes, warnings: list[str], path: str = STATUS_PATH) -> list[Package]:
    """Installed packages of a dpkg status file; overlong or broken fields are warnings.

    The file is walked in place, stanza by stanza: no list of its lines is ever built, so
    the parse needs memory for the packages it finds, not a multiple of the file (a status
    file of short lines once took twenty times its size). Continuation lines and fields we
    do not use are skipped without being copied or decoded, so a 1 MB Description or
    Conffiles field costs nothing and never trips the line cap.
    """
    packages: list[Package] = []
    stanza: dict[str, str] = {}
    overlong = 0
    for event in _EVENT.finditer(data):
        if event.start("blank") >= 0:
            if stanza:
                package = _finish(stanza, path, warnings)
                if package is not None:
                    packages.append(package)
                stanza = {}
            continue
        key = event.group("key").decode("ascii").lower()
        if event.end() - event.start() > FIELD_CAP:
            overlong += 1
            stanza["_broken"] = key
            continue
        stanza[key] = event.group("value").decode("utf-8", "replace").strip()
    if stanza:
        package = _finish(stanza, path, warnings)
        if package is not None:
            packages.append(package)
    if overlong:
        warnings.append(f"{safe_path(path)}: {overlong} field(s) over {FIELD_CAP} bytes ignored")
    return packages


def collect_dpkg(fs: GuestFS, warnings: list[str]) -> list[Package]:
    """Installed packages of a Debian-family guest ([] with a warning when unreadable)."""
    data = read_bytes(fs, STATUS_PATH, warnings, cap=STATUS_CAP, missing_ok=False)
    if data is None:
        return []
    packages = parse_status(data, warnings)
    if not packages and data and not data.isspace():  # isspace: no copy of the file
        warnings.append(f"{STATUS_PATH}: no installed package found in {len(data)} bytes")
    return packages


def _inflate(data: bytes, path: str, warnings: list[str]) -> bytes | None:
    """A gzip file's content, bounded: a gzip bomb is a warning, not a full inflate."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(data, LOG_INFLATED_CAP)
        if inflater.unconsumed_tail:
            warnings.append(f"{safe_path(path)}: over {LOG_INFLATED_CAP} bytes once inflated")
            return None
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        warnings.append(f"{safe_path(path)}: not a readable gzip file ({exc})")
        return None


def last_update(fs: GuestFS, guest_tz: tzinfo, warnings: list[str]) -> datetime | None:
    """Time of the newest package install or upgrade in dpkg's logs, None when none.

    dpkg writes local time; ``guest_tz`` is the guest's zone. The current log is read
    first, then the rotated ones until one has a record (they are older).
    """
    for name in ("dpkg.log", "dpkg.log.1", "dpkg.log.2.gz", "dpkg.log.3.gz"):
        path = f"/var/log/{name}"
        data = read_bytes(fs, path, warnings, cap=LOG_CAP)
        if data is None:
            continue
        if name.endswith(".gz"):
            data = _inflate(data, path, warnings)
            if data is None:
                continue
        newest: datetime | None = None
        for line in io.BytesIO(data):
            match = LOG_LINE.match(line)
            if match is None:
                continue
            try:
                stamp = datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
            moment = stamp.replace(tzinfo=guest_tz)
            if newest is None or moment > newest:
                newest = moment
        if newest is not None:
            return newest
    return None
