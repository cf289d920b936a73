"""Signs of a guest's last run: wtmp, lastlog and systemd journal headers.

- ``/var/log/wtmp``: glibc utmp records of 384 bytes (x86_64, aarch64 and i386 alike); the
  newest BOOT_TIME is the last boot, the newest USER_PROCESS the last login, and any record
  (a shutdown too) is a sign of running. Only the last ``WTMP_TAIL`` bytes are read.
- ``/var/log/lastlog``: 292-byte records indexed by uid; the newest login time.
- ``/var/log/journal/*/*.journal``: the header's ``tail_entry_realtime`` (offset 192, usec);
  when the header cannot be read the file's mtime stands in (journald writes it last).

``days_idle`` counts whole days from the newest sign of running (else the image file's
mtime) to ``now``. A time more than a day after ``now`` (a wrong guest clock, garbage) is no
evidence of anything: it is dropped with a warning.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

from vmaudit.guest.base import GuestFS, safe_path
from vmaudit.models import Dormancy

from .common import from_epoch, guest_glob, iso_utc, read_range

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

assert UTMP.size == UTMP_SIZE


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
        scratch: list[str] = []  # a journal too big to read whole falls back to its mtime
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


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def collect_dormancy(
    fs: GuestFS, image_mtime: str, now: datetime, last_update: datetime | None,
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
    lastlog = read_range(fs, "/var/log/lastlog", 0, LASTLOG_CAP, warnings, cap=LASTLOG_CAP)
    if lastlog:
        newest = _plausible("/var/log/lastlog", parse_lastlog(lastlog), now, warnings)
        if newest is not None and (last_login is None or newest > last_login):
            last_login = newest
    last_update = _plausible("last package update", last_update, now, warnings)
    journal = _plausible("/var/log/journal", _journal_time(fs, warnings), now, warnings)

    signs = [t for t in (last_boot, last_record, last_login, journal) if t]
    seen = max(signs) if signs else _parse_iso(image_mtime)
    days_idle = max(0, (now - seen).days) if seen is not None else None
    return Dormancy(
        last_boot=iso_utc(last_boot) if last_boot else None,
        last_login=iso_utc(last_login) if last_login else None,
        last_update=iso_utc(last_update) if last_update else None,
        days_idle=days_idle,
    )
