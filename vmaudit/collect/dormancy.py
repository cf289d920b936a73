"""Signs of a guest's last run: wtmp, lastlog and systemd journal headers.

- ``/var/log/wtmp``: glibc utmp records of 384 bytes (x86_64, aarch64 and i386 alike); the
  newest BOOT_TIME is the last boot, the newest USER_PROCESS the last login, and any record
  (a shutdown too) is a sign of running. Only the last ``WTMP_TAIL`` bytes are read, by a
  ranged read on every backend: a 1 GiB wtmp costs its tail, not a whole read.
- ``/var/log/lastlog``: 292-byte records indexed by uid; the newest login time.
- ``/var/log/journal/*/*.journal``: the header's ``tail_entry_realtime`` (offset 192, usec);
  when the header cannot be read the file's mtime stands in (journald writes it last).

``days_idle`` counts whole days from the newest sign of running (else the image file's
mtime) to ``now``. A time more than a day after ``now`` (a wrong guest clock, garbage) is no
evidence of anything: it is dropped with a warning.

The guest's zone (``/etc/localtime``, for dpkg's local-time log) is checked as a whole TZif
file (RFC 8536) before ``zoneinfo`` reads it: Python's reader loops forever on a file cut
inside its footer and raises ``struct.error`` on a short header. A bad zone file costs the
zone only (UTC, with a warning), never the dormancy section.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from vmaudit.guest.base import GuestFS, read_bytes, read_range, safe_path
from vmaudit.models import Dormancy
from vmaudit.timeutil import iso_utc, parse_iso

from .common import from_epoch, guest_glob

UTMP_SIZE = 384
UTMP = struct.Struct("<ii32s4s32s256shhiii16s20s")
BOOT_TIME, USER_PROCESS = 2, 7
WTMP_TAIL = 4 * 1024 * 1024 // UTMP_SIZE * UTMP_SIZE  # ~10,900 newest records
LASTLOG_SIZE = 292
LASTLOG_CAP = 64 * 1024 * 1024
JOURNAL_SIGNATURE = b"LPKSHHRH"
JOURNAL_HEADER = 240
JOURNAL_TAIL_REALTIME = 192
MAX_JOURNALS = 2000

TZ_PATH = "/etc/localtime"
TZ_CAP = 1024 * 1024  # real TZif files are a few kilobytes
TZIF_HEADER = struct.Struct(">4sc15x6L")  # magic, version, isut, isstd, leap, time, type, char
TZIF_FOOTER_CAP = 256  # the POSIX TZ string after a version 2+ body, e.g. "CET-1CEST,M3.5.0,..."
_TZ_PROBES = tuple(datetime(year, 7, 1) for year in (1900, 1970, 2000, 2038, 2100))

assert UTMP.size == UTMP_SIZE


def _tzif_body(data: bytes, offset: int, time_size: int) -> tuple[int, int]:
    """(version, end offset) of the TZif header and body at ``offset``; ValueError if bad."""
    if len(data) < offset + TZIF_HEADER.size:
        raise ValueError(f"header cut at byte {len(data)}")
    magic, version, isut, isstd, leap, times, types, chars = TZIF_HEADER.unpack_from(data, offset)
    if magic != b"TZif":
        raise ValueError("no TZif magic")
    if types == 0 or isut not in (0, types) or isstd not in (0, types):
        raise ValueError("inconsistent counts")
    start = offset + TZIF_HEADER.size
    end = start + times * (time_size + 1) + types * 6 + chars + leap * (time_size + 4)
    end += isstd + isut
    if end > len(data):
        raise ValueError(f"cut at byte {len(data)} of {end}")
    indices = data[start + times * time_size : start + times * (time_size + 1)]
    if indices and max(indices) >= types:
        raise ValueError("a transition names an unknown local time type")
    return (int(version) if version.isdigit() else 1), end


def tzif_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole TZif file, None when it is."""
    try:
        version, end = _tzif_body(data, 0, 4)
        if version >= 2:
            _, end = _tzif_body(data, end, 8)
            if data[end : end + 1] != b"\n":
                raise ValueError("no footer")
            close = data.find(b"\n", end + 1, end + 2 + TZIF_FOOTER_CAP)
            if close < 0:
                raise ValueError("footer cut or too long")
    except ValueError as exc:
        return str(exc)
    return None


def timezone_from_tzif(data: bytes, warnings: list[str], path: str = TZ_PATH) -> tzinfo:
    """The zone a TZif file describes, or UTC with a warning when it is no usable one."""
    problem = tzif_problem(data)
    if problem is None:
        try:
            zone = ZoneInfo.from_file(io.BytesIO(data), key="guest")
            for moment in _TZ_PROBES:
                moment.replace(tzinfo=zone).utcoffset()
            return zone
        except Exception as exc:  # zoneinfo raises what it meets: ValueError, IndexError...
            problem = f"{type(exc).__name__}: {exc}"
    warnings.append(f"{safe_path(path)}: not a usable time zone file ({problem}); UTC assumed")
    return UTC


def guest_timezone(fs: GuestFS, warnings: list[str]) -> tzinfo:
    """The guest's local zone from ``/etc/localtime``, UTC when absent or unusable."""
    data = read_bytes(fs, TZ_PATH, warnings, cap=TZ_CAP)
    if data is None:
        return UTC
    return timezone_from_tzif(data, warnings)


