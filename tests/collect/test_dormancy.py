"""Dormancy: wtmp records packed as glibc writes them, lastlog, real journal files."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TypeVar

import pytest

from vmaudit.collect import dpkg
from vmaudit.collect.dormancy import UTMP_SIZE, WTMP_TAIL, collect_dormancy, guest_timezone
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.models import Dormancy

from .conftest import NOW, Guest, image_info

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
T = TypeVar("T")


def utmp(ut_type: int, user: str, seconds: int, line: str = "pts/0") -> bytes:
    """One x86_64 glibc utmp record (384 bytes)."""
    record = struct.pack(
        "<ii32s4s32s256shhiii16s20s",
        ut_type,
        4242,
        line.encode(),
        b"ts/0",
        user.encode(),
        b"10.0.0.1",
        0,
        0,
        0,
        seconds,
        500,
        b"",
        b"",
    )
    assert len(record) == UTMP_SIZE
    return record


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def dormancy(guest: Guest, mtime: str = "2024-01-15T10:00:00Z") -> tuple[Dormancy, list[str]]:
    warnings: list[str] = []
    return collect_dormancy(guest.fs, mtime, NOW, None, warnings), warnings


def test_no_records_falls_back_to_image_mtime(guest: Guest) -> None:
    guest.write("/var/log/wtmp", b"")
    result, warnings = dormancy(guest)
    assert result == Dormancy(None, None, None, (NOW - datetime(2024, 1, 15, 10, tzinfo=UTC)).days)
    assert warnings == []


def test_wtmp_boot_login_and_shutdown(guest: Guest) -> None:
    guest.write(
        "/var/log/wtmp",
        b"".join(
            [
                utmp(2, "reboot", ts("2025-06-01T08:00:00"), "~"),
                utmp(7, "alice", ts("2025-06-01T09:15:00")),
                utmp(8, "", ts("2025-06-01T10:00:00")),
                utmp(2, "reboot", ts("2025-06-02T07:00:00"), "~"),
                utmp(7, "bob", ts("2025-06-02T07:30:00")),
                utmp(1, "shutdown", ts("2025-06-03T18:00:00"), "~"),  # RUN_LVL at shutdown
            ]
        ),
    )
    result, warnings = dormancy(guest)
    assert result.last_boot == "2025-06-02T07:00:00Z"
    assert result.last_login == "2025-06-02T07:30:00Z"
    assert result.days_idle == (NOW - datetime(2025, 6, 3, 18, tzinfo=UTC)).days
    assert warnings == []


def test_corrupt_and_partial_wtmp_records_are_warnings(guest: Guest) -> None:
    guest.write(
        "/var/log/wtmp",
        utmp(7, "eve", ts("2025-01-01T00:00:00")) + utmp(77, "junk", 123) + b"\x01" * 100,
    )
    result, warnings = dormancy(guest)
    assert result.last_login == "2025-01-01T00:00:00Z"
    assert warnings == [
        "/var/log/wtmp: 100 trailing bytes, not whole utmp records",
        "/var/log/wtmp: 1 corrupt utmp record(s) skipped",
    ]


def test_only_the_tail_of_a_long_wtmp_is_read(guest: Guest) -> None:
    old = utmp(2, "reboot", ts("2020-01-01T00:00:00"), "~")
    new = utmp(2, "reboot", ts("2025-02-02T02:02:02"), "~")
    records = WTMP_TAIL // UTMP_SIZE
    # A login older than the tail window must not count; the newest boot must.
    guest.write(
        "/var/log/wtmp", utmp(7, "ancient", ts("2019-01-01T00:00:00")) + old * (records - 1) + new
    )
    result, _ = dormancy(guest)
    assert result.last_boot == "2025-02-02T02:02:02Z"
    assert result.last_login is None


def test_lastlog_newest_login(guest: Guest) -> None:
    record = struct.Struct("<i32s256s")
    data = bytearray(record.size * 1001)
    record.pack_into(data, 0, ts("2024-05-05T05:05:05"), b"tty1", b"")
    record.pack_into(data, record.size * 1000, ts("2024-06-06T06:06:06"), b"pts/1", b"host")
    guest.write("/var/log/lastlog", bytes(data))
    assert dormancy(guest)[0].last_login == "2024-06-06T06:06:06Z"


@pytest.mark.skipif(
    not os.path.exists(JOURNAL_REMOTE),
    reason="systemd-journal-remote not installed (in the Makefile's DEB_PACKAGES)",
)
def test_real_journal_file_tail_entry_time(guest: Guest, tmp_path: Path) -> None:
    export = (
        "__REALTIME_TIMESTAMP=1700000000123456\n__MONOTONIC_TIMESTAMP=1000\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=first\n\n"
        "__REALTIME_TIMESTAMP=1710000000654321\n__MONOTONIC_TIMESTAMP=2000\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=last\n\n"
    )
    target = guest.host("/var/log/journal/0123456789abcdef0123456789abcdef/system.journal")
    target.parent.mkdir(parents=True)
    subprocess.run(
        [JOURNAL_REMOTE, "-o", str(target), "-"],
        input=export.encode(),
        check=True,
        capture_output=True,
    )
    os.utime(target, (0, ts("2020-01-01T00:00:00")))  # the header, not the mtime, must count
    result, warnings = dormancy(guest)
    assert result.days_idle == (NOW - datetime(2024, 3, 9, 16, 0, 0, tzinfo=UTC)).days
    assert warnings == []


def test_journal_without_readable_header_uses_its_mtime(guest: Guest) -> None:
    path = guest.write("/var/log/journal/m/system@x.journal~", b"not a journal")
    os.utime(path, (0, ts("2025-10-10T10:10:10")))
    assert (
        dormancy(guest)[0].days_idle == (NOW - datetime(2025, 10, 10, 10, 10, 10, tzinfo=UTC)).days
    )


def test_future_timestamps_are_ignored_with_warning(guest: Guest) -> None:
    guest.write(
        "/var/log/wtmp",
        utmp(2, "reboot", ts("2030-01-01T00:00:00"), "~")
        + utmp(7, "amy", ts("2025-11-20T00:00:00")),
    )
    result, warnings = dormancy(guest)
    assert (result.last_boot, result.last_login) == (None, "2025-11-20T00:00:00Z")
    assert result.days_idle == (NOW - datetime(2025, 11, 20, tzinfo=UTC)).days
    assert warnings == [
        "/var/log/wtmp boot: time 2030-01-01T00:00:00Z is in the future, ignored",
        "/var/log/wtmp: time 2030-01-01T00:00:00Z is in the future, ignored",
    ]


def test_a_gibibyte_wtmp_is_read_from_its_tail(guest: Guest) -> None:
    wtmp = guest.host("/var/log/wtmp")
    wtmp.parent.mkdir(parents=True)
    with open(wtmp, "wb") as out:
        out.truncate(UTMP_SIZE * 2_800_000)  # 1 GiB of EMPTY records (sparse), far over any cap
        out.seek(0, os.SEEK_END)
        out.write(utmp(2, "reboot", ts("2025-04-04T04:04:04"), "~"))
    result, warnings = dormancy(guest)
    assert result.last_boot == "2025-04-04T04:04:04Z" and warnings == []


PARIS = Path("/usr/share/zoneinfo/Europe/Paris")  # a real TZif v2+ file, from tzdata


def within(seconds: float, run: Callable[[], T]) -> T:
    """``run()``'s result, failing the test if it takes longer (zoneinfo once looped forever)."""
    results: list[T] = []
    worker = threading.Thread(target=lambda: results.append(run()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert results, f"still running after {seconds} s"
    return results[0]


def dormancy_as_linux_reads_it(guest: Guest) -> tuple[Dormancy, tzinfo, list[str]]:
    """The guest's zone, dpkg's last update read in it, and the dormancy section."""
    warnings: list[str] = []
    fs = guest.fs
    zone = guest_timezone(fs, warnings)
    last = dpkg.last_update(fs, zone, warnings)
    return collect_dormancy(fs, "2024-01-15T10:00:00Z", NOW, last, warnings), zone, warnings


@pytest.mark.skipif(not PARIS.is_file(), reason="tzdata not installed")
@pytest.mark.parametrize("cut", [0, 3, 20, 44, 300, -40, -10, -1])
def test_truncated_localtime_costs_only_the_timezone(guest: Guest, cut: int) -> None:
    """A cut TZif (struct.error, or an endless loop on a cut footer) is UTC with a warning."""
    zone_file = PARIS.read_bytes()
    guest.write("/etc/localtime", zone_file[:cut])
    guest.write("/var/log/dpkg.log", "2025-06-01 12:00:00 upgrade bash:amd64 5.1 5.2\n")
    guest.write("/var/log/wtmp", utmp(2, "reboot", ts("2025-06-02T07:00:00"), "~"))
    result, zone, warnings = within(30, lambda: dormancy_as_linux_reads_it(guest))
    assert zone is UTC
    assert result.last_update == "2025-06-01T12:00:00Z"  # the log's local time, read as UTC
    assert result.last_boot == "2025-06-02T07:00:00Z"
    assert len(warnings) == 1
    assert warnings[0].startswith("/etc/localtime: not a usable time zone file (")
    assert warnings[0].endswith("); UTC assumed")


@pytest.mark.skipif(not PARIS.is_file(), reason="tzdata not installed")
def test_whole_localtime_is_the_guest_zone(guest: Guest) -> None:
    guest.write("/etc/localtime", PARIS.read_bytes())
    guest.write("/var/log/dpkg.log", "2025-06-01 12:00:00 upgrade bash:amd64 5.1 5.2\n")
    result, zone, warnings = dormancy_as_linux_reads_it(guest)
    assert zone is not UTC
    assert result.last_update == "2025-06-01T10:00:00Z"  # CEST is UTC+2
    assert warnings == []


@pytest.mark.skipif(not PARIS.is_file(), reason="tzdata not installed")
@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (4, b"2", None),  # a version byte alone changes nothing
        (0, b"TZiX", "no TZif magic"),
        (36, b"\0\0\0\0", "inconsistent counts"),  # no local time type
        (32, b"\xff\xff\xff\xff", "cut at byte"),  # 4 billion transitions in 3 KB
    ],
)
def test_corrupt_localtime_header_is_named_in_the_warning(
    guest: Guest, offset: int, value: bytes, words: str | None
) -> None:
    data = bytearray(PARIS.read_bytes())
    data[offset : offset + len(value)] = value
    guest.write("/etc/localtime", bytes(data))
    warnings: list[str] = []
    zone = within(30, lambda: guest_timezone(guest.fs, warnings))
    if words is None:
        assert zone is not UTC and warnings == []
    else:
        assert zone is UTC
        assert len(warnings) == 1
        assert warnings[0].startswith(f"/etc/localtime: not a usable time zone file ({words}")


