"""End of vendor support per OS release: distro-info-data for Debian and Ubuntu (Debian's
package, ``/usr/share/distro-info``), a table shipped here for the RHEL family, SUSE and
Windows Server, each date with its source.

The date is the end of the vendor's own security support at no extra cost: Debian's LTS
(Debian's own archive), Ubuntu's standard support (ESM is Ubuntu Pro), RHEL's end of
Maintenance Support (ELS is an add-on), SUSE's general support of a service pack (LTSS
is an add-on), Microsoft's Extended Support (ESU is paid). ``os.end-of-life`` fires the
day after.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from vmaudit.models import OsInfo
from vmaudit.versions import dotted_key

DISTRO_INFO_DIR = Path(os.environ.get("VMAUDIT_DISTRO_INFO", "/usr/share/distro-info"))
CSV_CAP = 1024 * 1024


@dataclass(frozen=True)
class Release:
    """One row of distro-info-data."""

    distro: str  # debian | ubuntu
    version: str  # "12", "22.04"
    codename: str  # "bookworm", "jammy"
    eol: date | None  # end of the vendor's standard security support
    eol_extended: date | None  # Debian LTS, Ubuntu ESM


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


@cache
def releases(distro: str) -> tuple[Release, ...]:
    """distro-info-data's rows for ``debian`` or ``ubuntu``; () when it is not installed."""
    path = DISTRO_INFO_DIR / f"{distro}.csv"
    try:
        with path.open("rb") as handle:
            data = handle.read(CSV_CAP)
    except OSError:
        return ()
    rows: list[Release] = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8", "replace"))):
        version = (row.get("version") or "").replace(" LTS", "").strip()
        series = (row.get("series") or "").strip().lower()
        if not version or not series:
            continue  # sid, experimental
        if distro == "debian":
            # Debian LTS is Debian's own (security updates go on in the same archive);
            # ELTS is a paid service, so it is not the vendor's support.
            standard = _date(row.get("eol-lts")) or _date(row.get("eol"))
            extended = _date(row.get("eol-elts"))
        else:
            # Ubuntu: standard support (server date where it differed); ESM is Ubuntu Pro.
            standard = _date(row.get("eol-server")) or _date(row.get("eol"))
            extended = _date(row.get("eol-esm"))
        rows.append(Release(distro, version, series, standard, extended))
    return tuple(rows)


def _major(version: str | None) -> str | None:
    found = re.match(r"\s*(\d{1,4})", version or "")
    return str(int(found.group(1))) if found else None


def _ubuntu_version(version: str | None) -> str | None:
    found = re.match(r"\s*(\d{1,4})(?:\.(\d{1,4}))?", version or "")
    return f"{int(found.group(1))}.{int(found.group(2) or 0):02d}" if found else None


def release_of(os_info: OsInfo) -> Release | None:
    """The distro-info-data row of a Debian or Ubuntu guest."""
    distro = (os_info.distro or "").lower()
    if distro == "debian":
        major = _major(os_info.version)
        return next((r for r in releases("debian") if r.version == major), None)
    if distro == "ubuntu":
        wanted = _ubuntu_version(os_info.version)
        return next((r for r in releases("ubuntu") if r.version == wanted), None)
    return None


RHEL_SOURCE = "https://access.redhat.com/support/policy/updates/errata"
CENTOS_SOURCE = "https://www.centos.org/centos-linux-eol/"
STREAM_SOURCE = "https://www.centos.org/cl-vs-cs/"
ROCKY_SOURCE = "https://wiki.rockylinux.org/rocky/version/"
ALMA_SOURCE = "https://wiki.almalinux.org/release-notes/"
SUSE_SOURCE = "https://www.suse.com/lifecycle/"
LEAP_SOURCE = "https://en.opensuse.org/Lifetime"
MS_SOURCE = "https://learn.microsoft.com/lifecycle/products/"