@dataclass(frozen=True)
class WtmpSummary:
    last_boot: datetime | None
    last_login: datetime | None
    last_record: datetime | None


def parse_wtmp(data: bytes, path: str, warnings: list[str]) -> WtmpSummary:
    """Newest boot, login and any record in a run of utmp records (a partial first one dropped)."""
    skew = len(data) % UTMP_SIZE
    if skew:
        warnings.append(f"{safe_path(path)}: {skew} trailing bytes, not whole utmp records")
        data = data[: len(data) - skew]
    boot = login = last = None
    bad = 0
    for offset in range(0, len(data), UTMP_SIZE):
        ut_type, _pid, _line, _id, user, _host, _t, _x, _session, sec, usec, _a, _u = (
            UTMP.unpack_from(data, offset)
        )
        if ut_type == 0:
            continue  # EMPTY slots carry no time
        moment = from_epoch(sec) if 0 < ut_type <= 9 and 0 <= usec < 1_000_000 else None
        if moment is None:
            bad += 1
            continue
        last = max(last, moment) if last else moment
        if ut_type == BOOT_TIME:
            boot = max(boot, moment) if boot else moment
        elif ut_type == USER_PROCESS and user.strip(b"\0"):
            login = max(login, moment) if login else moment
    if bad:
        warnings.append(f"{safe_path(path)}: {bad} corrupt utmp record(s) skipped")
    return WtmpSummary(boot, login, last)


def parse_lastlog(data: bytes) -> datetime | None:
    """Newest login time over all uids of a lastlog file."""
    newest: datetime | None = None
    for offset in range(0, len(data) - LASTLOG_SIZE + 1, LASTLOG_SIZE):
        (seconds,) = struct.unpack_from("<i", data, offset)
        moment = from_epoch(seconds)
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def journal_tail_time(header: bytes) -> datetime | None:
    """A journal file header's newest entry time, None when it is no journal header."""
    if len(header) < JOURNAL_TAIL_REALTIME + 8 or header[:8] != JOURNAL_SIGNATURE:
        return None
    (usec,) = struct.unpack_from("<Q", header, JOURNAL_TAIL_REALTIME)
    return from_epoch(usec / 1_000_000)


def _journal_time(fs: GuestFS, warnings: list[str]) -> datetime | None:
    newest: datetime | None = None
    paths = guest_glob(fs, "/var/log/journal/*/*.journal", warnings)
    paths += guest_glob(fs, "/var/log/journal/*/*.journal~", warnings)
    for path in paths[:MAX_JOURNALS]:
        st = fs.stat(path)
        if st is None or st.kind != "file":
            continue
        scratch: list[str] = []  # a journal whose header cannot be read: its mtime stands in
        header = read_range(fs, path, 0, JOURNAL_HEADER, scratch)
        moment = journal_tail_time(header) if header else None
        if moment is None:
            moment = from_epoch(st.mtime)
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def _plausible(
    label: str, moment: datetime | None, now: datetime, warnings: list[str]
) -> datetime | None:
    if moment is not None and moment > now + timedelta(days=1):
        warnings.append(f"{label}: time {iso_utc(moment)} is in the future, ignored")
        return None
    return moment


def collect_dormancy(
    fs: GuestFS,
    image_mtime: str,
    now: datetime,
    last_update: datetime | None,
    warnings: list[str],
) -> Dormancy:
    """Last boot, login and update, and whole days idle until ``now``."""
    wtmp = WtmpSummary(None, None, None)
    data = read_range(fs, "/var/log/wtmp", -WTMP_TAIL, WTMP_TAIL, warnings)
    if data is not None:
        st = fs.stat("/var/log/wtmp")
        if st is not None and st.size > len(data):
            # Records start at multiples of 384 from the file's start, not the tail's.
            data = data[(len(data) - st.size) % UTMP_SIZE :]
        wtmp = parse_wtmp(data, "/var/log/wtmp", warnings)
    last_boot = _plausible("/var/log/wtmp boot", wtmp.last_boot, now, warnings)
    last_record = _plausible("/var/log/wtmp", wtmp.last_record, now, warnings)

    last_login = _plausible("/var/log/wtmp login", wtmp.last_login, now, warnings)
    lastlog = read_range(fs, "/var/log/lastlog", 0, LASTLOG_CAP, warnings)
    if lastlog:
        newest = _plausible("/var/log/lastlog", parse_lastlog(lastlog), now, warnings)
        if newest is not None and (last_login is None or newest > last_login):
            last_login = newest
    last_update = _plausible("last package update", last_update, now, warnings)
    journal = _plausible("/var/log/journal", _journal_time(fs, warnings), now, warnings)

    signs = [t for t in (last_boot, last_record, last_login, journal) if t]
    seen = max(signs) if signs else parse_iso(image_mtime)
    days_idle = max(0, (now - seen).days) if seen is not None else None
    return Dormancy(
        last_boot=iso_utc(last_boot) if last_boot else None,
        last_login=iso_utc(last_login) if last_login else None,
        last_update=iso_utc(last_update) if last_update else None,
        days_idle=days_idle,
    )