def test_absent_localtime_is_utc_without_warning(guest: Guest) -> None:
    warnings: list[str] = []
    assert guest_timezone(guest.fs, warnings) is UTC
    assert warnings == []


@pytest.mark.skipif(not PARIS.is_file(), reason="tzdata not installed")
@pytest.mark.parametrize("cut", [20, -10])
def test_truncated_localtime_keeps_the_dormancy_section_of_a_linux_guest(
    guest: Guest, cut: int
) -> None:
    """Through collect_linux: the zone falls back to UTC, dormancy is still read."""
    guest.write("/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    guest.write(
        "/var/lib/dpkg/status", "Package: bash\nStatus: install ok installed\nVersion: 5.2\n"
    )
    guest.write("/etc/localtime", PARIS.read_bytes()[:cut])
    guest.write("/var/log/dpkg.log", "2025-06-01 12:00:00 upgrade bash:amd64 5.1 5.2\n")
    guest.write("/var/log/wtmp", utmp(2, "reboot", ts("2025-06-02T07:00:00"), "~"))
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    facts = within(60, lambda: collect_linux(guest.fs, image_info(), os_info, NOW, warnings))
    assert facts.dormancy.last_update == "2025-06-01T12:00:00Z"
    assert facts.dormancy.last_boot == "2025-06-02T07:00:00Z"
    assert any(w.startswith("/etc/localtime: not a usable time zone file") for w in facts.warnings)
    assert not any(w.startswith("dormancy") for w in facts.warnings)