# (distro, major) -> (end of support, source)
LINUX_EOL: dict[tuple[str, str], tuple[date, str]] = {
    # Red Hat Enterprise Linux Life Cycle: end of Maintenance Support
    ("rhel", "6"): (date(2020, 11, 30), RHEL_SOURCE),
    ("rhel", "7"): (date(2024, 6, 30), RHEL_SOURCE),
    ("rhel", "8"): (date(2029, 5, 31), RHEL_SOURCE),
    ("rhel", "9"): (date(2032, 5, 31), RHEL_SOURCE),
    ("rhel", "10"): (date(2035, 5, 31), RHEL_SOURCE),
    # CentOS Linux end dates (CentOS Project)
    ("centos", "6"): (date(2020, 11, 30), CENTOS_SOURCE),
    ("centos", "7"): (date(2024, 6, 30), CENTOS_SOURCE),
    ("centos", "8"): (date(2021, 12, 31), CENTOS_SOURCE),
    # CentOS Stream: "the end of RHEL's full support phase" (CentOS Project)
    ("centos-stream", "8"): (date(2024, 5, 31), STREAM_SOURCE),
    ("centos-stream", "9"): (date(2027, 5, 31), STREAM_SOURCE),
    # Rocky Linux release and version guide: end of security support
    ("rocky", "8"): (date(2029, 5, 31), ROCKY_SOURCE),
    ("rocky", "9"): (date(2032, 5, 31), ROCKY_SOURCE),
    # AlmaLinux release notes: security support ends
    ("almalinux", "8"): (date(2029, 3, 1), ALMA_SOURCE),
    ("almalinux", "9"): (date(2032, 5, 31), ALMA_SOURCE),
}
# SUSE Product Support Lifecycle: general support end of each SLES service pack
SLES_EOL: dict[tuple[int, int], date] = {
    (11, 4): date(2019, 3, 31),
    (12, 5): date(2024, 10, 31),
    (15, 0): date(2019, 12, 31),
    (15, 1): date(2021, 1, 31),
    (15, 2): date(2021, 12, 31),
    (15, 3): date(2022, 12, 31),
    (15, 4): date(2023, 12, 31),
    (15, 5): date(2024, 12, 31),
    (15, 6): date(2025, 12, 31),
    (15, 7): date(2031, 7, 31),
}
# openSUSE Lifetime: end of maintenance of each Leap minor release
LEAP_EOL: dict[tuple[int, int], date] = {
    (15, 3): date(2022, 12, 31),
    (15, 4): date(2023, 12, 31),
    (15, 5): date(2024, 12, 31),
    (15, 6): date(2026, 4, 30),
}
# Microsoft Lifecycle: end of Extended Support (Annual/Semi-Annual Channel: end of servicing),
# by build number; the page under MS_SOURCE is named after the product.
WINDOWS_SERVER_EOL: dict[int, tuple[str, date, str]] = {
    6002: ("Windows Server 2008", date(2020, 1, 14), "windows-server-2008"),
    6003: ("Windows Server 2008", date(2020, 1, 14), "windows-server-2008"),
    7601: ("Windows Server 2008 R2", date(2020, 1, 14), "windows-server-2008-r2"),
    9200: ("Windows Server 2012", date(2023, 10, 10), "windows-server-2012"),
    9600: ("Windows Server 2012 R2", date(2023, 10, 10), "windows-server-2012-r2"),
    14393: ("Windows Server 2016", date(2027, 1, 12), "windows-server-2016"),
    17763: ("Windows Server 2019", date(2029, 1, 9), "windows-server-2019"),
    19041: ("Windows Server, version 2004", date(2021, 12, 14), "windows-server-2004"),
    19042: ("Windows Server, version 20H2", date(2022, 8, 9), "windows-server-20h2"),
    20348: ("Windows Server 2022", date(2031, 10, 14), "windows-server-2022"),
    25398: (
        "Windows Server 2022, 23H2 Edition",
        date(2025, 10, 24),
        "windows-server-annual-channel",
    ),
    26100: ("Windows Server 2025", date(2034, 11, 14), "windows-server-2025"),
}


@dataclass(frozen=True)
class EndOfLife:
    """A release's end of vendor support."""

    release: str  # "debian 12", "Windows Server 2012 R2"
    ends: date
    source: str  # where the date comes from
    extended: date | None = None  # paid or community extension (ESM, ELTS), for information


def _major_minor(version: str | None) -> tuple[int, int] | None:
    found = re.match(r"\s*(\d{1,4})(?:\.(\d{1,4}))?", version or "")
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def end_of_life(os_info: OsInfo) -> EndOfLife | None:
    """The guest release's end of support; None when vmaudit does not know it."""
    distro = (os_info.distro or "").lower()
    if os_info.type == "windows":
        build = dotted_key(os_info.build or "")
        number = build[-2] if len(build) >= 2 else None  # 17763 of 17763.5936
        kind = (os_info.installation_type or "").lower()
        server = kind.startswith("server") if kind else "server" in (os_info.product or "").lower()
        if number is None or not server or number not in WINDOWS_SERVER_EOL:
            return None
        name, ends, page = WINDOWS_SERVER_EOL[number]
        return EndOfLife(name, ends, MS_SOURCE + page)
    if distro in ("debian", "ubuntu"):
        release = release_of(os_info)
        if release is None or release.eol is None:
            return None
        return EndOfLife(
            f"{distro} {release.version}",
            release.eol,
            f"distro-info-data ({distro}.csv)",
            release.eol_extended,
        )
    mm = _major_minor(os_info.version)
    if mm is None:
        return None
    if distro == "sles" and mm in SLES_EOL:
        sp = f" SP{mm[1]}" if mm[1] else ""
        return EndOfLife(f"SLES {mm[0]}{sp}", SLES_EOL[mm], SUSE_SOURCE)
    if distro == "opensuse" and mm in LEAP_EOL:
        return EndOfLife(f"openSUSE Leap {mm[0]}.{mm[1]}", LEAP_EOL[mm], LEAP_SOURCE)
    if distro == "centos" and "stream" in (os_info.product or "").lower():
        distro = "centos-stream"
    found = LINUX_EOL.get((distro, str(mm[0])))
    if found is None:
        return None
    return EndOfLife(f"{distro} {mm[0]}", found[0], found[1])
