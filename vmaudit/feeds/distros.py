"""Releases as the feeds name them: the ecosystem keys (``Debian:12``, ``Ubuntu:22.04``,
``Alpine:v3.20``) of feed records and of guests, and Debian codenames.

A guest is matched only against records of its own release: the keys a guest's facts
give and the keys an importer stores are made by the functions here, so both sides
agree. Codenames come from distro-info-data (judge.eol reads it); without it the Debian
tracker's codenames fall back to the few listed here.
"""

from __future__ import annotations

import re

from vmaudit.judge.eol import releases
from vmaudit.models import OsInfo

# Used when distro-info-data is missing, so the tracker's codenames still map.
_DEBIAN_FALLBACK = {
    "jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12",
    "trixie": "13", "forky": "14", "duke": "15",
}  # fmt: skip


def debian_version_of(codename: str) -> str | None:
    """``bookworm`` -> ``12``."""
    for release in releases("debian"):
        if release.codename == codename.lower():
            return release.version
    return _DEBIAN_FALLBACK.get(codename.lower())


def _major(version: str | None) -> str | None:
    found = re.match(r"\s*(\d{1,4})", version or "")
    return str(int(found.group(1))) if found else None


def _major_minor(version: str | None, width: int = 0) -> tuple[str, str] | None:
    found = re.match(r"\s*(\d{1,4})\.(\d{1,4})", version or "")
    if found is None:
        major = _major(version)
        return (major, "0".zfill(width)) if major else None
    return str(int(found.group(1))), str(int(found.group(2))).zfill(width)


def normalise_ecosystem(name: str) -> str | None:
    """An OSV ecosystem as vmaudit keys it; None for one no guest can be in.

    ``Ubuntu:22.04:LTS`` -> ``Ubuntu:22.04``; ``Ubuntu:Pro:...`` (paid ESM packages) is
    kept apart; ``Red Hat:enterprise_linux:9::baseos`` -> ``Red Hat:9``; ``Alpine:v3.20``,
    ``Debian:12``, ``Rocky Linux:9``, ``AlmaLinux:9``, ``SUSE:Linux Enterprise Server 15
    SP5`` and ``openSUSE:Leap 15.5`` as they are.
    """
    family, _, rest = name.partition(":")
    if not rest:
        return None
    if family == "Ubuntu":
        parts = rest.split(":")
        if parts[0] == "Pro":
            return f"Ubuntu:Pro:{parts[1]}" if len(parts) > 1 else None
        return f"Ubuntu:{parts[0]}"
    if family == "Red Hat":
        parts = rest.split(":")
        if parts[0] != "enterprise_linux" or len(parts) < 2:
            return None  # EUS, AUS, SAP streams: not a guest vmaudit can tell apart
        major = _major(parts[1])
        return f"Red Hat:{major}" if major else None
    if family in ("Debian", "Rocky Linux", "AlmaLinux"):
        major = _major(rest)
        return f"{family}:{major}" if major else None
    if family == "Alpine":
        mm = _major_minor(rest.lstrip("v"))
        return f"Alpine:v{mm[0]}.{mm[1]}" if mm else None
    if family in ("SUSE", "openSUSE"):
        return f"{family}:{rest}"
    return None


def guest_ecosystems(os_info: OsInfo) -> tuple[str, ...]:
    """The ecosystem keys of a Linux guest's release; () when vmaudit cannot tell."""
    distro, version = (os_info.distro or "").lower(), os_info.version
    if distro == "debian":
        major = _major(version)
        return (f"Debian:{major}",) if major else ()
    if distro == "ubuntu":
        mm = _major_minor(version, width=2)
        return (f"Ubuntu:{mm[0]}.{mm[1]}",) if mm else ()
    if distro == "alpinelinux":
        mm = _major_minor(version)
        return (f"Alpine:v{mm[0]}.{mm[1]}",) if mm else ()
    families = {"rocky": "Rocky Linux", "almalinux": "AlmaLinux", "rhel": "Red Hat"}
    if distro in families:
        major = _major(version)
        return (f"{families[distro]}:{major}",) if major else ()
    if distro == "sles":
        mm = _major_minor(version)
        if mm is None:
            return ()
        sp = f" SP{mm[1]}" if mm[1] != "0" else ""
        return (f"SUSE:Linux Enterprise Server {mm[0]}{sp}",)
    if distro == "opensuse":
        mm = _major_minor(version)
        return (f"openSUSE:Leap {mm[0]}.{mm[1]}",) if mm else ()
    return ()
